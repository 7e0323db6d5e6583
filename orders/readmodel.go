package orders

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// ReadModelConfig configures a ReadModel.
type ReadModelConfig struct {
	// Brokers is the Kafka bootstrap list. Required.
	Brokers string
	// StateTopic holds the orchestrator's snapshots; EventsTopic OrderPlaced
	// and the end events. Defaults saga.state and orders.events.
	StateTopic, EventsTopic string
	// Memory is how long an order that ended (Completed or Cancelled) stays
	// in memory after it ended; then it is written to Archive and dropped,
	// so memory holds live and recent orders only. Failed orders wait for an
	// operator and stay. Default 5 minutes.
	Memory time.Duration
	// Archive keeps ended orders after they leave memory, for Get. Nil: an
	// order past its memory window is answered 404.
	Archive Archive
}

// Archive stores ended orders for longer than the read model keeps them in
// memory (a Redis key with a TTL each, in the services). It keeps each
// order's record as the read model made it, and gives it back by id. Put
// is idempotent: every orders instance puts the same final state. Get's
// bool says whether the order was found; an error means the archive could
// not be asked.
type Archive interface {
	Put(ctx context.Context, orders []ArchivedOrder) error
	Get(ctx context.Context, id string) ([]byte, bool, error)
}

func (c ReadModelConfig) withDefaults() ReadModelConfig {
	if c.StateTopic == "" {
		c.StateTopic = kafkatx.TopicSagaState
	}
	if c.EventsTopic == "" {
		c.EventsTopic = kafkatx.TopicOrderEvents
	}
	if c.Memory == 0 {
		c.Memory = DefaultMemory
	}
	return c
}

// DefaultMemory is ReadModelConfig.Memory's default.
const DefaultMemory = 5 * time.Minute

// Validate reports what is wrong with the configuration.
func (c ReadModelConfig) Validate() error {
	if c.Brokers == "" {
		return errors.New("orders: invalid read model config: no Brokers")
	}
	if c.Memory < 0 {
		return errors.New("orders: invalid read model config: negative Memory")
	}
	return nil
}

// ReadModel is the orders as the log says they are. It follows saga.state
// and orders.events from the beginning with read_committed (kafkatx.Follow),
// so it sees exactly what the orchestrator committed and can always be
// rebuilt:
//
//   - OrderPlaced creates a Placed order with the event's data. A second
//     OrderPlaced for the same id changes nothing, as the orchestrator
//     ignores a second start.
//   - A snapshot gives the status, steps and history. It is the truth; a
//     snapshot can arrive before the OrderPlaced it follows (they are on
//     different topics), so it creates the order from the saga's data if
//     needed.
//   - An end event (OrderConfirmed, OrderCancelled, OrderFailed) is committed
//     with the snapshot that ends the saga and carries that snapshot's
//     Version. The two topics are read in no set order, so the event may
//     come first: it then gives the end state at once, and snapshots older
//     than it are passed over, so the order never steps back from
//     Completed to Running. An event older than what was read (an
//     OrderFailed before an operator's retry) changes nothing.
//
// It holds live orders and those that ended within the Memory window; older
// ones are in the Archive (see ReadModelConfig), so memory stays flat however
// many orders pass.
type ReadModel struct {
	cfg ReadModelConfig
	log *zap.Logger

	mu     sync.RWMutex
	orders map[string]*entry
	// next[topic][partition] is the next offset to apply: a restarted Follow
	// reads from the beginning again, and what was applied is skipped.
	next   map[string]map[int32]int64
	subs   map[*Subscription]struct{}
	counts map[Status]int
	// ended lists the orders that ended, oldest end first, for the sweep
	// that moves them to the archive.
	ended []endedOrder
	// pace counts the ends read in each of the last seconds (Backlog).
	pace pace

	applied, skipped, archived atomic.Int64
	// caughtUp says the current follow has read what the topics held when
	// it began (CaughtUp).
	caughtUp atomic.Bool
}

type endedOrder struct {
	id string
	at time.Time
}

