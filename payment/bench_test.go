package payment_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// benchClients matches redis-benchmark's default -c 50.
const benchClients = 50

func benchCustomers() []payment.Customer {
	return []payment.Customer{{ID: "alice", Name: "Alice", BalanceCents: payment.MaxCents}}
}

// BenchmarkCharge is the Redis apply-once step alone: Handle of a
// ChargePayment (decode, check the lines against the total, one barrier
// script, reply) from 50 goroutines; "first" charges a new order each time,
// "repeat" answers one recorded charge (a redelivery).
func BenchmarkCharge(b *testing.B) {
	setup := func(b *testing.B) *payment.Service {
		redistest.Client(b)
		opt := redistest.Options(b)
		opt.PoolSize = benchClients
		rdb := redis.NewClient(opt)
		b.Cleanup(func() { _ = rdb.Close() })
		st, err := payment.NewStore(payment.Config{Prefix: redistest.Prefix(b)}, rdb, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Seed(context.Background(), benchCustomers()); err != nil {
			b.Fatal(err)
		}
		if err := st.Load(context.Background()); err != nil {
			b.Fatal(err)
		}
		return payment.NewService(st, payment.ServiceConfig{}, nil)
	}
	parallel := func(b *testing.B, svc *payment.Service, next func(i int64) saga.Envelope) {
		b.SetParallelism((benchClients + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
		var seq atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := svc.Handle(context.Background(), next(seq.Add(1))); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "commands/s")
	}
	b.Run("first", func(b *testing.B) {
		svc := setup(b)
		parallel(b, svc, func(i int64) saga.Envelope {
			id := "b" + strconv.FormatInt(i, 10)
			return command(payment.TypeChargePayment, id, orderJSON(id, "alice", 2, 450))
		})
	})
	b.Run("repeat", func(b *testing.B) {
		svc := setup(b)
		cmd := command(payment.TypeChargePayment, "b", orderJSON("b", "alice", 2, 450))
		parallel(b, svc, func(int64) saga.Envelope { return cmd })
	})
}

// BenchmarkParticipant measures the payment participant end to end on the
// real Kafka and Redis: b.N ChargePayment commands on 4 partitions consumed,
// applied and answered in Kafka transactions by one instance, timed from a
// warmed-up participant to the last committed reply.
func BenchmarkParticipant(b *testing.B) {
	brokers := kafkatest.Brokers(b)
	redistest.Client(b)
	rdb := redis.NewClient(redistest.Options(b))
	b.Cleanup(func() { _ = rdb.Close() })
	prefix := redistest.Prefix(b)
	st, err := payment.NewStore(payment.Config{Prefix: prefix}, rdb, nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Seed(context.Background(), benchCustomers()); err != nil {
		b.Fatal(err)
	}
	cmdTopic := kafkatest.Topic(b, brokers, "cmd", 4)
	repTopic := kafkatest.Topic(b, brokers, "rep", 4)
	dlq := kafkatest.Topic(b, brokers, "dlq", 1)
	p, err := saga.NewParticipant(saga.ParticipantConfig{
		Kafka: saga.Kafka{Brokers: brokers, Group: prefix, InstanceID: "bench", DeadLetterTopic: dlq,
			MaxBatch: 500, MaxInterval: 50 * time.Millisecond},
		CommandTopic: cmdTopic, ReplyTopic: repTopic,
	}, payment.NewService(st, payment.ServiceConfig{}, nil).Handle, nil)
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
			id := "b" + strconv.Itoa(from+i)
			out[i] = command(payment.TypeChargePayment, id, orderJSON(id, "alice", 1, 990)).Message(cmdTopic)
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
