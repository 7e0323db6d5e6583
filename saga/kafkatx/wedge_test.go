package kafkatx

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TestLoopStuckInATransactionalCallIsGivenUp is the regression test of the
// stuck orchestrator the chaos suite found in the 3-node mode: after the
// group coordinator's broker was paused, librdkafka's
// send_offsets_to_transaction blocked for minutes past its own timeout, the
// loop polled no more, and the other orchestrator could not get the
// partitions. Here the embedded broker never answers the offsets' commit to
// the transaction: Run must give the loop up with ErrWedged soon after
// WedgeTimeout, so that the process exits and is restarted.
func TestLoopStuckInATransactionalCallIsGivenUp(t *testing.T) {
	b, err := StartEmbedded(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := NewProducer(b.Brokers(), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := p.Send(ctx, NewMessage(TopicStockCommands, []byte("k"), []byte("v"))); err != nil {
		t.Fatal(err)
	}
	p.Close()
	b.c.ControlKey(int16(kmsg.TxnOffsetCommit), func(kmsg.Request) (kmsg.Response, error, bool) {
		b.c.KeepControl()
		return nil, nil, true // no answer: a coordinator that went away
	})
	// The abandoned loop goes on after the test: its log goes to a buffer.
	var logs strings.Builder
	logMu := make(chan struct{}, 1)
	sink := zapcore.AddSync(writerFunc(func(b []byte) (int, error) {
		logMu <- struct{}{}
		defer func() { <-logMu }()
		return logs.Write(b)
	}))
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()), sink, zap.InfoLevel))
	l, err := New(Config{Brokers: b.Brokers(), Group: "wedge", Topics: []string{TopicStockCommands},
		TransactionalID: "wedge-1", WedgeTimeout: 3 * time.Second},
		func(ctx context.Context, recs []Record, out *Sink) error {
			for _, r := range recs {
				out.Produce(ctx, NewMessage(TopicStockReplies, r.Key, r.Value))
			}
			return nil
		}, log)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = l.Run(ctx)
	took := time.Since(start)
	if !errors.Is(err, ErrWedged) {
		t.Fatalf("Run = %v after %s, want ErrWedged", err, took.Round(time.Millisecond))
	}
	// The error names the call, so that the process's last line says which
	// one wedged.
	if !strings.Contains(err.Error(), "send offsets") {
		t.Errorf("Run = %v: it does not name the call that did not return (send offsets)", err)
	}
	if took > 45*time.Second {
		t.Errorf("Run gave up after %s; want soon after the 3s wedge timeout (plus joining the group)", took.Round(time.Millisecond))
	}
	t.Logf("given up after %s: %v", took.Round(time.Millisecond), err)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }
