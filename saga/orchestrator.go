package saga

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Message types on the control topic.
const (
	// TypeTick asks the owner of a partition to fire the timers due on it.
	// It carries no saga id: it is about every saga of the partition.
	TypeTick = "Tick"
	// TypeOperatorCommand carries an OperatorBody for one saga.
	TypeOperatorCommand = "OperatorCommand"
)

// OperatorBody is the value of an operator command.
type OperatorBody struct {
	Op     Op     `json:"op"`
	Reason string `json:"reason,omitempty"`
}

// OperatorMessage returns the control record that asks the orchestrator to
// apply op to a saga. It goes through the same transactional path as every
// reply, so an operator command is applied exactly once too.
func OperatorMessage(controlTopic, sagaID string, op Op, reason string) (kafkatx.Message, error) {
	if op != OpRetry && op != OpForceCompensate {
		return kafkatx.Message{}, fmt.Errorf("saga: unknown operator command %q", op)
	}
	body, err := json.Marshal(OperatorBody{Op: op, Reason: reason})
	if err != nil {
		return kafkatx.Message{}, err
	}
	env := Envelope{MessageID: NewMessageID(), SagaID: sagaID, Type: TypeOperatorCommand,
		Traceparent: NewTraceparent(), Payload: body}
	return env.Message(controlTopic), nil
}

// StartMessage returns the record that starts a saga: type is one of
// OrchestratorConfig.Starts (e.g. OrderPlaced), data becomes Instance.Data.
func StartMessage(topic, msgType, sagaID string, data json.RawMessage) kafkatx.Message {
	env := Envelope{MessageID: NewMessageID(), SagaID: sagaID, Type: msgType,
		Traceparent: NewTraceparent(), Payload: data}
	return env.Message(topic)
}

// OrchestratorConfig configures an Orchestrator.
type OrchestratorConfig struct {
	Kafka
	// Registry holds the saga definitions. Required.
	Registry *Registry
	// Starts maps a message type on a start topic to the saga type it
	// starts, e.g. {"OrderPlaced": "order"}. Other types on those topics are
	// not for the orchestrator (its own end events among them) and are
	// passed over. Required.
	Starts map[string]string
	// StartTopics default to [orders.events]; ReplyTopics to
	// [stock.replies, payment.replies].
	StartTopics []string
	ReplyTopics []string
	// ControlTopic carries ticks and operator commands. Default saga.control.
	ControlTopic string
	// StateTopic is the compacted snapshot topic. Default saga.state.
	StateTopic string
	// TickInterval is how often due timers are looked for. A timer fires
	// within about this much after it is due. Default 250ms.
	TickInterval time.Duration
	// Retention is how long an ended saga (Completed or Cancelled) is
	// remembered after it ends: its instance leaves memory when it ends, and
	// only its id is kept, so that a second start with that id (a client's
	// retry reaching Kafka twice) and late replies are ignored instead of
	// starting it again or being dead-lettered. After the window its
	// snapshot is tombstoned on the state topic, so a restore reads live and
	// recent sagas only. It must be at least as long as anything that can
	// still send its start: the orders API's Idempotency-Key TTL. Failed
	// sagas wait for an operator and stay. Default 15 minutes.
	Retention time.Duration
	// CheckpointDir, when set, is where the state of each owned partition is
	// written every CheckpointEvery (default 10s) and when the partition
	// leaves, so that a restart reads saga.state only from there on instead
	// of from its beginning (see checkpoint.go). Losing the directory costs
	// a slower restart, nothing else.
	CheckpointDir   string
	CheckpointEvery time.Duration
}

