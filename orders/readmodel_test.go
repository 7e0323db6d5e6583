package orders

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// The read model's rules are pure: these tests feed it records by hand.

func newTestReadModel(t testing.TB) *ReadModel {
	t.Helper()
	m, err := NewReadModel(ReadModelConfig{Brokers: "unused:9"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func testOrder(id, customer string) OrderPlaced {
	return OrderPlaced{OrderID: id, CustomerID: customer,
		Lines: []Line{{ProductID: "tea", Quantity: 2, UnitPriceCents: 450}}, TotalCents: 900}
}

func placedEnvelope(o OrderPlaced) saga.Envelope {
	b, _ := json.Marshal(o)
	return saga.Envelope{MessageID: saga.NewMessageID(), SagaID: o.OrderID, Type: TypeOrderPlaced, Payload: b}
}

// queuedStatuses takes the changes waiting on sub and returns their statuses.
func queuedStatuses(sub *Subscription) []Status {
	var statuses []Status
	for _, o := range sub.Next() {
		statuses = append(statuses, o.Status)
	}
	return statuses
}

func TestReadModelPlacedThenSagaToCompleted(t *testing.T) {
	m := newTestReadModel(t)
	sub := m.Subscribe("")
	defer sub.Close()
	o := testOrder("ord-1", "alice")
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, placedEnvelope(o))

	got, ok := m.Get("ord-1")
	if !ok || got.Status != StatusPlaced || got.TotalCents != 900 || len(got.Steps) != 0 || got.Steps == nil {
		t.Fatalf("after OrderPlaced: %+v", got)
	}
	// A second OrderPlaced for the id changes nothing, as the orchestrator
	// ignores a second start.
	other := testOrder("ord-1", "mallory")
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, placedEnvelope(other))
	if got, _ := m.Get("ord-1"); got.CustomerID != "alice" {
		t.Fatalf("second OrderPlaced replaced the first: %+v", got)
	}

	run := startSaga(t, o)
	feed(t, m, kafkatx.TopicSagaState, "ord-1", run.snapshot())
	got, _ = m.Get("ord-1")
	if got.Status != StatusRunning || got.Summary().Step != StepReserveStock || len(got.History) != 1 {
		t.Fatalf("after first snapshot: %+v", got)
	}
	// Reserve and charge run at once: the summary names both, then the one
	// still running.
	if a := got.Summary().ActiveSteps; fmt.Sprint(a) != "["+StepReserveStock+" "+StepChargePayment+"]" {
		t.Fatalf("active steps after the start: %v", a)
	}
	run.reply(saga.Success)
	feed(t, m, kafkatx.TopicSagaState, "ord-1", run.snapshot())
	if got, _ = m.Get("ord-1"); fmt.Sprint(got.Summary().ActiveSteps) != "["+StepChargePayment+"]" {
		t.Fatalf("active steps with the stock reserved: %v", got.Summary().ActiveSteps)
	}
	run.reply(saga.Success) // the charge; the confirmation takes no reply
	if run.inst.State != saga.Completed {
		t.Fatalf("saga is %s", run.inst.State)
	}
	feed(t, m, kafkatx.TopicSagaState, "ord-1", run.snapshot())
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, run.endEvent())
	got, _ = m.Get("ord-1")
	if got.Status != StatusCompleted || got.Summary().Step != StepConfirmOrder || got.Reason != "" {
		t.Fatalf("after completion: %+v", got)
	}
	if a := got.Summary().ActiveSteps; a == nil || len(a) != 0 {
		t.Fatalf("active steps of a completed order: %#v", a)
	}
	if c := m.Counts(); c[StatusCompleted] != 1 || c[StatusPlaced] != 0 || c[StatusRunning] != 0 {
		t.Fatalf("counts %v", c)
	}
	if statuses := queuedStatuses(sub); fmt.Sprint(statuses) != "[Placed Running Running Completed]" {
		t.Fatalf("subscriber saw %v", statuses)
	}
}

