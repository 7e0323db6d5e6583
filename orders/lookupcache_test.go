package orders

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

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
