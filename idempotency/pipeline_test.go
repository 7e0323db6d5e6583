package idempotency

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// expect checks what w saw go to Redis, and then the keys' values.
func expect(t *testing.T, w *redistest.Sends, sends []int, rdb *redis.Client, keys map[string]int64) {
	t.Helper()
	if s := w.Got(); !slices.Equal(s, sends) {
		t.Fatalf("sends %v, want %v (a number for each pipeline, 1 for a call by itself)", s, sends)
	}
	for k, want := range keys {
		if got := getInt(t, rdb, k); got != want {
			t.Errorf("%s = %d, want %d", k, got, want)
		}
	}
}

// recorded returns a client on which hooks runs first (it adds the hook
// under test), then the record of what reaches the wire, and a key prefix
// of the test's own.
func recorded(t *testing.T, hooks func(*redis.Client)) (*redistest.Sends, *redis.Client, string) {
	t.Helper()
	rdb := redistest.Client(t)
	hooks(rdb)
	w := &redistest.Sends{}
	rdb.AddHook(w)
	// A warm connection, so no handshake falls into what the tests count.
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	w.Reset()
	return w, rdb, redistest.Prefix(t)
}

// pipelined returns a client with a Pipeliner, the record of its sends,
// and a key prefix of the test's own.
func pipelined(t *testing.T) (*Pipeliner, *redistest.Sends, *redis.Client, string) {
	t.Helper()
	var p *Pipeliner
	w, rdb, prefix := recorded(t, func(rdb *redis.Client) { p = NewPipeliner(rdb, 0) })
	return p, w, rdb, prefix
}

// crewOf runs each f as a member of one crew, all at once, and returns
// when all are done. The members join before any starts, as
// saga.Participant has them.
func crewOf(p *Pipeliner, ctx context.Context, fs ...func(ctx context.Context)) {
	ctx, c := p.Crew(ctx)
	var wg sync.WaitGroup
	for range fs {
		c.Join()
	}
	for _, f := range fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Leave()
			f(ctx)
		}()
	}
	wg.Wait()
}

func TestCrewSendsItsMembersCallsAsOnePipeline(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	ctx := ctxFor(t)
	const n = 8
	got := make([]int64, n)
	fs := make([]func(context.Context), n)
	for i := range fs {
		fs[i] = func(ctx context.Context) {
			got[i] = rdb.IncrBy(ctx, fmt.Sprintf("%s:k%d", prefix, i), int64(i+1)).Val()
		}
	}
	crewOf(p, ctx, fs...)

	keys := map[string]int64{}
	for i := range got {
		if got[i] != int64(i+1) {
			t.Errorf("member %d: answer %d, want %d", i, got[i], i+1)
		}
		keys[fmt.Sprintf("%s:k%d", prefix, i)] = int64(i + 1)
	}
	expect(t, w, []int{n}, rdb, keys)
}

func TestCrewKeepsAMembersOwnCallsInOrder(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	ctx := ctxFor(t)
	k := prefix + ":seq"
	var seq []string
	crewOf(p, ctx,
		func(ctx context.Context) {
			seq = append(seq, rdb.Set(ctx, k, "a", 0).Val())
			seq = append(seq, rdb.Append(ctx, k, "b").String())
			seq = append(seq, rdb.Get(ctx, k).Val())
		},
		func(ctx context.Context) { rdb.Incr(ctx, prefix+":x") },
		func(ctx context.Context) { rdb.Incr(ctx, prefix+":y") },
	)
	// The first round has one call of each member; the first member's
	// second and third calls each wait for the one before, alone.
	expect(t, w, []int{3, 1, 1}, rdb, map[string]int64{prefix + ":x": 1, prefix + ":y": 1})
	if want := []string{"OK", "append " + k + " b: 2", "ab"}; !slices.Equal(seq, want) {
		t.Fatalf("answers %q, want %q", seq, want)
	}
}

func TestCallsOutsideACrewGoAsBefore(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	ctx := ctxFor(t)
	rdb.Incr(ctx, prefix+":a")
	crewOf(p, ctx, func(ctx context.Context) { rdb.Incr(ctx, prefix+":b"); rdb.Incr(ctx, prefix+":b") })
	expect(t, w, []int{1, 1, 1}, rdb, map[string]int64{prefix + ":a": 1, prefix + ":b": 2})
}

// A member held up on something other than Redis (here, until the first
// member's call is answered) must not hold that call forever: the round
// leaves after RoundWait.
func TestCrewRoundLeavesWithoutAMemberThatIsHeldUp(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	ctx := ctxFor(t)
	first := make(chan struct{})
	crewOf(p, ctx,
		func(ctx context.Context) {
			rdb.Incr(ctx, prefix+":first")
			close(first)
		},
		func(ctx context.Context) {
			<-first
			rdb.Incr(ctx, prefix+":second")
		},
	)
	expect(t, w, []int{1, 1}, rdb, map[string]int64{prefix + ":first": 1, prefix + ":second": 1})
}

// A member whose context ends while its call waits for the round gets the
// context's error, and its call is not sent.
func TestCrewTakesBackACancelledCall(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	p.wait = time.Hour // only the members decide when the round leaves
	ctx := ctxFor(t)
	ctx, c := p.Crew(ctx)
	c.Join()
	c.Join()
	waiting := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.round == nil {
			return 0
		}
		return len(c.round.calls)
	}
	cancelWaiting(t, rdb, ctx, prefix+":cancelled", func() bool { return waiting() == 1 })
	c.Leave()
	if err := rdb.Incr(ctx, prefix+":other").Err(); err != nil {
		t.Fatal(err)
	}
	c.Leave()
	expect(t, w, []int{1}, rdb, map[string]int64{prefix + ":cancelled": 0, prefix + ":other": 1})
}

func TestCrewAnswersEachCallItsOwnError(t *testing.T) {
	p, w, rdb, prefix := pipelined(t)
	ctx := ctxFor(t)
	if err := rdb.Set(ctx, prefix+":s", "not a number", 0).Err(); err != nil {
		t.Fatal(err)
	}
	w.Reset()
	var good, bad error
	crewOf(p, ctx,
		func(ctx context.Context) { good = rdb.Incr(ctx, prefix+":n").Err() },
		func(ctx context.Context) { bad = rdb.Incr(ctx, prefix+":s").Err() },
	)
	expect(t, w, []int{2}, rdb, map[string]int64{prefix + ":n": 1})
	var rerr redis.Error
	if good != nil || !errors.As(bad, &rerr) {
		t.Fatalf("errors %v and %v, want nil and a Redis error", good, bad)
	}
}

// cancelWaiting makes an INCR of key under a context of ctx, ends that
// context once waits says the call waits for its round, and checks that
// the call returns the context's error.
func cancelWaiting(t *testing.T, rdb *redis.Client, ctx context.Context, key string, waits func() bool) {
	t.Helper()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- rdb.Incr(actx, key).Err() }()
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if !waits() {
			return errors.New("the call does not wait for its round yet")
		}
		return nil
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v, want context.Canceled", err)
	}
}
