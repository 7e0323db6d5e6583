package participanttest

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// BenchClients matches redis-benchmark's default -c 50, so the figures
// compare with it.
const BenchClients = 50

// BenchRedis returns a client on the test Redis with a pool of
// BenchClients connections, closed when b ends. It skips (or fails under
// CI) when Redis is down.
func BenchRedis(b *testing.B) *redis.Client {
	b.Helper()
	redistest.Client(b)
	opt := redistest.Options(b)
	opt.PoolSize = BenchClients
	rdb := redis.NewClient(opt)
	b.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// BenchHandle runs h on the commands next(1), next(2), ... from
// BenchClients goroutines and reports commands/s: the Redis apply-once
// step alone, without Kafka.
func BenchHandle(b *testing.B, h saga.CommandHandler, next func(i int64) saga.Envelope) {
	b.SetParallelism((BenchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
	var seq atomic.Int64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := h(context.Background(), next(seq.Add(1))); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
}

// BenchParticipant measures a participant end to end on the real Kafka:
// b.N commands (command(1) to command(b.N)) on 4 partitions are consumed,
// applied by h and answered in Kafka transactions by one participant
// instance of group. The clock starts once the participant has its
// partitions and answered command(0), and stops when the last reply is
// committed. It reports commands/s and commands/txn.
func BenchParticipant(b *testing.B, group string, h saga.CommandHandler, command func(i int) saga.Envelope) {
	brokers := kafkatest.Brokers(b)
	cmdTopic := kafkatest.Topic(b, brokers, "cmd", 4)
	repTopic := kafkatest.Topic(b, brokers, "rep", 4)
	dlq := kafkatest.Topic(b, brokers, "dlq", 1)
	p, err := saga.NewParticipant(saga.ParticipantConfig{
		Kafka: saga.Kafka{Brokers: brokers, Group: group, InstanceID: "bench", DeadLetterTopic: dlq,
			MaxBatch: 500, MaxInterval: 50 * time.Millisecond},
		CommandTopic: cmdTopic, ReplyTopic: repTopic,
	}, h, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	msgs := func(from, n int) []kafkatx.Message {
		out := make([]kafkatx.Message, n)
		for i := range out {
			out[i] = command(from + i).Message(cmdTopic)
		}
		return out
	}
	kafkatest.Produce(b, brokers, msgs(0, 1))
	kafkatest.WaitFor(b, 60*time.Second, "the warm-up command", func() bool { return p.Stats().Records >= 1 })

	b.ResetTimer()
	kafkatest.Produce(b, brokers, msgs(1, b.N))
	deadline := time.Now().Add(10 * time.Minute)
	for p.Stats().Records < int64(1+b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d commands answered in 10 minutes", p.Stats().Records-1, b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
	s := p.Stats()
	b.ReportMetric(float64(s.Records)/float64(max(s.Committed, 1)), "commands/txn")
}
