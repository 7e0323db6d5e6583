package payment_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
)

// TestMain lets crashtest run this binary as a payment participant.
func TestMain(m *testing.M) {
	participanttest.Main(m, newHandler)
}

// kworld is one test's topics on the real Kafka, with its accounts on Redis.
type kworld struct {
	*env
	*participanttest.World
}

func newKWorld(t *testing.T, parts int) *kworld {
	t.Helper()
	w := &kworld{env: newEnv(t), World: participanttest.NewWorld(t, "payment", parts)}
	w.Crew = participanttest.CrewOn(w.rdb) // as the service runs it
	return w
}

// TestParticipantDuplicatesAndDeadLetters goes through Kafka: N copies of
// one charge get N identical committed replies and one debit; malformed
// commands are dead-lettered with their reason, move no money, and do not
// stop the partition.
func TestParticipantDuplicatesAndDeadLetters(t *testing.T) {
	t.Parallel()
	w := newKWorld(t, 1)
	const copies = 5
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	poison := map[string]saga.Envelope{
		"value is not JSON":                command(payment.TypeChargePayment, "bad1", raw(`{"total_cents":`)),
		"unknown customer":                 command(payment.TypeChargePayment, "bad2", orderJSON("bad2", "mallory", 1, 100)),
		"total -300 cents":                 command(payment.TypeChargePayment, "bad3", orderRaw("bad3", "alice", 1, 300, -300, "")),
		"total 0 cents":                    command(payment.TypeChargePayment, "bad4", orderRaw("bad4", "alice", 1, 0, 0, "")),
		"99999999999999999999":             command(payment.TypeChargePayment, "bad5", raw(`{"customer_id":"alice","total_cents":99999999999999999999}`)),
		"total 9007199254740992 cents":     command(payment.TypeChargePayment, "bad6", orderRaw("bad6", "alice", 1, 100, 1<<53, "")),
		"is not the sum of the lines, 900": command(payment.TypeChargePayment, "bad7", orderRaw("bad7", "alice", 3, 300, 1000, "")),
	}
	dup, good := w.DeliverPoison(t, w.svc.Handle, participanttest.Poison{
		Dup:    command(payment.TypeChargePayment, "dup", orderJSON("dup", "alice", 3, 1500)),
		Copies: copies,
		Bad:    poison,
		Good:   command(payment.TypeChargePayment, "good", orderJSON("good", "bob", 1, 700)),
	})
	expect(t, dup, payment.TypePaymentCharged, saga.Success, "")
	expect(t, good, payment.TypePaymentCharged, saga.Success, "")
	if m := w.money(t, "alice"); m != (money{95_500, 4_500, 100_000}) {
		t.Errorf("alice after %d copies and the poison: %+v", copies, m)
	}
	if m := w.money(t, "bob"); m != (money{59_300, 700, 60_000}) {
		t.Errorf("bob: %+v", m)
	}
	for _, env := range poison {
		if r, err := w.store.Payment(ctx(t), env.SagaID); err != nil || r.State != "" {
			t.Errorf("poison %s left a payment %+v, %v", env.SagaID, r, err)
		}
	}
}

// TestCrashAtFailpoints kills the participant at each crash window, restarts
// it, and checks one effect and exactly one committed reply per command.
func TestCrashAtFailpoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, armed, dies string }{
		{"after-apply", "payment/after-apply=exit", "payment/after-apply"},
		{"after-produce", "participant/after-produce=sleep(500ms),payment/after-produce=exit", "payment/after-produce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCrashAt(t, tc.armed, tc.dies)
		})
	}
}

func testCrashAt(t *testing.T, armed, dies string) {
	w := newKWorld(t, 2)
	// Ten orders of alice's: charges of 10.00 to 19.00; four refunded.
	var cmds []saga.Envelope
	var captured int64
	for i := range 10 {
		id := fmt.Sprintf("c%d", i)
		amount := int64(1000 + 100*i)
		cmds = append(cmds, command(payment.TypeChargePayment, id, orderJSON(id, "alice", 1, amount)))
		if i < 4 {
			cmds = append(cmds, command(payment.TypeRefundPayment, id, orderJSON(id, "alice", 1, amount)))
		} else {
			captured += amount
		}
	}
	got := w.CrashAndRecover(t, w.prefix, cmds, armed, dies, func() (applied int) {
		for i := range 10 {
			if p, _ := w.store.Payment(ctx(t), fmt.Sprintf("c%d", i)); p.State != "" {
				applied++
			}
		}
		return applied
	})
	for i, c := range cmds {
		r, ok := got[c.MessageID]
		if !ok {
			continue // CrashAndRecover reported it
		}
		// A charge redelivered after its refund ran in the crashed batch
		// is answered hanging (the barrier's rule); the debit was once.
		refunded := i+1 < len(cmds) && cmds[i+1].Type == payment.TypeRefundPayment
		switch {
		case r.Outcome == saga.Success:
		case refunded && strings.Contains(r.Reason, "hanging"):
		default:
			t.Errorf("%s %s: %+v", c.Type, c.SagaID, r)
		}
	}
	if m := w.money(t, "alice"); m != (money{100_000 - captured, captured, 100_000}) {
		t.Errorf("alice: %+v, want %d captured", m, captured)
	}
}
