package orders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

const teaForAlice = `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":2}]}`

// API tests: real handlers, real Kafka, real Redis; no orchestrator (the
// orders stay Placed), except in TestEndToEnd.

func TestPlaceOrder(t *testing.T) {
	w := newWorld(t, worldOptions{})
	r := w.post("key-place-1", `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":2},{"product_id":"coffee","quantity":1}],"scenario":""}`)
	if r.status != http.StatusAccepted {
		t.Fatalf("POST: %s", r)
	}
	o := r.order(t)
	if loc := r.header.Get("Location"); loc != "/orders/"+o.OrderID || !strings.HasPrefix(o.OrderID, "ord-") {
		t.Fatalf("Location %q for order %q", loc, o.OrderID)
	}
	// Prices come from the catalogue.
	if o.Status != StatusPlaced || o.TotalCents != 2*450+700 || o.Lines[0].UnitPriceCents != 450 || o.Lines[1].UnitPriceCents != 700 {
		t.Fatalf("order %+v", o)
	}
	if o.Steps == nil || o.History == nil || o.PlacedAt.IsZero() {
		t.Fatalf("order fields missing: %s", r.body)
	}
	if g := w.do(http.MethodGet, "/orders/"+o.OrderID, nil); g.status != http.StatusOK || g.order(t).OrderID != o.OrderID {
		t.Fatalf("GET: %s", g)
	}
	// The OrderPlaced record is the order, as docs/messages.md has it.
	var found int
	for _, rec := range kafkatest.Read(t, w.Brokers, w.Events, kafkatest.ReadCommitted) {
		env, err := saga.Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if env.Type == TypeOrderPlaced && env.SagaID == o.OrderID {
			found++
			p, err := decodeOrderPlaced(env.Payload)
			if err != nil || p.TotalCents != 1600 || p.Lines[1].ProductID != "coffee" {
				t.Fatalf("OrderPlaced body %s: %v", env.Payload, err)
			}
		}
	}
	if found != 1 {
		t.Fatalf("%d OrderPlaced records, want 1", found)
	}
	l := w.do(http.MethodGet, "/orders?status=Placed&limit=5", nil)
	if l.status != http.StatusOK || !strings.Contains(string(l.body), o.OrderID) || strings.Contains(string(l.body), `"lines"`) {
		t.Fatalf("list: %s", l)
	}
}

