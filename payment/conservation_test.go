package payment_test

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
)

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
	rng := rand.New(rand.NewPCG(participanttest.Seed(t), 5))
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

	stopWatching := participanttest.Watch(func() bool {
		for _, c := range e.customers {
			v, err := e.rdb.HMGet(context.Background(), e.prefix+":customer:"+c.ID, "balance", "captured").Result()
			if err != nil {
				t.Error(err)
				return false
			}
			b, _ := strconv.ParseInt(v[0].(string), 10, 64)
			k, _ := strconv.ParseInt(v[1].(string), 10, 64)
			if b < 0 || k < 0 || b+k != c.BalanceCents {
				t.Errorf("%s mid-run: balance %d + captured %d, deposited %d", c.ID, b, k, c.BalanceCents)
			}
		}
		return true
	})

	firsts := make([]map[string]reply, orders)
	var wg sync.WaitGroup
	handlers := participanttest.Instances(t, workers, func(rdb redis.UniversalClient) saga.CommandHandler {
		_, svc := e.service(t, rdb, payment.ServiceConfig{})
		return svc.Handle
	})
	for w, handle := range handlers {
		wg.Go(func() {
			for i := w; i < orders; i += workers {
				p := plans[i]
				firsts[i] = map[string]reply{}
				refunded := false
				for _, d := range p.steps {
					cmd := command(d.typ, p.id, orderJSON(p.id, p.customer, p.n, p.unit))
					got := participanttest.Deliver(t, cmd, d.copies, d.concurrent, handle)
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
	watched := stopWatching()

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
		if replyCents(t, ch) != p.n*p.unit {
			t.Errorf("%s charged %d, ordered %d", p.id, replyCents(t, ch), p.n*p.unit)
		}
		if rf, ok := firsts[i][payment.TypeRefundPayment]; ok {
			if replyCents(t, rf) != replyCents(t, ch) {
				t.Errorf("%s charged %d, refunded %d", p.id, replyCents(t, ch), replyCents(t, rf))
			}
			outcomes["refunded"]++
			continue
		}
		outcomes["captured"]++
		captured[p.customer] += replyCents(t, ch)
	}
	t.Logf("%d orders: %v; the watcher read every account %d times", orders, outcomes, watched)
	for _, c := range e.customers {
		if got, want := e.money(t, c.ID), (money{c.BalanceCents - captured[c.ID], captured[c.ID], c.BalanceCents}); got != want {
			t.Errorf("%s in Redis %+v, the replies say %+v", c.ID, got, want)
		}
	}
	e.checkConserved(t)
}
