package payment_test

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
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
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

type delivery struct {
	typ        string
	copies     int
	concurrent bool
}

// TestConservationRandomized runs many orders through random paths (charge
// and refund, charge alone, a refund overtaking its charge, a late charge
// after the refund), every command delivered one to three times, some
// copies at once, on several instances. A watcher reads every account's
// hash while it runs: money never goes negative and always adds up. At the
// end the accounts in Redis, read directly, are exactly what the first
// replies said happened.
func TestConservationRandomized(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, []payment.Customer{
		{ID: "alice", Name: "Alice", BalanceCents: 200_000, LimitCents: 12_000},
		{ID: "bob", Name: "Bob", BalanceCents: 60_000},
		{ID: "carol", Name: "Carol", BalanceCents: 1_200},
		{ID: "dave", Name: "Dave", BalanceCents: 400_000, LimitCents: 9_000},
	}, payment.ServiceConfig{})
	rng := rand.New(rand.NewPCG(testSeed(t), 5))
	paths := [][]string{
		{payment.TypeChargePayment, payment.TypeRefundPayment},
		{payment.TypeChargePayment},
		{payment.TypeRefundPayment, payment.TypeChargePayment},
		{payment.TypeChargePayment, payment.TypeRefundPayment, payment.TypeChargePayment},
	}
	type plan struct {
		id, customer string
		n, unit      int64
		steps        []delivery
	}
	const orders, workers = 200, 6
	plans := make([]plan, orders)
	for i := range plans {
		p := plan{id: "o" + strconv.Itoa(i), customer: e.customers[rng.IntN(len(e.customers))].ID,
			n: int64(1 + rng.IntN(3)), unit: int64(100 + rng.IntN(5_000))}
		for _, typ := range paths[rng.IntN(len(paths))] {
			p.steps = append(p.steps, delivery{typ, 1 + rng.IntN(3), rng.IntN(3) == 0})
		}
		plans[i] = p
	}

	stop := make(chan struct{})
	watcherDone := make(chan struct{})
	var watched atomic.Int64
	go func() {
		defer close(watcherDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, c := range e.customers {
				v, err := e.rdb.HMGet(context.Background(), e.prefix+":customer:"+c.ID, "balance", "captured").Result()
				if err != nil {
					t.Error(err)
					return
				}
				b, _ := strconv.ParseInt(v[0].(string), 10, 64)
				k, _ := strconv.ParseInt(v[1].(string), 10, 64)
				if b < 0 || k < 0 || b+k != c.BalanceCents {
					t.Errorf("%s mid-run: balance %d + captured %d, deposited %d", c.ID, b, k, c.BalanceCents)
				}
				watched.Add(1)
			}
		}
	}()

	firsts := make([]map[string]reply, orders)
	var wg sync.WaitGroup
	for w := range workers {
		rdb := redis.NewClient(redistest.Options(t))
		t.Cleanup(func() { _ = rdb.Close() })
		_, svc := e.service(t, rdb, payment.ServiceConfig{})
		wg.Go(func() {
			for i := w; i < orders; i += workers {
				p := plans[i]
				firsts[i] = map[string]reply{}
				refunded := false
				for _, d := range p.steps {
					cmd := command(d.typ, p.id, orderJSON(p.id, p.customer, p.n, p.unit))
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
						if d.typ == payment.TypeChargePayment && refunded && !strings.Contains(got[0].Reason, "hanging") {
							t.Errorf("charge of %s after its refund: %+v, want hanging", p.id, got[0])
						}
						continue
					}
					firsts[i][d.typ] = got[0]
					refunded = refunded || d.typ == payment.TypeRefundPayment
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	<-watcherDone

	captured := map[string]int64{}
	outcomes := map[string]int{}
	for i, p := range plans {
		ch := firsts[i][payment.TypeChargePayment]
		switch {
		case ch.Outcome == saga.Success:
		case strings.Contains(ch.Reason, "hanging"):
			outcomes["hanging"]++
			continue
		default:
			outcomes["declined"]++
			continue
		}
		if ch.cents(t) != p.n*p.unit {
			t.Errorf("%s charged %d, ordered %d", p.id, ch.cents(t), p.n*p.unit)
		}
		if rf, ok := firsts[i][payment.TypeRefundPayment]; ok {
			if rf.cents(t) != ch.cents(t) {
				t.Errorf("%s charged %d, refunded %d", p.id, ch.cents(t), rf.cents(t))
			}
			outcomes["refunded"]++
			continue
		}
		outcomes["captured"]++
		captured[p.customer] += ch.cents(t)
	}
	t.Logf("%d orders: %v; the watcher made %d reads", orders, outcomes, watched.Load())
	for _, c := range e.customers {
		if got, want := e.money(t, c.ID), (money{c.BalanceCents - captured[c.ID], captured[c.ID], c.BalanceCents}); got != want {
			t.Errorf("%s in Redis %+v, the replies say %+v", c.ID, got, want)
		}
	}
	e.checkConserved(t)
}