// GET /orders pages with next_cursor: every order once, newest first.
func TestListOrdersPagesWithACursor(t *testing.T) {
	w := newWorld(t, worldOptions{})
	placed := map[string]bool{}
	for i := range 5 {
		placed[w.place(fmt.Sprintf("page-key-%d", i), teaForAlice).OrderID] = true
	}
	seen := map[string]bool{}
	path := "/orders?limit=2"
	for pages := 1; ; pages++ {
		r := w.do(http.MethodGet, path, nil)
		var page struct {
			Orders []Summary `json:"orders"`
			Next   string    `json:"next_cursor"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &page) != nil || len(page.Orders) > 2 {
			t.Fatalf("GET %s: %s", path, r)
		}
		for _, o := range page.Orders {
			if seen[o.OrderID] {
				t.Fatalf("page %d repeats %s", pages, o.OrderID)
			}
			seen[o.OrderID] = true
		}
		if page.Next == "" {
			if pages != 3 {
				t.Errorf("%d pages of 2 for 5 orders, want 3", pages)
			}
			break
		}
		path = "/orders?limit=2&cursor=" + page.Next
	}
	if len(seen) != len(placed) {
		t.Fatalf("the pages listed %d orders, %d were placed", len(seen), len(placed))
	}
}

// The same Idempotency-Key sent many times, at once and afterwards, makes
// one order: one OrderPlaced on orders.events.
func TestDuplicatePostsMakeOneOrder(t *testing.T) {
	w := newWorld(t, worldOptions{})
	const n = 8
	var wg sync.WaitGroup
	results := make([]response, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = w.post("dup-key", teaForAlice)
		}()
	}
	wg.Wait()
	ids := map[string]bool{}
	for _, r := range results {
		switch r.status {
		case http.StatusAccepted:
			ids[r.order(t).OrderID] = true
		case http.StatusConflict: // the first was still in flight
			r.problem(t)
			if r.header.Get("Retry-After") == "" {
				t.Errorf("409 without Retry-After")
			}
		default:
			t.Fatalf("concurrent duplicate: %s", r)
		}
	}
	again := w.post("dup-key", teaForAlice)
	if again.status != http.StatusAccepted || again.header.Get(idempotency.ReplayedHeader) != "true" {
		t.Fatalf("replay: %s", again)
	}
	ids[again.order(t).OrderID] = true
	if len(ids) != 1 {
		t.Fatalf("one key made orders %v", ids)
	}
	if sent := w.sender.sent.Load(); sent != 1 {
		t.Fatalf("%d records sent, want 1", sent)
	}
	var placed int
	for _, rec := range kafkatest.Read(t, w.Brokers, w.Events, kafkatest.ReadCommitted) {
		if string(rec.Header(saga.HeaderType)) == TypeOrderPlaced {
			placed++
		}
	}
	if placed != 1 {
		t.Fatalf("orders.events holds %d OrderPlaced, want 1", placed)
	}
}

func TestIdempotencyKeyConflicts(t *testing.T) {
	w := newWorld(t, worldOptions{})
	if r := w.post("", teaForAlice); r.status != http.StatusBadRequest {
		t.Fatalf("no key: %s", r)
	} else if p := r.problem(t); len(p.Errors) != 1 || p.Errors[0].Field != "Idempotency-Key" {
		t.Fatalf("no key: %s", r)
	}
	if r := w.post("bad key with spaces", teaForAlice); r.status != http.StatusBadRequest {
		t.Fatalf("malformed key: %s", r)
	}

	w.place("reuse-key", teaForAlice)
	r := w.post("reuse-key", `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":3}]}`)
	if r.status != http.StatusUnprocessableEntity {
		t.Fatalf("same key, other body: %s", r)
	}
	r.problem(t)

	// A retry while the first request is still waiting for Kafka is 409.
	release := w.sender.hold()
	defer release()
	first := make(chan response, 1)
	go func() { first <- w.post("slow-key", teaForAlice) }()
	kafkatest.WaitFor(t, 10*time.Second, "the first request to wait for Kafka", func() bool {
		return w.sender.waiting.Load() == 1
	})
	if r = w.post("slow-key", teaForAlice); r.status != http.StatusConflict {
		t.Fatalf("retry in flight: %s", r)
	}
	r.problem(t)
	release()
	if f := <-first; f.status != http.StatusAccepted {
		t.Fatalf("first request: %s", f)
	}
}

// An order Kafka did not acknowledge is not accepted: the client gets a 503
// it may retry, and the retry with the same key places the order (the
// failure was not recorded as the key's answer).
func TestPlaceOrderWhenKafkaFails(t *testing.T) {
	w := newWorld(t, worldOptions{})
	down := errors.New("broker unreachable (test)")
	w.sender.fail.Store(&down)
	r := w.post("kafka-down", teaForAlice)
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("POST with Kafka down: %s", r)
	}
	r.problem(t)
	if l, _ := w.rm.List("", 10, Cursor{}); len(l) != 0 {
		t.Fatalf("an unacknowledged order is listed: %+v", l)
	}
	w.sender.fail.Store(nil)
	if r := w.post("kafka-down", teaForAlice); r.status != http.StatusAccepted || r.header.Get(idempotency.ReplayedHeader) != "" {
		t.Fatalf("retry after Kafka is back: %s", r)
	}
}

// A handler that panics (a bug) answers a 500 problem, not a cut
// connection.
func TestPanicIsA500Problem(t *testing.T) {
	svc, _ := newLiteService(t, Config{}, nil)
	svc.deps.Catalog = panickingCatalog{}
	rec := httptest.NewRecorder()
	svc.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/products", nil))
	r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if r.status != http.StatusInternalServerError {
		t.Fatalf("panic: %s", r)
	}
	r.problem(t)
}

type panickingCatalog struct{ memCatalog }

func (panickingCatalog) Products(context.Context) ([]Product, error) { panic("bug in the catalogue") }

func TestPlaceOrderValidation(t *testing.T) {
	w := newWorld(t, worldOptions{})
	big := `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1}],"scenario":"` + strings.Repeat("x", 20<<10) + `"}`
	many := `{"customer_id":"alice","lines":[` + strings.Repeat(`{"product_id":"tea","quantity":1},`, 20) + `{"product_id":"tea","quantity":1}]}`
	for i, c := range []struct {
		name, body  string
		status      int
		fields      []string
		contentType string
	}{
		{name: "malformed JSON", body: `{"customer_id":"alice",`, status: 400, fields: []string{"body"}},
		{name: "not JSON", body: `customer=alice`, status: 400, fields: []string{"body"}},
		{name: "empty body", body: ``, status: 400, fields: []string{"body"}},
		{name: "array body", body: `[1,2]`, status: 400, fields: []string{"body"}},
		{name: "trailing data", body: teaForAlice + `{}`, status: 400, fields: []string{"body"}},
		{name: "unknown field", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1}],"price_cents":1}`, status: 400, fields: []string{"price_cents"}},
		{name: "unknown line field", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1,"unit_price_cents":1}]}`, status: 400, fields: []string{"lines[0].unit_price_cents"}},
		{name: "customer not a string", body: `{"customer_id":7,"lines":[{"product_id":"tea","quantity":1}]}`, status: 400, fields: []string{"customer_id"}},
		{name: "quantity a string", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":"2"}]}`, status: 400, fields: []string{"lines[0].quantity"}},
		{name: "line not an object", body: `{"customer_id":"alice","lines":["tea"]}`, status: 400, fields: []string{"lines[0]"}},
		{name: "unknown product", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1},{"product_id":"caviar","quantity":1}]}`, status: 422, fields: []string{"lines[1].product_id"}},
		{name: "unknown customer", body: `{"customer_id":"bob","lines":[{"product_id":"tea","quantity":1}]}`, status: 422, fields: []string{"customer_id"}},
		{name: "missing customer", body: `{"lines":[{"product_id":"tea","quantity":1}]}`, status: 422, fields: []string{"customer_id"}},
		{name: "zero quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":0}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "negative quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":-3}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "quantity above the limit", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1001}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "huge quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":99999999999999999999999999}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "exponent quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1e300}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "fractional quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1.5}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "missing quantity", body: `{"customer_id":"alice","lines":[{"product_id":"tea"}]}`, status: 422, fields: []string{"lines[0].quantity"}},
		{name: "no lines", body: `{"customer_id":"alice","lines":[]}`, status: 422, fields: []string{"lines"}},
		{name: "missing lines", body: `{"customer_id":"alice"}`, status: 422, fields: []string{"lines"}},
		{name: "too many lines", body: many, status: 422, fields: []string{"lines"}},
		{name: "same product twice", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1},{"product_id":"tea","quantity":1}]}`, status: 422, fields: []string{"lines[1].product_id"}},
		{name: "unknown scenario", body: `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1}],"scenario":"explode"}`, status: 422, fields: []string{"scenario"}},
		{name: "several mistakes", body: `{"customer_id":"","lines":[{"product_id":"tea","quantity":0}]}`, status: 422, fields: []string{"customer_id", "lines[0].quantity"}},
		{name: "oversize body", body: big, status: 413, fields: []string{"body"}},
		{name: "form content type", body: teaForAlice, status: 415, fields: []string{"Content-Type"}, contentType: "application/x-www-form-urlencoded"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ct := c.contentType
			if ct == "" {
				ct = "application/json"
			}
			r := w.do(http.MethodPost, "/orders", strings.NewReader(c.body),
				"Content-Type", ct, "Idempotency-Key", fmt.Sprintf("validation-%d", i))
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			p := r.problem(t)
			var got []string
			for _, e := range p.Errors {
				got = append(got, e.Field)
				if e.Detail == "" {
					t.Errorf("field %s without detail", e.Field)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(c.fields) {
				t.Fatalf("fields %v, want %v: %s", got, c.fields, r.body)
			}
		})
	}
	// A body that does not announce its size is cut at the limit too.
	req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/orders", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Idempotency-Key", "validation-chunked")
	res, err := w.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusRequestEntityTooLarge || res.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("chunked oversize body: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if sent := w.sender.sent.Load(); sent != 0 {
		t.Fatalf("invalid requests sent %d records", sent)
	}
}

