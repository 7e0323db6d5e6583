package orders

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/orders/orderstest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// memCatalog and memAccounts stand in for the stock and payment stores:
// the interfaces are the unit boundary of this package.
type memCatalog map[string]Product

func (c memCatalog) Products(context.Context) ([]Product, error) {
	out := make([]Product, 0, len(c))
	for _, p := range c {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Product) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

func (c memCatalog) Product(_ context.Context, id string) (Product, error) {
	p, ok := c[id]
	if !ok {
		return Product{}, fmt.Errorf("product %q: %w", id, ErrNotFound)
	}
	return p, nil
}

type memAccounts map[string]Customer

func (a memAccounts) Customers(context.Context) ([]Customer, error) {
	out := make([]Customer, 0, len(a))
	for _, c := range a {
		out = append(out, c)
	}
	slices.SortFunc(out, func(x, y Customer) int { return strings.Compare(x.ID, y.ID) })
	return out, nil
}

func (a memAccounts) Customer(_ context.Context, id string) (Customer, error) {
	c, ok := a[id]
	if !ok {
		return Customer{}, fmt.Errorf("customer %q: %w", id, ErrNotFound)
	}
	return c, nil
}

var (
	testCatalog = memCatalog{
		"tea":         {ID: "tea", Name: "Tea", PriceCents: 450, Available: 100},
		"coffee":      {ID: "coffee", Name: "Coffee", PriceCents: 700, Available: 100},
		"unobtainium": {ID: "unobtainium", Name: "Unobtainium", PriceCents: 100},
	}
	testAccounts = memAccounts{
		"alice": {ID: "alice", Name: "Alice", BalanceCents: 100_00, OrderLimitCents: 50_00},
		"broke": {ID: "broke", Name: "Broke", BalanceCents: 0, OrderLimitCents: 50_00},
	}
)

// world is one test's topics, read model and API on real Kafka and Redis.
type world struct {
	t testing.TB
	orderstest.Topics

	rm     *ReadModel
	svc    *Service
	srv    *httptest.Server
	sender *gatedSender
	log    *zap.Logger
}

type worldOptions struct {
	token string
	cfg   Config
}

// gatedSender is the real producer with a gate a test can close, to hold a
// request in flight.
type gatedSender struct {
	p    Sender
	mu   sync.Mutex
	gate chan struct{}
	sent atomic.Int64
	// waiting counts the calls held at the gate now.
	waiting atomic.Int64
	// fail, when set, is returned instead of sending.
	fail atomic.Pointer[error]
}

func (g *gatedSender) Send(ctx context.Context, m kafkatx.Message) error {
	g.mu.Lock()
	gate := g.gate
	g.mu.Unlock()
	if gate != nil {
		g.waiting.Add(1)
		defer g.waiting.Add(-1)
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := g.fail.Load(); err != nil {
		return *err
	}
	g.sent.Add(1)
	return g.p.Send(ctx, m)
}

// hold makes Send wait until the returned release is called.
func (g *gatedSender) hold() (release func()) {
	ch := make(chan struct{})
	g.mu.Lock()
	g.gate = ch
	g.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.gate = nil
			g.mu.Unlock()
			close(ch)
		})
	}
}

func newWorld(t testing.TB, opt worldOptions) *world {
	t.Helper()
	rdb := redistest.Client(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	w := &world{t: t, Topics: orderstest.NewTopics(t, 2), log: log}
	b := w.Brokers

	store, err := idempotency.New(idempotency.Config{Prefix: redistest.Prefix(t)}, rdb, log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := kafkatx.NewProducer(b, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	w.sender = &gatedSender{p: p}

	w.rm, err = NewReadModel(ReadModelConfig{Brokers: b, StateTopic: w.State, EventsTopic: w.Events}, log)
	if err != nil {
		t.Fatal(err)
	}
	orderstest.RunBackground(t, w.rm.Run)

	cfg := opt.cfg
	cfg.OperatorToken = opt.token
	cfg.EventsTopic, cfg.ControlTopic = w.Events, w.Control
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = 20 * time.Second
	}
	w.svc, err = New(cfg, Deps{
		Producer: w.sender, Idempotency: store, Orders: w.rm, Catalog: testCatalog, Accounts: testAccounts,
		Ready: map[string]Check{
			"redis": func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	w.srv = httptest.NewServer(w.svc)
	t.Cleanup(func() {
		w.svc.Close()
		w.srv.Close()
	})
	return w
}

// sagaConfig is the order saga on the world's topics, with timings short
// enough for a test and long enough for a loaded machine.
func (w *world) sagaConfig() SagaConfig {
	return SagaConfig{StockTopic: w.StockCmd, PaymentTopic: w.PayCmd, EventsTopic: w.Events,
		StepTimeout: 2 * time.Second, Attempts: 2, Backoff: 100 * time.Millisecond, Deadline: time.Minute}
}

// runSaga starts the orchestrator and test participants for the world.
func (w *world) runSaga(t testing.TB) {
	t.Helper()
	reg, err := saga.NewRegistry(Definition(w.sagaConfig()))
	if err != nil {
		t.Fatal(err)
	}
	o, err := saga.NewOrchestrator(saga.OrchestratorConfig{
		Kafka: w.Kafka("orch", "t0"), Registry: reg, Starts: Starts(),
		StartTopics: []string{w.Events}, ReplyTopics: []string{w.StockRep, w.PayRep},
		ControlTopic: w.Control, StateTopic: w.State, TickInterval: 100 * time.Millisecond,
	}, w.log)
	if err != nil {
		t.Fatal(err)
	}
	orderstest.RunBackground(t, o.Run)
	joined := []func() kafkatx.Stats{o.LoopStats}
	for _, pc := range []struct{ cmd, rep string }{{w.StockCmd, w.StockRep}, {w.PayCmd, w.PayRep}} {
		p, err := saga.NewParticipant(saga.ParticipantConfig{Kafka: w.Kafka("part-"+pc.cmd, "t0"),
			CommandTopic: pc.cmd, ReplyTopic: pc.rep}, testParticipant, w.log)
		if err != nil {
			t.Fatal(err)
		}
		orderstest.RunBackground(t, p.Run)
		joined = append(joined, p.Stats)
	}
	// Step timeouts are short here: a participant still joining its group
	// when the first command goes out would time a step out.
	kafkatest.WaitFor(t, 60*time.Second, "the orchestrator and the participants to own partitions", func() bool {
		for _, stats := range joined {
			if stats().Assigned == 0 {
				return false
			}
		}
		return true
	})
}

// testParticipant plays stock and payment: unobtainium is never in stock,
// the customer "broke" is always declined, and the slow-payment scenario
// gets no reply to its charge.
func testParticipant(_ context.Context, cmd saga.Envelope) (saga.Envelope, error) {
	o, err := decodeOrderPlaced(cmd.Payload)
	if err != nil {
		return saga.Envelope{}, fmt.Errorf("%w: %v", saga.ErrPoison, err)
	}
	switch cmd.Type {
	case TypeReserveStock:
		for _, l := range o.Lines {
			if l.ProductID == "unobtainium" {
				return saga.ReplyTo(cmd, "StockRejected", saga.Failure, "out of stock: unobtainium", nil)
			}
		}
		return saga.ReplyTo(cmd, "StockReserved", saga.Success, "", nil)
	case TypeChargePayment:
		switch {
		case o.Scenario == ScenarioSlowPayment:
			return saga.Envelope{}, nil
		case o.CustomerID == "broke":
			return saga.ReplyTo(cmd, "PaymentDeclined", saga.Failure, "insufficient funds", nil)
		}
		return saga.ReplyTo(cmd, "PaymentCharged", saga.Success, "", nil)
	case TypeReleaseStock, TypeCommitStock, TypeRefundPayment:
		return saga.ReplyTo(cmd, Replies(cmd.Type)[0], saga.Success, "", nil)
	}
	return saga.Envelope{}, fmt.Errorf("%w: unexpected command %s", saga.ErrPoison, cmd.Type)
}

// response is what a test request got.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	return fmt.Sprintf("%d %s %s", r.status, r.header.Get("Content-Type"), r.body)
}

func (r response) problem(t testing.TB) Problem {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json: %s", ct, r)
	}
	var p Problem
	if err := json.Unmarshal(r.body, &p); err != nil {
		t.Fatalf("problem body: %v: %s", err, r.body)
	}
	if p.Status != r.status || p.Type == "" || p.Title == "" {
		t.Fatalf("problem document incomplete: %s", r.body)
	}
	return p
}

func (r response) order(t testing.TB) Order {
	t.Helper()
	var o Order
	if err := json.Unmarshal(r.body, &o); err != nil {
		t.Fatalf("order body: %v: %s", err, r.body)
	}
	return o
}

// do sends a request to the world's server; headers alternate name, value.
func (w *world) do(method, path string, body io.Reader, headers ...string) response {
	w.t.Helper()
	req, err := http.NewRequest(method, w.srv.URL+path, body)
	if err != nil {
		w.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := w.srv.Client().Do(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		w.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// post places an order with the key.
func (w *world) post(key, body string) response {
	w.t.Helper()
	h := []string{"Content-Type", "application/json"}
	if key != "" {
		h = append(h, "Idempotency-Key", key)
	}
	return w.do(http.MethodPost, "/orders", strings.NewReader(body), h...)
}

// place places a valid order and returns it, failing unless it is accepted.
func (w *world) place(key, body string) Order {
	w.t.Helper()
	r := w.post(key, body)
	if r.status != http.StatusAccepted {
		w.t.Fatalf("POST /orders: %s", r)
	}
	return r.order(w.t)
}

// waitStatus polls GET /orders/{id} until the order has the status and the
// snapshot that brought it there: an end event read ahead of its snapshot
// gives the status first, with the steps of an older one.
func (w *world) waitStatus(id string, want Status, timeout time.Duration) Order {
	w.t.Helper()
	var last response
	kafkatest.WaitFor(w.t, timeout, fmt.Sprintf("order %s to be %s", id, want), func() bool {
		last = w.do(http.MethodGet, "/orders/"+id, nil)
		if last.status != http.StatusOK {
			return false
		}
		o := last.order(w.t)
		n := len(o.History)
		return o.Status == want && n > 0 && statusOf(o.History[n-1].To) == want
	})
	return last.order(w.t)
}

// fedPartition is the partition number of records a test feeds the read
// model by hand: no test topic has it, so fed offsets never shadow the real
// ones Follow applies.
const fedPartition = 999

// feed applies a record to the read model as Follow would, for tests that
// need an order in a given state without running a saga.
func feed(t testing.TB, m *ReadModel, topic string, key string, value []byte, headers ...kafkatx.Header) {
	t.Helper()
	m.mu.RLock()
	off := m.next[topic][fedPartition]
	m.mu.RUnlock()
	m.apply(kafkatx.Record{Topic: topic, Partition: fedPartition, Offset: off, Key: []byte(key), Value: value,
		Headers: headers, Timestamp: time.Now()})
}

// feedEnvelope feeds an envelope as a record of topic.
func feedEnvelope(t testing.TB, m *ReadModel, topic string, env saga.Envelope) {
	t.Helper()
	msg := env.Message(topic)
	feed(t, m, topic, string(msg.Key), msg.Value, msg.Headers...)
}

// sagaRun drives the order saga's state machine by hand, so tests get
// snapshots the orchestrator could have written.
type sagaRun struct {
	t    testing.TB
	def  *saga.Definition
	inst *saga.Instance
	now  time.Time
	out  []saga.Outgoing
}

func startSaga(t testing.TB, o OrderPlaced) *sagaRun {
	t.Helper()
	return startSagaWith(t, o, SagaConfig{})
}

// startSagaWith starts the order saga of cfg.
func startSagaWith(t testing.TB, o OrderPlaced, cfg SagaConfig) *sagaRun {
	t.Helper()
	data, _ := json.Marshal(o)
	r := &sagaRun{t: t, def: Definition(cfg), now: time.Now().UTC()}
	r.step(saga.Input{Kind: saga.KindStart, Start: saga.Start{SagaID: o.OrderID, Data: data}})
	return r
}

func (r *sagaRun) step(in saga.Input) *saga.Instance {
	r.t.Helper()
	r.now = r.now.Add(time.Millisecond)
	in.At = r.now
	if in.Kind != saga.KindTick {
		in.MessageID = saga.NewMessageID()
	}
	next, out, err := saga.Transition(r.def, r.inst, in)
	if err != nil {
		r.t.Fatalf("transition %s: %v", in.Kind, err)
	}
	r.inst, r.out = next, out
	return next
}

// reply answers the command in flight.
func (r *sagaRun) reply(outcome saga.Outcome) *saga.Instance {
	r.t.Helper()
	if len(r.inst.InFlight()) == 0 {
		// Waiting out a backoff: let its timer fire.
		if at := r.inst.NextTimer(); !at.IsZero() {
			r.now = at
			r.step(saga.Input{Kind: saga.KindTick})
		}
	}
	in := r.inst.InFlight()
	if len(in) == 0 {
		r.t.Fatalf("no command in flight: %s", r.inst.State)
	}
	// Of a group of parallel steps, the first answers first.
	w := in[0]
	return r.step(saga.Input{Kind: saga.KindReply, Reply: saga.Reply{Step: w.Step, Phase: w.Phase, Attempt: w.Attempt,
		Outcome: outcome, Reason: "test says " + string(outcome)}})
}

func (r *sagaRun) snapshot() []byte {
	b, err := json.Marshal(r.inst)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

// endEvent returns the end event the last transition emitted.
func (r *sagaRun) endEvent() saga.Envelope {
	r.t.Helper()
	for _, o := range r.out {
		if !o.IsCommand() {
			return o.Envelope()
		}
	}
	r.t.Fatalf("no end event in %+v", r.out)
	return saga.Envelope{}
}

// newLiteService is the service without Kafka and Redis, for tests of
// handlers that use neither: the sender records what it is given, and the
// idempotency store points at a Redis nobody dials.
func newLiteService(t testing.TB, cfg Config, ready map[string]Check) (*Service, *ReadModel) {
	t.Helper()
	m, err := NewReadModel(ReadModelConfig{Brokers: "unused:9"}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := idempotency.New(idempotency.Config{}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := New(cfg, Deps{Producer: &recordingSender{}, Idempotency: store, Orders: m,
		Catalog: testCatalog, Accounts: testAccounts, Ready: ready}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return svc, m
}

// recordingSender keeps what it is asked to send.
type recordingSender struct {
	mu   sync.Mutex
	msgs []kafkatx.Message
}

func (s *recordingSender) Send(_ context.Context, m kafkatx.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	return nil
}
