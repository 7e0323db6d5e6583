package idempotency

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// ClaimState says what Claim found.
type ClaimState int

const (
	// Acquired: the caller holds the key until the lease runs out; it runs
	// the effect and then calls Complete, or Release when it failed.
	Acquired ClaimState = iota + 1
	// Done: the effect already ran; Claim.Outcome is what Complete recorded.
	Done
	// Busy: another holder's lease has not run out yet. Try again later
	// (Claim.RetryAfter says when the lease ends at the latest).
	Busy
)

func (s ClaimState) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case Done:
		return "done"
	case Busy:
		return "busy"
	}
	return "ClaimState(" + strconv.Itoa(int(s)) + ")"
}

// Claim is the answer of Store.Claim.
type Claim struct {
	Key   string
	State ClaimState
	// Token is the fencing token of an Acquired claim: it grows with every
	// claim of the key, and Complete and Release only succeed while it is
	// still the newest, so a holder that stalled past its lease (GC pause,
	// partition) cannot record over the one that took over.
	Token int64
	// Outcome is the recorded outcome of a Done claim.
	Outcome string
	// RetryAfter is the time left on the holder's lease of a Busy claim.
	RetryAfter time.Duration

	// tag is an opaque string stored with the claim (the middleware's
	// request fingerprint), answered for Done and Busy.
	tag string
}

// Claim guards an effect outside Redis (a call to another service, an e-mail)
// that cannot join a Lua script: the caller claims the key, runs the effect,
// then records the outcome with Complete. lease bounds how long a holder may
// take: when it runs out (the holder crashed or stalled), the next Claim
// takes over with a newer token.
//
// This is at-least-once for the external effect if a holder crashes after
// the effect and before Complete: the takeover runs it again. Give the
// external system the key as its own idempotency key where it has one.
//
// Records live under key and key+":lease"; in Redis Cluster give key a hash
// tag (Key does) so both share a slot. The record lives for the Store's TTL.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) (Claim, error) {
	return s.claimTagged(ctx, key, lease, "")
}

func (s *Store) claimTagged(ctx context.Context, key string, lease time.Duration, tag string) (Claim, error) {
	if key == "" {
		return Claim{}, fmt.Errorf("%w: empty claim key", ErrInvalidKey)
	}
	if lease < time.Millisecond {
		return Claim{}, fmt.Errorf("%w: lease %v is below 1ms", ErrConfig, lease)
	}
	v, err := s.eval(ctx, s.claim, []string{key, key + ":lease"}, lease.Milliseconds(), ttlArg(s.cfg.TTL), tag)
	if err != nil {
		return Claim{}, err
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 4 {
		return Claim{}, fmt.Errorf("%w: guard.claim: unexpected reply %v", ErrScript, v)
	}
	state, _ := arr[0].(string)
	out, _ := arr[1].(string)
	gotTag, _ := arr[2].(string)
	n, _ := arr[3].(int64)
	c := Claim{Key: key, Outcome: out, tag: gotTag}
	switch state {
	case "acquired":
		c.State, c.Token = Acquired, n
	case "done":
		c.State = Done
	case "busy":
		c.State, c.RetryAfter = Busy, time.Duration(n)*time.Millisecond
	default:
		return Claim{}, fmt.Errorf("%w: guard.claim: unexpected state %q", ErrScript, state)
	}
	return c, nil
}

// Complete records outcome for an Acquired claim: from now on Claim answers
// Done with it. ErrStaleClaim means the lease ran out and another holder took
// over; nothing was recorded. Completing twice with the same claim is
// ErrStaleClaim too, since the record is no longer held.
func (s *Store) Complete(ctx context.Context, c Claim, outcome string) error {
	return s.finish(ctx, s.complete, c, outcome)
}

// Release gives up an Acquired claim after a failed effect, so the next Claim
// acquires at once instead of waiting for the lease. ErrStaleClaim as for
// Complete.
func (s *Store) Release(ctx context.Context, c Claim) error {
	return s.finish(ctx, s.release, c, "")
}

func (s *Store) finish(ctx context.Context, sc *luaScript, c Claim, outcome string) error {
	if c.State != Acquired {
		return fmt.Errorf("%w: %s of a %s claim", ErrStaleClaim, sc.name, c.State)
	}
	v, err := s.eval(ctx, sc, []string{c.Key, c.Key + ":lease"}, c.Token, ttlArg(s.cfg.TTL), outcome)
	if err != nil {
		return err
	}
	if n, _ := v.(int64); n != 1 {
		return fmt.Errorf("%w: %s of %q with token %d", ErrStaleClaim, sc.name, c.Key, c.Token)
	}
	return nil
}

// The guard record is a hash {token, state, tag, outcome}; state is "held",
// "free" (released) or "done". The lease is a separate string key with a
// PX expiry holding the holder's token, so lease expiry needs no clock in
// Lua. token never resets while the record lives, which is what makes it a
// fencing token; the record outlives any lease (TTL ≫ lease).
//
// KEYS[1] record, KEYS[2] lease. Claim ARGV: lease ms, ttl ms, tag.
const claimLua = `-- sagaflow idempotency: guard claim
local rec = redis.call('HMGET', KEYS[1], 'state', 'outcome', 'tag')
if rec[1] == 'done' then
  return {'done', rec[2] or '', rec[3] or '', 0}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {'busy', '', rec[3] or '', redis.call('PTTL', KEYS[2])}
end
local token = redis.call('HINCRBY', KEYS[1], 'token', 1)
redis.call('HSET', KEYS[1], 'state', 'held', 'tag', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], token, 'PX', ARGV[1])
return {'acquired', '', ARGV[3], token}
`

// Complete ARGV: token, ttl ms, outcome. A holder whose lease ran out may
// still complete when nobody took over: its token is still the newest, so
// no other holder can have run the effect.
const completeLua = `-- sagaflow idempotency: guard complete
local rec = redis.call('HMGET', KEYS[1], 'state', 'token')
if rec[1] ~= 'held' or rec[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
`

// Release ARGV: token, ttl ms.
const releaseLua = `-- sagaflow idempotency: guard release
local rec = redis.call('HMGET', KEYS[1], 'state', 'token')
if rec[1] ~= 'held' or rec[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'free')
redis.call('DEL', KEYS[2])
return 1
`
