package chaos

import (
	"bufio"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/stock"
)

func plan(seed uint64) Plan {
	return Plan{Seed: seed, Duration: 5 * time.Minute, Every: 5 * time.Second, Kinds: AllKinds, KafkaNodes: 3,
		SessionTimeout: 10 * time.Second, Processes: map[string][]string{"orders": {"orders-1"},
			"orchestrator": {"orchestrator-1", "orchestrator-2"}, "stock": {"stock-1", "stock-2"}, "payment": {"payment-1", "payment-2"}}}
}

func TestScheduleIsAFunctionOfTheSeed(t *testing.T) {
	a, b, c := Schedule(plan(42)), Schedule(plan(42)), Schedule(plan(43))
	if !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed drew two schedules")
	}
	if reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 drew the same schedule")
	}
	seen := map[Kind]bool{}
	p := plan(42)
	for i, f := range a {
		seen[f.Kind] = true
		if f.At < p.Duration/10 || f.At > p.Duration-p.Duration/10 {
			t.Errorf("%s: outside the faulty middle of the run", f)
		}
		if i > 0 && f.At < a[i-1].At {
			t.Errorf("%s before %s: the schedule is not in time order", f, a[i-1])
		}
		switch f.Kind {
		case PauseService:
			if f.Hold <= p.SessionTimeout {
				t.Errorf("%s: a pause must outlast the session timeout %s, or no zombie is made", f, p.SessionTimeout)
			}
			if strings.HasPrefix(f.Target, "orders") {
				t.Errorf("%s: the orders API is in no consumer group", f)
			}
		case Failpoint:
			svc := f.Target[:strings.IndexByte(f.Target, '-')]
			if !slices.Contains(failpoints[svc], f.Arg) {
				t.Errorf("%s: failpoint %s is not one of %s's", f, f.Arg, svc)
			}
		case KillBroker, PauseBroker:
			if f.Target != "leader" && f.Target != "node 1" && f.Target != "node 2" && f.Target != "node 3" {
				t.Errorf("%s: no such node", f)
			}
		}
	}
	for _, k := range AllKinds {
		if !seen[k] {
			t.Errorf("a 5-minute schedule has no %s fault: %v", k, a)
		}
	}
}

func TestParseKindsRefusesUnknownNames(t *testing.T) {
	if ks, err := ParseKinds("kill, redis-cut,kill"); err != nil || !reflect.DeepEqual(ks, []Kind{KillService, RedisCut}) {
		t.Errorf("ParseKinds: %v, %v", ks, err)
	}
	if _, err := ParseKinds("kill,meteor"); err == nil || !strings.Contains(err.Error(), "meteor") {
		t.Errorf("an unknown kind: %v, want an error naming it", err)
	}
}

