package main

import (
	"flag"
	"os"
	"time"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"

	"github.com/sagaflow/sagaflow/orders"
)

// sagaTimingFlags registers the order saga's timings on fs and returns a
// function that reads them after Parse.
func sagaTimingFlags(fs *flag.FlagSet, def orders.SagaConfig) func() orders.SagaConfig {
	timeout := fs.Duration("step-timeout", def.StepTimeout, "how long one attempt of a step waits for its reply")
	attempts := fs.Int("attempts", def.Attempts, "attempts of each action and each compensation")
	backoff := fs.Duration("backoff", def.Backoff, "wait after a failed attempt, doubling each time")
	maxBackoff := fs.Duration("max-backoff", def.MaxBackoff, "cap of the doubling backoff")
	deadline := fs.Duration("deadline", def.Deadline, "how long a saga may take before it confirms; past it, it compensates")
	parallel := fs.Bool("parallel", !def.Sequential,
		"reserve stock and charge payment at once (one round trip less per order; an order out of stock may be charged, then refunded); false: charge after the stock is reserved")
	await := fs.Bool("await-confirm", def.AwaitConfirm,
		"an order is Confirmed only once stock answered its commit (one round trip more per order); false: the commit goes out with the confirmation and stock applies it just after")
	return func() orders.SagaConfig {
		c := def
		c.StepTimeout, c.Attempts, c.Backoff, c.MaxBackoff, c.Deadline = *timeout, *attempts, *backoff, *maxBackoff, *deadline
		c.Sequential = !*parallel
		c.AwaitConfirm = *await
		return c
	}
}

// httpFlags are the orders service's flags, which `orders` and `demo` share.
type httpFlags struct {
	addr, token *string
	maxBacklog  *time.Duration
	lookupCache *time.Duration
	apiLinger   *time.Duration
	coalesce    *int
}

// ordersFlags registers --addr (default addr, help addrHelp) and
// --operator-token on fs.
func ordersFlags(fs *flag.FlagSet, addr, addrHelp string) *httpFlags {
	return &httpFlags{
		addr:  fs.String("addr", addr, addrHelp),
		token: fs.String("operator-token", "", "bearer token of the operator endpoints (env SAGAFLOW_OPERATOR_TOKEN; prefer the environment, flags show in ps); none: they answer 401"),
		maxBacklog: fs.Duration("max-backlog", 10*time.Second,
			"refuse a new order (503 backlogged) while the running ones would take longer than this to end at the pace they end now; negative: never"),
		lookupCache: fs.Duration("lookup-cache", time.Second,
			"how long POST /orders uses a product's price and a customer it read without reading them again (an order may take a price this old); negative: read them for every order"),
		apiLinger: fs.Duration("api-linger", 0,
			"how long an order's record waits for others to share its request to Kafka before POST /orders answers (librdkafka's linger.ms); "+
				"0 sends at once, and concurrent orders still share requests while earlier ones are in flight (docs/performance.md)"),
		coalesce: fs.Int("redis-coalesce", 1,
			"the requests' Redis calls: at most this many round trips at once; calls that come meanwhile wait and go together as one pipeline when one returns, "+
				"a lone call goes at once. 0: every call its own round trip (docs/performance.md)"),
	}
}

// config is the orders service's configuration; the token comes from the
// environment when the flag is empty.
func (h *httpFlags) config() orders.Config {
	token := *h.token
	if token == "" {
		token = os.Getenv("SAGAFLOW_OPERATOR_TOKEN")
	}
	return orders.Config{OperatorToken: token, MaxBacklog: *h.maxBacklog, LookupCache: *h.lookupCache}
}

// windowFlags registers the retention windows (docs/design.md, "Bounded
// state") on fs and returns a function that reads and checks them after
// Parse. Every service takes all of them, so that each can refuse windows
// that do not nest; each uses the ones it owns.
func windowFlags(fs *flag.FlagSet) func() (wire.Windows, error) {
	d := wire.DefaultWindows()
	w := &wire.Windows{}
	fs.DurationVar(&w.SagaRetention, "saga-retention", d.SagaRetention, "orchestrator: how long an ended saga's id is remembered (duplicate starts ignored), then tombstoned on saga.state")
	fs.DurationVar(&w.IdempotencyTTL, "idempotency-ttl", d.IdempotencyTTL, "orders: how long an Idempotency-Key answers its first response; at most -saga-retention")
	fs.DurationVar(&w.OrderMemory, "order-memory", d.OrderMemory, "orders: how long an ended order stays in the read model's memory")
	fs.DurationVar(&w.OrderTTL, "order-ttl", d.OrderTTL, "orders: how long an ended order is kept in Redis after it left memory; then GET answers 404. About 1.6 KB of Redis an order: lower it at hundreds of orders/s (docs/design.md)")
	fs.DurationVar(&w.CommandRetention, "command-retention", d.CommandRetention, "topics: how long stock.commands and payment.commands keep a command")
	fs.DurationVar(&w.EventRetention, "event-retention", d.EventRetention, "topics: how long orders.events, the reply topics, saga.control and saga.deadletter keep a record (an orchestrator down longer loses the orders placed meanwhile); at least -command-retention")
	fs.DurationVar(&w.DedupTTL, "dedup-ttl", d.DedupTTL, "stock, payment: how long dedup, barrier and per-order records live; at least -command-retention + 1m, and longer than a Failed saga may wait for an operator")
	return func() (wire.Windows, error) { return *w, w.Validate() }
}
