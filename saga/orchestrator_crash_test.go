package saga_test

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
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
	ChargeTimeout                                                            time.Duration
	Group, Instance                                                          string
}

func (w *world) spec(group, instance string) string {
	b, _ := json.Marshal(worldSpec{w.brokers, w.events, w.stockCmd, w.stockRep, w.payCmd, w.payRep,
		w.control, w.state, w.dlq, w.parts, w.chargeTimeout, group, instance})
	return string(b)
}

func runChildOrchestrator(spec string) int {
	log, _ := zap.NewDevelopment()
	var s worldSpec
	if err := json.Unmarshal([]byte(spec), &s); err != nil {
		log.Error("bad spec", zap.Error(err))
		return 1
	}
	w := &world{brokers: s.Brokers, events: s.Events, stockCmd: s.StockCmd, stockRep: s.StockRep, payCmd: s.PayCmd,
		payRep: s.PayRep, control: s.Control, state: s.State, dlq: s.DLQ, parts: s.Parts, chargeTimeout: s.ChargeTimeout}
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

type proc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.Write(b)
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

func startOrchestratorProcess(t *testing.T, spec string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = append(os.Environ(), childWorld+"="+spec)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { _ = p.cmd.Process.Kill(); <-p.done })
	return p
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
	w.runParticipants(t, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	const n, kills = 400, 10
	all := ids("crash", n)
	spec := w.spec("orch", "o0")
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	per := n / kills
	for k := range kills {
		w.start(t, all[k*per:(k+1)*per], func(i int) testData { return mix(k*per + i) })
		p := startOrchestratorProcess(t, spec)
		kafkatest.WaitFor(t, 60*time.Second, "the orchestrator to restore its partitions", func() bool {
			return strings.Contains(p.log(), "restored sagas")
		})
		time.Sleep(time.Duration(200+rng.IntN(1200)) * time.Millisecond)
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	final := startOrchestratorProcess(t, spec)
	snaps := w.waitTerminal(t, all, 180*time.Second)
	_ = final.cmd.Process.Signal(syscall.SIGTERM)
	<-final.done
	checkOutcome(t, w, all, mix, snaps)
	committed := len(kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadCommitted))
	aborted := len(kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadUncommitted)) - committed
	t.Logf("%d kills, %d sagas; %d committed snapshots, %d snapshots in transactions the kills left open (aborted on restart)",
		kills, n, committed, aborted)
	if t.Failed() {
		t.Logf("last orchestrator's log:\n%s", final.log())
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
