package kafkatx

import (
	"context"
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
	// The control function runs on the broker's goroutine.
	var refused atomic.Int32
	b.c.ControlKey(int16(kmsg.ListOffsets), func(req kmsg.Request) (kmsg.Response, error, bool) {
		if refused.Load() == 3 {
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
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
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
