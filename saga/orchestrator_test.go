package saga_test

import (
	"context"
	"encoding/json"

	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// world is one test's set of topics, with the order-shaped test saga and
// instant test participants.
type world struct {
	brokers                                    string
	events, stockCmd, stockRep, payCmd, payRep string
	control, state, dlq                        string
	parts                                      int
	reg                                        *saga.Registry
	chargeTimeout                              time.Duration
	stockTimeout                               time.Duration // reserve and confirm
	parallel                                   bool          // charge runs together with reserve
	noReply                                    bool          // confirm takes no reply (Step.NoReply)
}

// testData tells the test participants how to behave for one saga.
type testData struct {
	Fail   string `json:"fail,omitempty"`   // step whose action answers Failure
	Silent string `json:"silent,omitempty"` // step whose action never answers
}

func newWorld(t testing.TB, parts int) *world {
	t.Helper()
	b := kafkatest.Brokers(t)
	w := &world{brokers: b, parts: parts, chargeTimeout: 3 * time.Second, stockTimeout: 5 * time.Second}
	w.events = kafkatest.Topic(t, b, "events", parts)
	w.stockCmd = kafkatest.Topic(t, b, "stockcmd", parts)
	w.stockRep = kafkatest.Topic(t, b, "stockrep", parts)
	w.payCmd = kafkatest.Topic(t, b, "paycmd", parts)
	w.payRep = kafkatest.Topic(t, b, "payrep", parts)
	w.control = kafkatest.Topic(t, b, "control", parts)
	w.state = kafkatest.Topic(t, b, "state", parts)
	w.dlq = kafkatest.Topic(t, b, "dlq", parts)
	reg, err := w.registry()
	if err != nil {
		t.Fatal(err)
	}
	w.reg = reg
	return w
}

func command(typ string) saga.Builder {
	return func(data json.RawMessage) (saga.Command, error) {
		return saga.Command{Type: typ, Payload: data}, nil
	}
}

func (w *world) registry() (*saga.Registry, error) {
	retry := saga.RetryPolicy{MaxAttempts: 2, Backoff: 200 * time.Millisecond}
	def := &saga.Definition{
		Name: "order",
		Steps: []saga.Step{
			{Name: "reserve", Topic: w.stockCmd, Action: command("ReserveStock"), Compensation: command("ReleaseStock"),
				Timeout: w.stockTimeout, Retry: retry},
			{Name: "charge", Topic: w.payCmd, Action: command("ChargePayment"), Compensation: command("RefundPayment"),
				Timeout: w.chargeTimeout, Retry: retry, Parallel: w.parallel},
			{Name: "confirm", Topic: w.stockCmd, Action: command("ConfirmReservation"), Timeout: w.stockTimeout, Retry: retry,
				NoReply: w.noReply},
		},
		Deadline:    time.Minute,
		OnCompleted: saga.Event{Topic: w.events, Type: "OrderConfirmed"},
		OnCancelled: saga.Event{Topic: w.events, Type: "OrderCancelled"},
		OnFailed:    saga.Event{Topic: w.events, Type: "OrderFailed"},
	}
	return saga.NewRegistry(def)
}

func (w *world) kafka(group, instance string) saga.Kafka {
	return saga.Kafka{Brokers: w.brokers, Group: group, InstanceID: instance, DeadLetterTopic: w.dlq,
		MaxBatch: 100, MaxInterval: 20 * time.Millisecond, TransactionTimeout: 10 * time.Second,
		SessionTimeout: 6 * time.Second}
}

func (w *world) orchestratorConfig(group, instance string) saga.OrchestratorConfig {
	return saga.OrchestratorConfig{
		Kafka:        w.kafka(group, instance),
		Registry:     w.reg,
		Starts:       map[string]string{"OrderPlaced": "order"},
		StartTopics:  []string{w.events},
		ReplyTopics:  []string{w.stockRep, w.payRep},
		ControlTopic: w.control,
		StateTopic:   w.state,
		TickInterval: 100 * time.Millisecond,
	}
}

// runOrchestrator runs one orchestrator, and the test participants when
// asked, until the test ends.
func (w *world) runOrchestrator(t *testing.T, participants bool) *saga.Orchestrator {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	if participants {
		w.runParticipants(t, log)
	}
	o, err := saga.NewOrchestrator(w.orchestratorConfig("orch", "o0"), log)
	if err != nil {
		t.Fatal(err)
	}
	runBg(t, o.Run)
	return o
}

// replyTypes names each command's reply by outcome.
var replyTypes = map[string][2]string{
	"ReserveStock":       {"StockReserved", "StockRejected"},
	"ReleaseStock":       {"StockReleased", "StockReleased"},
	"ConfirmReservation": {"ReservationConfirmed", "ReservationConfirmed"},
	"ChargePayment":      {"PaymentCharged", "PaymentDeclined"},
	"RefundPayment":      {"PaymentRefunded", "PaymentRefunded"},
}

var stepOf = map[string]string{"ReserveStock": "reserve", "ChargePayment": "charge", "ConfirmReservation": "confirm"}

// participant answers at once, as testData asks.
func participant(cmd saga.Envelope) (saga.Envelope, error) {
	var d testData
	if err := json.Unmarshal(cmd.Payload, &d); err != nil {
		return saga.Envelope{}, fmt.Errorf("%w: %v", saga.ErrPoison, err)
	}
	types, ok := replyTypes[cmd.Type]
	if !ok {
		return saga.Envelope{}, fmt.Errorf("%w: unknown command %s", saga.ErrPoison, cmd.Type)
	}
	step := stepOf[cmd.Type]
	switch {
	case cmd.Phase == saga.PhaseAction && d.Silent == step:
		return saga.Envelope{}, nil
	case cmd.Phase == saga.PhaseAction && d.Fail == step:
		return saga.ReplyTo(cmd, types[1], saga.Failure, step+" refused by test", nil)
	}
	return saga.ReplyTo(cmd, types[0], saga.Success, "", nil)
}

// runParticipants runs the stock and payment test participants until the
// test ends.
func (w *world) runParticipants(t testing.TB, log *zap.Logger) {
	t.Helper()
	for _, p := range w.participants(t, log) {
		runBg(t, p.Run)
	}
}

// participants returns the stock and payment test participants, not started.
func (w *world) participants(t testing.TB, log *zap.Logger) []*saga.Participant {
	t.Helper()
	var out []*saga.Participant
	for _, pc := range []struct{ cmd, rep string }{{w.stockCmd, w.stockRep}, {w.payCmd, w.payRep}} {
		cfg := saga.ParticipantConfig{Kafka: w.kafka("", "p0"), CommandTopic: pc.cmd, ReplyTopic: pc.rep}
		p, err := saga.NewParticipant(cfg, func(_ context.Context, cmd saga.Envelope) (saga.Envelope, error) {
			return participant(cmd)
		}, log)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// run runs f in the background until the test ends, failing it if f fails.
func runBg(t testing.TB, f func(context.Context) error) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("runtime stopped with: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("runtime did not stop within 60s")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func (w *world) start(t testing.TB, ids []string, data func(i int) testData) {
	t.Helper()
	msgs := make([]kafkatx.Message, len(ids))
	for i, id := range ids {
		body, _ := json.Marshal(data(i))
		msgs[i] = saga.StartMessage(w.events, "OrderPlaced", id, body)
	}
	kafkatest.Produce(t, w.brokers, msgs)
}

// snapshots returns the newest committed snapshot of every saga.
func (w *world) snapshots(t testing.TB) map[string]*saga.Instance {
	t.Helper()
	out := map[string]*saga.Instance{}
	for _, r := range kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadCommitted) {
		if len(r.Value) == 0 {
			delete(out, string(r.Key)) // forgotten after its retention window
			continue
		}
		var in saga.Instance
		if err := json.Unmarshal(r.Value, &in); err != nil {
			t.Fatalf("snapshot at %d@%d: %v", r.Partition, r.Offset, err)
		}
		if old, ok := out[in.ID]; ok && old.Version > in.Version {
			t.Errorf("saga %s: snapshot version went back from %d to %d", in.ID, old.Version, in.Version)
		}
		out[in.ID] = &in
	}
	return out
}

// waitTerminal waits until every saga in ids has a terminal snapshot.
func (w *world) waitTerminal(t testing.TB, ids []string, timeout time.Duration) map[string]*saga.Instance {
	t.Helper()
	var snaps map[string]*saga.Instance
	kafkatest.WaitFor(t, timeout, fmt.Sprintf("%d sagas to end", len(ids)), func() bool {
		snaps = w.snapshots(t)
		for _, id := range ids {
			if in, ok := snaps[id]; !ok || !in.IsTerminal() {
				return false
			}
		}
		return true
	})
	for _, id := range ids {
		if err := snaps[id].Check(); err != nil {
			t.Errorf("saga %s: illegal snapshot: %v", id, err)
		}
	}
	return snaps
}

// commandKey names one command: saga, type, phase and attempt.
func commandKey(r kafkatx.Record) string {
	return fmt.Sprintf("%s/%s/%s/%s", r.Header(saga.HeaderSagaID), r.Header(saga.HeaderType),
		r.Header(saga.HeaderPhase), r.Header(saga.HeaderAttempt))
}

// commands returns how often each command appears to a read_committed reader
// of the command topics, and fails the test if any appears twice.
func (w *world) commands(t testing.TB) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, topic := range []string{w.stockCmd, w.payCmd} {
		for _, r := range kafkatest.Read(t, w.brokers, topic, kafkatest.ReadCommitted) {
			n[commandKey(r)]++
		}
	}
	for k, c := range n {
		if c > 1 {
			t.Errorf("command %s sent %d times", k, c)
		}
	}
	return n
}

// events counts end events per saga and type.
func (w *world) events_(t testing.TB) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, r := range kafkatest.Read(t, w.brokers, w.events, kafkatest.ReadCommitted) {
		if typ := string(r.Header(saga.HeaderType)); typ != "OrderPlaced" {
			n[string(r.Header(saga.HeaderSagaID))+"/"+typ]++
		}
	}
	return n
}

