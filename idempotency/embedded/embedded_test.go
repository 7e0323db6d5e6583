package embedded_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/embedded"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// target is one Redis the suite runs on; every key a test writes starts with
// prefix, so the suite can share the real Redis with tests running in
// parallel.
type target struct {
	rdb      *redis.Client
	ctx      context.Context
	prefix   string
	embedded bool
}

func (tg target) key(name string) string { return tg.prefix + ":" + name }

// suite is what the idempotency scripts need from Redis, each as Redis 7
// answers it. It runs on the real Redis (redistest) and on the embedded one:
// a difference found here is a difference the demo would show.
var suite = []struct {
	name string
	test func(t *testing.T, tg target)
}{
	{"Lua", testLua},
	{"ScriptLoadEvalShaNoScript", testScriptLoadEvalShaNoScript},
	{"ScriptErrors", testScriptErrors},
	{"ScriptsAreAtomic", testScriptsAreAtomic},
	{"TTLsExpireInRealTime", testTTLsExpireInRealTime},
}

// TestReal runs the suite on the Redis of `make up` (SAGAFLOW_REDIS); it
// skips when none answers, except under CI=true, where it fails.
func TestReal(t *testing.T) {
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.test(t, target{rdb: redistest.Client(t), ctx: ctx, prefix: redistest.Prefix(t)})
		})
	}
}

// TestEmbedded runs the suite on a fresh embedded Redis per test.
func TestEmbedded(t *testing.T) {
	for _, c := range suite {
		t.Run(c.name, func(t *testing.T) {
			m, err := embedded.Redis()
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.test(t, target{rdb: rdb, ctx: ctx, prefix: "test", embedded: true})
		})
	}
}

func testLua(t *testing.T, tg target) {
	rdb, ctx := tg.rdb, tg.ctx
	cases := []struct {
		name   string
		src    string
		keys   []string
		args   []any
		want   any
		wantFn func(t *testing.T, got any)
		// embeddedSkip is set where the embedded Redis differs from Redis 7.
		embeddedSkip string
	}{
		{name: "redis.call writes and reads",
			src:  `redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])`,
			keys: []string{tg.key("call")}, args: []any{"v"}, want: "v"},
		{name: "cjson round trip",
			src:  `local t = cjson.decode(ARGV[1]); t.n = t.n + 1; return cjson.decode(cjson.encode(t)).n`,
			args: []any{`{"n": 41, "s": "x"}`}, want: int64(42)},
		{name: "cjson encodes an object",
			src:  `return cjson.encode({ok = false, reason = 'insufficient stock'})`,
			want: nil, wantFn: func(t *testing.T, got any) {
				s, _ := got.(string)
				if s != `{"ok":false,"reason":"insufficient stock"}` && s != `{"reason":"insufficient stock","ok":false}` {
					t.Errorf("got %q", s)
				}
			}},
		{name: "cjson encodes an array",
			src: `return cjson.encode({1, 2, 'three'})`, want: `[1,2,"three"]`},
		{name: "cjson decodes null, nested, bool",
			src:  `local t = cjson.decode(ARGV[1]); return {tostring(t.a == cjson.null), t.b.c, tostring(t.d)}`,
			args: []any{`{"a": null, "b": {"c": "deep"}, "d": true}`}, want: []any{"true", "deep", "true"}},
		{name: "a missing key is false in Lua",
			src:  `local v = redis.call('GET', KEYS[1]); if v == false then return 'false' end; return type(v)`,
			keys: []string{tg.key("missing")}, want: "false"},
		{name: "HMGET of missing fields gives false",
			src:  `local r = redis.call('HMGET', KEYS[1], 'a', 'b'); return {tostring(r[1]), tostring(r[2]), #r}`,
			keys: []string{tg.key("hash")}, want: []any{"false", "false", int64(2)}},
		{name: "a table reply keeps integers and strings, stops at nil",
			src: `return {1, 'outcome', 'kind', nil, 'after'}`, want: []any{int64(1), "outcome", "kind"}},
		{name: "HINCRBY, HSET, PEXPIRE, PTTL",
			src: `local n = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'state', 'held', 'tag', ARGV[1])
redis.call('PEXPIRE', KEYS[1], 60000)
local ttl = redis.call('PTTL', KEYS[1])
return {n, redis.call('HGET', KEYS[1], 'tag'), tostring(ttl > 59000 and ttl <= 60000)}`,
			keys: []string{tg.key("lease")}, args: []any{"tag-1"}, want: []any{int64(1), "tag-1", "true"}},
		{name: "SET PX and EXISTS",
			src:  `redis.call('SET', KEYS[1], 'x', 'PX', 60000); return redis.call('EXISTS', KEYS[1])`,
			keys: []string{tg.key("px")}, want: int64(1)},
		{name: "tonumber of ARGV and an absent GET",
			src:  `return tonumber(redis.call('GET', KEYS[1]) or '0') + tonumber(ARGV[1])`,
			keys: []string{tg.key("absent")}, args: []any{"7"}, want: int64(7)},
		{name: "status_reply",
			src: `return redis.status_reply('OK')`, want: "OK"},

		// Where miniredis v2.40 differs from Redis 7. Scripts that must
		// run the same on both stay away from these.
		{name: "cjson encodes an empty table as an object",
			src: `return cjson.encode({})`, want: "{}",
			embeddedSkip: "miniredis's cjson encodes an empty table as [] where Redis's gives {}"},
		{name: "cjson keeps a null through decode and encode",
			src: `return cjson.encode(cjson.decode('{"a":[1,{"b":null}]}'))`, want: `{"a":[1,{"b":null}]}`,
			embeddedSkip: "miniredis's cjson.null is an empty table, so a decoded null encodes back as []"},
		{name: "cjson writes 14 significant digits",
			src: `return cjson.encode({100000000000000, 1234567})`, want: `[1e+14,1234567]`,
			embeddedSkip: "miniredis's cjson writes every integer exactly; Redis's rounds from 1e14 up (pass such amounts as strings)"},
		{name: "bit, struct and cmsgpack are loaded",
			src: `return type(bit) .. ' ' .. type(struct) .. ' ' .. type(cmsgpack)`, want: "table table table",
			embeddedSkip: "miniredis loads neither bit, struct nor cmsgpack; a script that touches them fails"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if tg.embedded && c.embeddedSkip != "" {
				t.Skip("embedded Redis: " + c.embeddedSkip)
			}
			got, err := rdb.Eval(ctx, c.src, c.keys, c.args...).Result()
			if err != nil {
				t.Fatalf("EVAL: %v", err)
			}
			if c.wantFn != nil {
				c.wantFn(t, got)
				return
			}
			if !equal(got, c.want) {
				t.Errorf("got %#v, want %#v", got, c.want)
			}
		})
	}
}