func (c OrchestratorConfig) withDefaults() OrchestratorConfig {
	if c.Group == "" {
		c.Group = "sagaflow-orchestrator"
	}
	if len(c.StartTopics) == 0 {
		c.StartTopics = []string{kafkatx.TopicOrderEvents}
	}
	if len(c.ReplyTopics) == 0 {
		c.ReplyTopics = []string{kafkatx.TopicStockReplies, kafkatx.TopicPaymentReplies}
	}
	if c.ControlTopic == "" {
		c.ControlTopic = kafkatx.TopicSagaControl
	}
	if c.StateTopic == "" {
		c.StateTopic = kafkatx.TopicSagaState
	}
	if c.TickInterval == 0 {
		c.TickInterval = 250 * time.Millisecond
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	return c
}

// Validate reports what is wrong with the configuration.
func (c OrchestratorConfig) Validate() error {
	if err := c.Kafka.validate("orchestrator"); err != nil {
		return err
	}
	if c.Registry == nil {
		return errors.New("saga: invalid orchestrator config: Registry is nil")
	}
	if len(c.Starts) == 0 {
		return errors.New("saga: invalid orchestrator config: Starts is empty")
	}
	for msg, typ := range c.Starts {
		if _, ok := c.Registry.Lookup(typ); !ok {
			return fmt.Errorf("saga: invalid orchestrator config: start %q names saga type %q, which is not registered", msg, typ)
		}
	}
	if c.TickInterval < 0 {
		return errors.New("saga: invalid orchestrator config: negative TickInterval")
	}
	if c.Retention < 0 {
		return errors.New("saga: invalid orchestrator config: negative Retention")
	}
	if c.CheckpointEvery < 0 || c.CheckpointEvery >= CheckpointMaxAge {
		return fmt.Errorf("saga: invalid orchestrator config: CheckpointEvery %s must be positive and below %s, the age past which a checkpoint is not used", c.CheckpointEvery, CheckpointMaxAge)
	}
	return nil
}

// DefaultRetention is OrchestratorConfig.Retention's default.
const DefaultRetention = 15 * time.Minute

// OrchestratorStats counts what an orchestrator did since it started.
type OrchestratorStats struct {
	Applied  int64 // inputs applied by Transition
	Ignored  int64 // inputs not applied: duplicates, stale or late replies, second starts
	Poison   int64 // records dead-lettered
	Restored int64 // snapshots read back on partition assignment
	// FromCheckpoint counts the sagas taken from checkpoints instead
	// (see OrchestratorConfig.CheckpointDir).
	FromCheckpoint int64
	Ticks          int64 // tick records sent
	Ended          int64 // sagas that reached a terminal state here
	// Forgotten counts ended sagas tombstoned after the retention window;
	// Live and Remembered are the sagas in memory now: running (or Failed)
	// ones with their instance, ended ones by id only.
	Forgotten, Live, Remembered int64
	// Unsaved is how many owned partitions changed since their last
	// checkpoint (none are counted without OrchestratorConfig.CheckpointDir).
	Unsaved int64
}

// partition holds the committed instances of one partition number.
type partition struct {
	// sagas holds the live sagas: running, and Failed (waiting for an
	// operator).
	sagas map[string]*Instance
	// timers holds the next timer of every saga that has one, so the ticker
	// does not walk ended sagas.
	timers map[string]time.Time
	// ended remembers, by id, the sagas that ended (Completed, Cancelled)
	// within the retention window; expiry lists them in the order they
	// ended, so the oldest is first.
	ended  map[string]time.Time
	expiry []endedSaga
	// next is the offset of saga.state up to which this state is that of
	// the log (-1: not known), as of nextAt; written is the nextAt of the
	// last checkpoint written.
	next            int64
	nextAt, written time.Time
}

type endedSaga struct {
	id string
	at time.Time
}

func newPartition() *partition {
	return &partition{sagas: map[string]*Instance{}, timers: map[string]time.Time{}, ended: map[string]time.Time{}, next: -1}
}

// done reports whether a saga ended for good: Failed can still be moved by an
// operator, so it stays live.
func done(in *Instance) bool { return in.State == Completed || in.State == Cancelled }

// endedAt is when an ended saga ended: its last change.
func endedAt(in *Instance) time.Time {
	if n := len(in.History); n > 0 {
		return in.History[n-1].At
	}
	return time.Time{}
}

// remember moves an ended saga out of memory, keeping its id until the
// window passes.
func (p *partition) remember(id string, at time.Time) {
	delete(p.sagas, id)
	delete(p.timers, id)
	if _, ok := p.ended[id]; ok {
		return
	}
	p.ended[id] = at
	// Restored snapshots come in no time order; keep expiry sorted anyway
	// (appends in order are the common case).
	i := len(p.expiry)
	for i > 0 && p.expiry[i-1].at.After(at) {
		i--
	}
	p.expiry = append(p.expiry, endedSaga{})
	copy(p.expiry[i+1:], p.expiry[i:])
	p.expiry[i] = endedSaga{id: id, at: at}
}

// expired returns up to max of the oldest ended sagas whose window passed.
func (p *partition) expired(now time.Time, retention time.Duration, max int) []endedSaga {
	n := 0
	for n < len(p.expiry) && n < max && now.Sub(p.expiry[n].at) >= retention {
		n++
	}
	return p.expiry[:n]
}

// forget drops the first n entries of expiry, which were tombstoned.
func (p *partition) forget(n int) {
	for _, e := range p.expiry[:n] {
		delete(p.ended, e.id)
	}
	// A queue: dropping the head is O(1), and append copies the rest to a
	// new array once the old one is full, leaving the head to the GC.
	clear(p.expiry[:n])
	p.expiry = p.expiry[n:]
}

// Orchestrator runs sagas on Kafka. In one transaction per batch it reads
// starts, replies and control records, runs Transition for each, produces the
// commands, end events and new snapshots, and commits the consumed offsets:
// all of it is visible or none (docs/design.md, "Why every message takes effect exactly once").
//
// Co-partitioning: every record of a saga is keyed by its id, and every topic
// has the same partition count, so partition p of each input topic and of
// saga.state holds the same sagas. The range assignor gives partition p of
// every input topic to one instance, which then owns those sagas alone.
type Orchestrator struct {
	cfg   OrchestratorConfig
	log   *zap.Logger
	loop  *kafkatx.Lanes
	ticks *kafkatx.Producer

	start map[string]bool
	reply map[string]bool

	mu       sync.Mutex
	parts    map[int32]*partition
	lastTick map[int32]time.Time

	ident atomic.Pointer[checkpointHeader] // the state topic's identity, once known

	applied, ignored, poison, restored, seeded, ticked, ended, forgotten atomic.Int64
}

// NewOrchestrator returns an orchestrator; Run starts it. A nil log means no
// logging.
func NewOrchestrator(cfg OrchestratorConfig, log *zap.Logger) (*Orchestrator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	o := &Orchestrator{cfg: cfg, log: log.With(zap.String("instance", cfg.InstanceID)),
		start: map[string]bool{}, reply: map[string]bool{},
		parts: map[int32]*partition{}, lastTick: map[int32]time.Time{}}
	topics := []string{cfg.ControlTopic}
	for _, t := range cfg.StartTopics {
		o.start[t] = true
		topics = append(topics, t)
	}
	for _, t := range cfg.ReplyTopics {
		o.reply[t] = true
		topics = append(topics, t)
	}
	lc := cfg.loop(topics)
	lc.Assignor = "range"
	lc.OnAssign = o.restore
	lc.OnRevoke = o.revoke
	loop, err := kafkatx.NewLanes(lc, cfg.Lanes, o.handle, o.log)
	if err != nil {
		return nil, err
	}
	o.loop = loop
	return o, nil
}

// Run runs until ctx is cancelled (nil) or a fatal error.
func (o *Orchestrator) Run(ctx context.Context) error {
	p, err := kafkatx.NewProducer(o.cfg.Brokers, o.log)
	if err != nil {
		return err
	}
	o.ticks = p
	defer p.Close()
	tctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); o.ticker(tctx) }()
	if o.cfg.CheckpointDir != "" {
		wg.Add(1)
		go func() { defer wg.Done(); o.checkpoints(tctx) }()
	}
	err = o.loop.Run(ctx)
	stop()
	wg.Wait()
	return err
}