func ids(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + "-" + strconv.Itoa(i)
	}
	return out
}

func TestOrchestratorHappyPathAndCompensation(t *testing.T) {
	w := newWorld(t, 2)
	o := w.runOrchestrator(t, true)

	ok, declined := ids("ok", 10), ids("declined", 5)
	w.start(t, ok, func(int) testData { return testData{} })
	w.start(t, declined, func(int) testData { return testData{Fail: "charge"} })
	// A duplicate start makes no second saga.
	w.start(t, ok[:1], func(int) testData { return testData{} })

	snaps := w.waitTerminal(t, append(append([]string{}, ok...), declined...), 60*time.Second)
	cmds := w.commands(t)
	events := w.events_(t)
	for _, id := range ok {
		if s := snaps[id].State; s != saga.Completed {
			t.Errorf("%s: state %s, want Completed; history %+v", id, s, snaps[id].History)
		}
		for _, c := range []string{"ReserveStock/action/1", "ChargePayment/action/1", "ConfirmReservation/action/1"} {
			if cmds[id+"/"+c] != 1 {
				t.Errorf("%s: command %s sent %d times, want 1", id, c, cmds[id+"/"+c])
			}
		}
		if events[id+"/OrderConfirmed"] != 1 {
			t.Errorf("%s: OrderConfirmed events = %d, want 1", id, events[id+"/OrderConfirmed"])
		}
	}
	for _, id := range declined {
		if s := snaps[id].State; s != saga.Cancelled {
			t.Errorf("%s: state %s, want Cancelled", id, s)
		}
		// The declined charge did not take effect, so only the reservation
		// is compensated.
		if cmds[id+"/ReleaseStock/compensation/1"] != 1 || cmds[id+"/RefundPayment/compensation/1"] != 0 {
			t.Errorf("%s: compensations %v", id, cmds)
		}
		if events[id+"/OrderCancelled"] != 1 {
			t.Errorf("%s: OrderCancelled events = %d, want 1", id, events[id+"/OrderCancelled"])
		}
	}
	// The duplicate start may be read after ok-0 ended (then ok-0 is
	// remembered by id only, and the orchestrator counts it) or before
	// (then the instance counts it too): wait for it.
	kafkatest.WaitFor(t, 30*time.Second, "the duplicate start of "+ok[0]+" to be counted as ignored", func() bool {
		return o.Stats().Ignored > 0 && w.snapshots(t)[ok[0]].State == saga.Completed
	})
}

