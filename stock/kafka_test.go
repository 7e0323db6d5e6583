package stock_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

// TestMain lets crashtest run this binary as a stock participant.
func TestMain(m *testing.M) {
	participanttest.Main(m, newHandler)
}

// kworld is one test's topics on the real Kafka, with its stock on Redis.
type kworld struct {
	*env
	*participanttest.World
}

func newKWorld(t *testing.T, parts int) *kworld {
	t.Helper()
	w := &kworld{env: newEnv(t), World: participanttest.NewWorld(t, "stock", parts)}
	w.Crew = participanttest.CrewOn(w.rdb) // as the service runs it
	return w
}

// TestParticipantDuplicatesAndDeadLetters goes through Kafka: N copies of
// one command get N identical committed replies and one effect; malformed
// commands go to the dead-letter topic with their reason, apply nothing,
// and do not stop the partition: the good command after them is answered.
func TestParticipantDuplicatesAndDeadLetters(t *testing.T) {
	t.Parallel()
	w := newKWorld(t, 1) // one partition: the good command is behind the poison
	const copies = 5
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	poison := map[string]saga.Envelope{
		"value is not JSON":    command(stock.TypeReserveStock, "bad1", raw(`{"lines":[`)),
		"is not an order":      command(stock.TypeReserveStock, "bad2", raw(`{"lines":"tea"}`)),
		"unknown product":      command(stock.TypeReserveStock, "bad3", orderJSON("bad3", line{"tea", 1}, line{"unicorn", 1})),
		"quantity -4":          command(stock.TypeReserveStock, "bad4", orderJSON("bad4", line{"tea", -4})),
		"99999999999999999999": command(stock.TypeReserveStock, "bad5", raw(`{"lines":[{"product_id":"tea","quantity":99999999999999999999}]}`)),
		"quantity 0":           command(stock.TypeReserveStock, "bad6", orderJSON("bad6", line{"mug", 0})),
		"quantity 1000001":     command(stock.TypeReserveStock, "bad7", orderJSON("bad7", line{"mug", 1_000_001})),
	}
	dup, good := w.DeliverPoison(t, w.svc.Handle, participanttest.Poison{
		Dup:    command(stock.TypeReserveStock, "dup", orderJSON("dup", line{"tea", 2}, line{"mug", 1})),
		Copies: copies,
		Bad:    poison,
		// A record without the envelope's headers at all.
		Headerless: [][]byte{[]byte(`{}`)},
		Good:       command(stock.TypeReserveStock, "good", orderJSON("good", line{"teapot", 1})),
	})
	expect(t, dup, stock.TypeStockReserved, saga.Success, "")
	expect(t, good, stock.TypeStockReserved, saga.Success, "")
	if c := w.counts(t, "tea"); c != (counts{18, 2, 0, 20}) {
		t.Errorf("tea after %d copies: %+v", copies, c)
	}
	if c := w.counts(t, "mug"); c != (counts{9, 1, 0, 10}) {
		t.Errorf("mug after %d copies and the poison: %+v", copies, c)
	}
	for _, env := range poison {
		if r, err := w.store.Reservation(ctx(t), env.SagaID); err != nil || r.State != "" {
			t.Errorf("poison %s left a reservation %+v, %v", env.SagaID, r, err)
		}
	}
}

// TestCrashAtFailpoints kills the participant at each crash window, restarts
// it, and checks that every command had one effect and has exactly one
// committed reply.
func TestCrashAtFailpoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, armed, dies string }{
		{"after-apply", "participant/after-apply=exit", "participant/after-apply"},
		// The sleep lets the producer send the replies before the exit, so
		// the broker holds them in the open transaction the restart aborts.
		{"after-produce", "participant/after-produce=sleep(500ms),stock/after-produce=exit", "stock/after-produce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCrashAt(t, tc.armed, tc.dies)
		})
	}
}

func testCrashAt(t *testing.T, armed, dies string) {
	w := newKWorld(t, 2)
	// Ten orders: four are confirmed, three released, three stay reserved;
	// one saga's commands are on one partition, in order.
	var cmds []saga.Envelope
	add := func(typ, id string) {
		cmds = append(cmds, command(typ, id, orderJSON(id, line{"tea", 1}, line{"mug", 1})))
	}
	for i := range 10 {
		id := fmt.Sprintf("c%d", i)
		add(stock.TypeReserveStock, id)
		switch {
		case i < 4:
			add(stock.TypeCommitStock, id)
		case i < 7:
			add(stock.TypeReleaseStock, id)
		}
	}
	got := w.CrashAndRecover(t, w.prefix, cmds, armed, dies, func() (applied int) {
		for i := range 10 {
			if r, _ := w.store.Reservation(ctx(t), fmt.Sprintf("c%d", i)); r.State != "" {
				applied++
			}
		}
		return applied
	})
	hanging := 0
	for i, c := range cmds {
		r, ok := got[c.MessageID]
		if !ok {
			continue // CrashAndRecover reported it
		}
		// The crashed batch held the reserve and the release of the
		// released orders: the release ran, so the redelivered reserve is
		// refused as hanging (the barrier's rule: an action after its
		// compensation is refused even if it ran before). The orchestrator
		// is compensating by then and ignores it; the effect was once.
		released := i+1 < len(cmds) && cmds[i+1].Type == stock.TypeReleaseStock
		switch {
		case r.Outcome == saga.Success:
		case released && r.Type == stock.TypeStockRejected && strings.Contains(r.Reason, "hanging"):
			hanging++
		default:
			t.Errorf("%s %s: %+v", c.Type, c.SagaID, r)
		}
	}
	t.Logf("%d redelivered reserves answered hanging", hanging)
	// Four sold, three reserved, three given back: one effect each.
	for _, id := range []string{"tea", "mug"} {
		seeded := map[string]int64{"tea": 20, "mug": 10}[id]
		if c := w.counts(t, id); c != (counts{seeded - 7, 3, 4, seeded}) {
			t.Errorf("%s: %+v", id, c)
		}
	}
}