// entry is the read model's record of one order.
type entry struct {
	order Order
	// version is the newest saga Version read, from a snapshot or an end
	// event; zero before either. full says the snapshot of that version was
	// applied: when an end event got ahead of it, steps and history are
	// older than the status until it comes.
	version uint64
	full    bool
	// packed is the snapshot record that ended the order (Completed or
	// Cancelled), kept as it came. Meanwhile order holds only what List
	// sorts and filters on and the sweep compares (id, total, status,
	// times, step and rev); get unpacks the rest. An ended order waits out
	// the memory window untouched, and the bytes give the garbage collector
	// two objects to mark instead of one per line, step and history entry:
	// at a thousand orders a second the window holds 300,000 orders, and
	// the collector marks them again on every cycle.
	packed []byte
}

// get returns the whole order.
func (e *entry) get() Order {
	o := e.order
	if e.packed == nil {
		return o
	}
	// These bytes decoded before (snapshot), and their data is the order
	// the orchestrator checked at the saga's start: this cannot fail now.
	o, err := unpack(o, e.packed)
	if err != nil {
		panic(fmt.Sprintf("orders: a kept snapshot no longer unpacks: %v", err))
	}
	return o
}

// pack keeps an ended order as the snapshot that ended it; see packed.
func (e *entry) pack(snapshot []byte) {
	if !e.full || (e.order.Status != StatusCompleted && e.order.Status != StatusCancelled) {
		return
	}
	o := e.order
	e.order = Order{OrderID: o.OrderID, TotalCents: o.TotalCents, Status: o.Status, PlacedAt: o.PlacedAt,
		UpdatedAt: o.UpdatedAt, step: o.step, rev: o.rev}
	e.packed = snapshot
}

// NewReadModel returns a read model; Run fills it. A nil log means no
// logging.
func NewReadModel(cfg ReadModelConfig, log *zap.Logger) (*ReadModel, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &ReadModel{cfg: cfg.withDefaults(), log: log, orders: map[string]*entry{},
		next: map[string]map[int32]int64{}, subs: map[*Subscription]struct{}{}, counts: map[Status]int{}}, nil
}

