package stock_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

func benchProducts() []stock.Product {
	return []stock.Product{
		{ID: "tea", Name: "Green tea", PriceCents: 450, Available: stock.MaxStock},
		{ID: "mug", Name: "Mug", PriceCents: 800, Available: stock.MaxStock},
	}
}

// BenchmarkReserve is the Redis apply-once step alone: Handle of a
// two-line ReserveStock (decode, validate, one barrier script, reply),
// from 50 goroutines. "first" reserves for a new order every time (the path
// of a fresh command); "repeat" answers one recorded command (a
// redelivery).
func BenchmarkReserve(b *testing.B) {
	setup := func(b *testing.B) *stock.Service {
		st, err := stock.NewStore(stock.Config{Prefix: redistest.Prefix(b)}, participanttest.BenchRedis(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := st.Seed(context.Background(), benchProducts()); err != nil {
			b.Fatal(err)
		}
		if err := st.Load(context.Background()); err != nil {
			b.Fatal(err)
		}
		return stock.NewService(st, nil)
	}
	b.Run("first", func(b *testing.B) {
		participanttest.BenchHandle(b, setup(b).Handle, func(i int64) saga.Envelope {
			id := "b" + strconv.FormatInt(i, 10)
			return command(stock.TypeReserveStock, id, orderJSON(id, line{"tea", 2}, line{"mug", 1}))
		})
	})
	b.Run("repeat", func(b *testing.B) {
		svc := setup(b)
		cmd := command(stock.TypeReserveStock, "b", orderJSON("b", line{"tea", 2}, line{"mug", 1}))
		participanttest.BenchHandle(b, svc.Handle, func(int64) saga.Envelope { return cmd })
	})
}

// BenchmarkParticipant measures the stock participant end to end on the real
// Kafka and Redis: b.N ReserveStock commands on 4 partitions are consumed,
// applied and answered in Kafka transactions by one participant instance.
// The clock starts once the participant has its partitions and answered a
// first command, and stops when the last reply is committed.
func BenchmarkParticipant(b *testing.B) {
	prefix := redistest.Prefix(b)
	st, err := stock.NewStore(stock.Config{Prefix: prefix}, participanttest.BenchRedis(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.Seed(context.Background(), benchProducts()); err != nil {
		b.Fatal(err)
	}
	participanttest.BenchParticipant(b, prefix, stock.NewService(st, nil).Handle, func(i int) saga.Envelope {
		id := "b" + strconv.Itoa(i)
		return command(stock.TypeReserveStock, id, orderJSON(id, line{"tea", 1}, line{"mug", 1}))
	})
}
