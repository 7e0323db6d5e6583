package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Floor topics: one partition each, kept between runs (they are small).
const (
	floorIn  = "sagaflow.bench.floor.in"
	floorOut = "sagaflow.bench.floor.out"
)

// MeasureFloor times n single transactional hops on brokers, one after the
// other: a record produced to an input topic, copied by a kafkatx.Loop with
// the services' default settings in one transaction, and seen by a
// read_committed reader of the output. An order crosses 4 such hops on its
// way to Confirmed (8 with the orchestrator's -parallel=false
// -await-confirm), so 4 x the floor's p50 is the end-to-end latency this
// broker allows at idle.
func MeasureFloor(ctx context.Context, brokers string, n int) (Quantiles, error) {
	if err := kafkatx.CreateTopics(ctx, brokers, []kafkatx.TopicSpec{{Name: floorIn, Partitions: 1}, {Name: floorOut, Partitions: 1}}); err != nil {
		return Quantiles{}, err
	}
	// A topic just created may not be in every broker's metadata yet.
	for _, t := range []string{floorIn, floorOut} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			_, err := kafkatx.Partitions(ctx, brokers, t)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				return Quantiles{}, err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	id := "sagaflow-bench-floor-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	loop, err := kafkatx.New(kafkatx.Config{Brokers: brokers, Group: id, Topics: []string{floorIn}, TransactionalID: id,
		StopTimeout: 5 * time.Second},
		func(ctx context.Context, recs []kafkatx.Record, out *kafkatx.Sink) error {
			for _, r := range recs {
				out.Produce(ctx, kafkatx.NewMessage(floorOut, r.Key, r.Value))
			}
			return nil
		}, nil)
	if err != nil {
		return Quantiles{}, err
	}
	lctx, stopLoop := context.WithCancel(ctx)
	loopErr := make(chan error, 1)
	go func() { loopErr <- loop.Run(lctx) }()
	defer func() { stopLoop(); <-loopErr }()

	seen := make(chan string, 16)
	tctx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	ready := make(chan struct{})
	tailErr := make(chan error, 1)
	go func() {
		tailErr <- kafkatx.Tail(tctx, brokers, []string{floorOut}, func() { close(ready) }, func(r kafkatx.Record) {
			// A new group copies what earlier runs left in the input too;
			// waitFor skips those, so nothing may be dropped here.
			select {
			case seen <- string(r.Value):
			case <-tctx.Done():
			}
		})
	}()
	select {
	case <-ready:
	case err := <-tailErr:
		return Quantiles{}, fmt.Errorf("read %s: %w", floorOut, err)
	case <-ctx.Done():
		return Quantiles{}, ctx.Err()
	}
	p, err := kafkatx.NewProducer(brokers, nil)
	if err != nil {
		return Quantiles{}, err
	}
	defer p.Close()

	// Wait until the loop owns its partition, then warm up.
	deadline := time.Now().Add(60 * time.Second)
	for loop.Stats().Assigned == 0 {
		if time.Now().After(deadline) {
			return Quantiles{}, errors.New("the floor loop got no partition within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var ds []time.Duration
	for i := range n + 5 {
		val := id + "-" + strconv.Itoa(i)
		start := time.Now()
		if err := p.Send(ctx, kafkatx.NewMessage(floorIn, []byte("k"), []byte(val))); err != nil {
			return Quantiles{}, err
		}
		if err := waitFor(ctx, seen, val); err != nil {
			return Quantiles{}, fmt.Errorf("hop %d: %w", i, err)
		}
		if i >= 5 { // the first hops pay for connections and metadata
			ds = append(ds, time.Since(start))
		}
	}
	return quantiles(ds), nil
}

func waitFor(ctx context.Context, seen <-chan string, val string) error {
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	for {
		select {
		case v := <-seen:
			if v == val {
				return nil
			}
		case <-t.C:
			return errors.New("not copied within 30s")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
