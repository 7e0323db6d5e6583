package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// The run's own catalogue and customers, seeded into its own Redis.
const (
	products      = 6
	customers     = 6
	scarceProduct = "chaos-scarce" // runs out during a run: real refusals race with reservations
	emptyProduct  = "chaos-empty"  // never in stock
	poorCustomer  = "chaos-poor"   // no money: declined
	scarceStock   = 40
	plenty        = int64(1_000_000_000)
	unitPrice     = int64(250)
)

func productID(i int) string  { return "chaos-p" + strconv.Itoa(i) }
func customerID(i int) string { return "chaos-c" + strconv.Itoa(i) }

// order is one order as its client saw it.
type order struct {
	Key, Customer, Product string
	Qty                    int64
	ID                     string
	Placed, Accepted       time.Time // first POST, first 2xx
	Ended                  time.Time
	Outcome                string
	GaveUp                 bool // no 2xx within the client's patience
}

// traffic is the clients.
type traffic struct {
	url    string
	client *http.Client
	runID  string
	dupP   float64

	rngMu sync.Mutex
	rng   *rand.Rand
	seq   atomic.Int64

	mu         sync.Mutex
	byKey      map[string]*order
	byID       map[string]*order
	early      map[string]endEvent
	violations []Violation
	statuses   map[string]int // answers other than the first 2xx, by kind
	refusedAt  []time.Time    // when each of those came
	posts      atomic.Int64
	taken      atomic.Int64 // orders accepted
	duplicates atomic.Int64 // deliberate second POSTs
}

type endEvent struct {
	at      time.Time
	outcome string
}

func newTraffic(url string, seed uint64, runID string) *traffic {
	return &traffic{url: strings.TrimSuffix(url, "/") + "/orders", runID: runID, dupP: 0.08,
		client: &http.Client{Timeout: 5 * time.Second},
		rng:    rand.New(rand.NewPCG(seed, 0x7aff1c)),
		byKey:  map[string]*order{}, byID: map[string]*order{}, early: map[string]endEvent{}, statuses: map[string]int{}}
}

// next draws an order from the mix: about 10% declined, 10% for a product
// never in stock, 10% for one that runs out, the rest should complete.
func (t *traffic) next() *order {
	t.rngMu.Lock()
	x, c, p, q := t.rng.Float64(), t.rng.IntN(customers), t.rng.IntN(products), 1+t.rng.Int64N(3)
	t.rngMu.Unlock()
	o := &order{Key: fmt.Sprintf("chaos-%s-%d", t.runID, t.seq.Add(1)), Customer: customerID(c), Product: productID(p), Qty: q}
	switch {
	case x < 0.10:
		o.Customer = poorCustomer
	case x < 0.20:
		o.Product = emptyProduct
	case x < 0.30:
		o.Product, o.Qty = scarceProduct, 1
	}
	return o
}

func (t *traffic) chance(p float64) bool {
	t.rngMu.Lock()
	defer t.rngMu.Unlock()
	return t.rng.Float64() < p
}

// run offers orders at rate with at most clients in flight until ctx ends.
func (t *traffic) run(ctx context.Context, rate float64, clients int) {
	interval := time.Duration(float64(time.Second) / rate)
	sem := make(chan struct{}, clients)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			t.place(ctx, t.next())
		}()
	}
}

// place posts o until it is accepted, retrying with the same key and body
// after 503s, 409s, 5xx and timeouts for up to a minute, then perhaps posts
// it once more on purpose: both must name the same order.
func (t *traffic) place(ctx context.Context, o *order) {
	o.Placed = time.Now()
	t.mu.Lock()
	t.byKey[o.Key] = o
	t.mu.Unlock()
	id, ok := t.post(ctx, o, time.Minute)
	if !ok {
		t.mu.Lock()
		o.GaveUp = true
		t.mu.Unlock()
		return
	}
	t.accepted(o, id)
	if t.chance(t.dupP) {
		t.duplicates.Add(1)
		if id2, ok := t.post(ctx, o, 30*time.Second); ok && id2 != id {
			t.violate("two-orders-one-key", "%s: POST answered %s, the same POST again %s", o.Key, id, id2)
		}
	}
}