// Stats returns the counters; safe from any goroutine.
func (o *Orchestrator) Stats() OrchestratorStats {
	st := OrchestratorStats{Applied: o.applied.Load(), Ignored: o.ignored.Load(), Poison: o.poison.Load(),
		Restored: o.restored.Load(), FromCheckpoint: o.seeded.Load(), Ticks: o.ticked.Load(), Ended: o.ended.Load(), Forgotten: o.forgotten.Load()}
	o.mu.Lock()
	for _, p := range o.parts {
		st.Live += int64(len(p.sagas))
		st.Remembered += int64(len(p.ended))
		if o.cfg.CheckpointDir != "" && p.next >= 0 && p.nextAt.After(p.written) {
			st.Unsaved++
		}
	}
	o.mu.Unlock()
	return st
}

// LoopStats returns the transactional loop's counters.
func (o *Orchestrator) LoopStats() kafkatx.Stats { return o.loop.Stats() }

// Instance returns the committed snapshot of a saga this instance owns.
func (o *Orchestrator) Instance(id string) (*Instance, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, p := range o.parts {
		if in, ok := p.sagas[id]; ok {
			return in, true
		}
	}
	return nil, false
}

// restore reads the snapshots of newly assigned partitions. kafkatx calls it
// once the committed offsets are stable, so every snapshot written together
// with an input already consumed is committed and read here.
func (o *Orchestrator) restore(ctx context.Context, tps []kafkatx.TopicPartition) error {
	var want []int32
	o.mu.Lock()
	for _, tp := range tps {
		if _, ok := o.parts[tp.Partition]; !ok && !containsPart(want, tp.Partition) {
			want = append(want, tp.Partition)
		}
	}
	o.mu.Unlock()
	if len(want) == 0 {
		return nil
	}
	rs, began := newRestoring(want), time.Now()
	from := o.fromCheckpoints(ctx, rs, want, began)
	read := func(r kafkatx.Record) error { rs.add(r); return nil }
	ends, err := kafkatx.ReadPartitionsFrom(ctx, o.cfg.Brokers, o.cfg.StateTopic, from, read)
	if errors.Is(err, kafkatx.ErrOffsetOutOfRange) {
		// A checkpoint beyond what the log holds: not about this log.
		o.log.Warn("checkpoint does not fit saga.state; reading it from the beginning", zap.Error(err))
		rs = newRestoring(want)
		for p := range from {
			from[p] = -1
		}
		ends, err = kafkatx.ReadPartitionsFrom(ctx, o.cfg.Brokers, o.cfg.StateTopic, from, read)
	}
	if err != nil {
		return fmt.Errorf("saga: restore %s %v: %w", o.cfg.StateTopic, want, err)
	}
	loaded, err := rs.finish(o.restoreSnapshot)
	if err != nil {
		// A checkpoint that passed its checksum and still does not decode
		// is a bug; it was deleted, and the next restore reads the topic.
		return fmt.Errorf("saga: restore %s %v: %w", o.cfg.StateTopic, want, err)
	}
	n := rs.n
	o.mu.Lock()
	for p, part := range loaded {
		// The state is that of the log below ends[p] as of when the reading
		// began, at the latest.
		part.next, part.nextAt = ends[p], began
		o.parts[p] = part
	}
	o.mu.Unlock()
	o.restored.Add(int64(n))
	o.seeded.Add(int64(rs.seeded))
	// What a restart costs, and what it is made of: records read (most are
	// replaced snapshots and tombstones), bytes, sagas taken from
	// checkpoints, and what was kept.
	live, ended := 0, 0
	for _, part := range loaded {
		live, ended = live+len(part.sagas), ended+len(part.ended)
	}
	o.log.Info("restored sagas", zap.Int32s("partitions", want), zap.Int("snapshots", n),
		zap.Int64("bytes", rs.bytes), zap.Int("from_checkpoint", rs.seeded), zap.Int("live", live),
		zap.Int("ended", ended), zap.Duration("took", time.Since(began)))
	return nil
}

