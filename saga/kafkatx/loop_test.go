package kafkatx_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

func TestMain(m *testing.M) {
	// The crash and zombie tests run the loop in a child process: this same
	// test binary, told by the environment to be a loop instead.
	if os.Getenv(childEnv) != "" {
		os.Exit(runChild())
	}
	os.Exit(m.Run())
}

// copyHandler copies every record to out with its value unchanged, so a
// reader of out can check each input value arrives exactly once.
func copyHandler(out string) kafkatx.Handler {
	return func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		for _, r := range recs {
			sink.Produce(ctx, kafkatx.NewMessage(out, r.Key, r.Value))
		}
		return nil
	}
}

// inputs returns n messages for topic whose values are "<prefix>-<i>".
func inputs(topic, prefix string, n int) ([]kafkatx.Message, []string) {
	msgs := make([]kafkatx.Message, n)
	vals := make([]string, n)
	for i := range n {
		vals[i] = prefix + "-" + strconv.Itoa(i)
		msgs[i] = kafkatx.NewMessage(topic, []byte("saga-"+strconv.Itoa(i%97)), []byte(vals[i]))
	}
	return msgs, vals
}

// runLoop runs a loop in the background and returns a stop function that
// cancels it and returns Run's error.
func runLoop(t *testing.T, cfg kafkatx.Config, h kafkatx.Handler, log *zap.Logger) (*kafkatx.Loop, func() error) {
	t.Helper()
	l, err := kafkatx.New(cfg, h, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(60 * time.Second):
				runErr = errors.New("loop did not stop within 60s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return l, stop
}

func baseConfig(brokers, in, group string) kafkatx.Config {
	return kafkatx.Config{
		Brokers:         brokers,
		Group:           group,
		Topics:          []string{in},
		TransactionalID: group + "-0",
		MaxBatch:        50,
		MaxInterval:     50 * time.Millisecond,
		// Short, so a test that leaves a transaction open does not hold
		// readers back for long.
		TransactionTimeout: 10 * time.Second,
		SessionTimeout:     6 * time.Second,
	}
}

func testCommitPath(t *testing.T, brokers string) {
	const parts, n = 3, 500
	in := kafkatest.Topic(t, brokers, "in", parts)
	out := kafkatest.Topic(t, brokers, "out", parts)
	msgs, want := inputs(in, "c", n)
	kafkatest.Produce(t, brokers, msgs)

	group := "commit-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	cfg := baseConfig(brokers, in, group)
	cfg.ProducerConfig = map[string]any{"statistics.interval.ms": 100}
	l, stop := runLoop(t, cfg, copyHandler(out), zaptest.NewLogger(t))
	kafkatest.WaitFor(t, 60*time.Second, "all records committed", func() bool { return l.Stats().Records >= n })
	// The producer's request counts, from librdkafka's statistics: every
	// transaction produced, sent its offsets and ended.
	kafkatest.WaitFor(t, 10*time.Second, "request counts for the committed transactions", func() bool {
		s := l.Stats()
		r := s.ProducerRequests
		return r["EndTxn"] >= s.Committed && r["AddOffsetsToTxn"] >= s.Committed && r["TxnOffsetCommit"] >= s.Committed && r["Produce"] >= s.Committed
	})
	if got := l.Stats().Assigned; got != parts {
		t.Errorf("Assigned = %d while running alone, want all %d partitions", got, parts)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := l.Stats().Assigned; got != 0 {
		t.Errorf("Assigned = %d after Run, want 0", got)
	}

	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)
	committed := kafkatest.CommittedOffsets(t, brokers, group, in, parts)
	ends := kafkatest.HighWatermarks(t, brokers, in, parts)
	for p := range parts {
		if committed[p] != ends[p] {
			t.Errorf("partition %d: committed offset %d, want the end of the input %d", p, committed[p], ends[p])
		}
	}
	st := l.Stats()
	if st.Records != n || st.Produced != n || st.Aborted != 0 {
		t.Errorf("stats = %+v, want %d records and produced, no aborts", st, n)
	}
}

// testSlowTransactionIsLogged: a transaction whose handler takes longer
// than SlowTxn is logged at warn, with the handler's time in its phases.
func testSlowTransactionIsLogged(t *testing.T, brokers string) {
	const n, nap = 20, 300 * time.Millisecond
	in := kafkatest.Topic(t, brokers, "in", 1)
	out := kafkatest.Topic(t, brokers, "out", 1)
	msgs, want := inputs(in, "s", n)
	kafkatest.Produce(t, brokers, msgs)
	var first atomic.Bool
	slowFirst := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		if first.CompareAndSwap(false, true) {
			time.Sleep(nap)
		}
		return copyHandler(out)(ctx, recs, sink)
	}
	core, logs := observer.New(zapcore.WarnLevel)
	cfg := baseConfig(brokers, in, "slow-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	cfg.SlowTxn = 100 * time.Millisecond
	l, stop := runLoop(t, cfg, slowFirst, zap.New(zapcore.NewTee(core, zaptest.NewLogger(t).Core())))
	kafkatest.WaitFor(t, 60*time.Second, "all records committed", func() bool { return l.Stats().Records >= n })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)

	// The loop's first transaction had the slow handler: nothing was
	// logged before it, so its line is the first.
	slow := logs.FilterMessage("slow transaction").All()
	if len(slow) == 0 {
		t.Fatalf("no slow transaction logged; warnings: %v", logs.All())
	}
	f := slow[0].ContextMap()
	handler, _ := f["handler_ms"].(float64)
	took, _ := f["took_ms"].(float64)
	records, _ := f["records"].(int64)
	if handler < ms(nap) || took < handler || records < 1 || f["produced"] != records {
		t.Errorf("first slow transaction = %v; want handler_ms at least %v, took_ms at least that, as many produced as records",
			f, ms(nap))
	}
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func testAbortPathHandlesBatchAgain(t *testing.T, brokers string) {
	const n = 200
	in := kafkatest.Topic(t, brokers, "in", 2)
	out := kafkatest.Topic(t, brokers, "out", 2)
	msgs, want := inputs(in, "a", n)
	kafkatest.Produce(t, brokers, msgs)

	// Every batch fails once after producing its output, so each output
	// record is written twice: once in an aborted transaction, once in a
	// committed one.
	var calls, failures atomic.Int64
	seen := sync.Map{}
	failOnce := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		calls.Add(1)
		if err := copyHandler(out)(ctx, recs, sink); err != nil {
			return err
		}
		key := fmt.Sprintf("%d@%d", recs[0].Partition, recs[0].Offset)
		if _, again := seen.LoadOrStore(key, true); !again {
			failures.Add(1)
			// Long enough past linger.ms that the output reaches the
			// broker's log before the abort; otherwise the abort merely
			// purges it from the local queue and proves less.
			time.Sleep(100 * time.Millisecond)
			return errors.New("injected handler failure")
		}
		return nil
	}
	cfg := baseConfig(brokers, in, "abort-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	cfg.RetryBackoff = 10 * time.Millisecond
	l, stop := runLoop(t, cfg, failOnce, zaptest.NewLogger(t))
	kafkatest.WaitFor(t, 60*time.Second, "all records committed", func() bool { return l.Stats().Records >= n })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}

	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)
	uncommitted := kafkatest.Read(t, brokers, out, kafkatest.ReadUncommitted)
	if len(uncommitted) <= n {
		t.Errorf("read_uncommitted sees %d records; want more than %d (the aborted attempts' output)", len(uncommitted), n)
	}
	st := l.Stats()
	if st.Aborted != failures.Load() || st.Aborted == 0 {
		t.Errorf("aborted %d transactions, handler failed %d times", st.Aborted, failures.Load())
	}
	if st.Rewinds < st.Aborted {
		t.Errorf("rewinds %d < aborts %d: an aborted batch was not sought back", st.Rewinds, st.Aborted)
	}
}

