package stock_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

// catalogue is the test catalogue: small quantities so that refusals are
// easy to provoke.
func catalogue() []stock.Product {
	return []stock.Product{
		{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 20},
		{ID: "mug", Name: "Mug", PriceCents: 800, Available: 10},
		{ID: "teapot", Name: "Cast-iron teapot", PriceCents: 4500, Available: 2},
	}
}

// env is one test's stock: a Store under a key prefix of its own on the
// shared Redis, seeded with catalogue(), and a raw client to look at Redis
// directly.
type env struct {
	products []stock.Product
	rdb      *redis.Client
	prefix   string
	store    *stock.Store
	svc      *stock.Service
}

func newEnv(t testing.TB) *env { return newEnvWith(t, catalogue()) }

func newEnvWith(t testing.TB, products []stock.Product) *env {
	t.Helper()
	rdb := redistest.Client(t)
	e := &env{products: products, rdb: rdb, prefix: redistest.Prefix(t) + ":stock"}
	e.store, e.svc = e.service(t, rdb)
	if _, err := e.store.Seed(ctx(t), products); err != nil {
		t.Fatal(err)
	}
	return e
}

// service returns another Store and Service on the same keys, as a second
// instance of the participant would have.
func (e *env) service(t testing.TB, rdb redis.UniversalClient) (*stock.Store, *stock.Service) {
	t.Helper()
	st, err := stock.NewStore(stock.Config{Prefix: e.prefix}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tt, ok := t.(*testing.T); ok {
		return st, stock.NewService(st, zaptest.NewLogger(tt))
	}
	return st, stock.NewService(st, nil)
}

// newHandler builds a stock participant's handler under prefix, as the
// sagaflow binary does.
func newHandler(rdb redis.UniversalClient, prefix string) (saga.CommandHandler, error) {
	st, err := stock.NewStore(stock.Config{Prefix: prefix}, rdb, nil)
	if err != nil {
		return nil, err
	}
	return stock.NewService(st, nil).Handle, nil
}

func ctx(t testing.TB) context.Context { return participanttest.Context(t) }

// counts is a product's quantities read straight from its Redis hash, not
// through the package.
type counts struct{ Available, Reserved, Sold, Stocked int64 }

func (e *env) counts(t testing.TB, id string) counts {
	t.Helper()
	n := participanttest.HashInt64s(t, e.rdb, e.prefix+":product:"+id, "available", "reserved", "sold", "stocked")
	return counts{n[0], n[1], n[2], n[3]}
}

// snapshot returns every key under the prefix with its content, to show
// that a command changed nothing.
func (e *env) snapshot(t testing.TB) map[string]string {
	t.Helper()
	return participanttest.Snapshot(t, e.rdb, e.prefix)
}

func (e *env) checkConserved(t testing.TB) {
	t.Helper()
	for _, p := range e.products {
		c := e.counts(t, p.ID)
		if c.Available < 0 || c.Reserved < 0 || c.Sold < 0 || c.Stocked != p.Available ||
			c.Available+c.Reserved+c.Sold != p.Available {
			t.Errorf("product %s not conserved: %+v, seeded %d", p.ID, c, p.Available)
		}
	}
}

type line = stock.Line

func orderJSON(id string, lines ...line) json.RawMessage {
	ls := make([]map[string]any, len(lines))
	for i, l := range lines {
		ls[i] = map[string]any{"product_id": l.ProductID, "quantity": l.Quantity, "unit_price_cents": 100}
	}
	b, _ := json.Marshal(map[string]any{"order_id": id, "customer_id": "alice", "lines": ls,
		"total_cents": 0, "scenario": "", "some_future_field": true})
	return b
}

var phases = map[string]saga.Phase{
	stock.TypeReserveStock: saga.PhaseAction,
	stock.TypeCommitStock:  saga.PhaseAction,
	stock.TypeReleaseStock: saga.PhaseCompensation,
}

var steps = map[string]int{stock.TypeReserveStock: 0, stock.TypeReleaseStock: 0, stock.TypeCommitStock: 2}

// command makes a command envelope as the orchestrator sends it.
func command(typ, sagaID string, payload json.RawMessage) saga.Envelope {
	return saga.Envelope{MessageID: saga.NewMessageID(), SagaID: sagaID, Type: typ, SchemaVersion: saga.SchemaVersion,
		Step: steps[typ], Attempt: 1, Phase: phases[typ], Payload: payload}
}

// reply is the part of a reply that must be the same for every delivery of
// one command.
type reply = participanttest.Reply

// replyLines returns the quantities a reply says were moved.
func replyLines(t testing.TB, r reply) []line {
	t.Helper()
	var res stock.ReplyResult
	if err := json.Unmarshal([]byte(r.Result), &res); err != nil {
		t.Fatalf("result %q: %v", r.Result, err)
	}
	return res.Lines
}

// handle runs one command and fails the test on an error.
func (e *env) handle(t testing.TB, cmd saga.Envelope) reply {
	t.Helper()
	return participanttest.Handle(t, e.svc.Handle, cmd)
}

func (e *env) reserve(t testing.TB, id string, lines ...line) reply {
	t.Helper()
	return e.handle(t, command(stock.TypeReserveStock, id, orderJSON(id, lines...)))
}

func (e *env) release(t testing.TB, id string, lines ...line) reply {
	t.Helper()
	return e.handle(t, command(stock.TypeReleaseStock, id, orderJSON(id, lines...)))
}

func (e *env) commit(t testing.TB, id string, lines ...line) reply {
	t.Helper()
	return e.handle(t, command(stock.TypeCommitStock, id, orderJSON(id, lines...)))
}

func expect(t testing.TB, r reply, typ string, outcome saga.Outcome, reasonHas string) {
	t.Helper()
	participanttest.Expect(t, r, typ, outcome, reasonHas)
}
