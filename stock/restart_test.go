package stock_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

// TestRedisKilledLosesNothingAcknowledged reserves and commits orders on a
// Redis of the test's own (AOF, appendfsync always) while SIGKILLing it,
// restarts it on its AOF, and delivers every command again: each one that
// was acknowledged before the kill answers exactly what it answered then
// (its effect and dedup record survived), each one that failed now applies
// once, and the stock adds up to exactly one effect per order.
func TestRedisKilledLosesNothingAcknowledged(t *testing.T) {
	t.Parallel()
	srv := crashtest.StartRedis(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, DialTimeout: time.Second, MaxRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	products := []stock.Product{
		{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 100_000},
		{ID: "teapot", Name: "Cast-iron teapot", PriceCents: 4500, Available: 40},
	}
	st, err := stock.NewStore(stock.Config{}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Seed(ctx(t), products); err != nil {
		t.Fatal(err)
	}
	svc := stock.NewService(st, nil)

	// Every order wants a teapot too, so that the last ones are refused:
	// refusals must survive the crash like successes.
	results := participanttest.KillRedisUnderLoad(t, srv, svc.Handle, 4, func(w, i int) []saga.Envelope {
		id := fmt.Sprintf("w%d-%d", w, i)
		var cmds []saga.Envelope
		for _, typ := range []string{stock.TypeReserveStock, stock.TypeCommitStock} {
			cmds = append(cmds, command(typ, id, orderJSON(id, line{"tea", int64(1 + i%3)}, line{"teapot", 1})))
		}
		return cmds
	})

	// Deliver everything again, as Kafka would after the participant's
	// transaction aborted.
	wantReserved, wantSold := map[string]int64{}, map[string]int64{}
	reservedLines := map[string][]line{}
	for _, r := range results {
		again := participanttest.Redeliver(t, svc.Handle, r.Cmd)
		if r.Acked && again != r.Reply {
			t.Errorf("%s %s was acknowledged as %+v before the kill, answers %+v after it: lost",
				r.Cmd.Type, r.Cmd.SagaID, r.Reply, again)
		}
		if again.Outcome != saga.Success {
			continue
		}
		switch r.Cmd.Type {
		case stock.TypeReserveStock:
			reservedLines[r.Cmd.SagaID] = replyLines(t, again)
		case stock.TypeCommitStock:
			for _, l := range replyLines(t, again) {
				wantSold[l.ProductID] += l.Quantity
			}
			delete(reservedLines, r.Cmd.SagaID)
		}
	}
	for _, ls := range reservedLines {
		for _, l := range ls {
			wantReserved[l.ProductID] += l.Quantity
		}
	}
	for _, p := range products {
		got, err := st.Product(ctx(t), p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Reserved != wantReserved[p.ID] || got.Sold != wantSold[p.ID] ||
			got.Available != p.Available-wantReserved[p.ID]-wantSold[p.ID] || got.Stocked != p.Available {
			t.Errorf("%s after the crash: %+v, want reserved %d, sold %d", p.ID, got, wantReserved[p.ID], wantSold[p.ID])
		}
	}
}
