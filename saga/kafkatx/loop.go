package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/zap"
)

// Handler handles one batch of records inside one transaction: what it
// produces to out becomes visible, together with the consumed offsets, if and
// only if the transaction commits.
//
// An error aborts the transaction; the same records are handled again after a
// backoff (a transient failure). An error made with Poison sets that one record
// aside for Config.OnPoison and the rest of the batch is handled again at once.
// A handler must be safe to call again with records it already saw: a batch
// whose commit failed is handled again.
type Handler func(ctx context.Context, records []Record, out *Sink) error

// Sink produces records into the open transaction.
type Sink struct {
	p        *kafka.Producer
	err      error
	produced int
	onCommit []func()
	track    *delivered
}

// delivered gathers the offsets of a Sink's tracked messages from their
// delivery reports, which the producer's event goroutine hands over.
type delivered struct {
	mu      sync.Mutex
	pending int
	failed  bool
	last    map[TopicPartition]int64
	all     chan struct{} // closed when pending reaches 0 after settle
	settled bool
}

func (d *delivered) report(m *kafka.Message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.pending--
	if m.TopicPartition.Error != nil {
		d.failed = true
	} else {
		tp := TopicPartition{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition}
		d.last[tp] = max(d.last[tp], int64(m.TopicPartition.Offset))
	}
	if d.settled && d.pending == 0 {
		close(d.all)
	}
}

// wait waits, at most d, for every tracked message's delivery report. After
// a commit they were all sent, so this is a formality unless the producer
// broke; then the offsets stay unknown.
func (d *delivered) wait(timeout time.Duration) bool {
	d.mu.Lock()
	d.settled = true
	if d.pending == 0 {
		d.mu.Unlock()
		return !d.failed
	}
	d.mu.Unlock()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-d.all:
		d.mu.Lock()
		defer d.mu.Unlock()
		return !d.failed
	case <-t.C:
		return false
	}
}

// Offsets returns, for the tracked messages of the transaction (see
// Message.Tracked), the highest offset of each partition they went to. It is
// meant for OnCommit functions; ok is false when some offset is not known,
// and then none should be relied on.
func (s *Sink) Offsets() (last map[TopicPartition]int64, ok bool) {
	if s.track == nil {
		return nil, true
	}
	s.track.mu.Lock()
	defer s.track.mu.Unlock()
	return s.track.last, s.track.settled && s.track.pending == 0 && !s.track.failed
}

// Produce sends m inside the transaction. A failure is remembered and aborts
// the transaction when the handler returns, so handlers need not check it.
func (s *Sink) Produce(ctx context.Context, m Message) {
	if s.err != nil {
		return
	}
	if m.Topic == "" {
		s.err = errors.New("kafkatx: message without topic")
		return
	}
	msg := &kafka.Message{
		TopicPartition: kafka.TopicPartition{Topic: &m.Topic, Partition: kafka.PartitionAny},
		Key:            m.Key,
		Value:          m.Value,
	}
	if m.pinned {
		msg.TopicPartition.Partition = m.partition
	}
	if len(m.Headers) > 0 {
		msg.Headers = make([]kafka.Header, len(m.Headers))
		for i, h := range m.Headers {
			msg.Headers[i] = kafka.Header{Key: h.Key, Value: h.Value}
		}
	}
	if m.tracked {
		if s.track == nil {
			s.track = &delivered{last: map[TopicPartition]int64{}, all: make(chan struct{})}
		}
		msg.Opaque = s.track
	}
	for {
		if m.tracked {
			s.track.mu.Lock()
			s.track.pending++
			s.track.mu.Unlock()
		}
		err := s.p.Produce(msg, nil)
		if err == nil {
			s.produced++
			return
		}
		if m.tracked {
			s.track.mu.Lock()
			s.track.pending--
			s.track.mu.Unlock()
		}
		// A full local queue drains as deliveries complete; waiting is the
		// remedy, not failing the transaction.
		if ke, ok := kafkaErr(err); ok && ke.Code() == kafka.ErrQueueFull && ctx.Err() == nil {
			s.p.Flush(50)
			continue
		}
		s.err = fmt.Errorf("kafkatx: produce to %s: %w", m.Topic, err)
		return
	}
}

// OnCommit registers f to run after the transaction committed. Handlers that
// keep state in memory stage changes here, so an aborted attempt leaves that
// state as it was.
func (s *Sink) OnCommit(f func()) { s.onCommit = append(s.onCommit, f) }

// Stats counts what a Loop did. All fields only grow.
type Stats struct {
	Committed         int64 // transactions committed
	Aborted           int64 // transactions aborted (handler errors, abortable Kafka errors)
	Records           int64 // records committed as consumed
	Produced          int64 // records committed as produced
	Poison            int64 // records handed to OnPoison
	ProducerRecreated int64 // producers replaced after a fatal error
	Rewinds           int64 // seeks back to the committed offsets
	// Wedged counts transactional calls that did not return within
	// Config.WedgeTimeout, each answered by a new consumer and producer;
	// Stuck is how many of those calls have not returned yet (see Run).
	Wedged, Stuck int64
	// Assigned is the number of partitions this instance owns now: zero
	// before it joined its group, after it lost them all and after Run.
	Assigned int64
	// Where the time goes, summed over committed records and transactions
	// (divide by Records or Committed for means): Arrival is from a
	// record's timestamp (its producer's clock, on this machine the same)
	// to its poll, which is the upstream commit plus the fetch; Queued is
	// from its poll to the start of its transaction; TxnTime is begin to
	// committed.
	Arrival, Queued, TxnTime time.Duration
	// ProducerRequests counts the requests the loop's producers sent to
	// Kafka, by type ("Produce", "EndTxn", ...), as of their latest
	// statistics report (every 10 s; statistics.interval.ms in
	// Config.ProducerConfig changes it).
	ProducerRequests map[string]int64
}

// add adds t's counters to s (Lanes sums its loops with it). Assigned
// adds up too: lanes own disjoint partitions.
func (s *Stats) add(t Stats) {
	s.Committed += t.Committed
	s.Aborted += t.Aborted
	s.Records += t.Records
	s.Produced += t.Produced
	s.Poison += t.Poison
	s.ProducerRecreated += t.ProducerRecreated
	s.Rewinds += t.Rewinds
	s.Wedged += t.Wedged
	s.Stuck += t.Stuck
	s.Assigned += t.Assigned
	s.Arrival += t.Arrival
	s.Queued += t.Queued
	s.TxnTime += t.TxnTime
	for k, n := range t.ProducerRequests {
		if s.ProducerRequests == nil {
			s.ProducerRequests = map[string]int64{}
		}
		s.ProducerRequests[k] += n
	}
}

