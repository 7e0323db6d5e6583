package orders

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// endedOrders feeds a read model three ended orders, one of each way an
// order ends up in the archive: Completed and Cancelled with their last
// snapshots (packed), and Cancelled by its end event alone (whose snapshot
// has not come: kept whole).
func endedOrders(t testing.TB) (*ReadModel, []string) {
	t.Helper()
	m := newTestReadModel(t)
	done := startSaga(t, testOrder("ord-done", "alice"))
	for done.inst.State == saga.Running {
		done.reply(saga.Success)
	}
	feed(t, m, kafkatx.TopicSagaState, "ord-done", done.snapshot())
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, done.endEvent())

	o := testOrder("ord-declined", "bob \"<&>\" \u2028")
	o.Scenario = "slow-payment"
	declined := startSaga(t, o)
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, placedEnvelope(o))
	declined.reply(saga.Success)
	declined.reply(saga.Failure)
	declined.reply(saga.Success)
	if declined.inst.State != saga.Cancelled {
		t.Fatalf("saga is %s", declined.inst.State)
	}
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, declined.endEvent())
	feed(t, m, kafkatx.TopicSagaState, "ord-declined", declined.snapshot())

	early := startSaga(t, testOrder("ord-early", "carol"))
	feed(t, m, kafkatx.TopicSagaState, "ord-early", early.snapshot())
	early.reply(saga.Failure)
	for early.inst.State == saga.Running || early.inst.State == saga.Compensating {
		early.reply(saga.Success)
	}
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, early.endEvent())
	return m, []string{"ord-done", "ord-declined", "ord-early"}
}

// An archived order reads back as the order the API showed: the same JSON
// and the same summary (whose step is not in the JSON), whether it was kept
// as its snapshot or whole; a record written whole before the snapshot was
// kept reads back the same too.
func TestArchivedOrdersReadBackWhole(t *testing.T) {
	m, ids := endedOrders(t)
	packed := 0
	for _, id := range ids {
		m.mu.RLock()
		e := m.orders[id]
		base, snap, want := e.order, e.packed, e.get()
		m.mu.RUnlock()
		if !want.Status.Terminal() {
			t.Fatalf("%s is %s, want it ended", id, want.Status)
		}
		if snap != nil {
			packed++
		}
		rec, err := encodeArchived(base, snap)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(rec) {
			t.Fatalf("%s: the record is not JSON: %s", id, rec)
		}
		whole, _ := json.Marshal(want)
		for how, b := range map[string][]byte{"as kept now": rec, "as kept before": whole} {
			got, err := decodeArchived(b)
			if err != nil {
				t.Fatalf("%s %s: %v", id, how, err)
			}
			if g, _ := json.Marshal(got); !bytes.Equal(g, whole) {
				t.Fatalf("%s %s reads back as\n%s\nwant\n%s", id, how, g, whole)
			}
			if how == "as kept now" && got.Summary().Step != want.Summary().Step {
				t.Fatalf("%s: step %q, want %q", id, got.Summary().Step, want.Summary().Step)
			}
		}
	}
	if packed != 2 {
		t.Fatalf("%d of the orders were packed, want 2 (the ones whose last snapshot came)", packed)
	}
}

// A record that is not an archived order is an error, not a panic or an
// empty order.
func TestArchivedOrderThatDoesNotDecode(t *testing.T) {
	for _, b := range []string{
		``, `{`, `[]`, `{"order_id":"ord-1","snapshot":{"id":`,
		`{"order_id":"ord-1","status":"Completed","snapshot":{"id":"ord-1","data":"not an order"}}`,
		`{"order_id":"ord-1","status":"Completed","snapshot":[1]}`,
	} {
		if o, err := decodeArchived([]byte(b)); err == nil {
			t.Errorf("%s read as %+v, want an error", b, o)
		}
	}
}

// BenchmarkArchiveRecord: what the sweep spends on one packed order, kept
// whole (the snapshot unpacked, the order encoded) and as its snapshot.
//
//	go test ./orders -run '^$' -bench ArchiveRecord -benchmem
func BenchmarkArchiveRecord(b *testing.B) {
	m, _ := endedOrders(b)
	m.mu.RLock()
	e := m.orders["ord-done"]
	base, snap := e.order, e.packed
	m.mu.RUnlock()
	if snap == nil {
		b.Fatal("the order is not packed")
	}
	b.Run("whole", func(b *testing.B) {
		for b.Loop() {
			o, err := unpack(base, snap)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := json.Marshal(o); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			if _, err := encodeArchived(base, snap); err != nil {
				b.Fatal(err)
			}
		}
	})
}
