package idempotency

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// newStore returns a Store on the test Redis whose keys all live under a
// prefix of this test's own, plus the raw client to look at them.
func newStore(t testing.TB, cfg Config) (*Store, *redis.Client) {
	t.Helper()
	rdb := redistest.Client(t)
	cfg.Prefix = redistest.Prefix(t)
	var log *zap.Logger
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt)
	}
	s, err := New(cfg, rdb, log)
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

func ctxFor(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// checkFor polls f every interval until it returns nil or timeout passes
// (after nats-server's helper of the same name): tests wait for conditions,
// never for fixed sleeps.
func checkFor(t testing.TB, timeout, interval time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", timeout, err)
		}
		time.Sleep(interval)
	}
}

func getInt(t testing.TB, rdb *redis.Client, key string) int64 {
	t.Helper()
	n, err := rdb.Get(context.Background(), key).Int64()
	if err == redis.Nil {
		return 0
	}
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return n
}