// echoServer answers each line with itself.
func echoServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line through c and times its echo.
func roundTrip(c net.Conn, r *bufio.Reader) (time.Duration, error) {
	start := time.Now()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return 0, err
	}
	if _, err := r.ReadString('\n'); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func TestProxyDelaysStallsAndCuts(t *testing.T) {
	p, err := NewProxy("127.0.0.1:0", echoServer(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if _, err := roundTrip(c, r); err != nil {
		t.Fatalf("through a healthy proxy: %v", err)
	}

	p.Latency(100 * time.Millisecond)
	if d, err := roundTrip(c, r); err != nil || d < 200*time.Millisecond {
		t.Errorf("with 100ms latency each way: %s, %v; want at least 200ms", d, err)
	}
	p.Heal()

	p.Stall()
	healed := make(chan time.Time, 1)
	go func() { time.Sleep(300 * time.Millisecond); healed <- time.Now(); p.Heal() }()
	if _, err := roundTrip(c, r); err != nil {
		t.Errorf("a stall must hold the bytes, not drop them: %v", err)
	}
	if at := <-healed; time.Since(at) > time.Second {
		t.Error("the echo came long after the heal")
	}

	p.Cut()
	if _, err := roundTrip(c, r); err == nil {
		t.Error("a cut connection still answered")
	}
	if c2, err := net.Dial("tcp", p.Addr()); err == nil {
		if _, err := roundTrip(c2, bufio.NewReader(c2)); err == nil {
			t.Error("a new connection answered during the cut")
		}
		c2.Close()
	}
	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if _, err := roundTrip(c3, bufio.NewReader(c3)); err != nil {
		t.Errorf("after the heal: %v", err)
	}
}

// sagaFacts runs an order saga through the pure state machine and returns
// the facts of a run in which it completed and nothing went wrong: its
// snapshots, its commands, the stock and the money it moved.
func sagaFacts(t *testing.T) facts {
	t.Helper()
	def := orders.Definition(orders.DefaultSagaConfig())
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	data, _ := json.Marshal(orders.OrderPlaced{OrderID: "o1", CustomerID: "c1", TotalCents: 500,
		Lines: []orders.Line{{ProductID: "p1", Quantity: 2, UnitPriceCents: 250}}})
	f := facts{Snapshots: map[string][]*saga.Instance{}, DeadLettered: map[string]bool{}, HealedAt: at, DrainBound: time.Minute}
	inst, out, err := saga.Transition(def, nil, saga.Input{Kind: saga.KindStart, At: at, MessageID: "m0",
		Start: saga.Start{SagaID: "o1", Data: data}})
	// The commands not yet answered, in the order sent (reserve and charge
	// go out together), each answered with success.
	var queue []saga.Outgoing
	for i := 1; err == nil; i++ {
		f.Snapshots["o1"] = append(f.Snapshots["o1"], inst)
		for _, o := range out {
			if o.IsCommand() {
				if !o.NoReply { // the pivot: done as it is sent
					queue = append(queue, o)
				}
				f.Commands = append(f.Commands, command{Saga: "o1", Step: o.Step, Phase: o.Phase, Attempt: o.Attempt})
			}
		}
		if len(queue) == 0 {
			break
		}
		cmd := queue[0]
		queue = queue[1:]
		inst, out, err = saga.Transition(def, inst, saga.Input{Kind: saga.KindReply, At: at.Add(time.Duration(i) * time.Millisecond),
			MessageID: "m" + string(rune('0'+i)), Reply: saga.Reply{Step: cmd.Step, Attempt: cmd.Attempt, Phase: cmd.Phase, Outcome: saga.Success}})
	}
	if err != nil {
		t.Fatal(err)
	}
	if inst.State != saga.Completed {
		t.Fatalf("the saga ended %s", inst.State)
	}
	f.Orders = []order{{Key: "k1", ID: "o1", Outcome: "completed", Ended: at.Add(time.Second)}}
	f.Products = []stock.Product{{ID: "p1", Available: 8, Sold: 2, Stocked: 10}}
	f.Customers = []payment.Customer{{ID: "c1", BalanceCents: 500, CapturedCents: 500, DepositedCents: 1000}}
	return f
}

func TestValidateFindsEachViolation(t *testing.T) {
	if vs := validate(sagaFacts(t)); len(vs) != 0 {
		t.Fatalf("a clean run: %v", vs)
	}
	// Exits are a run's business when it kills or pauses services.
	killed := sagaFacts(t)
	killed.Exits, killed.ExitsAllowed = map[string]int{"stock-1: signal: killed": 3}, true
	if vs := validate(killed); len(vs) != 0 {
		t.Fatalf("a run whose faults kill services: %v", vs)
	}
	for _, c := range []struct {
		want    string
		breakIt func(f *facts)
	}{
		{"order-not-ended", func(f *facts) { f.Orders[0].Outcome = "" }},
		{"order-ended-late", func(f *facts) { f.Orders[0].Ended = f.HealedAt.Add(2 * time.Minute) }},
		{"saga-failed", func(f *facts) { f.Orders[0].Outcome = "failed" }},
		{"order-without-saga", func(f *facts) { f.Orders = append(f.Orders, order{Key: "k2", ID: "o2", Outcome: "completed"}) }},
		{"saga-not-ended", func(f *facts) { s := f.Snapshots["o1"]; f.Snapshots["o1"] = s[:len(s)-1] }},
		{"state-applied-twice", func(f *facts) { s := f.Snapshots["o1"]; f.Snapshots["o1"] = append(s[:2:2], s[1:]...) }},
		{"state-went-back", func(f *facts) { s := f.Snapshots["o1"]; f.Snapshots["o1"] = append(s[:3:3], s[1:]...) }},
		{"duplicate-command", func(f *facts) { f.Commands = append(f.Commands, f.Commands[1]) }},
		{"lost-command", func(f *facts) { f.Commands = f.Commands[1:] }},
		{"unsent-command", func(f *facts) {
			c := f.Commands[0]
			c.Attempt = 2
			f.Commands = append(f.Commands, c)
		}},
		{"confirm-not-applied", func(f *facts) { f.Uncommitted = map[string]string{"o1": "reserved"} }},
		{"stock-not-conserved", func(f *facts) { f.Products[0].Available = 9 }},
		{"stock-left-reserved", func(f *facts) { f.Products[0].Available, f.Products[0].Reserved = 7, 1 }},
		{"stock-sold-mismatch", func(f *facts) { f.Products[0].Available, f.Products[0].Sold = 6, 4 }},
		{"money-not-conserved", func(f *facts) { f.Customers[0].BalanceCents = -1 }},
		{"captured-mismatch", func(f *facts) { f.Customers[0].BalanceCents, f.Customers[0].CapturedCents = 0, 1000 }},
		{"poison-not-dead-lettered", func(f *facts) { f.Poisoned = []string{"poison-1"} }},
		{"process-exited", func(f *facts) { f.Exits = map[string]int{"stock-1: exit 1": 1} }},
	} {
		t.Run(c.want, func(t *testing.T) {
			f := sagaFacts(t)
			c.breakIt(&f)
			vs := validate(f)
			found := false
			for _, v := range vs {
				found = found || v.Kind == c.want
			}
			if !found {
				t.Errorf("validate found %v, want a %s", vs, c.want)
			}
		})
	}
}

// A process that exits by itself is reported with the last line of its log,
// which is where a service says why it gave up.
func TestProcessExitedSaysWhy(t *testing.T) {
	log := filepath.Join(t.TempDir(), "stock-1.log")
	body := strings.Repeat("a line of noise\n", 500) + "sagaflow stock: loop stopped: fenced\n\n"
	if err := os.WriteFile(log, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	f := sagaFacts(t)
	f.Exits = map[string]int{"stock-1: exit 1": 1}
	f.LastWords = map[string]string{"stock-1": lastLine(log)}
	for _, v := range validate(f) {
		if v.Kind == "process-exited" && strings.Contains(v.Detail, `"sagaflow stock: loop stopped: fenced"`) {
			return
		}
	}
	t.Errorf("no process-exited violation with the log's last line in %v", validate(f))
}

// A saga the drain left running may hold a reservation and a charge: the
// sums allow its amounts on top of the completed ones, and only its being
// unfinished is reported.
func TestValidateAllowsWhatARunningSagaHolds(t *testing.T) {
	f := sagaFacts(t)
	s := f.Snapshots["o1"]
	f.Snapshots["o1"] = s[:len(s)-1] // charged, the reservation in flight
	f.Orders[0].Outcome = ""
	f.Products[0].Sold, f.Products[0].Reserved = 0, 2
	for _, v := range validate(f) {
		if strings.HasPrefix(v.Kind, "stock-") || strings.HasPrefix(v.Kind, "captured-") || strings.HasPrefix(v.Kind, "money-") {
			t.Errorf("%s: %s", v.Kind, v.Detail)
		}
	}
}

func TestReportSaysTheVerdictAndDrawsTheFaults(t *testing.T) {
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	rep := &Report{Seed: 9, Namespace: "chaos-x", Started: start, Duration: "1m0s", Rate: 10,
		Timeline: make([]Second, 60), Outcomes: map[string]int{"completed": 5},
		Injected:   []Injected{{Fault: Fault{Kind: KillBroker, Target: "node 1"}, Started: start.Add(10 * time.Second), Healed: start.Add(15 * time.Second)}},
		FaultKinds: map[Kind]int{KillBroker: 1}, Posts: 600, Faulty: Phase{Refused: 12}}
	for i := range rep.Timeline {
		rep.Timeline[i] = Second{At: i, Accepted: 10, Ended: 9}
	}
	var text, page strings.Builder
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "PASS: 0 violations") || !strings.Contains(text.String(), "-seed 9") ||
		!strings.Contains(text.String(), "2.00% of 600 POSTs: 2.00% while a fault was in force, 0.00% in calm seconds") {
		t.Errorf("a clean report:\n%s", text.String())
	}
	if err := rep.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	h := page.String()
	for _, want := range []string{"<svg", "broker-kill", "node 1", "passed", "30s"} {
		if !strings.Contains(h, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if strings.Contains(h, "src=") || strings.Contains(h, "<link") {
		t.Error("the page loads something from elsewhere; it must be self-contained")
	}
	rep.Violations = []Violation{{Kind: "captured-mismatch", Detail: "c1: captured 2, the completed sagas total 1"}}
	text.Reset()
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "FAIL: 1 violations") || !strings.Contains(text.String(), "captured-mismatch") {
		t.Errorf("a failed report:\n%s", text.String())
	}
}

// A refused POST is counted by its problem type as well as its status, so
// the report tells load shed on purpose from a dependency that was down.
func TestProblemKindNamesTheRefusal(t *testing.T) {
	for body, want := range map[string]string{
		`{"type":"urn:sagaflow:problem:backlogged","status":503}`: " (backlogged)",
		`{"type":"urn:sagaflow:problem:unavailable"}`:             " (unavailable)",
		`upstream connect error`:                                  "",
		`{"status":503}`:                                          "",
	} {
		if got := problemKind([]byte(body)); got != want {
			t.Errorf("problemKind(%s) = %q, want %q", body, got, want)
		}
	}
}

func TestLoadEndsOnceEnoughOrdersWereAccepted(t *testing.T) {
	r := &run{cfg: Config{Orders: 3}, traffic: newTraffic("http://127.0.0.1:1", 1, "t")}
	r.traffic.taken.Store(2)
	if !r.loadFor(t.Context(), 1500*time.Millisecond) {
		t.Fatal("with 2 of 3 orders accepted the load ended before its duration")
	}
	r.traffic.taken.Store(3)
	start := time.Now()
	if r.loadFor(t.Context(), time.Hour) {
		t.Fatal("with 3 of 3 orders accepted the load went on")
	}
	if waited := time.Since(start); waited > 10*time.Second {
		t.Fatalf("the load ended %s after the third order; it looks once a second", waited)
	}
	r.cfg.Orders = 0 // no bound: only the duration ends it
	if !r.loadFor(t.Context(), 1500*time.Millisecond) {
		t.Fatal("without -orders the load ended before its duration")
	}
}

func TestKafkaProxiesOnlyForRunsThatCutKafka(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want bool
	}{
		{Config{Kinds: AllKinds}, true},
		{Config{Kinds: []Kind{KillBroker, KillService}}, false},
		{Config{Kinds: AllKinds, Faults: []Fault{{Kind: KillBroker}}}, false}, // the schedule given wins
		{Config{Faults: []Fault{{Kind: KillBroker}, {Kind: KafkaCut}}}, true},
	} {
		if got := c.cfg.injectsInto(KafkaLatency, KafkaStall, KafkaCut); got != c.want {
			t.Errorf("kinds %v, faults %v: injectsInto = %v, want %v", c.cfg.Kinds, c.cfg.Faults, got, c.want)
		}
	}
}