func testPoisonRecordIsDeadLetteredAndPartitionMoves(t *testing.T, brokers string) {
	in := kafkatest.Topic(t, brokers, "in", 1)
	out := kafkatest.Topic(t, brokers, "out", 1)
	dlq := kafkatest.Topic(t, brokers, "dlq", 1)
	msgs, want := inputs(in, "p", 30)
	bad := kafkatx.NewMessage(in, []byte("k"), []byte("not json"), kafkatx.Header{Key: "type", Value: []byte("X")})
	msgs = append(msgs[:10:10], append([]kafkatx.Message{bad}, msgs[10:]...)...)
	kafkatest.Produce(t, brokers, msgs)

	h := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		for _, r := range recs {
			if string(r.Value) == "not json" {
				return kafkatx.Poison(r, errors.New("value is not JSON"))
			}
			sink.Produce(ctx, kafkatx.NewMessage(out, r.Key, r.Value))
		}
		return nil
	}
	cfg := baseConfig(brokers, in, "poison-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	cfg.DeadLetterTopic = dlq
	l, stop := runLoop(t, cfg, h, zaptest.NewLogger(t))
	kafkatest.WaitFor(t, 60*time.Second, "all records committed", func() bool { return l.Stats().Records >= 31 })
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)
	dead := kafkatest.Read(t, brokers, dlq, kafkatest.ReadCommitted)
	if len(dead) != 1 {
		t.Fatalf("dead letters = %d, want 1", len(dead))
	}
	d := dead[0]
	checks := map[string]string{
		kafkatx.HeaderDLQReason:    "value is not JSON",
		kafkatx.HeaderDLQTopic:     in,
		kafkatx.HeaderDLQPartition: "0",
		kafkatx.HeaderDLQOffset:    "10",
		"type":                     "X",
	}
	for k, v := range checks {
		if got := string(d.Header(k)); got != v {
			t.Errorf("dead letter header %s = %q, want %q", k, got, v)
		}
	}
	if string(d.Value) != "not json" {
		t.Errorf("dead letter value = %q, want the original", d.Value)
	}
	if l.Stats().Poison != 1 {
		t.Errorf("poison count = %d", l.Stats().Poison)
	}
}

