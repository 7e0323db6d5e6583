package idempotency

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// benchClients is the number of goroutines each parallel benchmark runs,
// matching redis-benchmark's default -c 50 so the numbers compare.
const benchClients = 50

func benchStore(b *testing.B) (*Store, *redis.Client) {
	redistest.Client(b) // skip (or fail under CI) when Redis is down
	opt := redistest.Options(b)
	opt.PoolSize = benchClients
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { _ = rdb.Close() })
	s, err := New(Config{Prefix: redistest.Prefix(b)}, rdb, nil)
	if err != nil {
		b.Fatal(err)
	}
	return s, rdb
}

func runParallel(b *testing.B, op func(ctx context.Context, i int64) error) {
	b.SetParallelism((benchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var seq atomic.Int64
	ctx := context.Background()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := op(ctx, seq.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkApplyOnce measures the wrapped INCR: "first" applies a new dedup
// key every call (GET miss, INCRBY, SET PX: the path of a fresh command),
// "repeat" answers one recorded key (the path of a redelivery).
func BenchmarkApplyOnce(b *testing.B) {
	b.Run("first", func(b *testing.B) {
		s, _ := benchStore(b)
		sc := s.Script("bench.incr", `return tostring(redis.call('INCRBY', KEYS[1], 1))`)
		if err := sc.Load(context.Background()); err != nil {
			b.Fatal(err)
		}
		counter := s.cfg.Prefix + ":counter"
		runParallel(b, func(ctx context.Context, i int64) error {
			_, err := sc.Apply(ctx, Key(s.cfg.Prefix, strconv.FormatInt(i, 10), "s", "incr"), []string{counter})
			return err
		})
	})
	b.Run("repeat", func(b *testing.B) {
		s, _ := benchStore(b)
		sc := s.Script("bench.incr", `return tostring(redis.call('INCRBY', KEYS[1], 1))`)
		counter := s.cfg.Prefix + ":counter"
		key := Key(s.cfg.Prefix, "saga", "s", "incr")
		if _, err := sc.Apply(context.Background(), key, []string{counter}); err != nil {
			b.Fatal(err)
		}
		runParallel(b, func(ctx context.Context, _ int64) error {
			_, err := sc.Apply(ctx, key, []string{counter})
			return err
		})
	})
}

// BenchmarkEvalShaIncr is the baseline from Go: the bare effect, EVALSHA of
// `return redis.call('INCR', KEYS[1])`, through the same client and pool.
func BenchmarkEvalShaIncr(b *testing.B) {
	s, rdb := benchStore(b)
	sha, err := rdb.ScriptLoad(context.Background(), `return redis.call('INCR', KEYS[1])`).Result()
	if err != nil {
		b.Fatal(err)
	}
	keys := []string{s.cfg.Prefix + ":counter"}
	runParallel(b, func(ctx context.Context, _ int64) error {
		return rdb.EvalSha(ctx, sha, keys).Err()
	})
}