func TestQueriesAndLookups(t *testing.T) {
	w := newWorld(t, worldOptions{})
	for _, c := range []struct {
		path   string
		status int
		field  string
	}{
		{"/orders?limit=0", 400, "limit"},
		{"/orders?limit=201", 400, "limit"},
		{"/orders?limit=ten", 400, "limit"},
		{"/orders?status=Lost", 400, "status"},
		{"/orders?cursor=not*base64", 400, "cursor"},
		{"/orders?cursor=eCxvcmQtMQ", 400, "cursor"}, // "x,ord-1": no time
		{"/orders/ord-missing", 404, "id"},
		{"/orders/ord-missing/events", 404, "id"},
		{"/customers/bob", 404, "id"},
		{"/no/such/route", 404, ""},
	} {
		r := w.do(http.MethodGet, c.path, nil)
		if r.status != c.status {
			t.Fatalf("GET %s: %s", c.path, r)
		}
		p := r.problem(t)
		if c.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != c.field) {
			t.Fatalf("GET %s: errors %+v, want field %s", c.path, p.Errors, c.field)
		}
	}
	r := w.do(http.MethodDelete, "/orders", nil)
	if r.status != http.StatusMethodNotAllowed || !strings.Contains(r.header.Get("Allow"), "POST") {
		t.Fatalf("DELETE /orders: %s %v", r, r.header)
	}
	r.problem(t)

	if r := w.do(http.MethodGet, "/products", nil); r.status != 200 || !strings.Contains(string(r.body), `"price_cents":450`) {
		t.Fatalf("products: %s", r)
	}
	if r := w.do(http.MethodGet, "/customers", nil); r.status != 200 || !strings.Contains(string(r.body), `"id":"broke"`) {
		t.Fatalf("customers: %s", r)
	}
	if r := w.do(http.MethodGet, "/customers/alice", nil); r.status != 200 || !strings.Contains(string(r.body), `"balance_cents":10000`) {
		t.Fatalf("customer: %s", r)
	}
	if r := w.do(http.MethodGet, "/healthz", nil); r.status != 200 {
		t.Fatalf("healthz: %s", r)
	}
	if r := w.do(http.MethodGet, "/readyz", nil); r.status != 200 || !strings.Contains(string(r.body), `"redis":"ok"`) {
		t.Fatalf("readyz: %s", r)
	}
	w.place("metrics-key", teaForAlice)
	m := w.do(http.MethodGet, "/metrics", nil)
	for _, want := range []string{
		"sagaflow_orders_placed_total 1\n",
		`sagaflow_orders{status="Placed"} 1`,
		`sagaflow_http_requests_total{route="POST /orders",status="202"} 1`,
		`sagaflow_http_requests_total{route="GET /orders",status="400"} 6`,
		`sagaflow_http_requests_total{route="unmatched",status="405"} 1`,
	} {
		if !strings.Contains(string(m.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, m.body)
		}
	}
}