// Loop is a transactional consume-process-produce loop. Run it once.
type Loop struct {
	cfg     Config
	log     *zap.Logger
	handler Handler

	consumer *kafka.Consumer
	producer *kafka.Producer
	prodDone chan struct{}

	batch      []Record
	batchStart time.Time
	// busy is the size of the last batch committed, or 0 once the loop
	// has found nothing to poll since: whether a new batch waits for more
	// (Config.BatchWait).
	busy int
	// next is the lowest offset still expected per partition. Records below
	// it are leftovers fetched before a seek back and are dropped, so a
	// record is never handled twice within one process.
	next map[TopicPartition]int64
	// stop is set inside the rebalance callback, which cannot return errors
	// to Run.
	stop error
	// inCall is when the transactional call in progress began (unix
	// nanos), 0 when none is: Run's wedge watchdog reads it.
	inCall atomic.Int64
	// callName names that call, for the watchdog's log: which call wedged
	// is what tells a client bug from a broker that never answered.
	callName atomic.Pointer[string]
	failures int
	ctx      context.Context
	// protocol is the group's rebalance protocol, learnt at the first
	// assignment; owned is the assignment, kept from the rebalance events.
	protocol string
	owned    map[TopicPartition]struct{}
	// reset is where an assigned partition without committed offsets
	// starts (see startOffsets).
	reset kafka.Offset
	// refenced holds when the producer was recreated after being fenced
	// (see onFenced).
	refenced []time.Time

	// rebalancing is set while the rebalance callback runs, and gone once
	// Run gave this loop up in a wedged call and went on with a successor
	// (see Run): from then on the loop touches neither its consumer nor
	// anything shared, and only closes its producer when the call returns.
	rebalancing, gone atomic.Bool
	// handling is set while the handler runs beside the call that sends
	// the offsets (see attempt): the watchdog does not give a loop up
	// before its handler returned, since the handler's state and the
	// consumer are then still in use.
	handling atomic.Bool

	stats *counters
	// slow watches for slow transactions; timing is the latest
	// transaction's, filled by attempt.
	slow   *slowTxns
	timing txnTiming
	// polled holds when each record of the batch was polled, in batch order.
	polled []time.Time
}

// counters are shared by a Loop and the successors Run starts in its place
// after a wedged call, so Stats counts the work of all of them.
type counters struct {
	committed, aborted, records, produced, poison, recreated, rewinds, assigned, wedges atomic.Int64
	arrival, queued, txnTime, offsetsTime, commitTime                                   atomic.Int64
	// stuck counts the loops given up whose wedged call has not returned
	// yet: each holds a librdkafka producer that cannot be closed before.
	stuck    atomic.Int64
	requests requestCounts
}

// New returns a Loop that calls h for each batch. A nil log means no logging.
func New(cfg Config, h Handler, log *zap.Logger) (*Loop, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("kafkatx: nil handler")
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	return &Loop{cfg: cfg, handler: h, next: map[TopicPartition]int64{}, owned: map[TopicPartition]struct{}{},
		log:   log.With(zap.String("group", cfg.Group), zap.String("transactional_id", cfg.TransactionalID)),
		stats: &counters{}, slow: newSlowTxns(cfg.SlowTxn)}, nil
}

// successor is a fresh loop with l's configuration, handler and counters:
// what Run goes on with after giving l up in a wedged call.
func (l *Loop) successor() *Loop {
	return &Loop{cfg: l.cfg, handler: l.handler, log: l.log, stats: l.stats, slow: newSlowTxns(l.cfg.SlowTxn),
		next: map[TopicPartition]int64{}, owned: map[TopicPartition]struct{}{}}
}

// Stats returns a snapshot of the counters; safe from any goroutine.
func (l *Loop) Stats() Stats {
	reqs, _ := l.stats.requests.snapshot()
	return Stats{
		Committed: l.stats.committed.Load(), Aborted: l.stats.aborted.Load(),
		Records: l.stats.records.Load(), Produced: l.stats.produced.Load(),
		Poison: l.stats.poison.Load(), ProducerRecreated: l.stats.recreated.Load(),
		Rewinds: l.stats.rewinds.Load(), Assigned: l.stats.assigned.Load(),
		Wedged: l.stats.wedges.Load(), Stuck: l.stats.stuck.Load(),
		Arrival: time.Duration(l.stats.arrival.Load()), Queued: time.Duration(l.stats.queued.Load()),
		TxnTime:          time.Duration(l.stats.txnTime.Load()),
		ProducerRequests: reqs,
	}
}

// Run consumes until ctx is cancelled or a fatal error, then commits what it
// holds and leaves the group. It returns nil after a graceful stop.
//
// A stop is bounded: Run returns at most Config.StopTimeout after ctx is done,
// whatever the broker or the client library does. When the deadline passes
// first, the loop is abandoned where it stands (ErrStopTimeout): a
// transaction it had open is aborted by the broker, or fenced by the next
// instance with this transactional id, and its records are delivered again.
// That is safe for exactly-once, and the log says it happened.
//
// A transactional call of the producer that does not return within
// Config.WedgeTimeout (librdkafka issues 5456 and 5511) costs the process
// nothing more than that wait: Run gives the wedged consumer and producer up
// and goes on with new ones, as a restarted process would. The new producer's
// InitTransactions fences the old one and settles its open transaction, the
// old consumer is closed so that its partitions are free (or, as a static
// member, is replaced by the new one), and the handler hears OnRevoke with
// lost set for what the old consumer owned. The old producer cannot be
// closed while its call runs; it is closed when the call returns, and until
// then it counts as stuck. Run returns ErrWedged, for the process to be
// restarted, only when that cannot be done: a call of the consumer wedged,
// or one inside a rebalance (the consumer is in use), or maxStuck loops are
// stuck already.
func (l *Loop) Run(ctx context.Context) error {
	for cur := l; ; cur = cur.successor() {
		if err := cur.watch(ctx); !errors.Is(err, errReplaced) {
			return err
		}
	}
}

// maxStuck bounds the given-up loops whose wedged call has not returned:
// each holds a producer's threads and connections until it does.
const maxStuck = 3

// errReplaced is what watch returns after giving its loop up for a
// successor; errGivenUp is what the given-up loop's wedged call returns.
var (
	errReplaced = errors.New("kafkatx: loop replaced after a wedged call")
	errGivenUp  = errors.New("kafkatx: this loop was given up while the call ran")
)

// watch runs the loop, and watches it for wedged calls and for the stop's
// deadline.
func (l *Loop) watch(ctx context.Context) error {
	done := make(chan error, 1)
	go func() {
		err := l.run(ctx)
		if l.gone.Load() {
			l.stats.stuck.Add(-1)
			l.log.Info("a given-up loop's wedged call returned; its producer is closed", zap.Error(err))
		}
		done <- err
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			break wait
		case <-tick.C:
			at := l.inCall.Load()
			if at <= 0 || time.Since(time.Unix(0, at)) <= l.cfg.WedgeTimeout || l.handling.Load() {
				continue
			}
			call := "?"
			if name := l.callName.Load(); name != nil {
				call = *name
			}
			if err := l.giveUp(at, call); err != nil {
				return err
			}
		}
	}
	t := time.NewTimer(l.cfg.StopTimeout)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		l.stats.assigned.Store(0)
		l.log.Error("stop timeout: abandoning the loop; an open transaction is aborted by the broker and its records come again",
			zap.Duration("stop_timeout", l.cfg.StopTimeout))
		return fmt.Errorf("%w (%s)", ErrStopTimeout, l.cfg.StopTimeout)
	}
}

