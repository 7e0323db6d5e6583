// Package redistest connects tests to the real Redis that `make up` starts
// and keeps parallel tests out of each other's keys.
//
// The address comes from SAGAFLOW_REDIS (host:port or a redis:// URL),
// default 127.0.0.1:16379. When nothing answers there, tests skip with a
// message saying so, except under CI=true, where an unreachable Redis fails
// the test: a CI run that skipped its integration tests would pass without
// having tested anything.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/embedded"
)

// DefaultAddr is where `make up` starts Redis.
const DefaultAddr = "127.0.0.1:16379"

// Addr returns the Redis address the tests use.
//
// SAGAFLOW_REDIS=embedded runs the tests on one embedded Redis (miniredis)
// for the whole test process: how the demo's embedded mode is shown to run
// the same scripts.
func Addr() string {
	switch a := os.Getenv("SAGAFLOW_REDIS"); a {
	case "":
		return DefaultAddr
	case "embedded":
		embeddedOnce.Do(func() {
			m, err := embedded.Redis()
			if err != nil {
				embeddedAddr = "embedded-redis-failed:0" // the ping then fails with a clear address
				return
			}
			embeddedAddr = m.Addr()
		})
		return embeddedAddr
	default:
		return a
	}
}

var (
	embeddedOnce sync.Once
	embeddedAddr string
)

// Options returns client options for Addr, for tests that need their own
// client (a larger pool for a benchmark). Call Client first so the test skips
// or fails when Redis is down.
func Options(t testing.TB) *redis.Options {
	t.Helper()
	addr := Addr()
	if strings.Contains(addr, "://") {
		opt, err := redis.ParseURL(addr)
		if err != nil {
			t.Fatalf("redistest: SAGAFLOW_REDIS=%q: %v", addr, err)
		}
		return opt
	}
	return &redis.Options{Addr: addr}
}

// Client returns a client connected to the test Redis, closed when the test
// ends. It skips the test (fails it under CI=true) when Redis does not answer
// PING within two seconds.
func Client(t testing.TB) *redis.Client {
	t.Helper()
	opt := Options(t)
	// Fail fast at the dial rather than after go-redis's retries: an absent
	// Redis should cost a test two seconds, not twenty.
	opt.DialTimeout = 2 * time.Second
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		msg := "redistest: no Redis at " + opt.Addr + " (" + err.Error() + "); run `make up` or set SAGAFLOW_REDIS"
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s", msg)
		}
		t.Skipf("%s", msg)
	}
	return rdb
}

// Prefix returns a key prefix no other test, run or process uses
// ("test:<test name>:<random>"), and deletes every key under it when the test
// ends. Build all the test's keys under it.
func Prefix(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "test:" + sanitize(t.Name()) + ":" + hex.EncodeToString(b[:])
	t.Cleanup(func() { cleanup(t, prefix) })
	return prefix
}

// sanitize keeps the test name readable in redis-cli while dropping
// characters that are special in key names (hash tags) or SCAN patterns.
func sanitize(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, name)
}

func cleanup(t testing.TB, prefix string) {
	rdb := redis.NewClient(Options(t))
	defer rdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	iter := rdb.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	flush := func() {
		if len(batch) > 0 {
			if err := rdb.Unlink(ctx, batch...).Err(); err != nil {
				t.Logf("redistest: cleaning up %s: %v", prefix, err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 1000 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		t.Logf("redistest: cleaning up %s: %v", prefix, err)
	}
}

// Sends is a go-redis hook that records what a client sends to Redis: the
// size of every pipeline, and 1 for every command sent by itself. The
// handshake of a new connection is left out. Add it after hooks whose
// effect on the wire a test checks (idempotency.Pipeliner's): it sees what
// they pass on.
type Sends struct {
	mu    sync.Mutex
	sizes []int
}

func (s *Sends) DialHook(next redis.DialHook) redis.DialHook { return next }

func (s *Sends) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd) {
			s.add(1)
		}
		return next(ctx, cmd)
	}
}

func (s *Sends) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !slices.ContainsFunc(cmds, handshake) {
			s.add(len(cmds))
		}
		return next(ctx, cmds)
	}
}

// Got returns the sizes recorded so far, in order; Reset forgets them.
func (s *Sends) Got() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sizes)
}

// Reset forgets what was recorded.
func (s *Sends) Reset() {
	s.mu.Lock()
	s.sizes = nil
	s.mu.Unlock()
}

func (s *Sends) add(n int) {
	s.mu.Lock()
	s.sizes = append(s.sizes, n)
	s.mu.Unlock()
}

// handshake reports whether cmd is part of what go-redis sends on a new
// connection before any call (HELLO, CLIENT SETINFO).
func handshake(cmd redis.Cmder) bool { return cmd.Name() == "hello" || cmd.Name() == "client" }