// A pivot that takes no reply: the saga completes in the transaction that
// sends it, the participant answers nothing, and a participant that refuses
// it dead-letters it with the reason instead.
func TestOrchestratorNoReplyPivot(t *testing.T) {
	w := newWorld(t, 2)
	w.noReply = true
	reg, err := w.registry()
	if err != nil {
		t.Fatal(err)
	}
	w.reg = reg
	w.runOrchestrator(t, true)

	ok, refused := ids("ok", 6), ids("refused", 2)
	w.start(t, ok, func(int) testData { return testData{} })
	w.start(t, refused, func(int) testData { return testData{Fail: "confirm"} })
	all := append(append([]string{}, ok...), refused...)
	snaps := w.waitTerminal(t, all, 60*time.Second)
	cmds := w.commands(t)
	for _, id := range all {
		if s := snaps[id]; s.State != saga.Completed || !s.Steps[2].NoReply {
			t.Errorf("%s: state %s, confirm NoReply %v; want Completed, true", id, s.State, s.Steps[2].NoReply)
		}
		if cmds[id+"/ConfirmReservation/action/1"] != 1 {
			t.Errorf("%s: confirm sent %d times, want 1", id, cmds[id+"/ConfirmReservation/action/1"])
		}
	}
	for _, r := range kafkatest.Read(t, w.brokers, w.stockCmd, kafkatest.ReadCommitted) {
		if got := string(r.Header(saga.HeaderReply)); (string(r.Header(saga.HeaderType)) == "ConfirmReservation") != (got == saga.ReplyNone) {
			t.Errorf("%s %s: reply header %q", r.Header(saga.HeaderSagaID), r.Header(saga.HeaderType), got)
		}
	}
	var dead []kafkatx.Record
	kafkatest.WaitFor(t, 30*time.Second, "the two refused confirms on the dead-letter topic", func() bool {
		dead = kafkatest.Read(t, w.brokers, w.dlq, kafkatest.ReadCommitted)
		return len(dead) >= len(refused)
	})
	for _, d := range dead {
		id := string(d.Header(saga.HeaderSagaID))
		if !strings.HasPrefix(id, "refused-") || string(d.Header(saga.HeaderType)) != "ConfirmReservation" ||
			!strings.Contains(string(d.Header(kafkatx.HeaderDLQReason)), "waits for no reply: confirm refused by test") {
			t.Errorf("dead letter %s %s: %q", id, d.Header(saga.HeaderType), d.Header(kafkatx.HeaderDLQReason))
		}
	}
	if len(dead) != len(refused) {
		t.Errorf("%d dead letters, want %d", len(dead), len(refused))
	}
	// Every reply on the stock topic is to a reservation: the confirms,
	// refused or not, were answered by nobody.
	for _, r := range kafkatest.Read(t, w.brokers, w.stockRep, kafkatest.ReadCommitted) {
		if typ := string(r.Header(saga.HeaderType)); typ != "StockReserved" {
			t.Errorf("%s: reply %s on the stock replies", r.Header(saga.HeaderSagaID), typ)
		}
	}
}

func TestOrchestratorTimeoutCompensatesAndIgnoresLateReply(t *testing.T) {
	w := newWorld(t, 1)
	w.chargeTimeout = time.Second
	var err error
	if w.reg, err = w.registry(); err != nil {
		t.Fatal(err)
	}
	o := w.runOrchestrator(t, true)
	id := "late-1"
	w.start(t, []string{id}, func(int) testData { return testData{Silent: "charge"} })
	snaps := w.waitTerminal(t, []string{id}, 60*time.Second)
	in := snaps[id]
	if in.State != saga.Cancelled {
		t.Fatalf("state %s, want Cancelled; history %+v", in.State, in.History)
	}
	cmds := w.commands(t)
	// Two attempts of the charge (the retry budget), then both steps are
	// compensated: the timed-out charge may have landed late.
	for _, c := range []string{"ChargePayment/action/1", "ChargePayment/action/2",
		"RefundPayment/compensation/1", "ReleaseStock/compensation/1"} {
		if cmds[id+"/"+c] != 1 {
			t.Errorf("command %s sent %d times, want 1 (all: %v)", c, cmds[id+"/"+c], cmds)
		}
	}
	timedOut := false
	for _, h := range in.History {
		timedOut = timedOut || strings.Contains(h.Cause, "timed out")
	}
	if !timedOut {
		t.Errorf("history does not say the step timed out: %+v", in.History)
	}

	// The charge answers now, late: the reply is ignored and counted. The
	// saga ended, so it left memory and is remembered by id only: the count
	// is the orchestrator's, and no snapshot is written for it.
	var charge saga.Envelope
	for _, r := range kafkatest.Read(t, w.brokers, w.payCmd, kafkatest.ReadCommitted) {
		if string(r.Header(saga.HeaderType)) == "ChargePayment" {
			if charge, err = saga.Decode(r); err != nil {
				t.Fatal(err)
			}
		}
	}
	late, err := saga.ReplyTo(charge, "PaymentCharged", saga.Success, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ignored := o.Stats().Ignored
	kafkatest.Produce(t, w.brokers, []kafkatx.Message{late.Message(w.payRep)})
	kafkatest.WaitFor(t, 30*time.Second, "the late reply to be counted", func() bool {
		return o.Stats().Ignored > ignored
	})
	after := w.snapshots(t)[id]
	if after.State != saga.Cancelled || after.Version != in.Version {
		t.Errorf("late reply changed the saga: %s v%d -> %s v%d", in.State, in.Version, after.State, after.Version)
	}
}

func TestOrchestratorDeadLettersPoison(t *testing.T) {
	w := newWorld(t, 1)
	o := w.runOrchestrator(t, false)
	bad := []kafkatx.Message{
		kafkatx.NewMessage(w.events, []byte("x"), []byte("{")),                          // no headers
		saga.StartMessage(w.events, "OrderPlaced", "bad-json", json.RawMessage(`{`)),    // value not JSON
		saga.StartMessage(w.stockRep, "StockReserved", "nobody", json.RawMessage(`{}`)), // no phase
	}
	good := saga.StartMessage(w.events, "OrderPlaced", "good", json.RawMessage(`{"silent":"reserve"}`))
	kafkatest.Produce(t, w.brokers, append(bad, good))
	kafkatest.WaitFor(t, 30*time.Second, "poison dead-lettered and the good start applied", func() bool {
		_, ok := o.Instance("good")
		return ok && len(kafkatest.Read(t, w.brokers, w.dlq, kafkatest.ReadCommitted)) == len(bad)
	})
	for _, d := range kafkatest.Read(t, w.brokers, w.dlq, kafkatest.ReadCommitted) {
		if len(d.Header(kafkatx.HeaderDLQReason)) == 0 || len(d.Header(kafkatx.HeaderDLQTopic)) == 0 {
			t.Errorf("dead letter without reason or origin: %+v", d.Headers)
		}
	}
	if st := o.Stats(); st.Poison != int64(len(bad)) {
		t.Errorf("poison = %d, want %d", st.Poison, len(bad))
	}
}

func TestOperatorForceCompensate(t *testing.T) {
	w := newWorld(t, 1)
	o := w.runOrchestrator(t, true)
	id := "stuck-1"
	// The charge never answers and times out only after 3s: long enough
	// for the operator to step in first.
	w.start(t, []string{id}, func(int) testData { return testData{Silent: "charge"} })
	kafkatest.WaitFor(t, 30*time.Second, "the charge to be in flight", func() bool {
		in, ok := o.Instance(id)
		return ok && in.State == saga.Running && in.Step == 1
	})
	msg, err := saga.OperatorMessage(w.control, id, saga.OpForceCompensate, "customer called to cancel")
	if err != nil {
		t.Fatal(err)
	}
	kafkatest.Produce(t, w.brokers, []kafkatx.Message{msg})
	snaps := w.waitTerminal(t, []string{id}, 30*time.Second)
	if snaps[id].State != saga.Cancelled {
		t.Fatalf("state %s, want Cancelled", snaps[id].State)
	}
	found := false
	for _, h := range snaps[id].History {
		found = found || strings.Contains(h.Cause, "customer called to cancel")
	}
	if !found {
		t.Errorf("operator reason missing from history: %+v", snaps[id].History)
	}
	if _, err := saga.OperatorMessage(w.control, id, "explode", ""); err == nil {
		t.Error("unknown operator command accepted")
	}
}
