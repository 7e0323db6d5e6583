package payment_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
	"github.com/sagaflow/sagaflow/saga/participanttest"
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

	// Carol runs out of money: declines must survive too. Every third
	// order is refunded.
	customer := []string{"alice", "carol"}
	results := participanttest.KillRedisUnderLoad(t, srv, svc.Handle, 4, func(w, i int) []saga.Envelope {
		id := fmt.Sprintf("w%d-%d", w, i)
		types := []string{payment.TypeChargePayment}
		if i%3 == 0 {
			types = append(types, payment.TypeRefundPayment)
		}
		var cmds []saga.Envelope
		for _, typ := range types {
			cmds = append(cmds, command(typ, id, orderJSON(id, customer[i%2], 1, int64(1000+i))))
		}
		return cmds
	})

	// Deliver everything again, as Kafka would after the participant's
	// transaction aborted. A refunded saga contributes nothing to captured
	// whichever way it went (charged and refunded, declined, or a null
	// refund and a hanging charge); its charge delivered again after the
	// refund is refused as hanging (the barrier's rule), so only the
	// refund's answer must repeat exactly.
	refunded := map[string]bool{}
	for _, r := range results {
		if r.Cmd.Type == payment.TypeRefundPayment {
			refunded[r.Cmd.SagaID] = true
		}
	}
	captured := map[string]int64{}
	for _, r := range results {
		again := participanttest.Redeliver(t, svc.Handle, r.Cmd)
		late := r.Cmd.Type == payment.TypeChargePayment && refunded[r.Cmd.SagaID] && strings.Contains(again.Reason, "hanging")
		if r.Acked && again != r.Reply && !late {
			t.Errorf("%s %s was acknowledged as %+v before the kill, answers %+v after it: lost",
				r.Cmd.Type, r.Cmd.SagaID, r.Reply, again)
		}
		if r.Cmd.Type == payment.TypeChargePayment && !refunded[r.Cmd.SagaID] && again.Outcome == saga.Success {
			var o struct {
				CustomerID string `json:"customer_id"`
			}
			if err := json.Unmarshal(r.Cmd.Payload, &o); err != nil {
				t.Fatal(err)
			}
			captured[o.CustomerID] += replyCents(t, again)
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
