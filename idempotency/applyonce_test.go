package idempotency

import (
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// incrBody adds ARGV[1] to KEYS[1] and reports the new value: an effect
// whose double application shows in the counter.
const incrBody = `local n = redis.call('INCRBY', KEYS[1], ARGV[1])
return cjson.encode({ok = true, value = n})`

// checkOnce checks the results of many calls with one dedup key against the
// contract: identical outcomes, exactly one non-repeat.
func checkOnce(t *testing.T, results []Result) {
	t.Helper()
	firsts := 0
	for i, r := range results {
		if !r.Repeat {
			firsts++
		}
		if r.Outcome != results[0].Outcome {
			t.Errorf("call %d outcome %q, want %q", i, r.Outcome, results[0].Outcome)
		}
		if r.Hanging || r.Null {
			t.Errorf("call %d: apply-once result %+v has barrier flags", i, r)
		}
	}
	if firsts != 1 {
		t.Errorf("%d calls with Repeat=false, want exactly 1", firsts)
	}
}

func TestApplyOnceSequential(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	sc := s.Script("test.incr", incrBody)
	counter := s.cfg.Prefix + ":counter"
	key := Key(s.cfg.Prefix, "saga-1", "step-1", "incr")

	const n = 20
	results := make([]Result, n)
	for i := range n {
		r, err := sc.Apply(ctx, key, []string{counter}, 5)
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		results[i] = r
	}
	checkOnce(t, results)
	if results[0].Repeat {
		t.Error("the first sequential call is a repeat")
	}
	if got := getInt(t, rdb, counter); got != 5 {
		t.Errorf("counter = %d, want 5 (one effect)", got)
	}
	var out struct {
		OK    bool  `json:"ok"`
		Value int64 `json:"value"`
	}
	if err := results[n-1].Decode(&out); err != nil || !out.OK || out.Value != 5 {
		t.Errorf("outcome %q decoded to %+v, %v", results[n-1].Outcome, out, err)
	}
}

func TestApplyOnceConcurrent(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	sc := s.Script("test.incr", incrBody)
	counter := s.cfg.Prefix + ":counter"

	const sagas, workers = 20, 16
	for saga := range sagas {
		key := Key(s.cfg.Prefix, "saga-"+strconv.Itoa(saga), "reserve", "incr")
		results := make([]Result, workers)
		errs := make([]error, workers)
		var start, wg sync.WaitGroup
		start.Add(1)
		for w := range workers {
			wg.Go(func() {
				start.Wait()
				results[w], errs[w] = sc.Apply(ctx, key, []string{counter}, 1)
			})
		}
		start.Done()
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		checkOnce(t, results)
	}
	if got := getInt(t, rdb, counter); got != sagas {
		t.Errorf("counter = %d, want %d (one effect per saga)", got, sagas)
	}
}

// TestApplyOnceRefusalIsRecorded: a business refusal is an outcome like any
// other. A redelivery after the state changed must get the same refusal, or
// the participant would send two different replies to one command.
func TestApplyOnceRefusalIsRecorded(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	take := s.Script("test.take", `local have = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if have < want then return cjson.encode({ok = false, reason = 'insufficient stock'}) end
redis.call('DECRBY', KEYS[1], want)
return cjson.encode({ok = true})`)
	stock := s.cfg.Prefix + ":stock"
	key := Key(s.cfg.Prefix, "saga", "reserve", "take")

	first, err := take.Apply(ctx, key, []string{stock}, 3)
	if err != nil {
		t.Fatal(err)
	}
	rdb.Set(ctx, stock, 10, 0)
	again, err := take.Apply(ctx, key, []string{stock}, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Repeat || again.Outcome != first.Outcome {
		t.Errorf("redelivery got %+v, want the recorded refusal %q", again, first.Outcome)
	}
	if got := getInt(t, rdb, stock); got != 10 {
		t.Errorf("stock = %d, want 10 untouched", got)
	}
}

// TestApplyOnceDomainSeesShiftedKeysAndArgs: the body's KEYS and ARGV are the
// caller's, from index 1; the dedup key and TTL never show.
func TestApplyOnceDomainSeesShiftedKeysAndArgs(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	ctx := ctxFor(t)
	echo := s.Script("test.echo", `return cjson.encode({keys = KEYS, argv = ARGV})`)
	p := s.cfg.Prefix
	r, err := echo.Apply(ctx, Key(p, "s", "1", "echo"), []string{p + ":a", p + ":b"}, "x", 7)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Keys []string `json:"keys"`
		Argv []string `json:"argv"`
	}
	if err := r.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got.Keys) != 2 || got.Keys[0] != p+":a" || got.Keys[1] != p+":b" {
		t.Errorf("body saw KEYS %q", got.Keys)
	}
	if len(got.Argv) != 2 || got.Argv[0] != "x" || got.Argv[1] != "7" {
		t.Errorf("body saw ARGV %q", got.Argv)
	}
}

