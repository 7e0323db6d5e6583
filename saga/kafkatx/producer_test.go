package kafkatx

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/zap/zaptest"
)

// TestProducerReplacedWhenItStalls is the regression test of the wedged
// orders API the chaos suite found: after a broker pause under load the
// idempotent producer held its records for minutes without a delivery
// report. Here the embedded broker swallows every produce request: the
// records held must fail soon after the stall timeout (so a client is told
// to retry), the producer is replaced, and once the broker answers again
// sends succeed without a restart.
func TestProducerReplacedWhenItStalls(t *testing.T) {
	b, err := StartEmbedded(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pr, err := NewProducer(b.Brokers(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pr.stall = 2 * time.Second
	send := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		return pr.Send(ctx, NewMessage(TopicOrderEvents, []byte("k"), []byte("v")))
	}
	if err := send(30 * time.Second); err != nil {
		t.Fatalf("before the stall: %v", err)
	}

	var stalled atomic.Bool
	stalled.Store(true)
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		if !stalled.Load() {
			b.c.DropControl()
			return nil, nil, false
		}
		b.c.KeepControl()
		return nil, nil, true // no answer, connection open: a paused broker
	})
	start := time.Now()
	err = send(60 * time.Second)
	took := time.Since(start)
	if err == nil {
		t.Fatal("a send during the stall succeeded")
	}
	if !errors.Is(err, ErrReplaced) || took > 10*time.Second || pr.Replaced() == 0 {
		t.Fatalf("the held send failed after %s with %v, %d replacements; want a replacement soon after the 2s stall timeout",
			took.Round(time.Millisecond), err, pr.Replaced())
	}
	t.Logf("held send failed after %s: %v", took.Round(time.Millisecond), err)

	stalled.Store(false)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := send(5 * time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the stall ended, sends still fail: %v", err)
		}
	}
}
