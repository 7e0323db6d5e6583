package participanttest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
)

// Delivery is one command delivered while Redis was being killed.
type Delivery struct {
	Cmd saga.Envelope
	// Acked: the handler answered, with Reply. Otherwise it failed
	// transiently (Redis was down) and Reply is zero.
	Acked bool
	Reply Reply
}

// KillRedisUnderLoad runs workers goroutines that each deliver, order after
// order, the commands next(worker, i) makes for their i-th order to h, one
// after the other. Once 100 commands are acknowledged it SIGKILLs srv,
// waits for the workers to see 8 failures, stops them and starts srv again
// on its AOF. It returns every delivery in the order they ended. A failure
// that wraps saga.ErrPoison is reported: Redis down is never the command's
// fault.
func KillRedisUnderLoad(t testing.TB, srv *crashtest.Redis, h saga.CommandHandler, workers int, next func(worker, i int) []saga.Envelope) []Delivery {
	t.Helper()
	var (
		mu     sync.Mutex
		out    []Delivery
		acked  atomic.Int64
		failed atomic.Int64
		stop   atomic.Bool
		wg     sync.WaitGroup
	)
	for w := range workers {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				for _, cmd := range next(w, i) {
					env, err := h(context.Background(), cmd)
					d := Delivery{Cmd: cmd, Acked: err == nil}
					switch {
					case err == nil:
						d.Reply = ToReply(t, env)
						acked.Add(1)
					case errors.Is(err, saga.ErrPoison):
						t.Errorf("Redis down taken for poison: %v", err)
					default:
						failed.Add(1)
					}
					mu.Lock()
					out = append(out, d)
					mu.Unlock()
				}
			}
		})
	}
	WaitFor(t, 30*time.Second, "100 acknowledged commands", func() bool { return acked.Load() >= 100 })
	srv.Kill(t)
	ackedAtKill := acked.Load()
	WaitFor(t, 30*time.Second, "the workers to notice", func() bool { return failed.Load() >= 8 })
	stop.Store(true)
	wg.Wait()
	srv.Start(t)
	t.Logf("%d commands acknowledged (%d before the kill), %d failed with Redis down", acked.Load(), ackedAtKill, failed.Load())
	return out
}

// Redeliver delivers cmd to h again, as Kafka would after the
// participant's transaction aborted, retrying while it fails transiently as
// the runtime does (a client's pool may take a second to notice Redis is
// back). Poison fails the test.
func Redeliver(t testing.TB, h saga.CommandHandler, cmd saga.Envelope) Reply {
	t.Helper()
	var env saga.Envelope
	WaitFor(t, 20*time.Second, "Redis to answer again", func() bool {
		var err error
		env, err = h(Context(t), cmd)
		if errors.Is(err, saga.ErrPoison) {
			t.Fatalf("%s %s after the restart: %v", cmd.Type, cmd.SagaID, err)
		}
		return err == nil
	})
	return ToReply(t, env)
}

// Instances returns n command handlers, as n participant instances would
// have them: each built by h on a Redis client of its own, on the test
// Redis, closed when t ends.
func Instances(t testing.TB, n int, h func(rdb redis.UniversalClient) saga.CommandHandler) []saga.CommandHandler {
	t.Helper()
	out := make([]saga.CommandHandler, n)
	for i := range out {
		rdb := redis.NewClient(redistest.Options(t))
		t.Cleanup(func() { _ = rdb.Close() })
		out[i] = h(rdb)
	}
	return out
}

// RedisDownIsTransient builds a participant with h (default prefix) on a
// Redis that is not there and checks that every one of cmds fails with a
// plain error: no Redis is not the command's fault, so the runtime retries
// instead of dead-lettering.
func RedisDownIsTransient(t testing.TB, h NewHandler, cmds ...saga.Envelope) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	handle, err := h(rdb, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range cmds {
		_, err := handle(context.Background(), cmd)
		if err == nil || errors.Is(err, saga.ErrPoison) {
			t.Errorf("%s with Redis down: %v, want a transient error", cmd.Type, err)
		}
	}
}