func equal(a, b any) bool {
	as, ok1 := a.([]any)
	bs, ok2 := b.([]any)
	if ok1 != ok2 {
		return false
	}
	if !ok1 {
		return a == b
	}
	if len(as) != len(bs) {
		return false
	}
	for i := range as {
		if as[i] != bs[i] {
			return false
		}
	}
	return true
}

// The Store loads its scripts once and calls them by digest; a NOSCRIPT
// reply makes it load them again.
func testScriptLoadEvalShaNoScript(t *testing.T, tg target) {
	rdb, ctx := tg.rdb, tg.ctx
	src := `return redis.call('INCRBY', KEYS[1], ARGV[1])`
	sha, err := rdb.ScriptLoad(ctx, src).Result()
	if err != nil {
		t.Fatalf("SCRIPT LOAD: %v", err)
	}
	sum := sha1.Sum([]byte(src))
	if want := hex.EncodeToString(sum[:]); sha != want {
		t.Errorf("SCRIPT LOAD digest %s, want the SHA-1 of the source %s", sha, want)
	}
	for want := int64(5); want <= 10; want += 5 {
		n, err := rdb.EvalSha(ctx, sha, []string{tg.key("n")}, 5).Int64()
		if err != nil || n != want {
			t.Fatalf("EVALSHA = %d, %v; want %d", n, err, want)
		}
	}
	exists, err := rdb.ScriptExists(ctx, sha, "0000000000000000000000000000000000000000").Result()
	if err != nil || len(exists) != 2 || !exists[0] || exists[1] {
		t.Errorf("SCRIPT EXISTS = %v, %v; want [true false]", exists, err)
	}

	noScript := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, redis.ErrNoScript) && !redis.HasErrorPrefix(err, "NOSCRIPT") {
			t.Errorf("%s: got %v, want a NOSCRIPT reply", what, err)
		}
	}
	_, err = rdb.EvalSha(ctx, "0123456789abcdef0123456789abcdef01234567", []string{tg.key("n")}, 1).Result()
	noScript("EVALSHA of an unknown digest", err)
	if !tg.embedded {
		// Flushing the shared Redis would pull the scripts from under the
		// tests of other packages running in parallel.
		return
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	_, err = rdb.EvalSha(ctx, sha, []string{tg.key("n")}, 1).Result()
	noScript("EVALSHA after SCRIPT FLUSH", err)
	// go-redis's Script.Run is EVALSHA, then EVAL on NOSCRIPT.
	if n, err := redis.NewScript(src).Run(ctx, rdb, []string{tg.key("n")}, 1).Int64(); err != nil || n != 11 {
		t.Errorf("Script.Run = %d, %v; want 11", n, err)
	}
}