// restoreSnapshot decodes one snapshot into part.
func (o *Orchestrator) restoreSnapshot(part *partition, r kafkatx.Record) {
	in, err := DecodeSnapshot(r.Value)
	if err != nil || in.ID == "" {
		// Only this code writes snapshots; an unreadable one is a bug to
		// report, and the next snapshot of that saga replaces it.
		o.log.Error("unreadable snapshot", zap.Int32("partition", r.Partition), zap.Int64("offset", r.Offset), zap.Error(err))
		return
	}
	if done(&in) {
		// Its window may have passed already; then the next tick
		// tombstones it.
		part.remember(in.ID, endedAt(&in))
		return
	}
	part.put(&in)
}

func containsPart(ps []int32, p int32) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

func (p *partition) put(in *Instance) {
	p.sagas[in.ID] = in
	if t := in.NextTimer(); !t.IsZero() {
		p.timers[in.ID] = t
	} else {
		delete(p.timers, in.ID)
	}
}

// revoke forgets the sagas of partitions that left; their new owner restores
// them from saga.state.
func (o *Orchestrator) revoke(tps []kafkatx.TopicPartition, lost bool) {
	if !lost {
		// What this instance knows of them spares their next owner, or
		// this instance after a restart, most of the reading.
		ps := make([]int32, len(tps))
		for i, tp := range tps {
			ps[i] = tp.Partition
		}
		o.checkpoint(ps)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, tp := range tps {
		delete(o.parts, tp.Partition)
		delete(o.lastTick, tp.Partition)
	}
}

// ticker sends a tick to partition p of the control topic when a timer of p
// is due. The tick then travels the transactional path like any input, so a
// timeout fires exactly once, and only at the partition's owner: a zombie
// that lost p cannot commit what its tick caused.
func (o *Orchestrator) ticker(ctx context.Context) {
	t := time.NewTicker(o.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			for _, p := range o.due(now) {
				msg := kafkatx.NewMessage(o.cfg.ControlTopic, nil, nil,
					kafkatx.Header{Key: HeaderType, Value: []byte(TypeTick)},
					kafkatx.Header{Key: HeaderMessageID, Value: []byte(NewMessageID())}).OnPartition(p)
				sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				if err := o.ticks.Send(sctx, msg); err != nil && ctx.Err() == nil {
					o.log.Warn("tick not sent; the next one will try again", zap.Int32("partition", p), zap.Error(err))
				} else {
					o.ticked.Add(1)
				}
				cancel()
			}
		}
	}
}

