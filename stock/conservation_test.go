package stock_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

// delivery is one command with the number of copies delivered, at once or
// one after the other.
type delivery struct {
	typ        string
	copies     int
	concurrent bool
}

// TestConservationRandomized runs many orders through random paths (reserve
// and commit, reserve and release, a release overtaking its reserve, a
// commit after a release, sagas left in flight) with every command
// delivered one to three times, some copies at the same time, on several
// participant instances. A watcher reads every product's hash in a loop
// while it runs: stock is never negative and always adds up. At the end the
// quantities in Redis, read directly, are exactly what the first replies
// said happened.
func TestConservationRandomized(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, []stock.Product{
		{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 150},
		{ID: "mug", Name: "Mug", PriceCents: 800, Available: 80},
		{ID: "teapot", Name: "Cast-iron teapot", PriceCents: 4500, Available: 40},
	})
	rng := rand.New(rand.NewPCG(participanttest.Seed(t), 4))
	ids := []string{"tea", "mug", "teapot"}
	paths := [][]string{
		{stock.TypeReserveStock, stock.TypeCommitStock},
		{stock.TypeReserveStock, stock.TypeReleaseStock},
		{stock.TypeReleaseStock, stock.TypeReserveStock},
		{stock.TypeReserveStock},
		{stock.TypeReserveStock, stock.TypeReleaseStock, stock.TypeCommitStock},
		{stock.TypeReserveStock, stock.TypeReleaseStock, stock.TypeReserveStock},
	}
	type plan struct {
		id    string
		lines []line
		steps []delivery
	}
	const orders, workers = 160, 6
	plans := make([]plan, orders)
	for i := range plans {
		p := plan{id: "o" + strconv.Itoa(i)}
		for _, j := range rng.Perm(len(ids))[:1+rng.IntN(len(ids))] {
			p.lines = append(p.lines, line{ids[j], int64(1 + rng.IntN(3))})
		}
		for _, typ := range paths[rng.IntN(len(paths))] {
			p.steps = append(p.steps, delivery{typ, 1 + rng.IntN(3), rng.IntN(3) == 0})
		}
		plans[i] = p
	}

	// The watcher: every HMGET is atomic, and so is every script, so each
	// read must add up.
	seeded := map[string]int64{}
	for _, p := range e.products {
		seeded[p.ID] = p.Available
	}
	stopWatching := participanttest.Watch(func() bool {
		for _, id := range ids {
			v, err := e.rdb.HMGet(context.Background(), e.prefix+":product:"+id, "available", "reserved", "sold").Result()
			if err != nil {
				t.Error(err)
				return false
			}
			var n [3]int64
			for k := range n {
				n[k], _ = strconv.ParseInt(v[k].(string), 10, 64)
				if n[k] < 0 {
					t.Errorf("%s went negative: %v", id, v)
				}
			}
			if n[0]+n[1]+n[2] != seeded[id] {
				t.Errorf("%s does not add up mid-run: %v, seeded %d", id, v, seeded[id])
			}
		}
		return true
	})

	// firsts[order][type] is the reply to the first delivery of each type.
	firsts := make([]map[string]reply, orders)
	var wg sync.WaitGroup
	handlers := participanttest.Instances(t, workers, func(rdb redis.UniversalClient) saga.CommandHandler {
		_, svc := e.service(t, rdb)
		return svc.Handle
	})
	for w, handle := range handlers {
		wg.Go(func() {
			for i := w; i < orders; i += workers {
				p := plans[i]
				firsts[i] = map[string]reply{}
				released := false
				for _, d := range p.steps {
					cmd := command(d.typ, p.id, orderJSON(p.id, p.lines...))
					got := participanttest.Deliver(t, cmd, d.copies, d.concurrent, handle)
					if _, seen := firsts[i][d.typ]; seen {
						// A second command of a type already answered (a
						// late reserve): hanging once released.
						if d.typ == stock.TypeReserveStock && released && got[0].Outcome != saga.Failure {
							t.Errorf("reserve of %s after its release: %+v, want hanging", p.id, got[0])
						}
						continue
					}
					firsts[i][d.typ] = got[0]
					if d.typ == stock.TypeReleaseStock {
						released = true
					}
				}
			}
		})
	}
	wg.Wait()
	watched := stopWatching()

	// What the replies say happened, per product.
	wantReserved, wantSold := map[string]int64{}, map[string]int64{}
	outcomes := map[string]int{}
	for i := range plans {
		f := firsts[i]
		res, ok := f[stock.TypeReserveStock]
		switch {
		case !ok:
			t.Fatalf("order %d has no reserve reply", i)
		case res.Outcome != saga.Success && strings.Contains(res.Reason, "hanging"):
			outcomes["hanging"]++
			continue
		case res.Outcome != saga.Success:
			outcomes["out of stock"]++
			continue
		}
		lines := replyLines(t, res)
		switch rel, com := f[stock.TypeReleaseStock], f[stock.TypeCommitStock]; {
		case com.Outcome == saga.Success:
			outcomes["sold"]++
			for _, l := range lines {
				wantSold[l.ProductID] += l.Quantity
			}
		case rel.Outcome == saga.Success && len(replyLines(t, rel)) > 0:
			outcomes["released"]++
		default:
			outcomes["still reserved"]++
			for _, l := range lines {
				wantReserved[l.ProductID] += l.Quantity
			}
		}
	}
	t.Logf("%d orders: %v; the watcher read every product %d times", orders, outcomes, watched)
	for _, p := range e.products {
		got := e.counts(t, p.ID)
		want := counts{p.Available - wantReserved[p.ID] - wantSold[p.ID], wantReserved[p.ID], wantSold[p.ID], p.Available}
		if got != want {
			t.Errorf("%s in Redis %+v, the replies say %+v", p.ID, got, want)
		}
	}
	e.checkConserved(t)
}
