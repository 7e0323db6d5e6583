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

// coalesced returns a client with a Coalescer of limit 1 and the record of
// its sends, and a key prefix of the test's own.
func coalesced(t *testing.T) (*Coalescer, *redistest.Sends, *redis.Client, string) {
	t.Helper()
	var c *Coalescer
	w, rdb, prefix := recorded(t, func(rdb *redis.Client) { c = NewCoalescer(rdb, 1) })
	return c, w, rdb, prefix
}

// hold puts a call on the wire that stays there until release is called:
// a BLPOP on a list of its own, answered by a push from outside the
// Coalescer. It returns once the call has left.
func hold(t *testing.T, c *Coalescer, rdb *redis.Client, ctx context.Context, prefix string) (release func()) {
	t.Helper()
	list := prefix + ":hold"
	done := make(chan error, 1)
	go func() { done <- rdb.BLPop(c.Context(ctx), 0, list).Err() }()
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.flying != 1 {
			return errors.New("the holding call is not on the wire yet")
		}
		return nil
	})
	return func() {
		t.Helper()
		// Not under the Coalescer's context: it goes by itself at once.
		if err := rdb.RPush(ctx, list, "go").Err(); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("holding call: %v", err)
		}
	}
}

// queued is how many calls wait for the next round.
func (c *Coalescer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.queue)
}

func TestCoalescerSendsALoneCallByItself(t *testing.T) {
	c, w, rdb, prefix := coalesced(t)
	ctx := c.Context(ctxFor(t))
	for range 3 {
		if err := rdb.Incr(ctx, prefix+":a").Err(); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, w, []int{1, 1, 1}, rdb, map[string]int64{prefix + ":a": 3})
}

func TestCoalescerSendsTheCallsThatWaitedAsOneRound(t *testing.T) {
	c, w, rdb, prefix := coalesced(t)
	ctx := ctxFor(t)
	release := hold(t, c, rdb, ctx, prefix)
	const n = 8
	got := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			got[i] = rdb.IncrBy(c.Context(ctx), fmt.Sprintf("%s:k%d", prefix, i), int64(i+1)).Val()
		})
	}
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if q := c.queued(); q != n {
			return fmt.Errorf("%d calls wait for the round, want %d", q, n)
		}
		return nil
	})
	release()
	wg.Wait()

	keys := map[string]int64{}
	for i := range got {
		if got[i] != int64(i+1) {
			t.Errorf("call %d: answer %d, want %d", i, got[i], i+1)
		}
		keys[fmt.Sprintf("%s:k%d", prefix, i)] = int64(i + 1)
	}
	// The hold, the push that released it (by itself), then one round.
	expect(t, w, []int{1, 1, n}, rdb, keys)
	// The round's sender counts itself off just after it answers.
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.flying != 0 {
			return fmt.Errorf("%d rounds still counted on the wire after all were answered", c.flying)
		}
		return nil
	})
}

func TestCoalescerTakesBackACancelledCall(t *testing.T) {
	c, w, rdb, prefix := coalesced(t)
	ctx := ctxFor(t)
	release := hold(t, c, rdb, ctx, prefix)
	cancelWaiting(t, rdb, c.Context(ctx), prefix+":cancelled", func() bool { return c.queued() == 1 })
	release()
	if err := rdb.Incr(c.Context(ctx), prefix+":other").Err(); err != nil {
		t.Fatal(err)
	}
	expect(t, w, []int{1, 1, 1}, rdb, map[string]int64{prefix + ":cancelled": 0, prefix + ":other": 1})
}

// Errors stay with their own call: a round whose one call fails answers
// the others.
func TestCoalescerKeepsEachCallsError(t *testing.T) {
	c, w, rdb, prefix := coalesced(t)
	ctx := ctxFor(t)
	if err := rdb.Set(ctx, prefix+":text", "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	w.Reset()
	release := hold(t, c, rdb, ctx, prefix)
	var bad, good error
	var wg sync.WaitGroup
	wg.Go(func() { bad = rdb.Incr(c.Context(ctx), prefix+":text").Err() })
	wg.Go(func() { good = rdb.Incr(c.Context(ctx), prefix+":n").Err() })
	checkFor(t, 10*time.Second, time.Millisecond, func() error {
		if c.queued() != 2 {
			return errors.New("the calls are not queued yet")
		}
		return nil
	})
	release()
	wg.Wait()
	if bad == nil || good != nil {
		t.Fatalf("INCR of a string: %v (want an error); INCR of a number: %v (want none)", bad, good)
	}
	if s := w.Got(); !slices.Equal(s, []int{1, 1, 2}) {
		t.Fatalf("sends %v, want [1 1 2]", s)
	}
}
