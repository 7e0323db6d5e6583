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

// A producer that sent nothing for longer than the stall timeout is not
// stalled when it sends again and the broker takes a moment to answer: the
// first order after a quiet spell of 18 minutes got a 503 because the quiet
// time counted from the last delivery report.
func TestProducerIdleSpellIsNotAStall(t *testing.T) {
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
	send := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return pr.Send(ctx, NewMessage(TopicOrderEvents, []byte("k"), []byte("v")))
	}
	if err := send(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // idle, past the stall timeout
	// The broker answers the next produce after 1.5 s: slow, not stalled,
	// and held across at least one of the watcher's once-a-second looks.
	b.c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
		time.Sleep(1500 * time.Millisecond)
		return nil, nil, false
	})
	if err := send(); err != nil || pr.Replaced() != 0 {
		t.Fatalf("the first send after the idle spell: %v, %d replacements", err, pr.Replaced())
	}
}

func TestBusySinceCountsFromTheLaterOfReportAndRecords(t *testing.T) {
	t0 := time.Now()
	var b busySince
	lastReport := t0.Add(-time.Hour) // an hour idle
	if q := b.quiet(0, lastReport, t0); q != 0 {
		t.Errorf("nothing held: quiet %s", q)
	}
	if q := b.quiet(3, lastReport, t0.Add(time.Second)); q != 0 {
		t.Errorf("records first seen: quiet %s, want 0", q)
	}
	if q := b.quiet(3, lastReport, t0.Add(20*time.Second)); q != 19*time.Second {
		t.Errorf("held 19s without a report: quiet %s", q)
	}
	if q := b.quiet(3, t0.Add(18*time.Second), t0.Add(20*time.Second)); q != 2*time.Second {
		t.Errorf("a report 2s ago: quiet %s", q)
	}
	b.quiet(0, lastReport, t0.Add(21*time.Second))
	if q := b.quiet(1, lastReport, t0.Add(22*time.Second)); q != 0 {
		t.Errorf("held again after a spell with nothing held: quiet %s", q)
	}
}
