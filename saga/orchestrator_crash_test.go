package saga_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// childWorld is set in a child process: it runs one orchestrator on the world
// its parent describes, until SIGTERM.
const childWorld = "SAGA_TEST_CHILD_WORLD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childWorld); spec != "" {
		os.Exit(runChildOrchestrator(spec))
	}
	os.Exit(m.Run())
}

// worldSpec is what a child needs to rebuild the parent's world.
type worldSpec struct {
	Brokers, Events, StockCmd, StockRep, PayCmd, PayRep, Control, State, DLQ string
	Parts                                                                    int
	ChargeTimeout, StockTimeout                                              time.Duration
	Parallel                                                                 bool
	Group, Instance                                                          string
}

func (w *world) spec(group, instance string) string {
	b, _ := json.Marshal(worldSpec{w.brokers, w.events, w.stockCmd, w.stockRep, w.payCmd, w.payRep,
		w.control, w.state, w.dlq, w.parts, w.chargeTimeout, w.stockTimeout, w.parallel, group, instance})
	return string(b)
}

func runChildOrchestrator(spec string) int {
	log, _ := zap.NewDevelopment()
	if err := failpoint.EnvErr(); err != nil {
		log.Error("failpoints", zap.Error(err))
		return 1
	}
	var s worldSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		log.Error("bad spec", zap.Error(err))
		return 1
	}
	w := &world{brokers: s.Brokers, events: s.Events, stockCmd: s.StockCmd, stockRep: s.StockRep, payCmd: s.PayCmd,
		payRep: s.PayRep, control: s.Control, state: s.State, dlq: s.DLQ, parts: s.Parts, chargeTimeout: s.ChargeTimeout,
		stockTimeout: s.StockTimeout, parallel: s.Parallel}
	reg, err := w.registry()
	if err != nil {
		log.Error("registry", zap.Error(err))
		return 1
	}
	w.reg = reg
	cfg := w.orchestratorConfig(s.Group, s.Instance)
	cfg.StaticMembership = true
	o, err := saga.NewOrchestrator(cfg, log)
	if err != nil {
		log.Error("orchestrator", zap.Error(err))
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	if err := o.Run(ctx); err != nil {
		log.Error("orchestrator stopped", zap.Error(err))
		return 1
	}
	return 0
}

// expected is the end state each kind of test saga must reach.
func expected(d testData) saga.State {
	if d.Fail != "" || d.Silent != "" {
		return saga.Cancelled
	}
	return saga.Completed
}

// mix returns the behaviour of saga i: mostly happy, some declined, a few
// whose charge never answers (so timers must survive the restarts).
func mix(i int) testData {
	switch {
	case i%10 == 3:
		return testData{Fail: "charge"}
	case i%10 == 7:
		return testData{Fail: "reserve"}
	case i%25 == 11:
		return testData{Silent: "charge"}
	}
	return testData{}
}

// checkOutcome asserts the invariants after a chaotic run: every saga ended
// where its data says, followed a legal path, got one end event, and no
// command was sent twice.
func checkOutcome(t *testing.T, w *world, all []string, data func(int) testData, snaps map[string]*saga.Instance) {
	t.Helper()
	w.commands(t) // fails on any command seen twice
	events := w.events_(t)
	for i, id := range all {
		want := expected(data(i))
		if got := snaps[id].State; got != want {
			t.Errorf("%s (%+v): state %s, want %s; history %+v", id, data(i), got, want, snaps[id].History)
		}
		n := 0
		for _, typ := range []string{"OrderConfirmed", "OrderCancelled", "OrderFailed"} {
			n += events[id+"/"+typ]
		}
		if n != 1 {
			t.Errorf("%s: %d end events, want 1", id, n)
		}
	}
}

