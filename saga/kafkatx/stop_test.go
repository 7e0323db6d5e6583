package kafkatx_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// stopBound is how long a SIGTERMed loop may take to exit: the loop's own
// StopTimeout plus process start-up and a margin for a loaded machine.
const stopBound = 20 * time.Second

// testStaticMemberStopsRightAfterRebalance is the regression test of the stop
// that hung: a static member (group.instance.id) SIGTERMed right after a
// rebalance (its predecessor with the same instance id was SIGKILLed, or a
// second member joined) never returned from Run; the last line it logged was
// "partitions revoked; committing the in-flight batch". It must exit 0 within
// stopBound, every time.
func testStaticMemberStopsRightAfterRebalance(t *testing.T, brokers string) {
	const parts, rounds = 4, 6
	in := kafkatest.Topic(t, brokers, "in", parts)
	out := kafkatest.Topic(t, brokers, "out", parts)
	msgs, _ := inputs(in, "s", 400)
	kafkatest.Produce(t, brokers, msgs)
	group := "static-stop-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	env := func(id string) map[string]string {
		return map[string]string{childEnv: id, childBrokers: brokers, childIn: in, childOut: out,
			childGroup: group, childStatic: "1", childPause: "50ms"}
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	assigned := func(p *kafkatest.Process) func() bool {
		return func() bool { return strings.Contains(p.Log(), "partitions assigned") }
	}
	stopInTime := func(what string, p *kafkatest.Process) {
		t.Helper()
		start := time.Now()
		p.Signal(t, syscall.SIGTERM)
		select {
		case <-p.Done():
		case <-time.After(stopBound):
			p.Signal(t, syscall.SIGQUIT) // its goroutines, for the failure message
			time.Sleep(2 * time.Second)
			t.Fatalf("%s: no exit within %s of SIGTERM; its output:\n%s", what, stopBound, p.Log())
		}
		code := p.Wait(t, time.Second)
		t.Logf("%s: exit %d %s after SIGTERM", what, code, time.Since(start).Round(time.Millisecond))
		if code != 0 {
			t.Fatalf("%s: exit %d; its output:\n%s", what, code, p.Log())
		}
		// In time is not enough: the close itself must finish, not be left
		// behind by the stop's deadline.
		if log := p.Log(); !strings.Contains(log, "loop stopped") || strings.Contains(log, "left behind") {
			t.Fatalf("%s: the stop did not finish the consumer's close; its output:\n%s", what, log)
		}
	}
	for i := range rounds {
		// A crashed static member, then its successor with the same
		// instance id, stopped as soon as it has its partitions.
		crashed := kafkatest.StartProcess(t, env(group+"-a"))
		kafkatest.WaitFor(t, 60*time.Second, "the first member to get its partitions", assigned(crashed))
		crashed.Kill()
		next := kafkatest.StartProcess(t, env(group+"-a"))
		kafkatest.WaitFor(t, 60*time.Second, "its successor to get its partitions", assigned(next))
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond)
		// In odd rounds a second static member joins first, so the stop
		// lands during or right after a cooperative rebalance.
		if i%2 == 1 {
			other := kafkatest.StartProcess(t, env(group+"-b"))
			kafkatest.WaitFor(t, 60*time.Second, "a second member to join", assigned(other))
			stopInTime("round "+strconv.Itoa(i)+" successor", next)
			stopInTime("round "+strconv.Itoa(i)+" second member", other)
			continue
		}
		stopInTime("round "+strconv.Itoa(i)+" successor", next)
	}
}

// testStopIsBoundedWhateverTheLoopDoes: a handler stuck inside a transaction
// (it ignores its context) cannot hold a stop: Run returns ErrStopTimeout
// within StopTimeout, the batch is abandoned, and a successor with the same
// transactional id copies every record exactly once.
func testStopIsBoundedWhateverTheLoopDoes(t *testing.T, brokers string) {
	in := kafkatest.Topic(t, brokers, "in", 2)
	out := kafkatest.Topic(t, brokers, "out", 2)
	msgs, want := inputs(in, "b", 50)
	kafkatest.Produce(t, brokers, msgs)
	group := "bounded-" + strconv.FormatInt(time.Now().UnixNano(), 36)

	entered := make(chan struct{})
	var once sync.Once
	release := make(chan struct{})
	defer close(release)
	stuck := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		for _, r := range recs {
			sink.Produce(ctx, kafkatx.NewMessage(out, r.Key, r.Value))
		}
		once.Do(func() { close(entered) })
		<-release // deaf to ctx, as a hung client call would be
		return nil
	}
	cfg := baseConfig(brokers, in, group)
	cfg.StopTimeout = 2 * time.Second
	// The abandoned loop goes on after the test (until the process ends),
	// so it must not log to t: its log goes to a buffer the test reads.
	logs := &kafkatest.Buffer{}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), zapcore.AddSync(logs), zap.DebugLevel))
	l, stop := runLoop(t, cfg, stuck, log)
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		t.Fatal("handler not called within 60s")
	}
	start := time.Now()
	err := stop()
	took := time.Since(start)
	if !errors.Is(err, kafkatx.ErrStopTimeout) {
		t.Fatalf("Run = %v, want ErrStopTimeout", err)
	}
	if took > cfg.StopTimeout+time.Second {
		t.Errorf("Run took %s after the stop, want about StopTimeout %s", took, cfg.StopTimeout)
	}
	if !strings.Contains(logs.String(), "stop timeout: abandoning the loop") {
		t.Errorf("the log does not say the loop was abandoned:\n%s", logs.String())
	}
	if l.Stats().Assigned != 0 {
		t.Errorf("Assigned = %d after Run, want 0", l.Stats().Assigned)
	}

	// The abandoned transaction never becomes visible; the successor, with
	// the same transactional id, fences it and redoes its records. (In a new
	// group: the abandoned member still sits in the old one, deaf, and would
	// hold a rebalance for max.poll.interval.ms. It committed nothing.)
	succ := cfg
	succ.Group = group + "-successor"
	_, stopSucc := runLoop(t, succ, copyHandler(out), zaptest.NewLogger(t).Named("successor"))
	kafkatest.WaitFor(t, 90*time.Second, "the successor to copy every record", func() bool {
		return len(kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted)) >= len(want)
	})
	if err := stopSucc(); err != nil {
		t.Fatalf("successor: %v", err)
	}
	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)
}

// A loop whose Kafka cannot be reached waits for it, however long, instead
// of failing after one transaction timeout (which made the services exit
// while a coordinator moved on a slow machine), and a stop ends the wait
// promptly, as a clean stop. No broker is needed: nothing answers on the
// address.
func TestLoopWaitsForKafkaAndStopsCleanly(t *testing.T) {
	l, err := kafkatx.New(kafkatx.Config{Brokers: "127.0.0.1:1", Group: "g", Topics: []string{"in"},
		TransactionalID: "waits", TransactionTimeout: time.Second, StopTimeout: 5 * time.Second},
		func(context.Context, []kafkatx.Record, *kafkatx.Sink) error { return nil }, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	select {
	case err := <-done:
		t.Fatalf("Run gave up on an unreachable Kafka within 4 transaction timeouts: %v", err)
	case <-time.After(4 * time.Second):
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a stop while waiting for Kafka returned %v, want nil", err)
		}
	case <-time.After(stopBound):
		t.Fatalf("Run did not return within %s of the stop", stopBound)
	}
}
