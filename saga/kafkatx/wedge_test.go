package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// wedgeSetup starts an embedded broker holding n records on
// TopicStockCommands, and a log that outlives the test: a given-up loop's
// producer goes on after it until its call returns.
func wedgeSetup(t *testing.T, n int) (*EmbeddedBroker, *zap.Logger) {
	t.Helper()
	b, err := StartEmbedded(1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	p, err := NewProducer(b.Brokers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range n {
		if err := p.Send(ctx, NewMessage(TopicStockCommands, []byte("k"), fmt.Appendf(nil, "v%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	logMu := make(chan struct{}, 1)
	var logs strings.Builder
	sink := zapcore.AddSync(writerFunc(func(b []byte) (int, error) {
		logMu <- struct{}{}
		defer func() { <-logMu }()
		return logs.Write(b)
	}))
	t.Cleanup(func() {
		if t.Failed() {
			logMu <- struct{}{}
			t.Log(logs.String())
			<-logMu
		}
	})
	return b, zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), sink, zap.InfoLevel))
}

// wedgeConfig copies every record of TopicStockCommands to
// TopicStockReplies; its transactional calls count as wedged after 3s.
func wedgeConfig(b *EmbeddedBroker, revoked chan<- []TopicPartition) (Config, Handler) {
	return Config{Brokers: b.Brokers(), Group: "wedge", Topics: []string{TopicStockCommands},
			TransactionalID: "wedge-1", WedgeTimeout: 3 * time.Second, TransactionTimeout: 5 * time.Minute,
			OnRevoke: func(parts []TopicPartition, lost bool) {
				if lost && revoked != nil {
					select {
					case revoked <- parts:
					default: // the test reads the first one only
					}
				}
			},
			// The dropped request must not time out and free the wedged
			// call during the test: the longest librdkafka allows.
			ProducerConfig: map[string]any{"socket.timeout.ms": 300_000}},
		func(ctx context.Context, recs []Record, out *Sink) error {
			for _, r := range recs {
				out.Produce(ctx, NewMessage(TopicStockReplies, r.Key, r.Value))
			}
			return nil
		}
}

// TestLoopGoesOnAfterAWedgedCall is the regression test of the wedge the
// 3-node tests met after a broker kill: librdkafka's
// send_offsets_to_transaction blocked past its own timeout (librdkafka
// issues 5456 and 5511), and the loop held its partitions until the process
// exited. Here the embedded broker never answers the first commit of offsets
// to a transaction. Run must give that consumer and producer up after
// WedgeTimeout and go on with new ones in the same process: every record
// ends up copied exactly once, the handler hears that the partitions were
// lost, and Run neither returns nor loses its count of work.
func TestLoopGoesOnAfterAWedgedCall(t *testing.T) {
	const n = 20
	b, log := wedgeSetup(t, n)
	dropped := make(chan struct{})
	b.c.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		close(dropped)
		return nil, nil, true // no answer, once: a coordinator that went away
	})
	revoked := make(chan []TopicPartition, 4)
	cfg, h := wedgeConfig(b, revoked)
	l, err := New(cfg, h, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()

	select {
	case <-dropped:
	case err := <-done:
		t.Fatalf("Run = %v before the loop sent its offsets", err)
	case <-time.After(time.Minute):
		t.Fatal("the loop never sent its offsets to a transaction")
	}
	deadline := time.After(90 * time.Second)
	for l.Stats().Records < n {
		select {
		case err := <-done:
			t.Fatalf("Run = %v after the wedge; want it to go on with a new consumer and producer (stats %+v)", err, l.Stats())
		case <-deadline:
			t.Fatalf("records not committed 90s after the wedge: stats %+v", l.Stats())
		case <-time.After(100 * time.Millisecond):
		}
	}
	st := l.Stats()
	// At least the dropped call was given up. A successor's call that is
	// merely slow on a starved machine may be given up too, which costs
	// time but must not change what is committed.
	if st.Wedged < 1 || st.Records != n || st.Committed < 1 {
		t.Errorf("stats = %+v, want Wedged >= 1 and all %d records committed", st, n)
	}
	if st.Stuck > st.Wedged {
		// A given-up call may have returned since (the broker fenced its
		// producer), and then it is stuck no more.
		t.Errorf("Stuck = %d, want at most the %d given-up calls", st.Stuck, st.Wedged)
	}
	select {
	case parts := <-revoked:
		if len(parts) != 1 || parts[0] != (TopicPartition{TopicStockCommands, 0}) {
			t.Errorf("OnRevoke(lost) got %v, want the one input partition", parts)
		}
	default:
		t.Error("the handler never heard that the given-up consumer's partitions were lost")
	}

	got := map[string]int{}
	rctx, rcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer rcancel()
	if err := ReadPartitions(rctx, b.Brokers(), TopicStockReplies, []int32{0}, func(r Record) error {
		got[string(r.Value)]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if v := fmt.Sprintf("v%d", i); got[v] != 1 {
			t.Errorf("reply %s committed %d times, want exactly once", v, got[v])
		}
	}
	if len(got) != n {
		t.Errorf("%d distinct replies committed, want %d: %v", len(got), n, got)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after the stop = %v, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("Run did not return within 30s of the stop")
	}
}

// Given-up loops must not pile up without bound: each holds a producer
// until its call returns. With maxStuck of them stuck already, a wedge ends
// Run with ErrWedged naming the call, for the process to be restarted.
func TestWedgeWithTooManyStuckEndsRun(t *testing.T) {
	b, log := wedgeSetup(t, 1)
	b.c.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		return nil, nil, true
	})
	cfg, h := wedgeConfig(b, nil)
	l, err := New(cfg, h, log)
	if err != nil {
		t.Fatal(err)
	}
	l.stats.stuck.Store(maxStuck) // as if earlier wedged calls never returned
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	err = l.Run(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrWedged) {
		t.Fatalf("Run = %v after %s, want ErrWedged", err, took.Round(time.Millisecond))
	}
	if !strings.Contains(err.Error(), "send offsets") {
		t.Errorf("Run = %v: it does not name the call that did not return (send offsets)", err)
	}
	if st := l.Stats(); st.Wedged != 0 || st.Committed != 0 {
		t.Errorf("stats = %+v, want no loop replaced and nothing committed", st)
	}
	t.Logf("given up after %s: %v", took.Round(time.Millisecond), err)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