// testRebalanceJoinAndLeave: A runs alone, B joins mid-stream, then A leaves
// mid-stream; every record is processed exactly once.
func testRebalanceJoinAndLeave(t *testing.T, brokers string) {
	const parts, n = 4, 3000
	in := kafkatest.Topic(t, brokers, "in", parts)
	out := kafkatest.Topic(t, brokers, "out", parts)
	msgs, want := inputs(in, "r", n)
	group := "rebalance-" + strconv.FormatInt(time.Now().UnixNano(), 36)

	// The handler is slowed so the stream outlasts the membership changes.
	slow := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		time.Sleep(20 * time.Millisecond)
		return copyHandler(out)(ctx, recs, sink)
	}
	cfgA := baseConfig(brokers, in, group)
	cfgA.MaxBatch = 20
	cfgB := cfgA
	cfgB.TransactionalID = group + "-1"

	// Produce in three slices around the membership changes.
	kafkatest.Produce(t, brokers, msgs[:1000])
	a, stopA := runLoop(t, cfgA, slow, zaptest.NewLogger(t).Named("A"))
	kafkatest.WaitFor(t, 60*time.Second, "A to make progress", func() bool { return a.Stats().Records >= 200 })
	b, stopB := runLoop(t, cfgB, slow, zaptest.NewLogger(t).Named("B"))
	kafkatest.Produce(t, brokers, msgs[1000:2000])
	kafkatest.WaitFor(t, 60*time.Second, "B to take partitions and make progress", func() bool { return b.Stats().Records >= 100 })
	kafkatest.WaitFor(t, 60*time.Second, "A and B to share the partitions", func() bool {
		a, b := a.Stats().Assigned, b.Stats().Assigned
		return a > 0 && b > 0 && a+b == parts
	})
	if err := stopA(); err != nil {
		t.Fatalf("A: %v", err)
	}
	kafkatest.WaitFor(t, 60*time.Second, "B to own every partition", func() bool { return b.Stats().Assigned == parts })
	kafkatest.Produce(t, brokers, msgs[2000:])
	kafkatest.WaitFor(t, 120*time.Second, "all records committed", func() bool {
		return a.Stats().Records+b.Stats().Records >= n
	})
	if err := stopB(); err != nil {
		t.Fatalf("B: %v", err)
	}
	t.Logf("A handled %d records, B %d", a.Stats().Records, b.Stats().Records)
	kafkatest.ExactlyOnce(t, kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted), want)
	if got := a.Stats().Records + b.Stats().Records; got != n {
		t.Errorf("committed records A+B = %d, want %d", got, n)
	}
}