// TestOrchestratorCrashes SIGKILLs the orchestrator many times while sagas
// run; after the last restart every saga ends as its data says and a
// read_committed reader of the command topics sees one command per step
// attempt.
func TestOrchestratorCrashes(t *testing.T) {
	w := newWorld(t, 4)
	// A step's timer runs on through the kills, and each restart (process
	// start, group join, restore) takes seconds on a loaded machine: with
	// the default 3 s, a charge that spanned two restarts timed out twice
	// and 14 sagas meant to complete were cancelled (a CI run). 8 s keeps
	// those completing; the silent ones still time out, twice 8 s, well
	// within the wait below.
	w.chargeTimeout = 8 * time.Second
	// The same for the steps on stock's topic: beside a CPU hog the
	// stock replies of one CI run came 12 s late, and sagas meant to
	// complete failed their confirm twice at 5 s. Nothing here is silent
	// on those steps, so a longer wait costs the test no time.
	w.stockTimeout = 15 * time.Second
	// Reserve and charge in parallel, as the order saga runs them by
	// default: a kill can then land with two actions of one saga in flight,
	// and a restored saga must wait for both (TestOrchestratorRebalance
	// keeps them in sequence).
	w.parallel = true
	w.runParticipants(t, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	const n, kills = 1200, 10
	all := ids("crash", n)
	spec := w.spec("orch", "o0")

	// Starts keep arriving through every kill and restart (about 100
	// sagas/s), so the orchestrator is busy, and mostly mid-transaction,
	// when it dies.
	prod, err := kafkatx.NewProducer(w.brokers, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	feedErr := make(chan error, 1)
	go func() {
		defer close(feedErr)
		for i, id := range all {
			body, _ := json.Marshal(mix(i))
			if err := prod.Send(context.Background(), saga.StartMessage(w.events, "OrderPlaced", id, body)); err != nil {
				feedErr <- err
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for range kills {
		// A pause between produce and commit: the records reach the broker,
		// so a kill there leaves a transaction that the restart must abort.
		p := kafkatest.StartProcess(t, map[string]string{childWorld: spec,
			failpoint.Env: "orchestrator/before-commit=sleep(50ms)"})
		kafkatest.WaitFor(t, 60*time.Second, "the orchestrator to restore its partitions", func() bool {
			return strings.Contains(p.Log(), "restored sagas")
		})
		time.Sleep(time.Duration(200+rng.IntN(1000)) * time.Millisecond)
		p.Kill()
	}
	final := kafkatest.StartProcess(t, map[string]string{childWorld: spec})
	if err := <-feedErr; err != nil {
		t.Fatalf("feeding starts: %v", err)
	}
	snaps := w.waitTerminal(t, all, 180*time.Second)
	if code := final.Stop(t); code != 0 {
		t.Errorf("last orchestrator exit %d", code)
	}
	if s := snaps[all[0]]; s == nil || !s.Steps[1].Parallel {
		t.Errorf("the sagas did not run reserve and charge in parallel: %+v", s)
	}
	checkOutcome(t, w, all, mix, snaps)
	committed := len(kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadCommitted))
	aborted := len(kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadUncommitted)) - committed
	t.Logf("%d kills, %d sagas; %d committed snapshots, %d snapshots in transactions the kills left open (aborted on restart)",
		kills, n, committed, aborted)
	if aborted == 0 {
		t.Errorf("no kill landed inside a transaction: the test did not exercise the crash window")
	}
	if t.Failed() {
		t.Logf("last orchestrator's log:\n%s", final.Log())
	}
}

// TestOrchestratorRebalance runs two orchestrators: B joins mid-load, then
// A leaves mid-load; the result is the same as with one.
func TestOrchestratorRebalance(t *testing.T) {
	w := newWorld(t, 4)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	w.runParticipants(t, log)
	const n = 300
	all := ids("rebal", n)
	a, err := saga.NewOrchestrator(w.orchestratorConfig("orch", "a"), log.Named("A"))
	if err != nil {
		t.Fatal(err)
	}
	stopA := runBg(t, a.Run)
	w.start(t, all[:100], mix)
	kafkatest.WaitFor(t, 60*time.Second, "A to end some sagas", func() bool { return a.Stats().Ended >= 20 })

	b, err := saga.NewOrchestrator(w.orchestratorConfig("orch", "b"), log.Named("B"))
	if err != nil {
		t.Fatal(err)
	}
	runBg(t, b.Run)
	w.start(t, all[100:200], func(i int) testData { return mix(100 + i) })
	kafkatest.WaitFor(t, 60*time.Second, "B to take partitions", func() bool { return b.Stats().Restored > 0 || b.Stats().Ended > 0 })
	stopA()
	w.start(t, all[200:], func(i int) testData { return mix(200 + i) })
	snaps := w.waitTerminal(t, all, 120*time.Second)
	checkOutcome(t, w, all, mix, snaps)
	t.Logf("A ended %d sagas, B %d (restored %d snapshots)", a.Stats().Ended, b.Stats().Ended, b.Stats().Restored)
}