func TestReadyzFailsWhenADependencyIsDown(t *testing.T) {
	svc, _ := newLiteService(t, Config{ReadyTimeout: 200 * time.Millisecond}, map[string]Check{
		"redis": func(context.Context) error { return nil },
		"kafka": func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
	})
	rec := httptest.NewRecorder()
	svc.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	if r.status != http.StatusServiceUnavailable || !strings.Contains(string(r.body), `"kafka":"context deadline exceeded"`) {
		t.Fatalf("readyz: %s", r)
	}
	r.problem(t)
}

// With MaxInFlight orders waiting on a stalled Kafka, the next POST is
// answered 503 with Retry-After at once, not after a timeout; once Kafka
// answers again the same key places the order, without a restart.
func TestPlaceOrderShedsLoadWhileKafkaStalls(t *testing.T) {
	w := newWorld(t, worldOptions{cfg: Config{MaxInFlight: 2}})
	release := w.sender.hold()
	defer release()
	held := make(chan response, 2)
	for i := range 2 {
		go func() { held <- w.post("held-"+strconv.Itoa(i), teaForAlice) }()
	}
	kafkatest.WaitFor(t, 10*time.Second, "two requests to wait for Kafka", func() bool {
		return w.sender.waiting.Load() == 2
	})
	start := time.Now()
	r := w.post("shed-key", teaForAlice)
	if took := time.Since(start); r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" || took > 2*time.Second {
		t.Fatalf("POST beyond MaxInFlight: %s after %s, want a prompt 503 with Retry-After", r, took)
	}
	if p := r.problem(t); p.Type == "" || !strings.Contains(p.Type, "overloaded") {
		t.Errorf("problem type %q, want overloaded", p.Type)
	}
	release()
	for range 2 {
		if r := <-held; r.status != http.StatusAccepted {
			t.Fatalf("held request after Kafka came back: %s", r)
		}
	}
	if r := w.post("shed-key", teaForAlice); r.status != http.StatusAccepted {
		t.Fatalf("retry of the shed request: %s", r)
	}
}

