package idempotency

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pipeliner sends the Redis calls that a crew of goroutines makes at the
// same time as one pipeline: one write and one read on each side instead of
// one of each per call, and one pass of Redis's event loop (so one fsync
// with appendfsync always) for all of them.
//
// A participant applies a batch's commands concurrently, one goroutine per
// saga (saga.Participant). Each goroutine's calls go through its store's
// ordinary methods, which are not changed: the Pipeliner is a hook on the
// Redis client that holds a call made under a crew's context until every
// member of the crew is waiting on Redis or has left, and then sends what
// they wait for together. So a batch whose sagas each apply one command
// costs one round trip, and a saga with two commands in the batch two: its
// second waits for its first, as the barrier rules need.
//
// A round is sent when its last member arrives, not after a wait, so a
// lone call costs what it cost before. A member that is held up elsewhere
// (on a lock another member holds while it waits on Redis, say) would hold
// the round up with it: when no call has joined the round for a round wait
// (RoundWait by default), it leaves with the calls it has.
//
// Calls made outside a crew's context go to Redis as without the hook.
type Pipeliner struct {
	rdb  redis.UniversalClient
	wait time.Duration
}

// RoundWait is the default round wait: the longest a round waits for its
// last members while no call joins it. It only matters when a member is
// held up on something other than Redis; members doing their own work
// arrive microseconds apart, and so do the goroutines of a batch as they
// start.
const RoundWait = 2 * time.Millisecond

// NewPipeliner adds the hook to rdb, with wait as the round wait (0:
// RoundWait). Call it once per client; the stores whose calls run under a
// crew's context must use that client.
func NewPipeliner(rdb redis.UniversalClient, wait time.Duration) *Pipeliner {
	if wait <= 0 {
		wait = RoundWait
	}
	p := &Pipeliner{rdb: rdb, wait: wait}
	rdb.AddHook(processHook(func(next redis.ProcessHook) redis.ProcessHook {
		return func(ctx context.Context, cmd redis.Cmder) error {
			c, _ := ctx.Value(crewKey{}).(*Crew)
			if c == nil || c.p != p {
				return next(ctx, cmd)
			}
			return c.call(ctx, cmd, next)
		}
	}))
	return p
}

// crewKey is the context key of a crew.
type crewKey struct{}

// Crew returns a crew of no members and the context its members' calls
// must be made under. Every goroutine that calls Redis under that context
// must Join before its first call and Leave after its last; a call from
// one that did not join only makes rounds leave before they are full.
func (p *Pipeliner) Crew(ctx context.Context) (context.Context, *Crew) {
	c := &Crew{p: p, base: ctx}
	return context.WithValue(ctx, crewKey{}, c), c
}

// alone returns ctx without its crew: a call made under it goes to Redis by
// itself. Calls made while a lock is held that other members may wait for
// use it (or the round they wait in would wait for them), and so does what
// the hook itself sends (go-redis runs a new connection's handshake under
// the caller's context, through the same hooks).
func alone(ctx context.Context) context.Context {
	if c, _ := ctx.Value(crewKey{}).(*Crew); c == nil {
		return ctx
	}
	return context.WithValue(ctx, crewKey{}, (*Crew)(nil))
}

// Crew is the goroutines whose Redis calls travel together. Get one from
// Pipeliner.Crew.
type Crew struct {
	p    *Pipeliner
	base context.Context // the rounds run under it: the crew's, without it

	mu      sync.Mutex
	members int    // joined and not left
	round   *round // the calls waiting to be sent
}

// round is the calls of one pipeline and its end.
type round struct {
	calls []redis.Cmder
	done  chan struct{}
	timer *time.Timer // the round wait, from the last call that joined
}

// Join counts one more member: no round is sent until it too waits or has
// left. A goroutine that starts others joins them before they start, or a
// round may leave before they arrive.
func (c *Crew) Join() {
	c.mu.Lock()
	c.members++
	c.mu.Unlock()
}

// Leave counts a member out, and sends the round if everyone left waits in
// it.
func (c *Crew) Leave() {
	c.mu.Lock()
	c.members--
	r := c.takeLocked(false)
	c.mu.Unlock()
	c.send(r)
}

// takeLocked returns the waiting round, and clears it for the next, if
// every member waits in it or if now is set; else nil.
func (c *Crew) takeLocked(now bool) *round {
	r := c.round
	if r == nil || (!now && len(r.calls) < c.members) {
		return nil
	}
	c.round = nil
	if r.timer != nil {
		r.timer.Stop()
	}
	return r
}

// call waits for cmd's round to be sent and answered. next is the rest of
// the hook chain, used for a round of one call.
func (c *Crew) call(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
	c.mu.Lock()
	r := c.round
	if r == nil {
		r = &round{done: make(chan struct{})}
		c.round = r
	}
	r.calls = append(r.calls, cmd)
	full := c.takeLocked(false)
	if full == nil {
		if r.timer == nil {
			r.timer = time.AfterFunc(c.p.wait, func() { c.expire(r) })
		} else {
			// A firing already under way finds this call in the round.
			r.timer.Reset(c.p.wait)
		}
	}
	c.mu.Unlock()
	if full != nil {
		if len(full.calls) == 1 {
			// Alone: the plain call, with go-redis's own retries.
			err := next(alone(ctx), cmd)
			close(full.done)
			return err
		}
		c.send(full)
		return cmd.Err()
	}
	select {
	case <-r.done:
		return cmd.Err()
	case <-ctx.Done():
		// Take the call back if its round has not left. Once it has, the
		// answer is awaited all the same (the pipeline writes into cmd);
		// the crew's context, which this one normally is, bounds the wait.
		c.mu.Lock()
		left := c.round != r
		if !left {
			r.calls = slices.DeleteFunc(r.calls, func(q redis.Cmder) bool { return q == cmd })
		}
		c.mu.Unlock()
		if left {
			<-r.done
			return cmd.Err()
		}
		return ctx.Err()
	}
}

// expire sends r with the calls it has, if it still waits: no call joined
// it for the round wait.
func (c *Crew) expire(r *round) {
	c.mu.Lock()
	var late *round
	if c.round == r {
		late = c.takeLocked(true)
	}
	c.mu.Unlock()
	c.send(late)
}

// send runs a round as one pipeline; every call's answer or error is set on
// its command. A nil round sends nothing.
func (c *Crew) send(r *round) {
	if r == nil {
		return
	}
	defer close(r.done)
	if len(r.calls) == 0 {
		return
	}
	// Under the crew's base context, not a member's: the round is
	// everyone's. Exec's error is only the first of the calls' own.
	pipe := c.p.rdb.Pipeline()
	for _, cmd := range r.calls {
		_ = pipe.Process(c.base, cmd)
	}
	_, _ = pipe.Exec(c.base)
}

// processHook is a go-redis hook that wraps single calls only: the
// Pipeliner and the Coalescer route calls made under their contexts, and
// leave dialling and pipelines (their own rounds among them) alone.
type processHook func(next redis.ProcessHook) redis.ProcessHook

func (h processHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h processHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h processHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return h(next) }
