package payment_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
)

func benchCustomers() []payment.Customer {
	return []payment.Customer{{ID: "alice", Name: "Alice", BalanceCents: payment.MaxCents}}
}

// BenchmarkCharge is the Redis apply-once step alone: Handle of a
// ChargePayment (decode, check the lines against the total, one barrier
// script, reply) from 50 goroutines; "first" charges a new order each time,
// "repeat" answers one recorded charge (a redelivery).
func BenchmarkCharge(b *testing.B) {
	setup := func(b *testing.B) *payment.Service {
		st, err := payment.NewStore(payment.Config{Prefix: redistest.Prefix(b)}, participanttest.BenchRedis(b), nil)
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
	b.Run("first", func(b *testing.B) {
		participanttest.BenchHandle(b, setup(b).Handle, func(i int64) saga.Envelope {
			id := "b" + strconv.FormatInt(i, 10)
			return command(payment.TypeChargePayment, id, orderJSON(id, "alice", 2, 450))
		})
	})
	b.Run("repeat", func(b *testing.B) {
		svc := setup(b)
		cmd := command(payment.TypeChargePayment, "b", orderJSON("b", "alice", 2, 450))
		participanttest.BenchHandle(b, svc.Handle, func(int64) saga.Envelope { return cmd })
	})
}

// BenchmarkParticipant measures the payment participant end to end on the
// real Kafka and Redis: b.N ChargePayment commands on 4 partitions consumed,
// applied and answered in Kafka transactions by one instance, timed from a
// warmed-up participant to the last committed reply.
func BenchmarkParticipant(b *testing.B) {
	prefix := redistest.Prefix(b)
	st, err := payment.NewStore(payment.Config{Prefix: prefix}, participanttest.BenchRedis(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Seed(context.Background(), benchCustomers()); err != nil {
		b.Fatal(err)
	}
	participanttest.BenchParticipant(b, prefix, payment.NewService(st, payment.ServiceConfig{}, nil).Handle, func(i int) saga.Envelope {
		id := "b" + strconv.Itoa(i)
		return command(payment.TypeChargePayment, id, orderJSON(id, "alice", 1, 990))
	})
}