func TestReadModelSnapshotBeforeOrderPlaced(t *testing.T) {
	// saga.state and orders.events are different topics: their records
	// arrive in any order relative to each other.
	m := newTestReadModel(t)
	o := testOrder("ord-2", "alice")
	run := startSaga(t, o)
	feed(t, m, kafkatx.TopicSagaState, "ord-2", run.snapshot())
	got, ok := m.Get("ord-2")
	if !ok || got.Status != StatusRunning || got.CustomerID != "alice" || len(got.Lines) != 1 {
		t.Fatalf("order from snapshot: %+v", got)
	}
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, placedEnvelope(o))
	if got, _ := m.Get("ord-2"); got.Status != StatusRunning {
		t.Fatalf("OrderPlaced after the snapshot moved the order back to %s", got.Status)
	}
}

func TestReadModelEndEventBeforeItsSnapshot(t *testing.T) {
	m := newTestReadModel(t)
	o := testOrder("ord-3", "broke")
	run := startSaga(t, o)
	sub := m.Subscribe("ord-3")
	defer sub.Close()
	feed(t, m, kafkatx.TopicSagaState, "ord-3", run.snapshot())
	run.reply(saga.Success) // reserved
	reserved := run.snapshot()
	run.reply(saga.Failure) // declined: release the stock
	compensating := run.snapshot()
	run.reply(saga.Success) // released
	if run.inst.State != saga.Cancelled {
		t.Fatalf("saga is %s", run.inst.State)
	}
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, run.endEvent())
	got, _ := m.Get("ord-3")
	if got.Status != StatusCancelled || got.Reason == "" {
		t.Fatalf("end event not applied: %+v", got)
	}
	// The snapshots in between come late, as they may when the reader is
	// behind on saga.state: the order must not step back to Running.
	feed(t, m, kafkatx.TopicSagaState, "ord-3", reserved)
	feed(t, m, kafkatx.TopicSagaState, "ord-3", compensating)
	if got, _ := m.Get("ord-3"); got.Status != StatusCancelled {
		t.Fatalf("a snapshot older than the end event moved the order back to %s", got.Status)
	}
	feed(t, m, kafkatx.TopicSagaState, "ord-3", run.snapshot())
	got, _ = m.Get("ord-3")
	if got.Status != StatusCancelled || got.Steps[0].Status != saga.StepCompensated || got.Steps[1].Status != saga.StepFailed {
		t.Fatalf("after the snapshot: %+v", got)
	}
	if c := m.Counts(); c[StatusCancelled] != 1 || c[StatusRunning] != 0 {
		t.Fatalf("counts %v", c)
	}
	// Placed and Running from the first snapshot, Cancelled from the event,
	// then Cancelled again with the final snapshot's steps.
	if statuses := queuedStatuses(sub); fmt.Sprint(statuses) != "[Placed Running Cancelled Cancelled]" {
		t.Fatalf("subscriber saw %v", statuses)
	}
}

// An OrderFailed read after the snapshot of an operator retry is old news:
// applying it would show the retried order as Failed again.
func TestReadModelOldEndEventAfterRetryIsIgnored(t *testing.T) {
	m := newTestReadModel(t)
	o := testOrder("ord-4", "alice")
	// Only a pivot that waits for its reply can run out of attempts.
	run := startSagaWith(t, o, SagaConfig{AwaitConfirm: true})
	run.reply(saga.Success) // reserved
	run.reply(saga.Success) // charged
	for run.inst.State == saga.Running {
		run.reply(saga.Transient) // the pivot runs out of attempts
	}
	if run.inst.State != saga.Failed {
		t.Fatalf("saga is %s", run.inst.State)
	}
	failed := run.endEvent()
	run.step(saga.Input{Kind: saga.KindOperator, Operator: saga.Operator{Op: saga.OpRetry, Reason: "test"}})
	feed(t, m, kafkatx.TopicSagaState, "ord-4", run.snapshot())
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, failed)
	if got, _ := m.Get("ord-4"); got.Status != StatusRunning {
		t.Fatalf("old OrderFailed applied over the retry: %s", got.Status)
	}
	// The retry fails again: that new OrderFailed is news even before its
	// snapshot arrives.
	for run.inst.State == saga.Running {
		run.reply(saga.Transient)
	}
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, run.endEvent())
	if got, _ := m.Get("ord-4"); got.Status != StatusFailed {
		t.Fatalf("second OrderFailed not applied: %s", got.Status)
	}
}