// giveUp settles a call that began at at and has run past WedgeTimeout. It
// returns errReplaced when the loop was given up for a successor, ErrWedged
// when it could not be, and nil when the call returned in the meantime.
func (l *Loop) giveUp(at int64, call string) error {
	producerCall := call == callBegin || call == callSendOffsets || call == callCommit ||
		call == callAbort || call == callInit
	if !producerCall || l.rebalancing.Load() || l.stats.stuck.Load() >= maxStuck {
		l.stats.assigned.Store(0)
		l.log.Error("a transactional call has not returned and the loop cannot be replaced in this process; abandoning it so that the process is restarted and its successor fences this producer",
			zap.String("call", call), zap.Duration("wedge_timeout", l.cfg.WedgeTimeout),
			zap.Bool("in_rebalance", l.rebalancing.Load()), zap.Int64("stuck", l.stats.stuck.Load()))
		return fmt.Errorf("%w (%s, for %s)", ErrWedged, call, l.cfg.WedgeTimeout)
	}
	// The swap decides the race with the call's return: whichever of the
	// two swaps first wins, and the loop's goroutine, finding the mark
	// changed, does nothing more (see call).
	if !l.inCall.CompareAndSwap(at, -1) {
		return nil
	}
	l.gone.Store(true)
	l.stats.stuck.Add(1)
	l.stats.wedges.Add(1)
	l.stats.assigned.Store(0)
	l.log.Error("a transactional call has not returned; going on with a new consumer and producer in its place",
		zap.String("call", call), zap.Duration("wedge_timeout", l.cfg.WedgeTimeout),
		zap.Int64("stuck", l.stats.stuck.Load()))
	// The loop's goroutine is parked in the call for good (it may only
	// return and close its producer), so the handler and the consumer are
	// ours to use here.
	if l.cfg.OnRevoke != nil && len(l.owned) > 0 {
		parts := make([]TopicPartition, 0, len(l.owned))
		for tp := range l.owned {
			parts = append(parts, tp)
		}
		l.cfg.OnRevoke(parts, true)
	}
	if l.consumer != nil {
		l.closeConsumer(l.cfg.StopTimeout)
	}
	return errReplaced
}

func (l *Loop) run(ctx context.Context) error {
	l.ctx = ctx
	defer func() {
		if !l.gone.Load() { // a successor's count is not ours to reset
			l.stats.assigned.Store(0) // whichever way it ends, it owns nothing after
		}
	}()
	if err := l.newProducer(ctx); err != nil {
		if errors.Is(err, errStoppedInInit) {
			return nil // stopped before anything began
		}
		return err
	}
	defer l.closeProducer()
	if err := l.newConsumer(); err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed && !l.gone.Load() { // a given-up loop's consumer was closed by Run
			l.closeConsumer(l.cfg.StopTimeout)
		}
	}()
	if err := l.consumer.SubscribeTopics(l.cfg.Topics, l.rebalance); err != nil {
		return fmt.Errorf("kafkatx: subscribe %v: %w", l.cfg.Topics, err)
	}
	l.log.Info("loop started", zap.Strings("topics", l.cfg.Topics))
	report := newReporter(l)
	for ctx.Err() == nil && l.stop == nil {
		report.maybe()
		idle := false
		switch ev := l.consumer.Poll(pollWait(len(l.batch), l.busy, time.Since(l.batchStart), l.cfg.BatchWait)).(type) {
		case nil:
			idle = true
			if len(l.batch) == 0 {
				l.busy = 0
			}
		case *kafka.Message:
			l.add(ev)
		case kafka.Error:
			if ev.IsFatal() {
				l.stop = fmt.Errorf("kafkatx: consumer: %w", ev)
				break
			}
			// Broker down, coordinator moving: librdkafka recovers by itself;
			// the log tells an operator why nothing moves.
			l.log.Warn("consumer error", zap.Error(ev))
		}
		if l.stop == nil && len(l.batch) > 0 &&
			(idle || len(l.batch) >= l.cfg.MaxBatch || time.Since(l.batchStart) >= l.cfg.MaxInterval) {
			l.flush(ctx)
		}
	}
	if errors.Is(l.stop, errStoppedInInit) {
		// The stop came while a new producer waited for Kafka: no
		// transaction is open and nothing is held that was not given back.
		l.log.Info("loop stopped while waiting for Kafka to initialize a producer")
		return nil
	}
	if l.stop != nil {
		if errors.Is(l.stop, ErrFenced) {
			l.log.Error("stopping: fenced", zap.Error(l.stop))
		}
		return l.stop
	}
	// Graceful stop: what was polled is committed rather than handed to the
	// next owner to do again. ctx is already done, so the flush runs on its
	// own deadline, half the stop budget; the consumer's close gets the rest.
	stopAt := time.Now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.StopTimeout/2)
	defer cancel()
	if n := len(l.batch); n > 0 {
		if l.flush(fctx) {
			l.log.Info("stopping: in-flight batch committed", zap.Int("records", n))
		} else {
			l.log.Warn("stopping: in-flight batch abandoned; its records come again", zap.Int("records", n))
		}
	}
	l.ctx = fctx
	closed = true
	l.closeConsumer(l.cfg.StopTimeout - time.Since(stopAt))
	l.log.Info("loop stopped", zap.Any("stats", l.Stats()))
	return l.stop
}

// closeConsumer closes the consumer, leaving the group, but waits at most d.
// A close that does not finish in time is left behind: the group notices the
// member is gone at its session timeout, and the process is about to exit.
func (l *Loop) closeConsumer(d time.Duration) {
	switch err := closeWithin(l.consumer, d); {
	case errors.Is(err, errCloseTimedOut):
		l.log.Warn("consumer close did not finish in time; left behind (the group drops this member at its session timeout)",
			zap.Duration("waited", d))
	case err != nil:
		l.log.Warn("consumer close", zap.Error(err))
	}
}

var errCloseTimedOut = errors.New("kafkatx: consumer close did not finish in time")

// closeWithin closes c, waiting at most d (at least 100 ms) for the close
// to finish; past that the close goes on, or hangs, on its own goroutine
// and errCloseTimedOut is returned. librdkafka's close can wait for good
// on a request to a broker that was killed: a chaos run's follower of the
// command topics (Follow, which joins no group) hung 17 minutes in Close
// after the failover test's broker kills, beside CPU hogs, until the test
// binary timed out.
func closeWithin(c *kafka.Consumer, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	t := time.NewTimer(max(d, 100*time.Millisecond))
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errCloseTimedOut
	}
}

