package payment_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
)

// accounts is the test's customers.
func accounts() []payment.Customer {
	return []payment.Customer{
		{ID: "alice", Name: "Alice", BalanceCents: 100_000, LimitCents: 50_000},
		{ID: "bob", Name: "Bob", BalanceCents: 60_000, LimitCents: 20_000},
		{ID: "carol", Name: "Carol", BalanceCents: 1_200, LimitCents: 50_000},
	}
}

// env is one test's accounts under a key prefix of its own on the shared
// Redis, and a raw client to look at Redis directly.
type env struct {
	customers []payment.Customer
	rdb       *redis.Client
	prefix    string
	store     *payment.Store
	svc       *payment.Service
}

func newEnv(t testing.TB) *env { return newEnvWith(t, accounts(), payment.ServiceConfig{}) }

func newEnvWith(t testing.TB, customers []payment.Customer, cfg payment.ServiceConfig) *env {
	t.Helper()
	rdb := redistest.Client(t)
	e := &env{customers: customers, rdb: rdb, prefix: redistest.Prefix(t) + ":payment"}
	e.store, e.svc = e.service(t, rdb, cfg)
	if _, err := e.store.Seed(ctx(t), customers); err != nil {
		t.Fatal(err)
	}
	return e
}

// service returns another Store and Service on the same keys, as another
// participant instance would have.
func (e *env) service(t testing.TB, rdb redis.UniversalClient, cfg payment.ServiceConfig) (*payment.Store, *payment.Service) {
	t.Helper()
	st, err := payment.NewStore(payment.Config{Prefix: e.prefix}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := t.(*testing.T); ok {
		return st, payment.NewService(st, cfg, zaptest.NewLogger(tt))
	}
	return st, payment.NewService(st, cfg, nil)
}

// newHandler builds a payment participant's handler under prefix, as the
// sagaflow binary does.
func newHandler(rdb redis.UniversalClient, prefix string) (saga.CommandHandler, error) {
	st, err := payment.NewStore(payment.Config{Prefix: prefix}, rdb, nil)
	if err != nil {
		return nil, err
	}
	return payment.NewService(st, payment.ServiceConfig{}, nil).Handle, nil
}

func ctx(t testing.TB) context.Context { return participanttest.Context(t) }

// money is an account read straight from its Redis hash.
type money struct{ Balance, Captured, Deposited int64 }

func (e *env) money(t testing.TB, id string) money {
	t.Helper()
	n := participanttest.HashInt64s(t, e.rdb, e.prefix+":customer:"+id, "balance", "captured", "deposited")
	return money{n[0], n[1], n[2]}
}

func (e *env) accounts(t testing.TB) map[string]money {
	out := map[string]money{}
	for _, c := range e.customers {
		out[c.ID] = e.money(t, c.ID)
	}
	return out
}

// snapshot returns every key under the prefix with its content.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	return participanttest.Snapshot(t, e.rdb, e.prefix)
}

func (e *env) checkConserved(t testing.TB) {
	t.Helper()
	for _, c := range e.customers {
		m := e.money(t, c.ID)
		if m.Balance < 0 || m.Captured < 0 || m.Deposited != c.BalanceCents || m.Balance+m.Captured != c.BalanceCents {
			t.Errorf("customer %s not conserved: %+v, deposited %d", c.ID, m, c.BalanceCents)
		}
	}
}

// orderJSON is an order of n units at unit cents, so total = n*unit.
func orderJSON(id, customer string, n, unit int64) json.RawMessage {
	return orderRaw(id, customer, n, unit, n*unit, "")
}

func orderRaw(id, customer string, n, unit, total int64, scenario string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"order_id": id, "customer_id": customer,
		"lines":       []map[string]any{{"product_id": "tea", "quantity": n, "unit_price_cents": unit}},
		"total_cents": total, "scenario": scenario, "some_future_field": 1})
	return b
}

var phases = map[string]saga.Phase{payment.TypeChargePayment: saga.PhaseAction, payment.TypeRefundPayment: saga.PhaseCompensation}

func command(typ, sagaID string, payload json.RawMessage) saga.Envelope {
	return saga.Envelope{MessageID: saga.NewMessageID(), SagaID: sagaID, Type: typ, SchemaVersion: saga.SchemaVersion,
		Step: 1, Attempt: 1, Phase: phases[typ], Payload: payload}
}

// reply is the part of a reply that must be the same for every delivery of
// one command.
type reply = participanttest.Reply

// replyCents returns the charged or refunded amount of a reply.
func replyCents(t testing.TB, r reply) int64 {
	t.Helper()
	var v struct {
		Charged  int64 `json:"charged_cents"`
		Refunded int64 `json:"refunded_cents"`
	}
	if r.Result != "" {
		if err := json.Unmarshal([]byte(r.Result), &v); err != nil {
			t.Fatalf("result %q: %v", r.Result, err)
		}
	}
	return v.Charged + v.Refunded
}

func (e *env) handle(t testing.TB, cmd saga.Envelope) reply {
	t.Helper()
	return participanttest.Handle(t, e.svc.Handle, cmd)
}

func (e *env) charge(t testing.TB, id, customer string, n, unit int64) reply {
	t.Helper()
	return e.handle(t, command(payment.TypeChargePayment, id, orderJSON(id, customer, n, unit)))
}

func (e *env) refund(t testing.TB, id, customer string) reply {
	t.Helper()
	return e.handle(t, command(payment.TypeRefundPayment, id, orderJSON(id, customer, 1, 1)))
}

func expect(t testing.TB, r reply, typ string, outcome saga.Outcome, reasonHas string) {
	t.Helper()
	participanttest.Expect(t, r, typ, outcome, reasonHas)
}
