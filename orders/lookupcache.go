package orders

import (
	"context"
	"sync"
	"time"
)

// maxCached bounds each lookup cache. Far above any demo or bench catalogue;
// a larger one is read from Redis for the entries that do not fit.
const maxCached = 10_000

// lookupCache keeps what lookup read, the products and customers of recent
// orders, for Config.LookupCache. Under load most orders name the same few
// products and customers, and reading them for every order was two of the
// four Redis round trips of a POST /orders. Only what was found is kept: a
// product or customer added a moment ago is found at once, and one that is
// gone is refused no later than a TTL after.
type lookupCache[V any] struct {
	ttl time.Duration // <= 0: nothing is kept

	mu      sync.Mutex
	entries map[string]cachedValue[V]
}

type cachedValue[V any] struct {
	v       V
	expires time.Time
}

func newLookupCache[V any](ttl time.Duration) *lookupCache[V] {
	return &lookupCache[V]{ttl: ttl, entries: map[string]cachedValue[V]{}}
}

// read returns the value kept for id, or what load reads, which it keeps
// unless load failed (not found is a failure: it is not kept).
func (c *lookupCache[V]) read(ctx context.Context, id string, load func(context.Context, string) (V, error)) (V, error) {
	now := time.Now()
	if v, ok := c.get(id, now); ok {
		return v, nil
	}
	v, err := load(ctx, id)
	if err == nil {
		c.put(id, v, now)
	}
	return v, err
}

// get returns the value kept for id, if it has not expired at now.
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

// put keeps v for id until now + TTL. A full cache first drops what has
// expired, and keeps nothing new if that freed no room.
func (c *lookupCache[V]) put(id string, v V, now time.Time) {
	if c.ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[id]; !ok && len(c.entries) >= maxCached {
		for k, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, k)
			}
		}
		if len(c.entries) >= maxCached {
			return
		}
	}
	c.entries[id] = cachedValue[V]{v: v, expires: now.Add(c.ttl)}
}