func (l *Loop) add(m *kafka.Message) {
	if m.TopicPartition.Error != nil {
		l.log.Warn("fetch error", zap.Error(m.TopicPartition.Error))
		return
	}
	r := toRecord(m)
	tp := TopicPartition{Topic: r.Topic, Partition: r.Partition}
	if n, ok := l.next[tp]; ok && r.Offset < n {
		return
	}
	l.next[tp] = r.Offset + 1
	now := time.Now()
	if len(l.batch) == 0 {
		l.batchStart = now
	}
	l.batch = append(l.batch, r)
	l.polled = append(l.polled, now)
}

// pollWait is how long the loop's next poll waits for a record, in
// milliseconds. Without a batch in hand, 100 (the loop's tick). With one,
// the poll only asks whether more is ready already, so at low load a hop
// costs one transaction, and under load batches grow by themselves while
// the previous commit runs (group commit); while busy (the batch before
// held more than one record) the batch waits up to batchWait from its
// first record for more, which makes batches larger still.
func pollWait(batch, busy int, open, batchWait time.Duration) int {
	switch {
	case batch == 0:
		return 100
	case busy <= 1 || open >= batchWait:
		return 0
	}
	return int((batchWait - open + time.Millisecond - 1) / time.Millisecond)
}

type recordID struct {
	tp  TopicPartition
	off int64
}

// flush handles the batch in transactions until it is committed (true), or
// gives it back to Kafka (seek to the committed offsets) to be polled again.
func (l *Loop) flush(ctx context.Context) bool {
	if len(l.batch) == 0 {
		return true
	}
	batch, polled := l.batch, l.polled
	l.batch, l.polled = nil, nil
	l.busy = len(batch)
	poison := map[recordID][]Message{}
	for {
		if l.stop != nil {
			// Setting a poison record aside aborted the attempt, and the
			// producer could not be recreated: there is none to go on with.
			l.giveBack(ctx, batch, true)
			return false
		}
		live := batch
		if len(poison) > 0 {
			live = make([]Record, 0, len(batch))
			for _, r := range batch {
				if _, ok := poison[recordID{TopicPartition{r.Topic, r.Partition}, r.Offset}]; !ok {
					live = append(live, r)
				}
			}
		}
		began := time.Now()
		out, herr, err := l.attempt(ctx, batch, live, poison)
		var pe *PoisonError
		switch {
		case herr != nil && errors.As(herr, &pe):
			id := recordID{TopicPartition{pe.Record.Topic, pe.Record.Partition}, pe.Record.Offset}
			if _, seen := poison[id]; seen || !contains(live, id) {
				// A handler that names a record it was not given is broken;
				// treating it as transient keeps the data instead of
				// guessing.
				l.log.Error("handler named an unknown poison record", zap.Error(herr))
				l.giveBack(ctx, batch, true)
				return false
			}
			poison[id] = l.onPoison(pe.Record, pe.Reason)
			l.stats.poison.Add(1)
			continue
		case herr != nil:
			l.failures++
			backoff := min(l.cfg.MaxRetryBackoff, l.cfg.RetryBackoff<<min(l.failures-1, 16))
			l.log.Warn("handler failed; the batch will be handled again",
				zap.Error(herr), zap.Int("records", len(live)), zap.Duration("backoff", backoff))
			l.giveBack(ctx, batch, true)
			sleep(ctx, backoff)
			return false
		case err != nil:
			// Kafka refused the transaction; the records come again, from
			// us (seek back) or, when the group took the partitions at the
			// same moment, from whoever gets them.
			// (A given-up loop has l.stop set, and must not touch its
			// consumer: Run closed it.)
			l.giveBack(ctx, batch, l.stop == nil && !l.consumer.AssignmentLost())
			return false
		}
		l.failures = 0
		committedAt := time.Now()
		if out.track != nil && !out.track.wait(5*time.Second) {
			l.log.Warn("delivery reports of a committed transaction missing; its offsets stay unknown")
		}
		for _, f := range out.onCommit {
			f()
		}
		took := time.Since(began)
		l.timing.after = time.Since(committedAt)
		l.stats.committed.Add(1)
		l.stats.records.Add(int64(len(batch)))
		l.stats.txnTime.Add(int64(took))
		l.slow.note(l.log, time.Now(), took, l.timing, len(batch), out.produced)
		var arrival, queued time.Duration
		for i, r := range batch {
			if !r.Timestamp.IsZero() && i < len(polled) {
				arrival += max(0, polled[i].Sub(r.Timestamp))
			}
			if i < len(polled) {
				queued += began.Sub(polled[i])
			}
		}
		l.stats.arrival.Add(int64(arrival))
		l.stats.queued.Add(int64(queued))
		l.stats.produced.Add(int64(out.produced))
		if l.cfg.AfterCommit != nil {
			l.cfg.AfterCommit(len(batch), out.produced)
		}
		return true
	}
}

func contains(rs []Record, id recordID) bool {
	for _, r := range rs {
		if r.Offset == id.off && r.Partition == id.tp.Partition && r.Topic == id.tp.Topic {
			return true
		}
	}
	return false
}

func (l *Loop) onPoison(rec Record, reason error) []Message {
	log := l.log.With(zap.String("topic", rec.Topic), zap.Int32("partition", rec.Partition),
		zap.Int64("offset", rec.Offset), zap.Error(reason))
	switch {
	case l.cfg.OnPoison != nil:
		log.Warn("poison record")
		return l.cfg.OnPoison(rec, reason)
	case l.cfg.DeadLetterTopic != "":
		log.Warn("poison record dead-lettered", zap.String("dead_letter_topic", l.cfg.DeadLetterTopic))
		return []Message{DeadLetter(l.cfg.DeadLetterTopic, rec, reason)}
	}
	log.Error("poison record skipped: no dead-letter topic configured")
	return nil
}

// attempt runs one transaction. herr is the handler's error; err is Kafka's
// refusal, already dealt with (aborted, or the producer recreated).
//
// The batch's offsets are known before the handler runs, so they are sent
// to the transaction while it works: AddOffsetsToTxn and TxnOffsetCommit are
// two round trips to the coordinators that used to follow the handler. Only
// the order within the transaction changes; what commits, or aborts, is the
// same, as one transaction. The handler's Produce calls may run meanwhile
// (librdkafka serializes only its transactional calls), and the handler
// never touches the consumer, whose group metadata the offsets carry.
func (l *Loop) attempt(ctx context.Context, batch, live []Record, poison map[recordID][]Message) (out *Sink, herr, err error) {
	l.timing = txnTiming{}
	beginAt := time.Now()
	if err := l.retry(ctx, &callBegin, func(context.Context) error { return l.producer.BeginTransaction() }); err != nil {
		return nil, nil, l.txnFailed(ctx, err)
	}
	l.timing.begin = time.Since(beginAt)
	offsets := commitOffsets(batch)
	sent := make(chan error, 1)
	var sendTook time.Duration // written before the send on sent
	l.handling.Store(true)
	go func() {
		at := time.Now()
		err := l.retry(ctx, &callSendOffsets, func(ctx context.Context) error {
			md, err := l.consumer.GetConsumerGroupMetadata()
			if err != nil {
				return err
			}
			return l.producer.SendOffsetsToTransaction(ctx, offsets, md)
		})
		sendTook = time.Since(at)
		sent <- err
	}()
	out = &Sink{p: l.producer}
	for _, msgs := range poison {
		for _, m := range msgs {
			out.Produce(ctx, m)
		}
	}
	handlerAt := time.Now()
	if len(live) > 0 {
		herr = l.handler(ctx, live, out)
	}
	l.timing.handler = time.Since(handlerAt)
	if herr == nil && out.err != nil {
		herr = out.err
	}
	// From here this goroutine only waits, so a wedged offsets call may be
	// given up. It must be over before the next transactional call, abort
	// or commit: librdkafka refuses two at once.
	l.handling.Store(false)
	waitAt := time.Now()
	serr := <-sent
	commitAt := time.Now()
	l.timing.offsetsWait = commitAt.Sub(waitAt)
	if herr != nil {
		if !errors.Is(serr, errGivenUp) { // a given-up loop calls nothing more
			l.abort(ctx)
		}
		return out, herr, nil
	}
	if serr != nil {
		return out, nil, l.txnFailed(ctx, serr)
	}
	if err := l.commit(ctx); err != nil {
		return out, nil, l.txnFailed(ctx, err)
	}
	l.timing.offsets, l.timing.commit = sendTook, time.Since(commitAt)
	l.stats.offsetsTime.Add(int64(l.timing.offsets))
	l.stats.commitTime.Add(int64(l.timing.commit))
	return out, nil, nil
}