// due returns the partitions with a timer due at now that were not ticked in
// the last interval (a tick in flight will fire it).
func (o *Orchestrator) due(now time.Time) []int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []int32
	for p, part := range o.parts {
		if now.Sub(o.lastTick[p]) < 2*o.cfg.TickInterval {
			continue
		}
		if len(part.expiry) > 0 && now.Sub(part.expiry[0].at) >= o.cfg.Retention {
			out = append(out, p) // ended sagas to forget
			o.lastTick[p] = now
			continue
		}
		for _, at := range part.timers {
			if !at.After(now) {
				out = append(out, p)
				o.lastTick[p] = now
				break
			}
		}
	}
	return out
}

// batch is the work of one transaction: instances changed so far, on top of
// the committed ones, which change only after the commit.
type batch struct {
	o       *Orchestrator
	out     *kafkatx.Sink
	now     time.Time
	changed map[string]*Instance
	part    map[string]int32
	applied int64
	ignored int64
	// forget is how many of each partition's oldest ended sagas this batch
	// tombstones.
	forget map[int32]int
}

func (b *batch) get(p int32, id string) *Instance {
	if in, ok := b.changed[id]; ok {
		return in
	}
	b.o.mu.Lock()
	defer b.o.mu.Unlock()
	if part := b.o.parts[p]; part != nil {
		return part.sagas[id]
	}
	return nil
}

// remembered reports whether a saga ended within the retention window and
// left memory: every input for it is passed over.
func (b *batch) remembered(p int32, id string) bool {
	b.o.mu.Lock()
	defer b.o.mu.Unlock()
	if part := b.o.parts[p]; part != nil {
		_, ok := part.ended[id]
		return ok
	}
	return false
}

