package idempotency

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGuardAcquireBusyDone(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	key := Key(s.cfg.Prefix, "saga", "notify", "email")

	c1, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c1.State != Acquired || c1.Token < 1 {
		t.Fatalf("first claim: %+v, %v", c1, err)
	}
	c2, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c2.State != Busy {
		t.Fatalf("second claim while held: %+v, %v", c2, err)
	}
	if c2.RetryAfter <= 0 || c2.RetryAfter > time.Minute {
		t.Errorf("busy RetryAfter %v, want within the lease", c2.RetryAfter)
	}
	if err := s.Complete(ctx, c2, "x"); !errors.Is(err, ErrStaleClaim) {
		t.Errorf("Complete of a busy claim: %v, want ErrStaleClaim", err)
	}
	if err := s.Complete(ctx, c1, `{"ok":true,"sent":1}`); err != nil {
		t.Fatalf("complete: %v", err)
	}
	c3, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c3.State != Done || c3.Outcome != `{"ok":true,"sent":1}` {
		t.Fatalf("claim after complete: %+v, %v", c3, err)
	}
	if err := s.Complete(ctx, c1, "again"); !errors.Is(err, ErrStaleClaim) {
		t.Errorf("second Complete: %v, want ErrStaleClaim", err)
	}
	if n, _ := rdb.Exists(ctx, key+":lease").Result(); n != 0 {
		t.Error("lease key left behind after Complete")
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= DefaultTTL-time.Minute || ttl > DefaultTTL {
		t.Errorf("record PTTL %v, want about %v", ttl, DefaultTTL)
	}
}

func TestGuardRelease(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	ctx := ctxFor(t)
	key := Key(s.cfg.Prefix, "saga", "notify", "email")

	c1, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c1.State != Acquired {
		t.Fatalf("claim: %+v, %v", c1, err)
	}
	if err := s.Release(ctx, c1); err != nil {
		t.Fatal(err)
	}
	c2, err := s.Claim(ctx, key, time.Minute)
	if err != nil || c2.State != Acquired || c2.Token <= c1.Token {
		t.Fatalf("claim after release: %+v, %v (first token %d)", c2, err, c1.Token)
	}
	if err := s.Release(ctx, c1); !errors.Is(err, ErrStaleClaim) {
		t.Errorf("release with the old token: %v, want ErrStaleClaim", err)
	}
	if err := s.Complete(ctx, c2, "ok"); err != nil {
		t.Fatal(err)
	}
}

// TestGuardLeaseTakeoverFencesStaleHolder: a holder that stalls past its
// lease loses the key to the next claimer, and its late Complete must not
// overwrite the new holder's outcome.
func TestGuardLeaseTakeoverFencesStaleHolder(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	ctx := ctxFor(t)
	key := Key(s.cfg.Prefix, "saga", "notify", "email")
	const lease = 50 * time.Millisecond

	stale, err := s.Claim(ctx, key, lease)
	if err != nil || stale.State != Acquired {
		t.Fatalf("claim: %+v, %v", stale, err)
	}
	var fresh Claim
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		c, err := s.Claim(ctx, key, time.Minute)
		if err != nil {
			return err
		}
		if c.State != Acquired {
			return fmt.Errorf("claim is %s", c.State)
		}
		fresh = c
		return nil
	})
	if fresh.Token <= stale.Token {
		t.Fatalf("takeover token %d not above the stale %d", fresh.Token, stale.Token)
	}
	if err := s.Complete(ctx, stale, "stale"); !errors.Is(err, ErrStaleClaim) {
		t.Fatalf("stale Complete: %v, want ErrStaleClaim", err)
	}
	if err := s.Release(ctx, stale); !errors.Is(err, ErrStaleClaim) {
		t.Fatalf("stale Release: %v, want ErrStaleClaim", err)
	}
	if err := s.Complete(ctx, fresh, "fresh"); err != nil {
		t.Fatal(err)
	}
	if c, err := s.Claim(ctx, key, time.Minute); err != nil || c.State != Done || c.Outcome != "fresh" {
		t.Fatalf("after takeover: %+v, %v", c, err)
	}
}

// TestGuardExpiredLeaseWithoutTakeoverCompletes: the token, not the lease
// clock, decides. A slow holder nobody replaced still records its outcome,
// since no one else can have run the effect.
func TestGuardExpiredLeaseWithoutTakeoverCompletes(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{})
	ctx := ctxFor(t)
	key := Key(s.cfg.Prefix, "saga", "notify", "email")
	c, err := s.Claim(ctx, key, 20*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		if n := rdb.Exists(ctx, key+":lease").Val(); n != 0 {
			return errors.New("lease still held")
		}
		return nil
	})
	if err := s.Complete(ctx, c, "late but alone"); err != nil {
		t.Fatalf("Complete after lease expiry without takeover: %v", err)
	}
}

func TestGuardConcurrentClaims(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	ctx := ctxFor(t)
	key := Key(s.cfg.Prefix, "saga", "notify", "email")
	var acquired, busy atomic.Int32
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			c, err := s.Claim(ctx, key, time.Minute)
			if err != nil {
				t.Error(err)
				return
			}
			switch c.State {
			case Acquired:
				acquired.Add(1)
			case Busy:
				busy.Add(1)
			}
		})
	}
	wg.Wait()
	if acquired.Load() != 1 || busy.Load() != 15 {
		t.Errorf("%d acquired, %d busy; want 1 and 15", acquired.Load(), busy.Load())
	}
}

func TestGuardRejects(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t, Config{})
	ctx := ctxFor(t)
	if _, err := s.Claim(ctx, "", time.Minute); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("empty key: %v", err)
	}
	if _, err := s.Claim(ctx, "k", 0); !errors.Is(err, ErrConfig) {
		t.Errorf("zero lease: %v", err)
	}
	if got := ClaimState(9).String(); got != "ClaimState(9)" {
		t.Errorf("String() = %q", got)
	}
}
