package orders

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// get returns the value kept for id, if it has not expired at now: the
// cache's first half, for the tests of expiry.
func (c *lookupCache[V]) get(id string, now time.Time) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[id]
	if !ok || !now.Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// put keeps v for id as a read at now would.
func (c *lookupCache[V]) put(id string, v V, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.putLocked(id, v, now)
}

// countingCatalog counts the reads that reach the catalogue.
type countingCatalog struct {
	memCatalog
	reads int
}

func (c *countingCatalog) Product(ctx context.Context, id string) (Product, error) {
	c.reads++
	return c.memCatalog.Product(ctx, id)
}

func TestLookupReadsAFoundProductOncePerTTL(t *testing.T) {
	cat := &countingCatalog{memCatalog: memCatalog{"tea": {ID: "tea", PriceCents: 450}}}
	s := &Service{deps: Deps{Catalog: cat}, products: newLookupCache[Product](time.Hour)}
	ctx := context.Background()
	for range 3 {
		if p, err := s.product(ctx, "tea"); err != nil || p.PriceCents != 450 {
			t.Fatalf("tea: %+v, %v", p, err)
		}
	}
	if cat.reads != 1 {
		t.Fatalf("three lookups of tea read the catalogue %d times, want 1", cat.reads)
	}
	// What was not found is read again every time: a product added a moment
	// later is found at once.
	if _, err := s.product(ctx, "mate"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("mate: %v, want ErrNotFound", err)
	}
	cat.memCatalog["mate"] = Product{ID: "mate", PriceCents: 300}
	if p, err := s.product(ctx, "mate"); err != nil || p.PriceCents != 300 {
		t.Fatalf("mate once added: %+v, %v", p, err)
	}
	if cat.reads != 3 {
		t.Fatalf("catalogue reads %d, want 3", cat.reads)
	}
}

func TestLookupCacheExpiresAndStaysBounded(t *testing.T) {
	c := newLookupCache[int](time.Second)
	t0 := time.Now()
	c.put("a", 1, t0)
	if v, ok := c.get("a", t0.Add(999*time.Millisecond)); !ok || v != 1 {
		t.Fatalf("a within its TTL: %d, %v", v, ok)
	}
	if _, ok := c.get("a", t0.Add(time.Second)); ok {
		t.Fatal("a is still served at its expiry")
	}

	for i := range maxCached {
		c.put(fmt.Sprint(i), i, t0)
	}
	c.put("late", 1, t0) // full, nothing expired: not kept
	if _, ok := c.get("late", t0); ok || len(c.entries) != maxCached {
		t.Fatalf("a full cache took a new entry: %d entries", len(c.entries))
	}
	c.put("later", 2, t0.Add(2*time.Second)) // the rest expired: dropped, then kept
	if v, ok := c.get("later", t0.Add(2*time.Second)); !ok || v != 2 || len(c.entries) != 1 {
		t.Fatalf("after the sweep: %d, %v, %d entries", v, ok, len(c.entries))
	}

	off := newLookupCache[int](-1)
	off.put("a", 1, t0)
	if _, ok := off.get("a", t0); ok {
		t.Fatal("a cache with a negative TTL kept a value")
	}
}

func TestLookupMissesOfOneIDShareOneRead(t *testing.T) {
	c := newLookupCache[int](time.Hour)
	var reads atomic.Int32
	release := make(chan struct{})
	load := func(ctx context.Context, id string) (int, error) {
		reads.Add(1)
		<-release
		if id == "gone" {
			return 0, ErrNotFound
		}
		return 7, nil
	}
	for _, id := range []string{"tea", "gone"} {
		var wg sync.WaitGroup
		got := make([]error, 8)
		vals := make([]int, 8)
		for i := range got {
			wg.Go(func() { vals[i], got[i] = c.read(context.Background(), id, load) })
		}
		// Every other one is waiting for the first one's read.
		waitFor(t, c, id, 7)
		release <- struct{}{}
		wg.Wait()
		for i := range got {
			if id == "tea" && (got[i] != nil || vals[i] != 7) || id == "gone" && !errors.Is(got[i], ErrNotFound) {
				t.Fatalf("%s, request %d: %d, %v", id, i, vals[i], got[i])
			}
		}
		if n := reads.Swap(0); n != 1 {
			t.Fatalf("8 requests for %s at once read it %d times, want 1", id, n)
		}
	}

	// A read whose own request went away does not fail the others: they
	// read for themselves.
	ctx, cancel := context.WithCancel(context.Background())
	leader := make(chan error, 1)
	go func() {
		_, err := c.read(ctx, "mate", func(ctx context.Context, _ string) (int, error) {
			<-ctx.Done()
			return 0, ctx.Err()
		})
		leader <- err
	}()
	waitFor(t, c, "mate", 0)
	follower := make(chan int, 1)
	go func() {
		v, _ := c.read(context.Background(), "mate", func(context.Context, string) (int, error) { return 3, nil })
		follower <- v
	}()
	waitFor(t, c, "mate", 1)
	cancel()
	if err := <-leader; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled read: %v", err)
	}
	if v := <-follower; v != 3 {
		t.Fatalf("the read waiting for a cancelled one got %d, want its own 3", v)
	}
}

// waitFor waits until a read of id is in progress with n requests waiting
// for it.
func waitFor[V any](t *testing.T, c *lookupCache[V], id string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.mu.Lock()
		p, ok := c.loading[id]
		got := ok && p.waiters == n
		c.mu.Unlock()
		if got {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no read of %s with %d waiting within 10s", id, n)
		}
		time.Sleep(time.Millisecond)
	}
}