func (o *Orchestrator) handle(ctx context.Context, recs []kafkatx.Record, out *kafkatx.Sink) error {
	b := &batch{o: o, out: out, now: time.Now(), changed: map[string]*Instance{}, part: map[string]int32{}}
	for _, r := range recs {
		if err := b.record(ctx, r); err != nil {
			return err
		}
	}
	b.sweep(ctx, recs)
	for id, in := range b.changed {
		snap, err := EncodeSnapshot(in)
		if err != nil {
			return fmt.Errorf("saga: snapshot %s: %w", id, err)
		}
		out.Produce(ctx, kafkatx.NewMessage(o.cfg.StateTopic, []byte(id), snap,
			kafkatx.Header{Key: HeaderSagaID, Value: []byte(id)},
			kafkatx.Header{Key: HeaderType, Value: []byte(in.Type)},
			kafkatx.Header{Key: "version", Value: []byte(strconv.FormatUint(in.Version, 10))},
			// The state in a header lets a restore pass over ended sagas
			// without decoding their snapshots (see restore).
			kafkatx.Header{Key: HeaderState, Value: []byte(in.State)},
		).OnPartition(b.part[id]).Tracked())
	}
	// The crash window the chaos tests aim at: commands and snapshots
	// produced, offsets not yet committed.
	failpoint.Hit("orchestrator/before-commit")
	out.OnCommit(func() {
		o.applied.Add(b.applied)
		o.ignored.Add(b.ignored)
		offsets, known := out.Offsets()
		o.mu.Lock()
		defer o.mu.Unlock()
		b.advance(offsets, known)
		// Forget first: the sagas ending now go to the back of expiry.
		for p, n := range b.forget {
			if part := o.parts[p]; part != nil && n <= len(part.expiry) {
				part.forget(n)
				o.forgotten.Add(int64(n))
			}
		}
		for id, in := range b.changed {
			part := o.parts[b.part[id]]
			if part == nil {
				// Revoked while this batch committed (only on shutdown);
				// the next owner restores it from saga.state.
				continue
			}
			if old := part.sagas[id]; in.IsTerminal() && (old == nil || !old.IsTerminal()) {
				o.ended.Add(1)
			}
			if done(in) {
				part.remember(id, endedAt(in))
			} else {
				part.put(in)
			}
		}
	})
	return nil
}

// advance moves each partition's saga.state offset past what this committed
// batch wrote there. Unknown offsets make the partition's state unknown to
// checkpoints until its next restore. Called with o.mu held.
func (b *batch) advance(offsets map[kafkatx.TopicPartition]int64, known bool) {
	for p := range b.touched() {
		part := b.o.parts[p]
		if part == nil {
			continue
		}
		off, ok := offsets[kafkatx.TopicPartition{Topic: b.o.cfg.StateTopic, Partition: p}]
		if !known || !ok || part.next < 0 {
			part.next = -1
			continue
		}
		part.next, part.nextAt = max(part.next, off+1), b.now
	}
}

// touched returns the partitions this batch wrote to saga.state.
func (b *batch) touched() map[int32]bool {
	ps := map[int32]bool{}
	for _, p := range b.part {
		ps[p] = true
	}
	for p := range b.forget {
		ps[p] = true
	}
	return ps
}

// maxForget bounds the tombstones one transaction carries per partition.
const maxForget = 2000

// sweep tombstones, on the partitions of this batch, the ended sagas whose
// retention window passed; they leave memory when the transaction commits.
// A tombstone is produced in the same transaction as everything else, by the
// partition's owner, so a zombie cannot forget a saga it no longer owns.
func (b *batch) sweep(ctx context.Context, recs []kafkatx.Record) {
	o := b.o
	seen := map[int32]bool{}
	for _, r := range recs {
		if seen[r.Partition] {
			continue
		}
		seen[r.Partition] = true
		o.mu.Lock()
		var gone []endedSaga
		if part := o.parts[r.Partition]; part != nil {
			gone = part.expired(b.now, o.cfg.Retention, maxForget)
		}
		o.mu.Unlock()
		for _, e := range gone {
			b.out.Produce(ctx, kafkatx.NewMessage(o.cfg.StateTopic, []byte(e.id), nil,
				kafkatx.Header{Key: HeaderSagaID, Value: []byte(e.id)}).OnPartition(r.Partition).Tracked())
		}
		if len(gone) > 0 {
			if b.forget == nil {
				b.forget = map[int32]int{}
			}
			b.forget[r.Partition] = len(gone)
		}
	}
}

