package idempotency

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Coalescer sends the Redis calls of independent goroutines (an HTTP
// server's requests, say) that meet in time as one pipeline, without
// waiting for any of them: a call goes out by itself at once while fewer
// than its limit of rounds are on the wire, and otherwise waits for the next
// round to leave, which takes every call waiting then. So a lone call costs
// what it cost before, and under load the calls that pile up behind the
// rounds in flight cost one write and one read on each side together
// instead of one of each.
//
// It is the Pipeliner's idea for goroutines that do not know one another: a
// crew knows when its last member has called, and these never do, so they
// do not wait for one another; they only share the wait they would have had
// anyway. go-redis's AutoPipeline guesses instead (it waits for expected
// arrivals), which cost the orders API a fifth of its throughput at 32
// waiting clients (docs/performance-journal.md, seventh pass).
//
// Only calls made under a context from Context are coalesced; the others
// go to Redis as without the hook. A blocking command (BLPOP and the like)
// made under it holds every call queued behind it: make those elsewhere.
// A call whose round has left waits for its answer even if its context
// ends, within the client's read and write timeouts: the round writes
// into the call's command. A call's own order is kept (it waits
// for its answer before it can make the next), and calls of different
// goroutines have no order between them anyway.
type Coalescer struct {
	rdb   redis.UniversalClient
	limit int // rounds on the wire at once

	mu     sync.Mutex
	flying int            // rounds on the wire (a lone call counts as one)
	queue  []*waitingCall // calls for the next round

	alone, joined, rounds atomic.Int64 // for Stats
}

// CoalescerStats counts what a Coalescer did: calls sent by themselves,
// calls that waited for a round, and those rounds.
type CoalescerStats struct{ Alone, Joined, Rounds int64 }

// Stats returns the counts so far.
func (c *Coalescer) Stats() CoalescerStats {
	return CoalescerStats{Alone: c.alone.Load(), Joined: c.joined.Load(), Rounds: c.rounds.Load()}
}

// waitingCall is a call queued for a round, and the round's end.
type waitingCall struct {
	cmd  redis.Cmder
	done chan struct{}
}

// NewCoalescer adds the hook to rdb, with limit (at least 1) rounds on the
// wire at once. Call it once per client.
func NewCoalescer(rdb redis.UniversalClient, limit int) *Coalescer {
	c := &Coalescer{rdb: rdb, limit: max(limit, 1)}
	rdb.AddHook(processHook(func(next redis.ProcessHook) redis.ProcessHook {
		return func(ctx context.Context, cmd redis.Cmder) error {
			if co, _ := ctx.Value(coalesceKey{}).(*Coalescer); co != c {
				return next(ctx, cmd)
			}
			return c.call(ctx, cmd, next)
		}
	}))
	return c
}

// coalesceKey is the context key that marks calls to coalesce.
type coalesceKey struct{}

// Context returns ctx with its Redis calls on c's client coalesced.
func (c *Coalescer) Context(ctx context.Context) context.Context {
	return context.WithValue(ctx, coalesceKey{}, c)
}

// call sends cmd by itself if a round may leave now, or queues it for the
// next round. next is the rest of the hook chain.
func (c *Coalescer) call(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
	c.mu.Lock()
	if c.flying < c.limit && len(c.queue) == 0 {
		c.flying++
		c.mu.Unlock()
		c.alone.Add(1)
		// Alone: the plain call, with go-redis's own retries, under the
		// caller's context.
		err := next(uncoalesced(ctx), cmd)
		c.landed()
		return err
	}
	w := &waitingCall{cmd: cmd, done: make(chan struct{})}
	c.queue = append(c.queue, w)
	c.mu.Unlock()
	c.joined.Add(1)
	select {
	case <-w.done:
		return cmd.Err()
	case <-ctx.Done():
		// Take the call back if its round has not left. Once it has, the
		// answer is awaited all the same (the pipeline writes into cmd),
		// within the client's read and write timeouts.
		c.mu.Lock()
		i := slices.Index(c.queue, w)
		queued := i >= 0
		if queued {
			c.queue = slices.Delete(c.queue, i, i+1)
		}
		c.mu.Unlock()
		if !queued {
			<-w.done
			return cmd.Err()
		}
		return ctx.Err()
	}
}

// landed is called when a round is answered: the calls queued meanwhile
// leave as the next round, on a goroutine of their own so that the caller
// whose round landed returns at once.
func (c *Coalescer) landed() {
	if round := c.nextRound(); round != nil {
		go c.fly(round)
	}
}

// nextRound takes the calls queued for the next round; if there are none,
// the round that just landed is counted off the wire and it returns nil.
func (c *Coalescer) nextRound() []*waitingCall {
	c.mu.Lock()
	defer c.mu.Unlock()
	round := c.queue
	c.queue = nil
	if len(round) == 0 {
		c.flying--
	}
	return round
}

// fly sends round as one pipeline, then each round that queued behind it,
// until none did.
func (c *Coalescer) fly(round []*waitingCall) {
	// Under no caller's context (and so without the mark): the round is
	// everyone's, and a caller that gave up still gets its answer written.
	// The client's timeouts bound it.
	ctx := context.Background()
	for ; round != nil; round = c.nextRound() {
		c.rounds.Add(1)
		pipe := c.rdb.Pipeline()
		for _, w := range round {
			_ = pipe.Process(ctx, w.cmd)
		}
		// Exec's error is only the first of the calls'; each has its own.
		_, _ = pipe.Exec(ctx)
		for _, w := range round {
			close(w.done)
		}
	}
}

// uncoalesced returns ctx without the mark: what the hook itself sends goes
// straight to Redis (go-redis runs a new connection's handshake under the
// caller's context, through the same hooks).
func uncoalesced(ctx context.Context) context.Context {
	return context.WithValue(ctx, coalesceKey{}, (*Coalescer)(nil))
}