func TestReadModelSkipsReplayedAndForeignRecords(t *testing.T) {
	m := newTestReadModel(t)
	o := testOrder("ord-5", "alice")
	msg := placedEnvelope(o).Message(kafkatx.TopicOrderEvents)
	rec := kafkatx.Record{Topic: kafkatx.TopicOrderEvents, Partition: 3, Offset: 7, Key: msg.Key, Value: msg.Value, Headers: msg.Headers}
	m.apply(rec)
	m.apply(rec) // a restarted Follow reads from the beginning again
	rec.Offset = 8
	rec.Value = []byte("not json")
	m.apply(rec)
	// A snapshot of another saga type shares saga.state.
	m.apply(kafkatx.Record{Topic: kafkatx.TopicSagaState, Offset: 1,
		Value: []byte(`{"id":"x","type":"shipping","state":"Running","steps":[]}`)})
	applied, skipped := m.Stats()
	if applied != 1 || skipped != 3 {
		t.Fatalf("applied %d skipped %d, want 1 and 3", applied, skipped)
	}
	if l, _ := m.List("", 10, Cursor{}); len(l) != 1 {
		t.Fatalf("orders: %+v", l)
	}
}

func TestReadModelListNewestFirst(t *testing.T) {
	m := newTestReadModel(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 5 {
		m.placed(testOrder(fmt.Sprintf("ord-%d", i), "alice"), t0.Add(time.Duration(i)*time.Second))
	}
	run := startSaga(t, testOrder("ord-1", "alice"))
	feed(t, m, kafkatx.TopicSagaState, "ord-1", run.snapshot())
	// Pages of 2 with the cursor: every order once, newest first.
	var pages []string
	var at Cursor
	for {
		page, next := m.List("", 2, at)
		var ids []string
		for _, o := range page {
			ids = append(ids, o.OrderID)
		}
		pages = append(pages, fmt.Sprint(ids))
		if next == (Cursor{}) {
			break
		}
		at = next
	}
	if fmt.Sprint(pages) != "[[ord-4 ord-3] [ord-2 ord-1] [ord-0]]" {
		t.Fatalf("pages = %v", pages)
	}
	if l, next := m.List(StatusRunning, 10, Cursor{}); len(l) != 1 || l[0].OrderID != "ord-1" || next != (Cursor{}) {
		t.Fatalf("List(Running) = %+v, next %+v", l, next)
	}
}

func TestSubscriptionKeepsNewestWhenBehind(t *testing.T) {
	m := newTestReadModel(t)
	one := m.Subscribe("ord-a")
	all := m.Subscribe("")
	defer one.Close()
	defer all.Close()
	for i := range maxQueue + 10 {
		m.placed(testOrder(fmt.Sprintf("ord-%03d", i), "alice"), time.Now())
	}
	m.placed(testOrder("ord-a", "alice"), time.Now())
	if q := one.Next(); len(q) != 1 || q[0].OrderID != "ord-a" {
		t.Fatalf("one-order subscription got %d changes", len(q))
	}
	// Every order changed once, so compacting keeps all of them.
	if q := all.Next(); len(q) != maxQueue+11 {
		t.Fatalf("all-orders subscription got %d changes, want %d", len(q), maxQueue+11)
	}
	all.Close()
	one.Close()
	if n := m.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
}

func TestWaitSeesLaterChange(t *testing.T) {
	m := newTestReadModel(t)
	o := testOrder("ord-w", "alice")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan Order, 1)
	go func() {
		got, err := m.Wait(ctx, "ord-w", func(o Order) bool { return o.Status == StatusRunning })
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	m.placed(o, time.Now())
	run := startSaga(t, o)
	feed(t, m, kafkatx.TopicSagaState, "ord-w", run.snapshot())
	if got := <-done; got.Status != StatusRunning {
		t.Fatalf("Wait returned %s", got.Status)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if _, err := m.Wait(short, "ord-w", func(o Order) bool { return o.Status == StatusCompleted }); err == nil {
		t.Fatal("Wait for a state never reached returned no error")
	}
}

// memArchive is an Archive in memory, for the read model's pure tests.
type memArchive struct {
	mu     sync.Mutex
	orders map[string][]byte
	fail   error
}

func (a *memArchive) Put(_ context.Context, os []ArchivedOrder) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	for _, o := range os {
		a.orders[o.ID] = o.Value
	}
	return nil
}

func (a *memArchive) Get(_ context.Context, id string) ([]byte, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.orders[id]
	return b, ok, nil
}

// An order that ended leaves memory after the Memory window, once the
// archive has it; a query for it is then answered from the archive. Live
// orders stay, and an archive that fails keeps the order in memory.
func TestReadModelMovesEndedOrdersToTheArchive(t *testing.T) {
	arch := &memArchive{orders: map[string][]byte{}, fail: errors.New("redis down (test)")}
	m, err := NewReadModel(ReadModelConfig{Brokers: "unused:9", Memory: time.Minute, Archive: arch}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	done, live := testOrder("ord-done", "alice"), testOrder("ord-live", "bob")
	run := startSaga(t, done)
	for run.inst.State == saga.Running {
		run.reply(saga.Success)
	}
	feed(t, m, kafkatx.TopicSagaState, "ord-done", run.snapshot())
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, run.endEvent())
	feed(t, m, kafkatx.TopicSagaState, "ord-live", startSaga(t, live).snapshot())
	ended := run.inst.History[len(run.inst.History)-1].At

	if n := m.sweep(context.Background(), ended.Add(30*time.Second)); n != 0 {
		t.Fatalf("swept %d orders inside the window", n)
	}
	if m.sweep(context.Background(), ended.Add(2*time.Minute)); m.Archived() != 0 {
		t.Fatal("an order left memory although the archive failed")
	}
	if _, ok := m.Get("ord-done"); !ok {
		t.Fatal("the order is gone although the archive failed")
	}
	arch.mu.Lock()
	arch.fail = nil
	arch.mu.Unlock()
	m.sweep(context.Background(), ended.Add(2*time.Minute))
	if _, ok := m.Get("ord-done"); ok || m.Archived() != 1 {
		t.Fatalf("after the window the ended order is still in memory (archived %d)", m.Archived())
	}
	got, ok, err := m.Lookup(context.Background(), "ord-done")
	if err != nil || !ok || got.Status != StatusCompleted || len(got.History) == 0 {
		t.Fatalf("lookup past the window: %+v %v %v", got, ok, err)
	}
	if _, ok := m.Get("ord-live"); !ok {
		t.Fatal("a live order left memory")
	}
	if c := m.Counts(); c[StatusCompleted] != 0 || c[StatusRunning] != 1 {
		t.Fatalf("counts %v: they count the orders in memory", c)
	}
}

// An ended order waits out its memory window packed (entry.packed): every
// way out of the read model still gives its steps and history.
func TestReadModelPacksEndedOrders(t *testing.T) {
	arch := &memArchive{orders: map[string][]byte{}}
	m, err := NewReadModel(ReadModelConfig{Brokers: "unused:9", Memory: time.Minute, Archive: arch}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	run := startSaga(t, testOrder("ord-packed", "alice"))
	for run.inst.State == saga.Running {
		run.reply(saga.Success)
	}
	last := run.snapshot()
	feed(t, m, kafkatx.TopicSagaState, "ord-packed", last)
	want, err := saga.DecodeSnapshot(last)
	if err != nil {
		t.Fatal(err)
	}
	m.mu.RLock()
	e := m.orders["ord-packed"]
	packed := e.packed != nil && e.order.Steps == nil && e.order.History == nil && e.order.Lines == nil
	m.mu.RUnlock()
	if !packed {
		t.Fatalf("a Completed order with its last snapshot is not packed: %+v", e)
	}
	placed := testOrder("ord-packed", "alice")
	check := func(how string, o Order) {
		t.Helper()
		if o.Status != StatusCompleted || o.CustomerID != placed.CustomerID || o.TotalCents != placed.TotalCents ||
			!reflect.DeepEqual(o.Lines, placed.Lines) || o.Reason != want.Reason || o.Summary().Step != StepConfirmOrder ||
			!reflect.DeepEqual(o.Steps, want.Steps) || !reflect.DeepEqual(o.History, want.History) {
			t.Fatalf("%s: %+v, want the order, steps and history of %+v", how, o, want)
		}
	}
	got, _ := m.Get("ord-packed")
	check("Get", got)
	page, _ := m.List(StatusCompleted, 10, Cursor{})
	if len(page) != 1 || page[0].Summary().Step != StepConfirmOrder {
		t.Fatalf("List: %+v", page)
	}
	check("List", page[0])
	got, err = m.Wait(context.Background(), "ord-packed", func(o Order) bool { return o.Status.Terminal() })
	if err != nil {
		t.Fatal(err)
	}
	check("Wait", got)
	// The end event comes after its snapshot: old news, the order stays packed.
	feedEnvelope(t, m, kafkatx.TopicOrderEvents, run.endEvent())
	m.mu.RLock()
	packed = m.orders["ord-packed"].packed != nil
	m.mu.RUnlock()
	if !packed {
		t.Fatal("the end event after its snapshot unpacked the order")
	}
	m.sweep(context.Background(), want.History[len(want.History)-1].At.Add(2*time.Minute))
	got, ok, err := m.Lookup(context.Background(), "ord-packed")
	if err != nil || !ok {
		t.Fatalf("lookup past the window: %v %v", ok, err)
	}
	check("the archive", got)
}

// BenchmarkReadModelGCWithEndedOrders is one full garbage collection while
// the read model holds 100,000 ended orders: what the orders service pays,
// again and again, for its -order-memory window at a high rate.
func BenchmarkReadModelGCWithEndedOrders(b *testing.B) {
	const n = 100_000
	m := newTestReadModel(b)
	run := startSaga(b, testOrder("ord-000000", "alice"))
	for run.inst.State == saga.Running {
		run.reply(saga.Success)
	}
	last := run.snapshot()
	for i := range n {
		feed(b, m, kafkatx.TopicSagaState, "", bytes.ReplaceAll(last, []byte("ord-000000"), fmt.Appendf(nil, "ord-%06d", i)))
	}
	if c := m.Counts(); c[StatusCompleted] != n {
		b.Fatalf("counts %v, want %d Completed", c, n)
	}
	for b.Loop() {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapAlloc)/n, "heap-B/order")
	runtime.KeepAlive(m)
}

// The queue of ended orders drops what the sweep took by reslicing; what it
// keeps of its backing array must stay bounded by the window, not grow with
// every order that ever passed.
func TestReadModelEndedQueueStaysBounded(t *testing.T) {
	const window = 1000
	m := newTestReadModel(t)
	t0 := time.Now()
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
	for i := range 100 * window {
		m.mu.Lock()
		m.noteEnd(Order{OrderID: strconv.Itoa(i), Status: StatusCompleted, UpdatedAt: at(i)}, StatusRunning)
		m.mu.Unlock()
		if i%100 == 0 && i >= window {
			m.sweep(context.Background(), at(i-window).Add(m.cfg.Memory))
		}
	}
	if n := len(m.ended); n < window || n > window+100 {
		t.Fatalf("the queue holds %d ended orders, want the window's %d", n, window)
	}
	if c := cap(m.ended); c > 4*window {
		t.Fatalf("the queue's array holds room for %d orders with %d in it: it grows with the orders that passed", c, len(m.ended))
	}
	if m.ended[0].id != strconv.Itoa(100*window-len(m.ended)) {
		t.Fatalf("the oldest queued order is %s, want %d", m.ended[0].id, 100*window-len(m.ended))
	}
}

// BenchmarkReadModelEndedQueue is what one ended order costs the queue that
// the sweep works through, while the queue holds a whole Memory window of
// them (300,000 is five minutes at 1,000 orders/s). It must not grow with
// the window.
func BenchmarkReadModelEndedQueue(b *testing.B) {
	for _, window := range []int{10_000, 300_000} {
		b.Run(fmt.Sprintf("window=%d", window), func(b *testing.B) {
			m := newTestReadModel(b)
			t0 := time.Now()
			at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Millisecond) }
			end := func(i int) {
				m.mu.Lock()
				m.noteEnd(Order{OrderID: strconv.Itoa(i), Status: StatusCompleted, UpdatedAt: at(i)}, StatusRunning)
				m.mu.Unlock()
			}
			for i := range window {
				end(i)
			}
			i := window
			for b.Loop() {
				end(i)
				if i%sweepBatch == 0 {
					// Everything older than the window is due.
					m.sweep(context.Background(), at(i-window).Add(m.cfg.Memory))
				}
				i++
			}
			if n := len(m.ended); n < window-sweepBatch || n > window+sweepBatch {
				b.Fatalf("the queue holds %d ended orders, want about %d", n, window)
			}
		})
	}
}