// record turns one consumed record into Transition inputs.
func (b *batch) record(ctx context.Context, r kafkatx.Record) error {
	o := b.o
	if r.Topic == o.cfg.ControlTopic && string(r.Header(HeaderType)) == TypeTick {
		return b.tick(ctx, r.Partition)
	}
	env, err := Decode(r)
	if err != nil {
		o.poison.Add(1)
		return kafkatx.Poison(r, err)
	}
	in := Input{At: b.now, MessageID: env.MessageID}
	var typ string
	switch {
	case o.start[r.Topic]:
		st, ok := o.cfg.Starts[env.Type]
		if !ok {
			return nil // not a start: e.g. our own end events on orders.events
		}
		typ = st
		in.Kind = KindStart
		in.Start = Start{SagaID: env.SagaID, Data: env.Payload, Traceparent: env.Traceparent}
	case o.reply[r.Topic]:
		rep, err := env.Reply()
		if err != nil {
			o.poison.Add(1)
			return kafkatx.Poison(r, err)
		}
		in.Kind, in.Reply = KindReply, rep
	case r.Topic == o.cfg.ControlTopic && env.Type == TypeOperatorCommand:
		var body OperatorBody
		if err := json.Unmarshal(env.Payload, &body); err != nil {
			o.poison.Add(1)
			return kafkatx.Poison(r, fmt.Errorf("%w: operator command body: %v", ErrPoison, err))
		}
		in.Kind, in.Operator = KindOperator, Operator(body)
	default:
		o.poison.Add(1)
		return kafkatx.Poison(r, fmt.Errorf("%w: message type %q is not expected on %s", ErrPoison, env.Type, r.Topic))
	}
	inst := b.get(r.Partition, env.SagaID)
	if inst == nil && b.remembered(r.Partition, env.SagaID) {
		// Ended within the window: a second start, a late or repeated
		// reply, an operator command too late. As Transition would say
		// of the ended instance: not applied.
		b.ignored++
		return nil
	}
	if inst != nil {
		typ = inst.Type
	} else if in.Kind != KindStart {
		o.poison.Add(1)
		return kafkatx.Poison(r, fmt.Errorf("%w: %s for unknown saga %q", ErrPoison, env.Type, env.SagaID))
	}
	def, ok := o.cfg.Registry.Lookup(typ)
	if !ok {
		o.poison.Add(1)
		return kafkatx.Poison(r, fmt.Errorf("%w: unknown saga type %q", ErrPoison, typ))
	}
	if _, err := b.apply(ctx, def, r.Partition, env.SagaID, inst, in); err != nil {
		// Transition is pure: what fails now fails on every retry, so
		// retrying would stop the partition for good.
		o.poison.Add(1)
		return kafkatx.Poison(r, err)
	}
	return nil
}

// tick fires every timer due on partition p.
func (b *batch) tick(ctx context.Context, p int32) error {
	b.o.mu.Lock()
	var due []string
	if part := b.o.parts[p]; part != nil {
		for id, at := range part.timers {
			if !at.After(b.now) {
				due = append(due, id)
			}
		}
	}
	b.o.mu.Unlock()
	for _, id := range due {
		inst := b.get(p, id)
		def, ok := b.o.cfg.Registry.Lookup(inst.Type)
		if !ok {
			continue
		}
		// A tick fires one timer per call; loop until nothing is due.
		for range len(inst.Steps)*4 + 4 {
			t := inst.NextTimer()
			if t.IsZero() || t.After(b.now) {
				break
			}
			next, err := b.apply(ctx, def, p, id, inst, Input{Kind: KindTick, At: b.now})
			if err != nil {
				b.o.log.Error("tick not applied", zap.String("saga_id", id), zap.Error(err))
				break
			}
			if next == inst {
				break
			}
			inst = next
		}
	}
	return nil
}

// apply runs Transition and stages its result; it returns the new instance.
func (b *batch) apply(ctx context.Context, def *Definition, p int32, id string, inst *Instance, in Input) (*Instance, error) {
	next, msgs, err := Transition(def, inst, in)
	// The fields go with each message, not into a logger made for every
	// input: Logger.With encodes them at once, and at saturation that was
	// 3% of the orchestrator's CPU for lines that are rarely written.
	switch {
	case errors.Is(err, ErrIgnored):
		b.ignored++
		b.o.log.Debug("input ignored", zap.String("saga_id", id), zap.String("message_id", in.MessageID), zap.Error(err))
	case errors.Is(err, ErrIllegal):
		b.ignored++
		b.o.log.Warn("input refused", zap.String("saga_id", id), zap.String("message_id", in.MessageID), zap.Error(err))
	case err != nil:
		return nil, fmt.Errorf("saga: transition %s: %w", id, err)
	default:
		b.applied++
	}
	if next == nil {
		return inst, nil
	}
	if next != inst {
		b.changed[id], b.part[id] = next, p
	}
	for _, m := range msgs {
		b.out.Produce(ctx, m.Envelope().Message(m.Topic))
	}
	return next, nil
}
