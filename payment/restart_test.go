package payment_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
)

// TestRedisKilledLosesNothingAcknowledged charges and refunds on a Redis of
// the test's own (AOF, appendfsync always) while SIGKILLing it, restarts it
// on its AOF and delivers every command again: each acknowledged one
// answers exactly what it answered before the kill, each failed one applies
// once now, and the accounts hold exactly one effect per command.
func TestRedisKilledLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	srv := crashtest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	customers := []payment.Customer{
		{ID: "alice", Name: "Alice", BalanceCents: 10_000_000},
		{ID: "carol", Name: "Carol", BalanceCents: 30_000},
	}
	st, err := payment.NewStore(payment.Config{}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Seed(ctx(t), customers); err != nil {
		t.Fatal(err)
	}
	svc := payment.NewService(st, payment.ServiceConfig{}, nil)

	type result struct {
		cmd   saga.Envelope
		reply reply
		acked bool
	}
	var (
		mu       sync.Mutex
		results  []result
		acked    atomic.Int64
		failed   atomic.Int64
		stop     atomic.Bool
		wg       sync.WaitGroup
		customer = []string{"alice", "carol"}
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				// Carol runs out of money: declines must survive too. Every
				// third order is refunded.
				types := []string{payment.TypeChargePayment}
				if i%3 == 0 {
					types = append(types, payment.TypeRefundPayment)
				}
				for _, typ := range types {
					cmd := command(typ, id, orderJSON(id, customer[i%2], 1, int64(1000+i)))
					env, err := svc.Handle(context.Background(), cmd)
					r := result{cmd: cmd, acked: err == nil}
					switch {
					case err == nil:
						r.reply = toReply(t, env)
						acked.Add(1)
					case errors.Is(err, saga.ErrPoison):
						t.Errorf("Redis down taken for poison: %v", err)
					default:
						failed.Add(1)
					}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, 30*time.Second, "100 acknowledged commands", func() bool { return acked.Load() >= 100 })
	srv.Kill(t)
	waitFor(t, 30*time.Second, "the workers to notice", func() bool { return failed.Load() >= 8 })
	stop.Store(true)
	wg.Wait()
	srv.Start(t)
	t.Logf("%d commands acknowledged, %d failed with Redis down", acked.Load(), failed.Load())

	// Deliver everything again, as Kafka would after the participant's
	// transaction aborted. A refunded saga contributes nothing to captured
	// whichever way it went (charged and refunded, declined, or a null
	// refund and a hanging charge); its charge delivered again after the
	// refund is refused as hanging (the barrier's rule), so only the
	// refund's answer must repeat exactly.
	refunded := map[string]bool{}
	for _, r := range results {
		if r.cmd.Type == payment.TypeRefundPayment {
			refunded[r.cmd.SagaID] = true
		}
	}
	captured := map[string]int64{}
	for _, r := range results {
		var env saga.Envelope
		waitFor(t, 20*time.Second, "Redis to answer again", func() bool {
			env, err = svc.Handle(ctx(t), r.cmd)
			if errors.Is(err, saga.ErrPoison) {
				t.Fatalf("%s %s after the restart: %v", r.cmd.Type, r.cmd.SagaID, err)
			}
			return err == nil
		})
		again := toReply(t, env)
		late := r.cmd.Type == payment.TypeChargePayment && refunded[r.cmd.SagaID] && strings.Contains(again.Reason, "hanging")
		if r.acked && again != r.reply && !late {
			t.Errorf("%s %s was acknowledged as %+v before the kill, answers %+v after it: lost",
				r.cmd.Type, r.cmd.SagaID, r.reply, again)
		}
		if r.cmd.Type == payment.TypeChargePayment && !refunded[r.cmd.SagaID] && again.Outcome == saga.Success {
			var o struct {
				CustomerID string `json:"customer_id"`
			}
			if err := json.Unmarshal(r.cmd.Payload, &o); err != nil {
				t.Fatal(err)
			}
			captured[o.CustomerID] += again.cents(t)
		}
	}
	for _, c := range customers {
		got, err := st.Customer(ctx(t), c.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.CapturedCents != captured[c.ID] || got.BalanceCents != c.BalanceCents-captured[c.ID] || got.DepositedCents != c.BalanceCents {
			t.Errorf("%s after the crash: %+v, want %d captured", c.ID, got, captured[c.ID])
		}
	}
}

func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