// What a failing script answers: the idempotency Store classifies any error
// reply that is not a transient one as a script failure (poison).
func testScriptErrors(t *testing.T, tg target) {
	rdb, ctx := tg.rdb, tg.ctx
	for _, c := range []struct{ name, src string }{
		{"error_reply", `return redis.error_reply('idempotency: bad outcome')`},
		{"runtime error", `local t = nil; return t.x`},
		{"redis.call on the wrong type", `redis.call('SET', KEYS[1], 'x'); return redis.call('HGET', KEYS[1], 'f')`},
		{"syntax error", `return (`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := rdb.Eval(ctx, c.src, []string{tg.key("err:" + c.name)}).Result()
			var rerr redis.Error
			if !errors.As(err, &rerr) {
				t.Fatalf("got %v (%T), want an error reply", err, err)
			}
			t.Logf("%s", err)
		})
	}
	t.Run("an error of redis.call keeps its prefix", func(t *testing.T) {
		// The Store tells transient errors (OOM, BUSY, ...) from poison by
		// this prefix.
		if tg.embedded {
			t.Skip("embedded Redis: miniredis reports an error raised by redis.call as " +
				"'ERR Error compiling script ...', losing its prefix (WRONGTYPE here); it never answers OOM, BUSY or LOADING either")
		}
		_, err := rdb.Eval(ctx, `redis.call('SET', KEYS[1], 'x'); return redis.call('HGET', KEYS[1], 'f')`,
			[]string{tg.key("err:prefix")}).Result()
		if !redis.HasErrorPrefix(err, "WRONGTYPE") {
			t.Errorf("got %v, want a WRONGTYPE reply", err)
		}
	})
	// A pcall catches the error of a redis.call, as on Redis.
	got, err := rdb.Eval(ctx, `redis.call('SET', KEYS[1], 'x')
local ok = redis.pcall('HGET', KEYS[1], 'f')
if type(ok) == 'table' and ok.err then return 'caught' end
return 'not caught'`, []string{tg.key("pcall")}).Result()
	if err != nil || got != "caught" {
		t.Errorf("pcall: %v, %v; want caught", got, err)
	}
}

// Redis runs one script at a time: no other command sees it half done.
func testScriptsAreAtomic(t *testing.T, tg target) {
	rdb, ctx := tg.rdb, tg.ctx
	src := redis.NewScript(`local v = tonumber(redis.call('GET', KEYS[1]) or '0')
redis.call('SET', KEYS[1], v + 1)
return v + 1`)
	const workers, each = 8, 200
	errs := make(chan error, workers)
	for range workers {
		go func() {
			for range each {
				if err := src.Run(ctx, rdb, []string{tg.key("atomic")}).Err(); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := rdb.Get(ctx, tg.key("atomic")).Int(); n != workers*each {
		t.Errorf("counter = %d, want %d: read-modify-write scripts interleaved", n, workers*each)
	}
}

// TTLs run down with the wall clock, so leases and dedup records expire.
func testTTLsExpireInRealTime(t *testing.T, tg target) {
	rdb, ctx := tg.rdb, tg.ctx
	if err := rdb.Set(ctx, tg.key("ttl"), "x", 150*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Eval(ctx, `redis.call('HSET', KEYS[1], 'a', 1); return redis.call('PEXPIRE', KEYS[1], 150)`,
		[]string{tg.key("ttl:hash")}).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, err := rdb.Exists(ctx, tg.key("ttl"), tg.key("ttl:hash")).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d keys with a 150ms TTL still exist after 5s", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkCommandWithManyKeys times one command on an embedded Redis that
// holds 100,000 keys with TTLs, what a demo holds after some thousands of
// orders. With miniredis's ClockTTL every command walked and sorted all of
// them (tens of milliseconds); here the clock moves apart from the commands.
func BenchmarkCommandWithManyKeys(b *testing.B) {
	m, err := embedded.Redis()
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for i := range 100_000 {
		pipe.Set(ctx, fmt.Sprintf("k%d", i), "v", time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if err := rdb.Incr(ctx, "counter").Err(); err != nil {
			b.Fatal(err)
		}
	}
}
