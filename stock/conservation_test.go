package stock_test

import (
	"context"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/stock"
)

// testSeed returns the PRNG seed of a randomized test: SAGAFLOW_TEST_SEED
// to replay a failure, the clock otherwise. It is logged either way.
func testSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("SAGAFLOW_TEST_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SAGAFLOW_TEST_SEED=%q: %v", s, err)
		}
		seed = n
	}
	t.Logf("seed %d (replay with SAGAFLOW_TEST_SEED=%d)", seed, seed)
	return seed
}

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
	rng := rand.New(rand.NewPCG(testSeed(t), 4))
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
	stop := make(chan struct{})
	var watched atomic.Int64
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		seeded := map[string]int64{}
		for _, p := range e.products {
			seeded[p.ID] = p.Available
		}
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, id := range ids {
				v, err := e.rdb.HMGet(context.Background(), e.prefix+":product:"+id, "available", "reserved", "sold").Result()
				if err != nil {
					t.Error(err)
					return
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
				watched.Add(1)
			}
		}
	}()

	// firsts[order][type] is the reply to the first delivery of each type.
	firsts := make([]map[string]reply, orders)
	var wg sync.WaitGroup
	for w := range workers {
		rdb := redis.NewClient(redistest.Options(t))
		t.Cleanup(func() { _ = rdb.Close() })
		_, svc := e.service(t, rdb)
		wg.Go(func() {
			for i := w; i < orders; i += workers {
				p := plans[i]
				firsts[i] = map[string]reply{}
				released := false
				for _, d := range p.steps {
					cmd := command(d.typ, p.id, orderJSON(p.id, p.lines...))
					got := make([]reply, d.copies)
					deliver := func(k int) {
						env, err := svc.Handle(context.Background(), cmd)
						if err != nil {
							t.Errorf("%s %s: %v", d.typ, p.id, err)
							return
						}
						got[k] = toReply(t, env)
					}
					if d.concurrent {
						var cw sync.WaitGroup
						for k := range d.copies {
							cw.Go(func() { deliver(k) })
						}
						cw.Wait()
					} else {
						for k := range d.copies {
							deliver(k)
						}
					}
					for k := range got {
						if got[k] != got[0] {
							t.Errorf("%s %s: copy %d answered %+v, copy 0 %+v", d.typ, p.id, k, got[k], got[0])
						}
					}
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
	close(stop)
	<-watcherDone

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
		lines := res.lines(t)
		switch rel, com := f[stock.TypeReleaseStock], f[stock.TypeCommitStock]; {
		case com.Outcome == saga.Success:
			outcomes["sold"]++
			for _, l := range lines {
				wantSold[l.ProductID] += l.Quantity
			}
		case rel.Outcome == saga.Success && len(rel.lines(t)) > 0:
			outcomes["released"]++
		default:
			outcomes["still reserved"]++
			for _, l := range lines {
				wantReserved[l.ProductID] += l.Quantity
			}
		}
	}
	t.Logf("%d orders: %v; the watcher made %d reads", orders, outcomes, watched.Load())
	for _, p := range e.products {
		got := e.counts(t, p.ID)
		want := counts{p.Available - wantReserved[p.ID] - wantSold[p.ID], wantReserved[p.ID], wantSold[p.ID], p.Available}
		if got != want {
			t.Errorf("%s in Redis %+v, the replies say %+v", p.ID, got, want)
		}
	}
	e.checkConserved(t)
}