// Run follows the topics until ctx is done, then returns nil. When the
// follow fails (the topics do not exist yet, the broker is unreachable for
// good) it logs and starts again after a pause: a read model that stopped
// would show stale orders as if they were current.
func (m *ReadModel) Run(ctx context.Context) error {
	sctx, stopSweep := context.WithCancel(ctx)
	defer stopSweep()
	go m.sweeper(sctx)
	backoff := 500 * time.Millisecond
	for {
		// saga.state is compacted down to live and recent sagas, and is
		// read whole; of orders.events only what is recent enough to
		// matter: OrderPlaced of orders that have no snapshot yet. Replaying
		// a week of events on every restart is what a bounded read model
		// must not do.
		since := time.Now().Add(-max(m.cfg.Memory, time.Minute) - time.Minute)
		began := time.Now()
		err := kafkatx.FollowSince(ctx, m.cfg.Brokers, []string{m.cfg.StateTopic, m.cfg.EventsTopic},
			map[string]time.Time{m.cfg.EventsTopic: since}, func() {
				m.caughtUp.Store(true)
				m.log.Info("read model caught up", zap.Int64("applied", m.applied.Load()), zap.Duration("took", time.Since(began)))
			}, m.apply)
		m.caughtUp.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		m.log.Warn("read model follow stopped; starting again", zap.Duration("after", backoff), zap.Error(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// CaughtUp reports whether the read model has read everything its topics
// held when it started following them. Until then it shows orders as they
// were some time ago, and the API's /readyz says so.
func (m *ReadModel) CaughtUp() bool { return m.caughtUp.Load() }

// Get returns the order with id, from memory.
func (m *ReadModel) Get(id string) (Order, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	e, ok := m.orders[id]
	if !ok {
		return Order{}, false
	}
	return e.get(), true
}

// Lookup returns the order with id from memory, or else from the archive.
func (m *ReadModel) Lookup(ctx context.Context, id string) (Order, bool, error) {
	if o, ok := m.Get(id); ok {
		return o, true, nil
	}
	if m.cfg.Archive == nil {
		return Order{}, false, nil
	}
	b, ok, err := m.cfg.Archive.Get(ctx, id)
	if err != nil || !ok {
		return Order{}, false, err
	}
	o, err := decodeArchived(b)
	if err != nil {
		return Order{}, false, fmt.Errorf("orders: archived order %s: %w", id, err)
	}
	return o, true, nil
}

// Archived counts the orders moved from memory to the archive.
func (m *ReadModel) Archived() int64 { return m.archived.Load() }

// sweeper moves the orders past their memory window to the archive, in
// batches, until ctx is done.
func (m *ReadModel) sweeper(ctx context.Context) {
	t := time.NewTicker(min(time.Second, max(m.cfg.Memory/4, 10*time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for m.sweep(ctx, time.Now()) == sweepBatch {
		}
	}
}

const sweepBatch = 1000

// sweep archives and drops up to sweepBatch orders whose window passed, and
// returns how many. An order is dropped only once the archive has it: if
// the archive cannot be written, the orders stay and the next sweep tries
// again.
func (m *ReadModel) sweep(ctx context.Context, now time.Time) int {
	m.mu.RLock()
	// Counted first, so that the slice is made once and only when some are
	// due: the sweeper runs every second whatever the rate.
	n := 0
	for n < len(m.ended) && n < sweepBatch && now.Sub(m.ended[n].at) >= m.cfg.Memory {
		n++
	}
	if n == 0 {
		m.mu.RUnlock()
		return 0
	}
	// The entries as they are now: a packed one's order and snapshot are
	// not changed after packing (a change replaces them), so they are
	// encoded outside the lock.
	due := make([]Order, 0, n)
	packed := make([][]byte, 0, n)
	for _, e := range m.ended[:n] {
		if en, ok := m.orders[e.id]; ok {
			due, packed = append(due, en.order), append(packed, en.packed)
		} else {
			due, packed = append(due, Order{OrderID: e.id}), append(packed, nil) // gone already: nothing to write
		}
	}
	m.mu.RUnlock()
	if m.cfg.Archive != nil {
		put := make([]ArchivedOrder, 0, len(due))
		for i, o := range due {
			if o.Status == "" {
				continue
			}
			b, err := encodeArchived(o, packed[i])
			if err != nil {
				// It never will be (a time past year 9999): keeping it
				// would hold memory for good, or stop every sweep after.
				m.log.Error("an ended order cannot be encoded for the archive; it leaves memory unarchived",
					zap.String("order_id", o.OrderID), zap.Error(err))
				continue
			}
			put = append(put, ArchivedOrder{ID: o.OrderID, Value: b})
		}
		if err := m.cfg.Archive.Put(ctx, put); err != nil {
			m.log.Warn("archiving ended orders failed; they stay in memory until the next try", zap.Error(err))
			return 0
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, o := range due {
		e, ok := m.orders[o.OrderID]
		// A changed order (an operator moved it on) is not what was
		// archived: it stays.
		switch {
		case ok && e.order.rev == o.rev:
			m.counts[e.order.Status]--
			delete(m.orders, o.OrderID)
			m.archived.Add(1)
		case ok && (e.order.Status == StatusCompleted || e.order.Status == StatusCancelled):
			// Changed since it was read (its full snapshot came after the
			// end event): archive it on a later sweep.
			m.ended = append(m.ended, endedOrder{id: o.OrderID, at: e.order.UpdatedAt})
		}
	}
	// Off the front by reslicing, not by copying the rest: the queue holds
	// a whole Memory window (300,000 orders at 1,000 a second and 5
	// minutes), and a copy after every sweep, then another when the next
	// end outgrew the copy's exact size, cost 28 KB and 34 µs an order
	// (BenchmarkReadModelEndedQueue). append moves the live part to a new
	// array once the old one's tail is used up, so each entry is copied a
	// bounded number of times; clear lets the ids swept go meanwhile.
	clear(m.ended[:len(due)])
	m.ended = m.ended[len(due):]
	return len(due)
}

// noteEnd counts an order that ended towards the pace, and queues one that
// reached Completed or Cancelled for the sweep. m.mu is held.
func (m *ReadModel) noteEnd(o Order, was Status) {
	if o.Status.Terminal() && !was.Terminal() {
		m.pace.add(time.Now())
	}
	if (o.Status == StatusCompleted || o.Status == StatusCancelled) && was != o.Status {
		// When it ended, not when it was read: after a restart the
		// replayed orders that ended long ago go to the archive at once.
		m.ended = append(m.ended, endedOrder{id: o.OrderID, at: o.UpdatedAt})
	}
}

// Cursor is where a page of List ended: the last order's placement time and
// id. The zero Cursor starts at the newest order.
type Cursor struct {
	PlacedAt time.Time
	OrderID  string
}

// newer orders a before b in the list: newest first, ties by id.
func newer(a, b Order) int {
	if c := b.PlacedAt.Compare(a.PlacedAt); c != 0 {
		return c
	}
	return cmp.Compare(b.OrderID, a.OrderID)
}

// List returns up to limit orders with the given status ("" for any),
// newest first, that come after the cursor, and the cursor of the next page
// (zero when there is none). It lists the orders in memory: the live ones
// and those that ended within the memory window; an older one is read by
// id from the archive.
func (m *ReadModel) List(status Status, limit int, after Cursor) ([]Order, Cursor) {
	type listed struct {
		o Order // only what pack keeps, if e was packed
		e *entry
	}
	m.mu.RLock()
	var all []listed
	for _, e := range m.orders {
		if (status == "" || e.order.Status == status) &&
			(after == Cursor{} || newer(Order{PlacedAt: after.PlacedAt, OrderID: after.OrderID}, e.order) < 0) {
			all = append(all, listed{e.order, e})
		}
	}
	m.mu.RUnlock()
	slices.SortFunc(all, func(a, b listed) int { return newer(a.o, b.o) })
	var next Cursor
	if len(all) > limit {
		all = all[:limit]
		last := all[limit-1].o
		next = Cursor{PlacedAt: last.PlacedAt, OrderID: last.OrderID}
	}
	// Only the page is unpacked. A packed order has ended for good, so
	// its entry still holds what was listed (an entry swept to the archive
	// meanwhile too).
	out := make([]Order, len(all))
	m.mu.RLock()
	for i, l := range all {
		out[i] = l.o
		if l.o.rev == l.e.order.rev {
			out[i] = l.e.get()
		}
	}
	m.mu.RUnlock()
	return out, next
}

// Counts returns the number of orders in each status.
func (m *ReadModel) Counts() map[Status]int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make(map[Status]int, len(statuses))
	for _, s := range statuses {
		out[s] = m.counts[s]
	}
	return out
}

// Backlog returns how many orders are running (placed, not ended; a Failed
// order waits for an operator and costs nothing) and how many ended per
// second over the last paceWindow, as read from Kafka. Their ratio is about
// how long a new order would wait behind them (Little's law).
func (m *ReadModel) Backlog() (running int, perSecond float64) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	running = m.counts[StatusPlaced] + m.counts[StatusRunning] + m.counts[StatusCompensating]
	return running, m.pace.rate(time.Now())
}

// paceWindow is how far back Backlog's pace looks: long enough that one
// slow second (a commit that waited) does not make the API refuse, short
// enough that a stalled system shows within seconds.
const paceWindow = 10

// pace is a ring of per-second counts: the paceWindow seconds before the
// current one, and the current one, which is still filling. add is called
// with the time of day, which does not go back (a second older than a
// slot's would take its place).
type pace struct {
	sec   [paceWindow + 1]int64 // the Unix second each slot counts
	count [paceWindow + 1]int
}

func (p *pace) add(now time.Time) {
	s := now.Unix()
	i := s % (paceWindow + 1)
	if p.sec[i] != s {
		p.sec[i], p.count[i] = s, 0
	}
	p.count[i]++
}

// rate is the ends per second over the paceWindow whole seconds before now's.
func (p *pace) rate(now time.Time) float64 {
	s, n := now.Unix(), 0
	for i := range p.sec {
		if d := s - p.sec[i]; d >= 1 && d <= paceWindow {
			n += p.count[i]
		}
	}
	return float64(n) / paceWindow
}

// Stats says how many records the read model applied and skipped
// (undecodable, of another saga type, or already applied).
func (m *ReadModel) Stats() (applied, skipped int64) { return m.applied.Load(), m.skipped.Load() }

// Subscribers returns how many subscriptions are open.
func (m *ReadModel) Subscribers() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.subs)
}

// Wait returns the order with id once cond holds for it, or ctx's error (with
// the last state seen, if any). For tests and for callers that must see
// their own write.
func (m *ReadModel) Wait(ctx context.Context, id string, cond func(Order) bool) (Order, error) {
	sub := m.Subscribe(id)
	defer sub.Close()
	o, ok := m.Get(id)
	for {
		if ok && cond(o) {
			return o, nil
		}
		select {
		case <-ctx.Done():
			if ok {
				return o, fmt.Errorf("orders: order %s is %s: %w", id, o.Status, ctx.Err())
			}
			return o, fmt.Errorf("orders: order %s not seen: %w", id, ctx.Err())
		case <-sub.C():
			for _, n := range sub.Next() {
				o, ok = n, true
			}
		}
	}
}

// placed records an order this process just produced and Kafka
// acknowledged, so the client that placed it can read it at once. It is the
// same record Follow will read: the OrderPlaced it produced is committed
// (it is not transactional), and applying it again changes nothing.
func (m *ReadModel) placed(o OrderPlaced, at time.Time) Order {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.orders[o.OrderID]; ok {
		return e.get()
	}
	return m.create(o, at)
}

// create adds a Placed order. m.mu is held.
func (m *ReadModel) create(o OrderPlaced, at time.Time) Order {
	e := &entry{order: Order{OrderID: o.OrderID, CustomerID: o.CustomerID, Scenario: o.Scenario,
		Lines: nonNil(o.Lines), TotalCents: o.TotalCents, Status: StatusPlaced,
		PlacedAt: at.UTC(), UpdatedAt: at.UTC(), Steps: []saga.StepState{}, History: []saga.Change{}}}
	e.order.rev = 1
	m.orders[o.OrderID] = e
	m.counts[StatusPlaced]++
	m.publish(e.order)
	return e.order
}

// apply is Follow's callback: one record, on Follow's goroutine.
func (m *ReadModel) apply(r kafkatx.Record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	parts := m.next[r.Topic]
	if parts == nil {
		parts = map[int32]int64{}
		m.next[r.Topic] = parts
	}
	if r.Offset < parts[r.Partition] {
		m.skipped.Add(1)
		return
	}
	parts[r.Partition] = r.Offset + 1
	var ok bool
	switch r.Topic {
	case m.cfg.StateTopic:
		ok = m.snapshot(r)
	case m.cfg.EventsTopic:
		ok = m.event(r)
	}
	if ok {
		m.applied.Add(1)
	} else {
		m.skipped.Add(1)
	}
}

// snapshot applies a saga.state record. m.mu is held.
func (m *ReadModel) snapshot(r kafkatx.Record) bool {
	if len(r.Value) == 0 {
		return false // a tombstone: nothing in sagaflow writes one, and it carries no state
	}
	in, err := saga.DecodeSnapshot(r.Value)
	if err != nil || in.ID == "" {
		m.log.Warn("unreadable snapshot", zap.String("topic", r.Topic), zap.Int32("partition", r.Partition),
			zap.Int64("offset", r.Offset), zap.Error(err))
		return false
	}
	if in.Type != SagaType {
		return false
	}
	e, ok := m.orders[in.ID]
	if !ok {
		data, err := decodeOrderPlaced(in.Data)
		if err != nil {
			m.log.Warn("snapshot without an order", zap.String("saga_id", in.ID), zap.Error(err))
			return false
		}
		data.OrderID = in.ID
		at := r.Timestamp
		if len(in.History) > 0 {
			at = in.History[0].At
		}
		m.create(data, at)
		e = m.orders[in.ID]
	}
	if in.Version < e.version || in.Version == e.version && e.full {
		// Older than what was read, or the same with only Ignored moved (a
		// duplicate reply), which the API does not show.
		return true
	}
	o := e.get()
	was := o.Status
	m.counts[o.Status]--
	o.Status, o.Reason, o.step = statusOf(in.State), in.Reason, in.Step
	o.Steps, o.History = nonNil(in.Steps), nonNil(in.History)
	if n := len(in.History); n > 0 {
		o.UpdatedAt = in.History[n-1].At.UTC()
	}
	o.rev++
	e.order, e.version, e.full, e.packed = o, in.Version, true, nil
	m.counts[o.Status]++
	m.noteEnd(o, was)
	m.publish(o)
	e.pack(r.Value)
	return true
}

// event applies an orders.events record. m.mu is held.
func (m *ReadModel) event(r kafkatx.Record) bool {
	env, err := saga.Decode(r)
	if err != nil {
		// The orchestrator dead-letters it; here it is simply not an order.
		m.log.Warn("undecodable record", zap.String("topic", r.Topic), zap.Int32("partition", r.Partition),
			zap.Int64("offset", r.Offset), zap.Error(err))
		return false
	}
	switch env.Type {
	case TypeOrderPlaced:
		if _, ok := m.orders[env.SagaID]; ok {
			return true
		}
		o, err := decodeOrderPlaced(env.Payload)
		if err != nil || o.OrderID != env.SagaID {
			m.log.Warn("OrderPlaced without an order", zap.String("saga_id", env.SagaID), zap.Error(err))
			return false
		}
		m.create(o, r.Timestamp)
		return true
	case TypeOrderConfirmed, TypeOrderCancelled, TypeOrderFailed:
		var ev saga.EndEvent
		if err := saga.DecodeJSON(env.Payload, &ev); err != nil || !terminal(ev.State) || ev.Version == 0 {
			m.log.Warn("unreadable end event", zap.String("saga_id", env.SagaID), zap.Error(err))
			return false
		}
		e, ok := m.orders[env.SagaID]
		if !ok {
			o, err := decodeOrderPlaced(ev.Data)
			if err != nil {
				m.log.Warn("end event without an order", zap.String("saga_id", env.SagaID), zap.Error(err))
				return false
			}
			o.OrderID = env.SagaID
			m.create(o, r.Timestamp)
			e = m.orders[env.SagaID]
		}
		if ev.Version <= e.version {
			return true // its snapshot, or a newer one, was read already
		}
		o := e.get()
		was := o.Status
		m.counts[o.Status]--
		o.Status, o.Reason, o.UpdatedAt = statusOf(ev.State), ev.Reason, r.Timestamp.UTC()
		o.rev++
		e.order, e.version, e.full, e.packed = o, ev.Version, false, nil
		m.counts[o.Status]++
		m.noteEnd(o, was)
		m.publish(o)
		return true
	}
	return false // not for the read model
}

func terminal(s saga.State) bool {
	return s == saga.Completed || s == saga.Cancelled || s == saga.Failed
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// maxQueue is how many changes a subscription holds before it keeps only
// the newest of each order: a client that cannot keep up misses
// intermediate states, never the latest one.
const maxQueue = 256

// Subscription receives every change to the orders it watches. It never
// blocks the read model: changes queue up, and a receiver that falls far
// behind gets the newest state of each changed order.
type Subscription struct {
	m      *ReadModel
	id     string // "" watches every order
	signal chan struct{}

	mu    sync.Mutex
	queue []Order
}

// Subscribe watches the order with id, or every order when id is "". Close
// it when done.
func (m *ReadModel) Subscribe(id string) *Subscription {
	s := &Subscription{m: m, id: id, signal: make(chan struct{}, 1)}
	m.mu.Lock()
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	return s
}

// C is signalled when changes are waiting; Next takes them.
func (s *Subscription) C() <-chan struct{} { return s.signal }

// Next returns the changes waiting, oldest first, and clears them.
func (s *Subscription) Next() []Order {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queue
	s.queue = nil
	return q
}

// Close stops the subscription. It may be called more than once.
func (s *Subscription) Close() {
	s.m.mu.Lock()
	delete(s.m.subs, s)
	s.m.mu.Unlock()
}

// publish hands o to the subscriptions that watch it. m.mu is held.
func (m *ReadModel) publish(o Order) {
	for s := range m.subs {
		if s.id != "" && s.id != o.OrderID {
			continue
		}
		s.mu.Lock()
		if len(s.queue) >= maxQueue {
			s.queue = newestEach(s.queue)
		}
		s.queue = append(s.queue, o)
		s.mu.Unlock()
		select {
		case s.signal <- struct{}{}:
		default: // already signalled
		}
	}
}

// newestEach keeps the last change of each order, in the order of those last
// changes.
func newestEach(q []Order) []Order {
	last := make(map[string]int, len(q))
	for i, o := range q {
		last[o.OrderID] = i
	}
	out := q[:0:0]
	for i, o := range q {
		if last[o.OrderID] == i {
			out = append(out, o)
		}
	}
	return out
}