// testOnAssignFailureAndStopDuringIt: an OnAssign that fails stops the loop
// with its error, as a restore that failed would otherwise let the handler
// run on missing state; but an OnAssign cut short by the stop itself (the
// orchestrator restoring snapshots when it is told to stop) is a graceful
// stop, and Run returns nil.
func testOnAssignFailureAndStopDuringIt(t *testing.T, brokers string) {
	in := kafkatest.Topic(t, brokers, "in", 2)
	out := kafkatest.Topic(t, brokers, "out", 2)
	msgs, _ := inputs(in, "a", 10)
	kafkatest.Produce(t, brokers, msgs)
	group := "assign-" + strconv.FormatInt(time.Now().UnixNano(), 36)

	failing := baseConfig(brokers, in, group+"-fail")
	failing.OnAssign = func(context.Context, []kafkatx.TopicPartition) error { return errors.New("no state store") }
	l, err := kafkatx.New(failing, copyHandler(out), zaptest.NewLogger(t).Named("fail"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := l.Run(ctx); err == nil || !strings.Contains(err.Error(), "on assign: no state store") {
		t.Fatalf("Run with a failing OnAssign returned %v, want the OnAssign error", err)
	}
	if st := l.Stats(); st.Records != 0 {
		t.Errorf("handled %d records after OnAssign failed", st.Records)
	}

	entered := make(chan struct{})
	blocking := baseConfig(brokers, in, group+"-stop")
	blocking.OnAssign = func(ctx context.Context, _ []kafkatx.TopicPartition) error {
		close(entered)
		<-ctx.Done()
		return fmt.Errorf("restore: %w", ctx.Err())
	}
	_, stop := runLoop(t, blocking, copyHandler(out), zaptest.NewLogger(t).Named("stop"))
	select {
	case <-entered:
	case <-time.After(60 * time.Second):
		t.Fatal("OnAssign not called within 60s")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run stopped during OnAssign returned %v, want nil", err)
	}
	if got := kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted); len(got) != 0 {
		t.Errorf("%d records produced, want none", len(got))
	}
}

func TestConfigValidate(t *testing.T) {
	ok := kafkatx.Config{Brokers: "b", Group: "g", Topics: []string{"t"}, TransactionalID: "x"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	bad := []kafkatx.Config{
		{},
		{Brokers: "b", Group: "g", Topics: []string{"t"}},
		{Brokers: "b", Group: "g", Topics: []string{"t"}, TransactionalID: "x", MaxBatch: -1},
		{Brokers: "b", Group: "g", Topics: []string{"t"}, TransactionalID: "x", TransactionTimeout: time.Millisecond},
	}
	for i, c := range bad {
		if err := c.Validate(); err == nil {
			t.Errorf("config %d: accepted %+v", i, c)
		}
		if _, err := kafkatx.New(c, copyHandler("x"), nil); err == nil {
			t.Errorf("config %d: New accepted it", i)
		}
	}
}
