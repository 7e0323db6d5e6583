package kafkatx

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// While a broker restarts, a partition's watermarks can be answered with
// "unknown partition" or "not leader" for a moment. A long chaos run saw an
// orchestrator's restore give up on such an answer ("watermarks of
// saga.state[0]: Local: Unknown partition") and the process exit. Here the
// embedded broker answers the first three watermark queries so: the query
// must be asked again and succeed.
func TestWatermarksAskedAgainWhileMetadataMoves(t *testing.T) {
	b, err := StartEmbedded(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	refused := refuseListOffsets(b, 3, kerr.UnknownTopicOrPartition.Code)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	wm, err := highWatermarks(ctx, b.Brokers(), TopicSagaState, []int32{0})
	if err != nil {
		t.Fatalf("highWatermarks after %d refusals: %v", refused.Load(), err)
	}
	if refused.Load() < 1 {
		t.Fatal("the broker was never asked: the test intercepted nothing")
	}
	t.Logf("answered %+v after %d refusals", wm[0], refused.Load())
}

// refuseListOffsets makes the embedded broker answer the first n
// ListOffsets requests (watermark queries) with code on every partition,
// and counts them.
func refuseListOffsets(b *EmbeddedBroker, n int32, code int16) *atomic.Int32 {
	var refused atomic.Int32
	// The control function runs on the broker's goroutine.
	b.c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Load() == n {
			return nil, nil, false // answer it, and stop intercepting
		}
		b.c.KeepControl()
		refused.Add(1)
		in := req.(*kmsg.ListOffsetsRequest)
		resp := in.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range in.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	return &refused
}

// A topic made a moment ago can answer "not leader" while its leader is
// elected. Tail asked for its end once, and a CI run beside CPU hogs had
// sagaflow bench's floor measurement fail on that ("end of
// sagaflow.bench.floor.out[0]: Broker: Not leader for partition"). Here the
// embedded broker answers the first three watermark queries so: Tail must
// ask again, say it is ready, and run until it is stopped.
func TestTailAsksAgainWhileALeaderIsElected(t *testing.T) {
	b, err := StartEmbedded(1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	refused := refuseListOffsets(b, 3, kerr.NotLeaderForPartition.Code)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Tail(ctx, b.Brokers(), []string{TopicSagaState}, func() { close(ready) }, func(Record) {})
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Tail returned before it was ready, after %d refusals: %v", refused.Load(), err)
	case <-ctx.Done():
		t.Fatalf("Tail not ready after %d refusals", refused.Load())
	}
	if refused.Load() < 1 {
		t.Fatal("the broker was never asked: the test intercepted nothing")
	}
	cancel()
	if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Tail, stopped: %v", err)
	}
}