// TestApplyOnceAfterScriptFlush: a Redis restart or SCRIPT FLUSH empties the
// script cache; the next call gets NOSCRIPT, loads again and goes on.
func TestApplyOnceAfterScriptFlush(t *testing.T) {
	// Not parallel: SCRIPT FLUSH is server-wide. Other tests running at the
	// same time would survive it (that is the point), but this test must see
	// its own NOSCRIPT.
	core, logs := observer.New(zap.InfoLevel)
	s, rdb := newStore(t, Config{})
	s.log = zap.New(core)
	ctx := ctxFor(t)
	sc := s.Script("test.incr", incrBody)
	counter := s.cfg.Prefix + ":counter"
	k1 := Key(s.cfg.Prefix, "saga", "1", "incr")
	k2 := Key(s.cfg.Prefix, "saga", "2", "incr")

	if _, err := sc.Apply(ctx, k1, []string{counter}, 1); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	r, err := sc.Apply(ctx, k2, []string{counter}, 1)
	if err != nil {
		t.Fatalf("after SCRIPT FLUSH: %v", err)
	}
	if r.Repeat {
		t.Error("new key after flush answered as a repeat")
	}
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if r, err := sc.Apply(ctx, k1, []string{counter}, 1); err != nil || !r.Repeat {
		t.Fatalf("repeat after flush: %+v, %v", r, err)
	}
	if got := getInt(t, rdb, counter); got != 2 {
		t.Errorf("counter = %d, want 2", got)
	}
	if n := logs.FilterMessage("redis lost its script cache, loading again").Len(); n != 2 {
		t.Errorf("%d reloads logged, want 2", n)
	}
}

func TestApplyOnceTTL(t *testing.T) {
	t.Parallel()
	for _, ttl := range []time.Duration{0, 90 * time.Second} {
		s, rdb := newStore(t, Config{TTL: ttl})
		ctx := ctxFor(t)
		sc := s.Script("test.incr", incrBody)
		key := Key(s.cfg.Prefix, "saga", "1", "incr")
		if _, err := sc.Apply(ctx, key, []string{s.cfg.Prefix + ":counter"}, 1); err != nil {
			t.Fatal(err)
		}
		want := s.TTL()
		got, err := rdb.PTTL(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if got <= want-time.Minute || got > want {
			t.Errorf("config TTL %v: dedup key PTTL %v, want about %v", ttl, got, want)
		}
	}
}

func TestApplyOnceScriptErrors(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	p := s.cfg.Prefix

	if err := s.Script("test.syntax", `return (`).Load(ctx); !errors.Is(err, ErrScript) {
		t.Errorf("syntax error: Load = %v, want ErrScript", err)
	}
	if _, err := s.Script("test.syntax", `return (`).Apply(ctx, Key(p, "s", "1", "x"), nil); !errors.Is(err, ErrScript) {
		t.Errorf("syntax error: Apply = %v, want ErrScript", err)
	}
	key := Key(p, "s", "1", "number")
	if _, err := s.Script("test.number", `return 42`).Apply(ctx, key, nil); !errors.Is(err, ErrScript) {
		t.Errorf("non-string outcome: %v, want ErrScript", err)
	}
	if n, _ := rdb.Exists(ctx, key).Result(); n != 0 {
		t.Error("a failed body left a dedup record")
	}
	rdb.LPush(ctx, p+":list", "x")
	if _, err := s.Script("test.incr", incrBody).Apply(ctx, Key(p, "s", "1", "wrongtype"), []string{p + ":list"}, 1); !errors.Is(err, ErrScript) {
		t.Errorf("WRONGTYPE: %v, want ErrScript", err)
	}
	if _, err := s.Script("test.incr", incrBody).Apply(ctx, "", nil); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("empty key: %v, want ErrInvalidKey", err)
	}
}

func TestApplyOnceUnavailable(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens, the dial is refused at once.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer rdb.Close()
	s, err := New(Config{}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Script("test.incr", incrBody).Apply(ctxFor(t), "k", []string{"c"}, 1)
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("Apply on a dead Redis: %v, want ErrUnavailable", err)
	}
}

func TestWrappedScriptsAreWellFormedJSONOutcomes(t *testing.T) {
	for _, o := range []string{HangingOutcome, NullOutcome} {
		var v map[string]any
		if err := json.Unmarshal([]byte(o), &v); err != nil {
			t.Errorf("%s: %v", o, err)
		}
		if _, ok := v["ok"].(bool); !ok {
			t.Errorf("%s has no boolean ok", o)
		}
	}
}
