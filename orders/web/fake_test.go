package web_test

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/sagaflow/sagaflow/orders/web"
)

// fakeAPI is the orders API of docs/http-api.md in memory, with a scripted
// saga in place of Kafka, the orchestrator and the participants: each step
// takes stepDelay, and the outcomes follow the same rules as the real
// participants (not enough stock, not enough money or over the per-order
// limit, a payment that never answers for scenario "slow-payment"). It lets
// the page be developed and tested, in every scenario, with no
// infrastructure; the browser test against the real stack proves the page
// against the real API.
type fakeAPI struct {
	stepDelay time.Duration // between two saga transitions
	timeout   time.Duration // the payment step's timeout in "slow-payment"

	mu        sync.Mutex
	products  []*fakeProduct
	customers []*fakeCustomer
	orders    map[string]*apiOrder
	keys      map[string]fakeKey
	subs      map[chan []byte]string // subscriber -> order id, or "" for all orders
	seq       int
}

type fakeProduct struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Available  int    `json:"available"`
	Reserved   int    `json:"reserved"`
	Sold       int    `json:"sold"`
}

type fakeCustomer struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	BalanceCents    int64  `json:"balance_cents"`
	OrderLimitCents int64  `json:"order_limit_cents"`
}

type fakeKey struct {
	body    string
	orderID string
}

type apiLine struct {
	ProductID      string `json:"product_id"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents,omitempty"`
}

type apiStep struct {
	Name        string `json:"name"`
	Status      string `json:"status"`
	Attempt     int    `json:"attempt"`
	Limit       int    `json:"limit"`
	Compensable bool   `json:"compensable"`
}

type apiChange struct {
	At    time.Time `json:"at"`
	From  string    `json:"from"`
	To    string    `json:"to"`
	Step  int       `json:"step"`
	Cause string    `json:"cause"`
}

type apiOrder struct {
	OrderID    string      `json:"order_id"`
	CustomerID string      `json:"customer_id"`
	Scenario   string      `json:"scenario"`
	Lines      []apiLine   `json:"lines"`
	TotalCents int64       `json:"total_cents"`
	Status     string      `json:"status"`
	Reason     string      `json:"reason"`
	PlacedAt   time.Time   `json:"placed_at"`
	UpdatedAt  time.Time   `json:"updated_at"`
	Steps      []apiStep   `json:"steps"`
	History    []apiChange `json:"history"`
}