// A POST while the running orders would take longer than MaxBacklog to end
// at their pace is refused at once (503 backlogged, before Redis is asked);
// once they end fast enough, the same request goes through to the next
// stage (here the idempotency store, which this lite service cannot reach).
func TestPlaceOrderRefusedWhileBacklogged(t *testing.T) {
	post := func(svc *Service) response {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/orders", strings.NewReader(teaForAlice))
		req.Header.Set("Idempotency-Key", "backlog-key")
		svc.ServeHTTP(rec, req)
		return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	}
	svc, m := newLiteService(t, Config{}, nil)
	if p := post(svc).problem(t); strings.Contains(p.Type, "backlogged") {
		t.Fatalf("refused with no order running: %+v", p)
	}
	m.mu.Lock()
	for i := range backlogFloor + 50 {
		m.create(OrderPlaced{OrderID: "running-" + strconv.Itoa(i), CustomerID: "alice"}, time.Now())
	}
	m.mu.Unlock()

	r := post(svc)
	if p := r.problem(t); r.status != http.StatusServiceUnavailable || !strings.Contains(p.Type, "backlogged") ||
		r.header.Get("Retry-After") == "" || !strings.Contains(p.Detail, "none ended") {
		t.Fatalf("150 running, none ending: %s, want 503 backlogged with Retry-After", r)
	}

	// 10 ends a second: 150 running take 15 s, over the default 10 s.
	m.mu.Lock()
	for range 100 {
		m.pace.add(time.Now().Add(-2 * time.Second))
	}
	m.mu.Unlock()
	if p := post(svc).problem(t); !strings.Contains(p.Type, "backlogged") || !strings.Contains(p.Detail, "about 15s") {
		t.Fatalf("150 running at 10/s: %+v, want backlogged, a 15s wait", p)
	}
	// 30 a second: 5 s, under it.
	m.mu.Lock()
	for range 200 {
		m.pace.add(time.Now().Add(-3 * time.Second))
	}
	m.mu.Unlock()
	if p := post(svc).problem(t); strings.Contains(p.Type, "backlogged") {
		t.Fatalf("150 running at 30/s refused: %+v", p)
	}

	off, m2 := newLiteService(t, Config{MaxBacklog: -1}, nil)
	m2.mu.Lock()
	for i := range backlogFloor + 50 {
		m2.create(OrderPlaced{OrderID: "running-" + strconv.Itoa(i), CustomerID: "alice"}, time.Now())
	}
	m2.mu.Unlock()
	if p := post(off).problem(t); strings.Contains(p.Type, "backlogged") {
		t.Fatalf("refused with MaxBacklog < 0: %+v", p)
	}
}

// The pace counts the whole seconds of the window before now's, not the
// current one (still filling) nor older ones.
func TestPaceCountsTheLastWholeSeconds(t *testing.T) {
	var p pace
	now := time.Unix(1_000_000, 500_000_000)
	p.add(now.Add(-(paceWindow + 1) * time.Second)) // too old by the time of now
	p.add(now.Add(-paceWindow * time.Second))       // counted, the window's oldest
	p.add(now.Add(-time.Second))                    // counted
	p.add(now)                                      // this second: not yet
	if got, want := p.rate(now), 2.0/paceWindow; got != want {
		t.Fatalf("rate %v, want %v", got, want)
	}
}
