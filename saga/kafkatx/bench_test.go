package kafkatx_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// BenchmarkLoop measures consume-process-produce at several transaction
// sizes, through the real broker and through the embedded one. The records
// are produced first; the clock runs from the first partition assignment
// until the last record is committed, so group join and topic creation are not
// counted.
//
//	make up && go test -run '^$' -bench BenchmarkLoop -benchtime 5000x ./saga/kafkatx/
func BenchmarkLoop(b *testing.B) {
	b.Run("broker=real", func(b *testing.B) { benchmarkLoop(b, kafkatest.Brokers(b)) })
	b.Run("broker=embedded", func(b *testing.B) { benchmarkLoop(b, kafkatest.Embedded(b)) })
}

func benchmarkLoop(b *testing.B, brokers string) {
	for _, batch := range []int{1, 100, 1000} {
		b.Run("batch="+strconv.Itoa(batch), func(b *testing.B) {
			const parts = 4
			in := kafkatest.Topic(b, brokers, "in", parts)
			out := kafkatest.Topic(b, brokers, "out", parts)
			msgs := make([]kafkatx.Message, b.N)
			for i := range msgs {
				msgs[i] = kafkatx.NewMessage(in, []byte(strconv.Itoa(i%1024)), []byte(`{"n":`+strconv.Itoa(i)+`}`))
			}
			kafkatest.Produce(b, brokers, msgs)

			var assigned atomic.Int64
			group := "bench-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			cfg := kafkatx.Config{
				Brokers: brokers, Group: group, Topics: []string{in}, TransactionalID: group,
				MaxBatch: batch, MaxInterval: 100 * time.Millisecond,
				OnAssign: func(context.Context, []kafkatx.TopicPartition) error {
					assigned.CompareAndSwap(0, time.Now().UnixNano())
					return nil
				},
			}
			l, err := kafkatx.New(cfg, copyHandler(out), nil)
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			for l.Stats().Records < int64(b.N) {
				select {
				case err := <-done:
					b.Fatalf("loop stopped early: %v", err)
				case <-time.After(time.Millisecond):
				}
			}
			end := time.Now()
			cancel()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			elapsed := end.Sub(time.Unix(0, assigned.Load()))
			st := l.Stats()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(float64(st.Committed)/elapsed.Seconds(), "txns/s")
			b.ReportMetric(0, "ns/op") // the wall time above is the figure; ns/op would include setup
		})
	}
}