func (t *traffic) accepted(o *order, id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	o.ID, o.Accepted = id, time.Now()
	t.taken.Add(1)
	if other, ok := t.byID[id]; ok && other != o {
		t.violations = append(t.violations, Violation{Kind: "two-keys-one-order", Detail: fmt.Sprintf("%s and %s both got %s", other.Key, o.Key, id)})
	}
	t.byID[id] = o
	if e, ok := t.early[id]; ok {
		delete(t.early, id)
		o.Ended, o.Outcome = e.at, e.outcome
	}
}

func (t *traffic) violate(kind, format string, args ...any) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.violations = append(t.violations, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

func (t *traffic) count(status string) {
	t.mu.Lock()
	t.statuses[status]++
	t.refusedAt = append(t.refusedAt, time.Now())
	t.mu.Unlock()
}

// post sends o's POST until a 2xx, a refusal, or patience runs out.
func (t *traffic) post(ctx context.Context, o *order, patience time.Duration) (string, bool) {
	body, _ := json.Marshal(map[string]any{"customer_id": o.Customer,
		"lines": []map[string]any{{"product_id": o.Product, "quantity": o.Qty}}})
	deadline := time.Now().Add(patience)
	backoff := 100 * time.Millisecond
	for {
		id, status, retry := t.postOnce(ctx, o.Key, body)
		if id != "" {
			return id, true
		}
		t.count(status)
		if !retry {
			t.violate("valid-order-refused", "%s: %s", o.Key, status)
			return "", false
		}
		if time.Now().Add(backoff).After(deadline) {
			return "", false
		}
		// Patience outlives the run's load window: a client does not drop
		// its order because the test's traffic phase ended.
		time.Sleep(backoff)
		backoff = min(2*backoff, 2*time.Second)
	}
}

// postOnce returns the order id of a 2xx, or what happened and whether a
// client would try again.
func (t *traffic) postOnce(ctx context.Context, key string, body []byte) (id, status string, retry bool) {
	t.posts.Add(1)
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return "", err.Error(), false
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", key)
	res, err := t.client.Do(req)
	if err != nil {
		return "", "no answer", true
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if res.StatusCode/100 == 2 {
		var placed struct {
			OrderID string `json:"order_id"`
		}
		if json.Unmarshal(b, &placed) == nil && placed.OrderID != "" {
			return placed.OrderID, "", false
		}
		return "", res.Status + " without an order id", false
	}
	switch res.StatusCode {
	case http.StatusServiceUnavailable, http.StatusConflict, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway, http.StatusGatewayTimeout:
		return "", res.Status + problemKind(b), true
	}
	return "", res.Status + ": " + strings.TrimSpace(string(b)), false
}

// problemKind names the kind of a problem+json answer, e.g. " (backlogged)"
// for urn:sagaflow:problem:backlogged, so that the report tells a 503 that
// shed load from one of a dependency that could not be reached. Empty when
// the body is no problem.
func problemKind(body []byte) string {
	var p struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(body, &p) != nil || p.Type == "" {
		return ""
	}
	return " (" + p.Type[strings.LastIndex(p.Type, ":")+1:] + ")"
}

// onEvent is the follower's callback on the events topic.
func (t *traffic) onEvent(rec kafkatx.Record) {
	var oc string
	switch string(rec.Header(saga.HeaderType)) {
	case orders.TypeOrderConfirmed:
		oc = "completed"
	case orders.TypeOrderCancelled:
		oc = "cancelled"
	case orders.TypeOrderFailed:
		oc = "failed"
	default:
		return
	}
	id, now := string(rec.Key), time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if o, ok := t.byID[id]; ok {
		if o.Outcome == "" {
			o.Ended, o.Outcome = now, oc
		}
		return
	}
	if _, ok := t.early[id]; !ok {
		t.early[id] = endEvent{now, oc}
	}
}

// snapshot is a copy of the orders, for checks and the report.
func (t *traffic) snapshot() []order {
	t.mu.Lock()
	defer t.mu.Unlock()
	os := make([]order, 0, len(t.byKey))
	for _, o := range t.byKey {
		os = append(os, *o)
	}
	return os
}

// unfinished counts accepted orders without an end event.
func (t *traffic) unfinished() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, o := range t.byID {
		if o.Outcome == "" {
			n++
		}
	}
	return n
}