// commit commits the open transaction. A timed-out or otherwise retriable
// commit has an unknown outcome: aborting could undo a commit the coordinator
// already decided, and beginning the next transaction is refused until this
// one is settled. So it is retried until definite, for at most the
// transaction timeout; past that the caller recreates the producer, whose
// InitTransactions settles the old transaction on the broker.
func (l *Loop) commit(ctx context.Context) error {
	deadline := l.deadline(ctx)
	for {
		err := l.call(context.WithoutCancel(ctx), deadline, &callCommit, l.producer.CommitTransaction)
		if err == nil {
			return nil
		}
		ke, ok := kafkaErr(err)
		if !ok || !ke.IsRetriable() || time.Now().After(deadline) {
			return err
		}
		l.log.Warn("commit outcome unknown; retrying the commit", zap.Error(err))
		sleep(ctx, 50*time.Millisecond)
	}
}

// deadline is how long a call may keep retrying: the transaction timeout, or
// ctx's deadline when that is sooner (the final flush of a stop has one).
// A cancelled ctx without a deadline does not cut retries short: a commit of
// unknown outcome must be settled, not dropped.
func (l *Loop) deadline(ctx context.Context) time.Time {
	deadline := time.Now().Add(l.cfg.TransactionTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	return deadline
}

// The names of the transactional calls, for errors and the wedge watch. They
// are variables so that call can mark the one in progress with a pointer to
// its name: a pointer to a parameter would be an allocation per call.
var (
	callBegin       = "begin transaction"
	callSendOffsets = "send offsets"
	callCommit      = "commit transaction"
	callAbort       = "abort transaction"
	callCommitted   = "read committed offsets"
	callInit        = "init transactions"
)

// call runs one transactional call of the client library (named what) with
// its own deadline, marked in inCall while it runs for the wedge watch of
// Run.
func (l *Loop) call(parent context.Context, deadline time.Time, what *string, f func(context.Context) error) error {
	cctx, cancel := context.WithDeadline(parent, deadline)
	defer cancel()
	l.callName.Store(what)
	at := time.Now().UnixNano()
	l.inCall.Store(at)
	err := f(cctx)
	if !l.inCall.CompareAndSwap(at, 0) {
		// Run gave the loop up while the call ran and a successor owns
		// the partitions: whatever the call did, nothing more is done.
		l.stop = errGivenUp
		return errGivenUp
	}
	return err
}

// retry runs f again while Kafka calls its error retriable (a coordinator
// moving, a request timing out before it was sent), bounded by the
// transaction timeout.
func (l *Loop) retry(ctx context.Context, what *string, f func(context.Context) error) error {
	deadline := l.deadline(ctx)
	for {
		err := l.call(context.WithoutCancel(ctx), deadline, what, f)
		if err == nil {
			return nil
		}
		ke, ok := kafkaErr(err)
		if !ok || !ke.IsRetriable() || time.Now().After(deadline) {
			return fmt.Errorf("kafkatx: %s: %w", *what, err)
		}
		l.log.Debug("retrying", zap.String("call", *what), zap.Error(err))
		sleep(ctx, 50*time.Millisecond)
	}
}

// committed reads the committed offsets of ps. librdkafka marks none of
// this call's errors retriable, not even a coordinator that moved
// (NOT_COORDINATOR), so it is asked again here while Kafka is unavailable
// or an open transaction still holds offsets of a partition
// (UNSTABLE_OFFSET_COMMIT), until the transaction timeout or until ctx
// ends. An answer with an error on any partition counts as no answer.
func (l *Loop) committed(ctx context.Context, c *kafka.Consumer, ps []kafka.TopicPartition) ([]kafka.TopicPartition, error) {
	deadline := l.deadline(ctx)
	var got []kafka.TopicPartition
	for {
		err := l.call(context.WithoutCancel(ctx), deadline, &callCommitted, func(ctx context.Context) error {
			var err error
			got, err = c.Committed(ps, min(timeoutMs(ctx, committedTimeoutMs), committedTimeoutMs))
			for _, p := range got {
				if err == nil && p.Error != nil {
					err = p.Error
				}
			}
			return err
		})
		if err == nil {
			return got, nil
		}
		if !(Unavailable(err) || unstableOffsets(err)) || ctx.Err() != nil || time.Now().After(deadline) {
			return nil, fmt.Errorf("kafkatx: %s: %w", callCommitted, err)
		}
		l.log.Debug("retrying", zap.String("call", callCommitted), zap.Error(err))
		sleep(ctx, 100*time.Millisecond)
	}
}

// committedTimeoutMs bounds one request for committed offsets: one sent to
// a broker that died is not answered, and the next one finds its successor.
const committedTimeoutMs = 10_000

// startOffsets is where newly assigned partitions start: the committed
// offsets, and where none is committed, where auto.offset.reset says (our
// consumer's is "earliest"). Assigning with these, rather than with none,
// keeps librdkafka from reading the committed offsets itself: when that
// read meets a coordinator that just moved, the broker's NOT_COORDINATOR
// leaves the partitions waiting for good, the consumer alive and idle
// (librdkafka issue 5586). Seen as the whole system standing still in the
// failover test: a broker that coordinated groups was killed right after a
// rebalance (docs/failover.md).
func startOffsets(committed []kafka.TopicPartition, reset kafka.Offset) []kafka.TopicPartition {
	out := make([]kafka.TopicPartition, len(committed))
	for i, p := range committed {
		out[i] = kafka.TopicPartition{Topic: p.Topic, Partition: p.Partition, Offset: p.Offset, LeaderEpoch: p.LeaderEpoch}
		if p.Offset < 0 {
			out[i].Offset, out[i].LeaderEpoch = reset, nil
		}
	}
	return out
}

// resetOffset is the logical offset that auto.offset.reset names, or
// OffsetStored (librdkafka decides) for one it does not.
func resetOffset(setting string) kafka.Offset {
	switch setting {
	case "earliest", "smallest", "beginning":
		return kafka.OffsetBeginning
	case "latest", "largest", "end":
		return kafka.OffsetEnd
	}
	return kafka.OffsetStored
}

// txnFailed settles the producer after Kafka refused a transactional call.
func (l *Loop) txnFailed(ctx context.Context, err error) error {
	ke, _ := kafkaErr(err)
	switch {
	case errors.Is(err, errGivenUp):
		// Nothing to settle: the successor's producer fences this one.
	case fenced(err):
		l.onFenced(ctx, err)
	case ke.TxnRequiresAbort():
		// The transaction cannot commit (a failed delivery, or our group
		// generation is stale because the partitions moved): abort it; the
		// caller seeks back so the records come again.
		l.log.Warn("transaction must abort", zap.Error(err))
		l.abort(ctx)
	default:
		// Fatal or unknown outcome: only a new producer can go on. Its
		// InitTransactions finishes or aborts the old transaction on the
		// broker, and the caller then reads the committed offsets to learn
		// which it was.
		l.log.Error("transactional producer failed; recreating it", zap.Error(err))
		l.closeProducer()
		l.stats.recreated.Add(1)
		if err := l.newProducer(ctx); err != nil {
			l.stop = err
		}
	}
	return err
}

func (l *Loop) abort(ctx context.Context) {
	l.stats.aborted.Add(1)
	err := l.retry(ctx, &callAbort, func(ctx context.Context) error { return l.producer.AbortTransaction(ctx) })
	if err == nil || errors.Is(err, errGivenUp) {
		return
	}
	if fenced(err) {
		l.onFenced(ctx, err)
		return
	}
	l.log.Error("abort failed; recreating the producer", zap.Error(err))
	l.closeProducer()
	l.stats.recreated.Add(1)
	if err := l.newProducer(ctx); err != nil {
		l.stop = err
	}
}

// giveBack seeks the batch's partitions back to their committed offsets, so
// the records are polled again. The committed offsets, not the batch's first
// offsets, are the truth after a commit of unknown outcome.
func (l *Loop) giveBack(ctx context.Context, batch []Record, assigned bool) {
	first := map[TopicPartition]int64{}
	for _, r := range batch {
		tp := TopicPartition{r.Topic, r.Partition}
		if o, ok := first[tp]; !ok || r.Offset < o {
			first[tp] = r.Offset
		}
	}
	if !assigned || l.stop != nil {
		for tp := range first {
			delete(l.next, tp)
		}
		return
	}
	l.stats.rewinds.Add(1)
	parts := make([]kafka.TopicPartition, 0, len(first))
	for tp := range first {
		parts = append(parts, kafka.TopicPartition{Topic: &tp.Topic, Partition: tp.Partition})
	}
	// Not cut short by a stop: without the committed offsets the seek
	// would have to guess.
	committed, err := l.committed(context.WithoutCancel(ctx), l.consumer, parts)
	if err != nil {
		l.log.Warn("committed offsets unknown; seeking to the batch start", zap.Error(err))
		committed = nil
	}
	seek := make([]kafka.TopicPartition, 0, len(first))
	for tp, off := range first {
		for _, c := range committed {
			if *c.Topic == tp.Topic && c.Partition == tp.Partition && c.Error == nil && c.Offset >= 0 {
				off = int64(c.Offset)
			}
		}
		l.next[tp] = off
		seek = append(seek, kafka.TopicPartition{Topic: &tp.Topic, Partition: tp.Partition, Offset: kafka.Offset(off)})
	}
	if _, err := l.consumer.SeekPartitions(seek); err != nil {
		// Without the seek the records would be skipped: stopping is the
		// only safe answer, and a restart resumes from the committed offsets.
		l.stop = fmt.Errorf("kafkatx: seek back: %w", err)
	}
}

func commitOffsets(batch []Record) []kafka.TopicPartition {
	last := map[TopicPartition]int64{}
	for _, r := range batch {
		tp := TopicPartition{r.Topic, r.Partition}
		if o, ok := last[tp]; !ok || r.Offset > o {
			last[tp] = r.Offset
		}
	}
	out := make([]kafka.TopicPartition, 0, len(last))
	for tp, off := range last {
		out = append(out, kafka.TopicPartition{Topic: &tp.Topic, Partition: tp.Partition, Offset: kafka.Offset(off + 1)})
	}
	return out
}

// rebalance runs inside Poll, on the loop's goroutine, so no transaction is
// open while it runs: the in-flight batch is only polled records.
func (l *Loop) rebalance(c *kafka.Consumer, ev kafka.Event) error {
	if l.gone.Load() {
		// Run is closing a given-up loop's consumer: the handler heard of
		// the loss already, no transaction of this loop may run, and the
		// counts belong to the successor. Only the unassign is left.
		if r, ok := ev.(kafka.RevokedPartitions); ok {
			l.unassign(c, r.Partitions)
		}
		return nil
	}
	l.rebalancing.Store(true)
	defer l.rebalancing.Store(false)
	switch e := ev.(type) {
	case kafka.AssignedPartitions:
		parts := toParts(e.Partitions)
		l.log.Info("partitions assigned", zap.Any("partitions", parts))
		for _, tp := range parts {
			delete(l.next, tp)
		}
		// With read_committed, librdkafka asks for stable offsets
		// (KIP-447): the call waits out transactions still pending on these
		// partitions, which is what OnAssign is promised.
		assign := e.Partitions
		var err error
		if len(assign) > 0 {
			var committed []kafka.TopicPartition
			if committed, err = l.committed(l.ctx, c, e.Partitions); err == nil {
				assign = startOffsets(committed, l.reset)
			}
		}
		if err != nil && l.cfg.OnAssign == nil && l.ctx.Err() == nil {
			// No handler waits for them: librdkafka reads them itself.
			l.log.Warn("committed offsets unknown; the client reads them", zap.Any("partitions", parts), zap.Error(err))
		}
		if l.cfg.OnAssign != nil && len(parts) > 0 {
			if err == nil {
				err = l.cfg.OnAssign(l.ctx, parts)
			}
			switch {
			case err != nil && l.ctx.Err() != nil:
				// The stop cut the restore short. That is no failure: the
				// loop ends before it polls a record of these partitions,
				// and the next owner restores them afresh.
				l.log.Info("stopping during partition assignment", zap.Any("partitions", parts), zap.Error(err))
			case err != nil:
				l.stop = fmt.Errorf("kafkatx: on assign: %w", err)
			}
		}
		if l.protocol == "" {
			l.protocol = c.GetRebalanceProtocol()
		}
		if l.protocol == "COOPERATIVE" {
			err = c.IncrementalAssign(assign)
		} else {
			clear(l.owned)
			err = c.Assign(assign)
		}
		if err != nil {
			l.stop = fmt.Errorf("kafkatx: assign: %w", err)
		}
		for _, tp := range parts {
			l.owned[tp] = struct{}{}
		}
		l.stats.assigned.Store(int64(len(l.owned)))
	case kafka.RevokedPartitions:
		parts := toParts(e.Partitions)
		lost := c.AssignmentLost()
		if lost {
			// Someone else may own these partitions already; committing
			// would fail (stale generation), and its output would be a
			// duplicate if it did not.
			l.log.Warn("partitions lost; dropping the in-flight batch", zap.Any("partitions", parts),
				zap.Int("records", len(l.batch)))
			l.giveBack(l.ctx, l.batch, false)
			l.batch, l.polled = nil, nil
		} else {
			l.log.Info("partitions revoked; committing the in-flight batch", zap.Any("partitions", parts),
				zap.Int("records", len(l.batch)))
			l.flush(l.ctx)
		}
		for _, tp := range parts {
			delete(l.next, tp)
		}
		if l.cfg.OnRevoke != nil {
			l.cfg.OnRevoke(parts, lost)
		}
		l.unassign(c, e.Partitions)
		l.stats.assigned.Store(int64(len(l.owned)))
	}
	return nil
}

// unassign gives revoked partitions back to the client.
//
// No call on c may follow the unassign: during Close it can be the last step
// of the group's shutdown, after which librdkafka no longer answers group
// requests. rd_kafka_assignment() then waited forever, and Close with it (a
// static member has no LeaveGroup to wait for, so it got there first:
// TestReal/StaticMemberStopsRightAfterRebalance). So the protocol is the one
// learnt at assignment, and the owned partitions are kept here.
func (l *Loop) unassign(c *kafka.Consumer, ps []kafka.TopicPartition) {
	var err error
	if l.protocol == "COOPERATIVE" {
		err = c.IncrementalUnassign(ps)
		for _, p := range ps {
			delete(l.owned, TopicPartition{Topic: *p.Topic, Partition: p.Partition})
		}
	} else {
		err = c.Unassign()
		clear(l.owned)
	}
	if err != nil {
		l.log.Warn("unassign", zap.Error(err))
	}
}

func toParts(ps []kafka.TopicPartition) []TopicPartition {
	out := make([]TopicPartition, len(ps))
	for i, p := range ps {
		out[i] = TopicPartition{Topic: *p.Topic, Partition: p.Partition}
	}
	return out
}

func (l *Loop) newConsumer() error {
	cm := kafka.ConfigMap{
		"bootstrap.servers":             l.cfg.Brokers,
		"group.id":                      l.cfg.Group,
		"client.id":                     l.cfg.TransactionalID,
		"isolation.level":               "read_committed",
		"enable.auto.commit":            false,
		"enable.auto.offset.store":      false,
		"auto.offset.reset":             "earliest",
		"partition.assignment.strategy": l.cfg.Assignor,
		"session.timeout.ms":            int(l.cfg.SessionTimeout.Milliseconds()),
		"heartbeat.interval.ms":         max(100, int(l.cfg.SessionTimeout.Milliseconds()/4)),
	}
	if l.cfg.StaticMembership {
		cm["group.instance.id"] = l.cfg.TransactionalID
	}
	for k, v := range l.cfg.ConsumerConfig {
		cm[k] = v
	}
	reset, _ := cm.Get("auto.offset.reset", "earliest")
	l.reset = resetOffset(fmt.Sprint(reset))
	c, err := kafka.NewConsumer(&cm)
	if err != nil {
		return fmt.Errorf("kafkatx: consumer: %w", err)
	}
	l.consumer = c
	return nil
}

// newProducer creates the transactional producer and initializes it:
// InitTransactions fences any older producer with our transactional id and
// finishes or aborts its open transaction. While Kafka cannot answer (a
// broker down, the transaction coordinator moving or loading) it is tried
// again for as long as ctx lives, each time with a new producer. Exiting
// would only restart the process into the same wait: on a slow machine that
// wait outlasted the transaction timeout and the orchestrator exited in the
// failover test. A new producer, not the same call again: librdkafka asks
// for the call to be repeated after a timeout ("retry call to resume"), but
// after a transport failure during a coordinator's load the repeated calls
// timed out for minutes while a new process got its producer id at once.
// Fencing and every other error end it.
func (l *Loop) newProducer(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for since := time.Now(); ; {
		if err := l.createProducer(); err != nil {
			return err
		}
		// Bounded by the transaction timeout and ended by ctx: no
		// transaction is open yet, so a stop may cut it short.
		err := l.call(ctx, time.Now().Add(l.cfg.TransactionTimeout), &callInit, l.producer.InitTransactions)
		if err == nil {
			return nil
		}
		l.closeProducer()
		switch {
		case fenced(err):
			return fmt.Errorf("kafkatx: producer %s: %w (%s): %v", l.cfg.TransactionalID, ErrFenced, l.cfg.TransactionalID, err)
		case ctx.Err() != nil:
			return fmt.Errorf("%w: %v", errStoppedInInit, err)
		case !Unavailable(err):
			return fmt.Errorf("kafkatx: producer %s: init transactions: %w", l.cfg.TransactionalID, err)
		}
		l.log.Warn("Kafka cannot initialize our transactions yet; trying again with a new producer",
			zap.Error(err), zap.Duration("waited", time.Since(since)))
		sleep(ctx, backoff)
		backoff = min(2*backoff, 5*time.Second)
	}
}

// createProducer creates the transactional producer, not yet initialized.
func (l *Loop) createProducer() error {
	cm := kafka.ConfigMap{
		"bootstrap.servers":      l.cfg.Brokers,
		"client.id":              l.cfg.TransactionalID,
		"transactional.id":       l.cfg.TransactionalID,
		"transaction.timeout.ms": int(l.cfg.TransactionTimeout.Milliseconds()),
		// Java's partitioner, so every producer (any language) maps a saga
		// id to the same partition.
		"partitioner": "murmur2_random",
		"linger.ms":   int(l.cfg.Linger.Milliseconds()),
		// A delivery report is read for its partition, offset and error
		// only. By default the Go client copies each record's key and value
		// back out of C into it: for a 1.4 KB snapshot, a copy and an
		// allocation that nothing reads.
		"go.delivery.report.fields": "none",
		// The broker answers CONCURRENT_TRANSACTIONS while the previous
		// transaction's markers are still being written, and librdkafka
		// retries after retry.backoff.ms: at the default 100ms that capped
		// the loop at ~30 transactions/s here; 10ms gives ~250 (see
		// BenchmarkLoop). Java's producer shortens this retry the same way.
		"retry.backoff.ms": 2,
		// librdkafka backs off exponentially from retry.backoff.ms (KIP-580)
		// up to this; back-to-back transactions meet CONCURRENT_TRANSACTIONS
		// routinely, and the default cap of 1s turned a few of them into
		// waits of hundreds of milliseconds.
		"retry.backoff.max.ms": 20,
		// connections.max.idle.ms stays at librdkafka's 0: idle connections
		// are kept. Closing them after 5 s (meant to wake a
		// send_offsets_to_transaction wedged on a dead coordinator,
		// librdkafka issues 5456 and 5511, which it did not reliably do)
		// made every order on a quiet system reconnect at each hop, and
		// librdkafka's reconnect backoff doubles for each reconnect less
		// than 10 s after the one before: orders a few seconds apart took
		// seconds each (docs/failover.md). WedgeTimeout answers the wedge.
	}
	// The request counts of the progress line (requests.go).
	cm["statistics.interval.ms"] = int(reportEvery.Milliseconds())
	for k, v := range l.cfg.ProducerConfig {
		cm[k] = v
	}
	p, err := kafka.NewProducer(&cm)
	if err != nil {
		return fmt.Errorf("kafkatx: producer: %w", err)
	}
	done := make(chan struct{})
	// librdkafka blocks a commit until delivery reports are served, so they
	// are drained here, apart from the loop. A failed delivery also fails
	// the commit, which is where it is handled; here it is only logged.
	go func() {
		defer close(done)
		var prev producerReport
		for ev := range p.Events() {
			switch e := ev.(type) {
			case *kafka.Stats:
				prev = l.stats.requests.add(e.String(), prev, l.stats.committed.Load())
			case *kafka.Message:
				if d, ok := e.Opaque.(*delivered); ok {
					d.report(e)
				}
				if e.TopicPartition.Error != nil {
					l.log.Warn("delivery failed", zap.String("topic", *e.TopicPartition.Topic), zap.Error(e.TopicPartition.Error))
				}
			case kafka.Error:
				l.log.Warn("producer error", zap.Error(e), zap.Bool("fatal", e.IsFatal()))
			}
		}
	}()
	l.producer, l.prodDone = p, done
	return nil
}

// A fenced producer is recreated at most maxRefence times per refenceWindow.
const (
	maxRefence    = 1
	refenceWindow = time.Minute
)

// onFenced settles a producer the broker fenced. Fenced does not always mean
// a newer instance took our transactional id: when a broker dies, the
// transaction coordinator that moves with it aborts our open transaction
// and bumps the producer epoch, and our producer is fenced with no one else
// in sight. Kafka Streams treats this as "task migrated": rejoin, re-init,
// go on. So the producer is recreated and the batch comes again; its
// records are redelivered, so nothing is lost or doubled. That holds even
// when the group took our partitions at the same moment: the same broker
// may have coordinated the group too, and then the session expires while
// its successor loads the group (TestFailoverCoordinatorKilledMidTransaction
// kills such a broker), and the consumer rejoins by itself. Correctness
// never rests on this choice: the new epoch fences any other holder of our
// id, and offsets commit only with the group generation that owns them
// (KIP-447). What it bounds is a livelock between two live instances with
// one transactional id, each fencing the other: fenced again within
// refenceWindow means such a twin exists, and the loop stops with
// ErrFenced, which costs the other one aborted transaction at most.
func (l *Loop) onFenced(ctx context.Context, err error) {
	now := time.Now()
	l.refenced = slices.DeleteFunc(l.refenced, func(t time.Time) bool { return now.Sub(t) > refenceWindow })
	if l.consumer == nil || len(l.refenced) >= maxRefence {
		l.stop = fmt.Errorf("%w (%s): %v", ErrFenced, l.cfg.TransactionalID, err)
		return
	}
	l.refenced = append(l.refenced, now)
	l.log.Warn("producer fenced (a coordinator moved, or a twin with our transactional id started); recreating it",
		zap.Error(err), zap.Int("recreations_in_window", len(l.refenced)), zap.Bool("assignment_lost", l.consumer.AssignmentLost()))
	l.closeProducer()
	l.stats.recreated.Add(1)
	if err := l.newProducer(ctx); err != nil {
		l.stop = err
	}
}

func (l *Loop) closeProducer() {
	if l.producer == nil {
		return
	}
	l.producer.Close()
	<-l.prodDone
	l.producer = nil
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// String helps logs and test failures name the loop.
func (l *Loop) String() string {
	return "kafkatx.Loop(" + l.cfg.TransactionalID + " " + strings.Join(l.cfg.Topics, ",") + ")"
}

// reporter logs, every reportEvery while records flow, what the loop did and
// where the time of a record went: the status line an operator reads.
type reporter struct {
	l    *Loop
	at   time.Time
	last Stats
	// The request counts at the previous line, and the committed
	// transactions they went with.
	lastReqs     map[string]int64
	lastReqsTxns int64
}

const reportEvery = 10 * time.Second

func newReporter(l *Loop) *reporter { return &reporter{l: l, at: time.Now()} }

func (r *reporter) maybe() {
	if time.Since(r.at) < reportEvery {
		return
	}
	now, s := time.Now(), r.l.Stats()
	d, p := s.Records-r.last.Records, s.Committed-r.last.Committed
	if d > 0 && p > 0 {
		secs := now.Sub(r.at).Seconds()
		perRec := func(a, b time.Duration) float64 { return float64((a-b)/time.Duration(d)) / 1e6 }
		fields := []zap.Field{
			zap.Float64("records_per_s", float64(d)/secs), zap.Float64("txn_per_s", float64(p)/secs),
			zap.Float64("batch_mean", float64(d)/float64(p)),
			zap.Float64("txn_ms", float64((s.TxnTime-r.last.TxnTime)/time.Duration(p))/1e6),
			zap.Float64("arrival_ms", perRec(s.Arrival, r.last.Arrival)),
			zap.Float64("queued_ms", perRec(s.Queued, r.last.Queued)),
			zap.Float64("offsets_ms", float64(time.Duration(r.l.stats.offsetsTime.Swap(0))/time.Duration(p))/1e6),
			zap.Float64("commit_ms", float64(time.Duration(r.l.stats.commitTime.Swap(0))/time.Duration(p))/1e6),
			zap.Int64("assigned", s.Assigned), r.requests()}
		r.l.log.Info("loop progress", append(fields, r.l.slow.progress()...)...)
	}
	r.at, r.last = now, s
}

// requests is the progress line's requests_per_txn: what the producers
// sent to Kafka per committed transaction since the previous line, by
// request type and in all ("total"). Left out until a statistics report
// came with transactions committed since the previous one.
func (r *reporter) requests() zap.Field {
	cur, txns := r.l.stats.requests.snapshot()
	if txns <= r.lastReqsTxns {
		return zap.Skip()
	}
	per := make(map[string]float64, len(cur)+1)
	var total int64
	for k, n := range cur {
		if d := n - r.lastReqs[k]; d > 0 {
			per[k] = math.Round(float64(d)/float64(txns-r.lastReqsTxns)*100) / 100
			total += d
		}
	}
	per["total"] = math.Round(float64(total)/float64(txns-r.lastReqsTxns)*100) / 100
	r.lastReqs, r.lastReqsTxns = cur, txns
	return zap.Any("requests_per_txn", per)
}
