package orders

import (
	"context"
	"errors"
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
	// loading holds the read in progress for an id, which the requests
	// that miss the same id meanwhile wait for: when an entry expires under
	// load, one request reads it, not every one that comes before it is back.
	loading map[string]*pendingRead[V]
}

type cachedValue[V any] struct {
	v       V
	expires time.Time
}

type pendingRead[V any] struct {
	done    chan struct{} // closed when v and err are set
	v       V
	err     error
	waiters int // the requests waiting for it, under lookupCache.mu
}

func newLookupCache[V any](ttl time.Duration) *lookupCache[V] {
	return &lookupCache[V]{ttl: ttl, entries: map[string]cachedValue[V]{}, loading: map[string]*pendingRead[V]{}}
}

// read returns the value kept for id, or what load reads, which it keeps
// unless load failed (not found is a failure: it is not kept). A read of
// the same id already in progress is waited for instead of repeated; if it
// failed because its own request went away, this one reads for itself.
func (c *lookupCache[V]) read(ctx context.Context, id string, load func(context.Context, string) (V, error)) (V, error) {
	now := time.Now()
	c.mu.Lock()
	if e, ok := c.entries[id]; ok && now.Before(e.expires) {
		c.mu.Unlock()
		return e.v, nil
	}
	if c.ttl <= 0 {
		c.mu.Unlock()
		return load(ctx, id)
	}
	if p, ok := c.loading[id]; ok {
		p.waiters++
		c.mu.Unlock()
		select {
		case <-p.done:
			if p.err == nil || (!errors.Is(p.err, context.Canceled) && !errors.Is(p.err, context.DeadlineExceeded)) {
				return p.v, p.err
			}
			return load(ctx, id)
		case <-ctx.Done():
			var zero V
			return zero, ctx.Err()
		}
	}
	p := &pendingRead[V]{done: make(chan struct{})}
	c.loading[id] = p
	c.mu.Unlock()

	p.v, p.err = load(ctx, id)
	c.mu.Lock()
	delete(c.loading, id)
	if p.err == nil {
		c.putLocked(id, p.v, now)
	}
	c.mu.Unlock()
	close(p.done)
	return p.v, p.err
}

// putLocked keeps v for id until now + TTL; c.mu is held. A full cache
// first drops what has expired, and keeps nothing new if that freed no room.
func (c *lookupCache[V]) putLocked(id string, v V, now time.Time) {
	if c.ttl <= 0 {
		return
	}
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
