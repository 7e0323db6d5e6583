package stock_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
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

	type result struct {
		cmd   saga.Envelope
		reply reply
		acked bool
	}
	var (
		mu      sync.Mutex
		results []result
		acked   atomic.Int64
		failed  atomic.Int64
		stop    atomic.Bool
		wg      sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				// Every order wants a teapot too, so that the last ones are
				// refused: refusals must survive the crash like successes.
				for _, typ := range []string{stock.TypeReserveStock, stock.TypeCommitStock} {
					cmd := command(typ, id, orderJSON(id, line{"tea", int64(1 + i%3)}, line{"teapot", 1}))
					env, err := svc.Handle(context.Background(), cmd)
					r := result{cmd: cmd, acked: err == nil}
					switch {
					case err == nil:
						r.reply = toReply(t, env)
						acked.Add(1)
					case errors.Is(err, saga.ErrPoison):
						t.Errorf("Redis down taken for poison: %v", err)
					default:
						failed.Add(1)
					}
					mu.Lock()
					results = append(results, r)
					mu.Unlock()
				}
			}
		})
	}
	waitFor(t, 30*time.Second, "100 acknowledged commands", func() bool { return acked.Load() >= 100 })
	srv.Kill(t)
	ackedAtKill := acked.Load()
	waitFor(t, 30*time.Second, "the workers to notice", func() bool { return failed.Load() >= 8 })
	stop.Store(true)
	wg.Wait()
	srv.Start(t)
	t.Logf("%d commands acknowledged (%d before the kill), %d failed with Redis down", acked.Load(), ackedAtKill, failed.Load())

	// Deliver everything again, as Kafka would after the participant's
	// transaction aborted.
	wantReserved, wantSold := map[string]int64{}, map[string]int64{}
	reservedLines := map[string][]line{}
	for _, r := range results {
		// Retried while transient, as the runtime does: the client's pool
		// may take a second to notice Redis is back.
		var env saga.Envelope
		waitFor(t, 20*time.Second, "Redis to answer again", func() bool {
			env, err = svc.Handle(ctx(t), r.cmd)
			if errors.Is(err, saga.ErrPoison) {
				t.Fatalf("%s %s after the restart: %v", r.cmd.Type, r.cmd.SagaID, err)
			}
			return err == nil
		})
		again := toReply(t, env)
		if r.acked && again != r.reply {
			t.Errorf("%s %s was acknowledged as %+v before the kill, answers %+v after it: lost",
				r.cmd.Type, r.cmd.SagaID, r.reply, again)
		}
		if again.Outcome != saga.Success {
			continue
		}
		switch r.cmd.Type {
		case stock.TypeReserveStock:
			reservedLines[r.cmd.SagaID] = again.lines(t)
		case stock.TypeCommitStock:
			for _, l := range again.lines(t) {
				wantSold[l.ProductID] += l.Quantity
			}
			delete(reservedLines, r.cmd.SagaID)
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

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
