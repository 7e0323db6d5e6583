package participanttest

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/saga"
)

// Reply is the part of a reply that must be the same for every delivery of
// one command (everything but the message id). It is comparable with ==.
type Reply struct {
	Type        string
	CausationID string
	Step        int
	Attempt     int
	Phase       saga.Phase
	Outcome     saga.Outcome
	Reason      string
	Result      string
}

// ToReply reduces a reply envelope to its Reply.
func ToReply(t testing.TB, e saga.Envelope) Reply {
	t.Helper()
	var b saga.ReplyBody
	if err := json.Unmarshal(e.Payload, &b); err != nil {
		t.Fatalf("reply %s: %v", e.Payload, err)
	}
	return Reply{e.Type, e.CausationID, e.Step, e.Attempt, e.Phase, b.Outcome, b.Reason, string(b.Result)}
}

// Expect checks a reply's type and outcome, and that its reason contains
// reasonHas ("" for any).
func Expect(t testing.TB, r Reply, typ string, outcome saga.Outcome, reasonHas string) {
	t.Helper()
	if r.Type != typ || r.Outcome != outcome || !strings.Contains(r.Reason, reasonHas) {
		t.Errorf("reply %+v, want %s %s with a reason containing %q", r, typ, outcome, reasonHas)
	}
}

// Context returns a context that ends after a minute or with the test.
func Context(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

// Handle runs one command through h and fails the test on an error or
// when h answers no reply.
func Handle(t testing.TB, h saga.CommandHandler, cmd saga.Envelope) Reply {
	t.Helper()
	out, err := h(Context(t), cmd)
	if err != nil {
		t.Fatalf("%s %s: %v", cmd.Type, cmd.SagaID, err)
	}
	if out.Type == "" {
		t.Fatalf("%s %s: no reply", cmd.Type, cmd.SagaID)
	}
	return ToReply(t, out)
}

// Deliver delivers cmd copies times, spread over the handlers (participant
// instances) in turn, all at once when concurrent and one after the other
// otherwise, and checks that every copy got the same reply. It returns the
// replies; an error is reported and leaves that copy's Reply zero.
func Deliver(t testing.TB, cmd saga.Envelope, copies int, concurrent bool, handlers ...saga.CommandHandler) []Reply {
	t.Helper()
	out := make([]Reply, copies)
	deliver := func(k int) {
		env, err := handlers[k%len(handlers)](context.Background(), cmd)
		if err != nil {
			t.Errorf("%s %s: %v", cmd.Type, cmd.SagaID, err)
			return
		}
		out[k] = ToReply(t, env)
	}
	if concurrent {
		var wg sync.WaitGroup
		for k := range copies {
			wg.Go(func() { deliver(k) })
		}
		wg.Wait()
	} else {
		for k := range copies {
			deliver(k)
		}
	}
	for k, r := range out {
		if r != out[0] {
			t.Errorf("%s %s: copy %d answered %+v, copy 0 %+v", cmd.Type, cmd.SagaID, k, r, out[0])
		}
	}
	return out
}

// Seed returns the PRNG seed of a randomized test: SAGAFLOW_TEST_SEED to
// replay a failure, the clock otherwise. It is logged either way.
func Seed(t testing.TB) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SAGAFLOW_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SAGAFLOW_TEST_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with SAGAFLOW_TEST_SEED=%d)", seed, seed)
	return seed
}

// WaitFor polls cond every few milliseconds until it holds, and fails the
// test with what when timeout passes first. (kafkatest.WaitFor polls
// every 100ms, too slowly for a Redis-only test.)
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Watch calls check in a loop on a goroutine of its own until check returns
// false or the returned stop is called; stop waits for the loop to end and
// returns how many checks ran. check must report with t.Error, never
// t.Fatal (it runs off the test's goroutine).
func Watch(check func() bool) (stop func() int64) {
	done := make(chan struct{})
	ended := make(chan struct{})
	var n atomic.Int64
	go func() {
		defer close(ended)
		for {
			select {
			case <-done:
				return
			default:
			}
			if !check() {
				return
			}
			n.Add(1)
		}
	}()
	return func() int64 {
		close(done)
		<-ended
		return n.Load()
	}
}

// Snapshot returns every key under prefix with its content (hashes, sets
// and strings), to show that a command changed nothing.
func Snapshot(t testing.TB, rdb redis.UniversalClient, prefix string) map[string]string {
	t.Helper()
	c := context.Background()
	out := map[string]string{}
	keys, err := rdb.Keys(c, prefix+":*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		switch typ := rdb.Type(c, k).Val(); typ {
		case "hash":
			b, _ := json.Marshal(rdb.HGetAll(c, k).Val())
			out[k] = string(b)
		case "set":
			b, _ := json.Marshal(rdb.SMembers(c, k).Val())
			out[k] = string(b)
		default:
			out[k] = typ + ":" + rdb.Get(c, k).Val()
		}
	}
	return out
}

// HashInt64s reads the named int64 fields of the hash at key straight from
// Redis, not through the participant's package.
func HashInt64s(t testing.TB, rdb redis.UniversalClient, key string, fields ...string) []int64 {
	t.Helper()
	h, err := rdb.HGetAll(context.Background(), key).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]int64, len(fields))
	for i, f := range fields {
		v, err := strconv.ParseInt(h[f], 10, 64)
		if err != nil {
			t.Fatalf("%s field %s = %q", key, f, h[f])
		}
		out[i] = v
	}
	return out
}