type apiSummary struct {
	OrderID     string    `json:"order_id"`
	CustomerID  string    `json:"customer_id"`
	Scenario    string    `json:"scenario"`
	TotalCents  int64     `json:"total_cents"`
	Status      string    `json:"status"`
	Reason      string    `json:"reason"`
	PlacedAt    time.Time `json:"placed_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Step        string    `json:"step"`
	ActiveSteps []string  `json:"active_steps"`
}

func (o *apiOrder) summary() apiSummary {
	s := apiSummary{OrderID: o.OrderID, CustomerID: o.CustomerID, Scenario: o.Scenario, TotalCents: o.TotalCents,
		Status: o.Status, Reason: o.Reason, PlacedAt: o.PlacedAt, UpdatedAt: o.UpdatedAt}
	s.ActiveSteps = []string{}
	for _, st := range o.Steps {
		if st.Status == "Running" || st.Status == "Compensating" {
			if s.Step == "" {
				s.Step = st.Name
			}
			s.ActiveSteps = append(s.ActiveSteps, st.Name)
		}
	}
	return s
}

func (o *apiOrder) clone() *apiOrder {
	c := *o
	c.Lines = append([]apiLine(nil), o.Lines...)
	c.Steps = append([]apiStep(nil), o.Steps...)
	c.History = append([]apiChange(nil), o.History...)
	return &c
}

// The seed: "mug" is the scarce product, "bob" the customer without money.
func newFakeAPI(stepDelay, timeout time.Duration) *fakeAPI {
	return &fakeAPI{
		stepDelay: stepDelay,
		timeout:   timeout,
		products: []*fakeProduct{
			{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 40},
			{ID: "coffee", Name: "Coffee beans", PriceCents: 1299, Available: 25},
			{ID: "mug", Name: "Hand-made mug", PriceCents: 2400, Available: 3},
		},
		customers: []*fakeCustomer{
			{ID: "alice", Name: "Alice", BalanceCents: 20000, OrderLimitCents: 10000},
			{ID: "bob", Name: "Bob", BalanceCents: 500, OrderLimitCents: 10000},
			{ID: "carol", Name: "Carol", BalanceCents: 100000, OrderLimitCents: 2000},
		},
		orders: map[string]*apiOrder{},
		keys:   map[string]fakeKey{},
		subs:   map[chan []byte]string{},
	}
}

func (f *fakeAPI) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /orders", f.placeOrder)
	mux.HandleFunc("GET /orders", f.listOrders)
	mux.HandleFunc("GET /orders/{id}", f.getOrder)
	mux.HandleFunc("GET /orders/{id}/events", f.orderEvents)
	mux.HandleFunc("GET /events", f.allEvents)
	mux.HandleFunc("GET /products", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"products": f.products})
	})
	mux.HandleFunc("GET /customers", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"customers": f.customers})
	})
	mux.Handle("GET /", web.Handler())
	return mux
}

// start serves the fake on a random port until the test ends.
func (f *fakeAPI) start(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(f.handler())
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv.URL
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

type fieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

func writeProblem(w http.ResponseWriter, status int, title, detail string, errs ...fieldError) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": title, "status": status, "detail": detail, "errors": errs,
	})
}

func (f *fakeAPI) placeOrder(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("Idempotency-Key")
	if key == "" {
		writeProblem(w, http.StatusBadRequest, "Missing Idempotency-Key", "", fieldError{"Idempotency-Key", "is required"})
		return
	}
	var body struct {
		CustomerID string    `json:"customer_id"`
		Lines      []apiLine `json:"lines"`
		Scenario   string    `json:"scenario"`
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
	if err != nil || json.Unmarshal(raw, &body) != nil {
		writeProblem(w, http.StatusBadRequest, "Malformed JSON", "the body is not an order")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if k, ok := f.keys[key]; ok {
		if k.body != string(raw) {
			writeProblem(w, http.StatusUnprocessableEntity, "Idempotency-Key reused", "this key was used for another order")
			return
		}
		w.Header().Set("Location", "/orders/"+k.orderID)
		writeJSON(w, http.StatusAccepted, f.orders[k.orderID])
		return
	}
	var errs []fieldError
	var customer *fakeCustomer
	for _, c := range f.customers {
		if c.ID == body.CustomerID {
			customer = c
		}
	}
	if customer == nil {
		errs = append(errs, fieldError{"customer_id", fmt.Sprintf("no customer %q", body.CustomerID)})
	}
	if len(body.Lines) == 0 {
		errs = append(errs, fieldError{"lines", "must have at least one line"})
	}
	if body.Scenario != "" && body.Scenario != "slow-payment" {
		errs = append(errs, fieldError{"scenario", `must be "" or "slow-payment"`})
	}
	var total int64
	lines := make([]apiLine, 0, len(body.Lines))
	for i, l := range body.Lines {
		p := f.product(l.ProductID)
		if p == nil {
			errs = append(errs, fieldError{fmt.Sprintf("lines[%d].product_id", i), fmt.Sprintf("no product %q", l.ProductID)})
			continue
		}
		if l.Quantity < 1 || l.Quantity > 1000 {
			errs = append(errs, fieldError{fmt.Sprintf("lines[%d].quantity", i), "must be between 1 and 1000"})
			continue
		}
		lines = append(lines, apiLine{ProductID: p.ID, Quantity: l.Quantity, UnitPriceCents: p.PriceCents})
		total += p.PriceCents * int64(l.Quantity)
	}
	if len(errs) > 0 {
		writeProblem(w, http.StatusBadRequest, "Invalid order", fmt.Sprintf("%d field(s) are not valid.", len(errs)), errs...)
		return
	}
	f.seq++
	now := time.Now().UTC()
	o := &apiOrder{
		OrderID: fmt.Sprintf("ord-%s-%03d", randomHex(4), f.seq), CustomerID: customer.ID, Scenario: body.Scenario,
		Lines: lines, TotalCents: total, Status: "Placed", PlacedAt: now, UpdatedAt: now,
		Steps: []apiStep{}, History: []apiChange{},
	}
	f.orders[o.OrderID] = o
	f.keys[key] = fakeKey{body: string(raw), orderID: o.OrderID}
	f.publish(o)
	go f.run(o.OrderID)
	w.Header().Set("Location", "/orders/"+o.OrderID)
	writeJSON(w, http.StatusAccepted, o)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (f *fakeAPI) product(id string) *fakeProduct {
	for _, p := range f.products {
		if p.ID == id {
			return p
		}
	}
	return nil
}

func (f *fakeAPI) customer(id string) *fakeCustomer {
	for _, c := range f.customers {
		if c.ID == id {
			return c
		}
	}
	return nil
}

// run plays the saga of one order, the way the orchestrator and the
// participants would, with the causes saga.Transition writes.
func (f *fakeAPI) run(id string) {
	// change applies one transition under the lock and publishes it.
	change := func(to string, step int, cause string, edit func(o *apiOrder)) {
		time.Sleep(f.stepDelay)
		f.mu.Lock()
		defer f.mu.Unlock()
		o := f.orders[id].clone()
		from := o.Status
		if from == "Placed" {
			from = "Started"
		}
		edit(o)
		now := time.Now().UTC()
		o.History = append(o.History, apiChange{At: now, From: from, To: to, Step: step, Cause: cause})
		o.Status = to
		o.UpdatedAt = now
		f.orders[id] = o
		f.publish(o)
	}
	f.mu.Lock()
	o := f.orders[id].clone()
	f.mu.Unlock()

	change("Running", 0, "saga started", func(o *apiOrder) {
		o.Steps = []apiStep{
			{Name: "reserve-stock", Status: "Running", Attempt: 1, Limit: 3, Compensable: true},
			{Name: "charge-payment", Status: "Pending", Limit: 0, Compensable: true},
			{Name: "confirm-order", Status: "Pending", Limit: 0},
		}
	})

	// Step 1: reserve stock.
	f.mu.Lock()
	short := ""
	for _, l := range o.Lines {
		if p := f.product(l.ProductID); p.Available < l.Quantity {
			short = fmt.Sprintf("insufficient stock: %d %s wanted, %d available", l.Quantity, p.ID, p.Available)
			break
		}
	}
	if short == "" {
		for _, l := range o.Lines {
			p := f.product(l.ProductID)
			p.Available -= l.Quantity
			p.Reserved += l.Quantity
		}
	}
	f.mu.Unlock()
	if short != "" {
		reason := "step reserve-stock failed: " + short
		change("Cancelled", 0, reason, func(o *apiOrder) {
			o.Steps[0].Status = "Failed"
			o.Steps[1].Status = "Skipped"
			o.Steps[2].Status = "Skipped"
			o.Reason = reason
		})
		return
	}
	change("Running", 1, "step reserve-stock succeeded", func(o *apiOrder) {
		o.Steps[0].Status = "Done"
		o.Steps[1] = apiStep{Name: "charge-payment", Status: "Running", Attempt: 1, Limit: 3, Compensable: true}
	})

	releaseStock := func() {
		change("Compensating", 0, "step charge-payment compensated", func(o *apiOrder) {
			o.Steps[1].Status = "Compensated"
			o.Steps[0] = apiStep{Name: "reserve-stock", Status: "Compensating", Attempt: 1, Limit: 5, Compensable: true}
		})
		f.mu.Lock()
		for _, l := range o.Lines {
			p := f.product(l.ProductID)
			p.Available += l.Quantity
			p.Reserved -= l.Quantity
		}
		f.mu.Unlock()
		change("Cancelled", 0, "step reserve-stock compensated", func(o *apiOrder) {
			o.Steps[0].Status = "Compensated"
		})
	}

	// Step 2: charge payment.
	if o.Scenario == "slow-payment" {
		for a := 1; a <= 3; a++ {
			time.Sleep(f.timeout - f.stepDelay)
			if a < 3 {
				change("Running", 1, fmt.Sprintf("step charge-payment timed out after %s (attempt %d/3); retrying in %s", f.timeout, a, f.stepDelay), func(o *apiOrder) {})
				change("Running", 1, fmt.Sprintf("backoff over, retrying step charge-payment (attempt %d/3)", a+1), func(o *apiOrder) {
					o.Steps[1].Attempt = a + 1
				})
				continue
			}
			reason := fmt.Sprintf("step charge-payment timed out after %s (attempt 3/3)", f.timeout)
			change("Compensating", 1, reason, func(o *apiOrder) {
				o.Reason = reason
				o.Steps[1] = apiStep{Name: "charge-payment", Status: "Compensating", Attempt: 1, Limit: 5, Compensable: true}
				o.Steps[2].Status = "Skipped"
			})
		}
		releaseStock()
		return
	}
	f.mu.Lock()
	c := f.customer(o.CustomerID)
	declined := ""
	switch {
	case o.TotalCents > c.OrderLimitCents:
		declined = fmt.Sprintf("over the per-order limit: %d cents > %d cents", o.TotalCents, c.OrderLimitCents)
	case o.TotalCents > c.BalanceCents:
		declined = fmt.Sprintf("insufficient funds: balance %d cents < %d cents", c.BalanceCents, o.TotalCents)
	default:
		c.BalanceCents -= o.TotalCents
	}
	f.mu.Unlock()
	if declined != "" {
		reason := "step charge-payment failed: " + declined
		change("Compensating", 0, reason, func(o *apiOrder) {
			o.Reason = reason
			o.Steps[1].Status = "Failed"
			o.Steps[2].Status = "Skipped"
			o.Steps[0] = apiStep{Name: "reserve-stock", Status: "Compensating", Attempt: 1, Limit: 5, Compensable: true}
		})
		f.mu.Lock()
		for _, l := range o.Lines {
			p := f.product(l.ProductID)
			p.Available += l.Quantity
			p.Reserved -= l.Quantity
		}
		f.mu.Unlock()
		change("Cancelled", 0, "step reserve-stock compensated", func(o *apiOrder) {
			o.Steps[0].Status = "Compensated"
		})
		return
	}
	// Step 3: confirm, which takes no reply: the order is Completed as it
	// is sent, and stock sells the items just after.
	change("Completed", 2, "step charge-payment succeeded; step confirm-order sent (it takes no reply)", func(o *apiOrder) {
		o.Steps[1].Status = "Done"
		o.Steps[2] = apiStep{Name: "confirm-order", Status: "Done", Attempt: 1, Limit: 3}
	})
	f.mu.Lock()
	for _, l := range o.Lines {
		p := f.product(l.ProductID)
		p.Reserved -= l.Quantity
		p.Sold += l.Quantity
	}
	f.mu.Unlock()
}

// publish sends o to its watchers and its summary to the watchers of all
// orders. Called with f.mu held.
func (f *fakeAPI) publish(o *apiOrder) {
	full, _ := json.Marshal(o)
	sum, _ := json.Marshal(o.summary())
	for ch, id := range f.subs {
		msg := sum
		if id != "" {
			if id != o.OrderID {
				continue
			}
			msg = full
		}
		select {
		case ch <- msg:
		default: // a slow client misses an update; the next one carries the state
		}
	}
}

func (f *fakeAPI) listOrders(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []apiSummary{}
	for _, o := range f.orders {
		out = append(out, o.summary())
	}
	// Newest first.
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].PlacedAt.After(out[j-1].PlacedAt); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"orders": out})
}

func (f *fakeAPI) getOrder(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o, ok := f.orders[r.PathValue("id")]
	if !ok {
		writeProblem(w, http.StatusNotFound, "No such order", r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func (f *fakeAPI) orderEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	o, ok := f.orders[id]
	var first []byte
	if ok {
		first, _ = json.Marshal(o)
	}
	f.mu.Unlock()
	if !ok {
		writeProblem(w, http.StatusNotFound, "No such order", id)
		return
	}
	f.stream(w, r, id, first)
}

func (f *fakeAPI) allEvents(w http.ResponseWriter, r *http.Request) {
	f.stream(w, r, "", nil)
}

// stream writes Server-Sent Events: first, then every update for id ("" for
// all orders), until the client goes away.
func (f *fakeAPI) stream(w http.ResponseWriter, r *http.Request, id string, first []byte) {
	ch := make(chan []byte, 64)
	f.mu.Lock()
	f.subs[ch] = id
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	send := func(data []byte) bool {
		if _, err := fmt.Fprintf(w, "event: order\ndata: %s\n\n", data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if first != nil && !send(first) {
		return
	} else if first == nil {
		_, _ = fmt.Fprint(w, ": connected\n\n")
		_ = rc.Flush()
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case data := <-ch:
			if !send(data) {
				return
			}
		}
	}
}

// TestServeFake serves the page on the fake API for working on the page by
// hand: SAGAFLOW_WEB_SERVE=127.0.0.1:8089 go test -run TestServeFake -timeout 0 ./orders/web
// It does nothing without that variable.
func TestServeFake(t *testing.T) {
	addr := os.Getenv("SAGAFLOW_WEB_SERVE")
	if addr == "" {
		t.Skip("set SAGAFLOW_WEB_SERVE=host:port to serve the page on the fake API")
	}
	f := newFakeAPI(700*time.Millisecond, 2*time.Second)
	t.Logf("serving the page on the fake API at http://%s/", addr)
	if err := http.ListenAndServe(addr, f.handler()); err != nil {
		t.Fatal(err)
	}
}

// TestBrowserFakeAPI runs every scenario of the page in Chromium against the
// fake API: it needs no Kafka or Redis, so it also shows the scenarios the
// real-stack test leaves out (out of stock, a payment that answers too late,
// a refused form).
func TestBrowserFakeAPI(t *testing.T) {
	f := newFakeAPI(120*time.Millisecond, 500*time.Millisecond)
	p := openPage(t, f.start(t))
	start := p.waitFor("the panels show the catalogue", 10*time.Second, func(s pageState) error {
		if len(s.Stock) != 3 || len(s.Balances) != 3 {
			return fmt.Errorf("stock %v, balances %v", s.Stock, s.Balances)
		}
		return nil
	})
	p.screenshot("0-start")

	// A refused form: the problem+json errors appear next to their fields.
	p.fillForm("ok", "alice", map[string]int{"tea": 5000})
	p.do("click Place order", chromedp.Click(chromedp.CSS(`#place-order`)))
	s := p.waitFor("the quantity error shows", 10*time.Second, func(s pageState) error {
		if !strings.Contains(s.Errors["error-lines"], "Green tea: quantity must be between 1 and 1000") {
			return fmt.Errorf("errors %v", s.Errors)
		}
		return nil
	})
	if fmt.Sprint(s.Invalid) != "[qty-tea]" {
		t.Errorf("fields marked invalid: %v, want [qty-tea]", s.Invalid)
	}
	if !strings.Contains(s.Errors["form-errors"], "Invalid order") {
		t.Errorf("the error box says %q, want the problem's title", s.Errors["form-errors"])
	}
	p.screenshot("1-refused")

	// Everything works.
	p.fillForm("ok", "alice", map[string]int{"tea": 2})
	id := p.placeOrder()
	s = p.waitEnded(id, 10*time.Second)
	if s.OrderStatus != "Completed" {
		t.Fatalf("order %s is %s, want Completed; banner: %s", id, s.OrderStatus, s.BannerText)
	}
	expectSteps(t, s, map[string]string{"reserve-stock": "done", "charge-payment": "done", "confirm-order": "done"})
	expectBanner(t, s, "Completed", "Alice was charged €9.00")
	// The confirmation takes no reply; the history says what that means.
	if h := strings.Join(s.History, "\n"); !strings.Contains(h, "The order was confirmed; the stock service now turns the reserved items into sold ones.") {
		t.Errorf("history does not explain the confirmation sent without waiting: %q", s.History)
	}
	s = p.waitFor("the panels show the sale", 5*time.Second, func(s pageState) error {
		if got := s.Stock["tea"]; got["available"] != start.Stock["tea"]["available"]-2 || got["sold"] != 2 || got["reserved"] != 0 {
			return fmt.Errorf("tea %v", got)
		}
		if s.Balances["alice"] != start.Balances["alice"]-900 {
			return fmt.Errorf("alice has %d cents", s.Balances["alice"])
		}
		return nil
	})
	p.screenshot("2-completed")

	// Payment declined: the page picks Bob, who has too little money.
	p.fillForm("declined", "", nil)
	if s := p.state(); s.Customer != "bob" || !strings.Contains(s.Expected, "declined") {
		t.Errorf("the declined scenario chose %q and expects %q", s.Customer, s.Expected)
	}
	id = p.placeOrder()
	s = p.waitEnded(id, 10*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "compensated", "charge-payment": "failed", "confirm-order": "skipped",
		"undo:reserve-stock": "compensated"})
	expectBanner(t, s, "Cancelled", "the payment was declined (insufficient funds", "the stock reserved in step 1 was released", "Nothing was charged.")
	p.screenshot("3-declined")

	// Out of stock: one more mug than there is.
	p.fillForm("out-of-stock", "", nil)
	id = p.placeOrder()
	s = p.waitEnded(id, 10*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "failed", "charge-payment": "skipped", "confirm-order": "skipped"})
	expectBanner(t, s, "Cancelled", "there was not enough stock", "nothing to undo", "Nothing was charged.")
	p.screenshot("4-out-of-stock")

	// The payment answers too late: step 2 times out three times, then both
	// steps are compensated, the payment first.
	p.fillForm("slow-payment", "", nil)
	id = p.placeOrder()
	p.waitFor("step 2 is retried", 5*time.Second, func(s pageState) error {
		if !strings.Contains(strings.Join(s.History, "\n"), "did not answer within 500 ms (attempt 1 of 3)") {
			return fmt.Errorf("history %q", s.History)
		}
		return nil
	})
	p.screenshot("5-slow-payment-running")
	s = p.waitEnded(id, 10*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "compensated", "charge-payment": "compensated", "confirm-order": "skipped",
		"undo:reserve-stock": "compensated", "undo:charge-payment": "compensated"})
	expectBanner(t, s, "Cancelled", "the payment service did not answer in 3 tries of 500 ms each", "the stock reserved in step 1 was released")
	p.screenshot("6-slow-payment")

	// The panels: only the completed order changed anything.
	s = p.waitFor("the panels settle", 5*time.Second, func(s pageState) error {
		for id, before := range start.Stock {
			want := before
			if id == "tea" {
				want = map[string]int64{"available": before["available"] - 2, "reserved": 0, "sold": 2}
			}
			if fmt.Sprint(s.Stock[id]) != fmt.Sprint(want) {
				return fmt.Errorf("%s: %v, want %v", id, s.Stock[id], want)
			}
		}
		if s.Balances["bob"] != start.Balances["bob"] {
			return fmt.Errorf("bob has %d cents, had %d", s.Balances["bob"], start.Balances["bob"])
		}
		return nil
	})
	if len(s.Recent) != 4 {
		t.Errorf("recent list: %v, want the 4 orders", s.Recent)
	}
	f.mu.Lock()
	keys := len(f.keys)
	f.mu.Unlock()
	if keys != 4 {
		t.Errorf("the page used %d Idempotency-Keys for 4 orders, want one each", keys)
	}

	// Picking an order in the recent list watches it again.
	var first string
	for id, status := range s.Recent {
		if status == "Completed" {
			first = id
		}
	}
	p.do("click the completed order in the recent list", chromedp.Click(chromedp.CSS(fmt.Sprintf(`#recent li[data-testid="recent-%s"] button`, first))))
	s = p.waitEnded(first, 5*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "done", "charge-payment": "done", "confirm-order": "done"})
	if errs := p.pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors: %q", errs)
	}
}
