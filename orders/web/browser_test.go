package web_test

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/orders/orderstest"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/stock"
)

// The browser tests drive Debian's chromium (make test installs it, see
// dev/chromium.sh) headless from Go with chromedp. Outside CI a missing
// chromium skips them with a clear message; under CI=true it fails them.

// chromiumPath is where the browser is; SAGAFLOW_CHROMIUM overrides it.
func chromiumPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("SAGAFLOW_CHROMIUM")
	if path == "" {
		path = "/usr/bin/chromium"
	}
	if _, err := exec.LookPath(path); err != nil {
		msg := fmt.Sprintf("no chromium at %s (dev/chromium.sh installs Debian's chromium; `make test` runs it; or set SAGAFLOW_CHROMIUM): %v", path, err)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return path
}

// screenshotDir is where the tests leave their screenshots for people to
// look at: a fixed directory (not the test's temporary one, which is removed
// when the test ends), overwritten by each run. SAGAFLOW_SCREENSHOTS
// overrides it.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("SAGAFLOW_SCREENSHOTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "sagaflow-browser-test")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("screenshot directory: %v", err)
	}
	return dir
}

// browserPage is one tab of a fresh headless Chromium showing the page at
// base.
type browserPage struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu     sync.Mutex
	errors []string // uncaught exceptions and console errors of the page
}

// openPage starts Chromium with the flags of the issue (a 1280×900 window, no
// sandbox, nothing fetched in the background) and loads base.
func openPage(t *testing.T, base string) *browserPage {
	t.Helper()
	path := chromiumPath(t)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		// Chromium puts its singleton socket in a directory of its own
		// under TMPDIR, and a killed browser leaves it behind: two in
		// /tmp for every run of these tests, until TMPDIR went here.
		chromedp.Env("TMPDIR=" + t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithErrorf(func(format string, args ...any) {
		// chromedp reports protocol messages it does not know; they are
		// not the page's errors.
		t.Logf("chromedp: "+format, args...)
	}))
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	p := &browserPage{t: t, ctx: ctx, base: base}
	// The first Run starts the browser; it must not carry a timeout (that
	// would stop the browser when it passes).
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatalf("start chromium (%s): %v", path, err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			// A failed request is logged by the browser (source
			// "network"); the tests provoke some on purpose.
			if m.IsException() || (m.Type == "error" && m.Source != "network") {
				p.mu.Lock()
				p.errors = append(p.errors, m.String())
				p.mu.Unlock()
			}
		}
	}()
	p.do("load the page", chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#stock tr[data-testid]`)),
		chromedp.WaitVisible(chromedp.CSS(`#lines input[data-product]`)))
	return p
}

// do runs actions with a deadline, failing the test with what it was doing.
func (p *browserPage) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// pageErrors returns the exceptions and console errors so far.
func (p *browserPage) pageErrors() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.errors...)
}

// pageState is what the page shows, read through its ids and data-testids.
type pageState struct {
	OrderID     string                      `json:"orderId"`
	OrderStatus string                      `json:"orderStatus"`
	Banner      string                      `json:"banner"` // the order's status the banner explains, or "none"
	BannerText  string                      `json:"bannerText"`
	Steps       map[string]string           `json:"steps"` // step name -> data-status
	Undo        map[string]string           `json:"undo"`  // step name -> data-status of its compensation
	History     []string                    `json:"history"`
	Stock       map[string]map[string]int64 `json:"stock"`      // product -> available, reserved, sold
	Balances    map[string]int64            `json:"balances"`   // customer -> balance in cents
	Recent      map[string]string           `json:"recent"`     // order id -> status
	RecentLine  map[string]string           `json:"recentLine"` // order id -> its second line: time, id and the steps it is at
	Errors      map[string]string           `json:"errors"`     // error area -> text
	Invalid     []string                    `json:"invalid"`    // data-testids of the fields marked invalid
	Customer    string                      `json:"customer"`
	Quantities  map[string]string           `json:"quantities"`
	Expected    string                      `json:"expected"`
}

const readState = `(() => {
  const q = (s) => document.querySelector(s);
  const text = (s) => { const e = q(s); return e ? e.textContent.trim() : ''; };
  const byTestID = (sel, prefix) => {
    const out = {};
    for (const e of document.querySelectorAll(sel)) out[e.dataset.testid.slice(prefix.length)] = e.dataset.status;
    return out;
  };
  const stock = {};
  for (const tr of document.querySelectorAll('#stock tr[data-testid]')) {
    const row = {};
    for (const td of tr.querySelectorAll('td[data-field]')) row[td.dataset.field] = Number(td.dataset.value);
    stock[tr.dataset.testid.slice('stock-'.length)] = row;
  }
  const balances = {};
  for (const tr of document.querySelectorAll('#balances tr[data-testid]')) {
    balances[tr.dataset.testid.slice('balance-'.length)] = Number(tr.querySelector('td[data-field="balance_cents"]').dataset.value);
  }
  const errors = {};
  for (const e of document.querySelectorAll('[data-testid^="error-"], #form-errors')) {
    if (e.textContent.trim() && !e.hidden) errors[e.dataset.testid] = e.textContent.trim();
  }
  const quantities = {};
  for (const i of document.querySelectorAll('#lines input[data-product]')) quantities[i.dataset.product] = i.value;
  const status = q('[data-testid="order-status"]');
  return {
    orderId: text('[data-testid="order-id"]'),
    orderStatus: status ? status.dataset.status : '',
    banner: q('#banner').dataset.state,
    bannerText: text('#banner'),
    steps: byTestID('#timeline li[data-testid^="step-"]', 'step-'),
    undo: byTestID('#compensations li[data-testid^="undo-"]', 'undo-'),
    history: [...document.querySelectorAll('#history li')].map((li) => li.textContent.trim()),
    stock, balances,
    recent: byTestID('#recent li[data-testid^="recent-"]', 'recent-'),
    recentLine: Object.fromEntries([...document.querySelectorAll('#recent li[data-testid^="recent-"]')].map((li) =>
      [li.dataset.testid.slice('recent-'.length), (li.querySelector('.sub2') || li).textContent.trim()])),
    errors,
    invalid: [...document.querySelectorAll('[aria-invalid="true"]')].map((e) => e.dataset.testid || e.id),
    customer: q('#customer').value,
    quantities,
    expected: text('#scenario-note'),
  };
})()`

func (p *browserPage) state() pageState {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](readState))
	if err != nil {
		p.t.Fatalf("read the page: %v", err)
	}
	return s
}

// waitFor polls the page until cond holds, and fails the test with what the
// page showed last when it does not within timeout.
func (p *browserPage) waitFor(what string, timeout time.Duration, cond func(s pageState) error) pageState {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := p.state()
		err := cond(s)
		if err == nil {
			return s
		}
		if time.Now().After(deadline) {
			p.screenshot("failed-" + strings.ReplaceAll(what, " ", "-"))
			p.t.Fatalf("%s: not within %s: %v\npage: %+v\npage errors: %q", what, timeout, err, s, p.pageErrors())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot saves what the window shows as name.png and logs the path.
func (p *browserPage) screenshot(name string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	path := filepath.Join(screenshotDir(p.t), strings.ReplaceAll(p.t.Name(), "/", "-")+"-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Errorf("screenshot %s: %v", name, err)
		return ""
	}
	p.t.Logf("screenshot: %s", path)
	return path
}

// fillForm picks a scenario with its radio button (which prepares the form
// the way the page does for a person), then sets the customer and the
// quantities given (nil keeps what the page chose), as a person would.
func (p *browserPage) fillForm(scenario, customer string, qty map[string]int) {
	p.t.Helper()
	p.do("pick scenario "+scenario, chromedp.Click(chromedp.CSS(`#scenario-`+scenario)))
	if customer != "" {
		p.do("choose customer "+customer,
			chromedp.SetValue(chromedp.CSS(`#customer`), customer),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('customer').dispatchEvent(new Event('change'))`))
	}
	if qty != nil {
		for id := range p.state().Quantities {
			sel := chromedp.CSS(fmt.Sprintf(`#lines input[data-product=%q]`, id))
			p.do("type the quantity of "+id, chromedp.SetValue(sel, ""), chromedp.SendKeys(sel, fmt.Sprint(qty[id])))
		}
	}
}

// placeOrder clicks Place order and returns the id of the order the page
// then watches.
func (p *browserPage) placeOrder() string {
	p.t.Helper()
	before := p.state().OrderID
	p.do("click Place order", chromedp.Click(chromedp.CSS(`#place-order`)))
	s := p.waitFor("the page watches the new order", 15*time.Second, func(s pageState) error {
		if len(s.Errors) > 0 {
			return fmt.Errorf("the form shows errors: %v", s.Errors)
		}
		if s.OrderID == "" || s.OrderID == before {
			return errors.New("no new order shown")
		}
		return nil
	})
	return s.OrderID
}

var terminal = map[string]bool{"Completed": true, "Cancelled": true, "Failed": true}

// waitEnded waits until the page shows order id ended: in the saga column
// (status, banner) and in the recent list.
func (p *browserPage) waitEnded(id string, timeout time.Duration) pageState {
	p.t.Helper()
	return p.waitFor("order "+id+" ends", timeout, func(s pageState) error {
		switch {
		case s.OrderID != id:
			return fmt.Errorf("the page watches %q", s.OrderID)
		case !terminal[s.OrderStatus]:
			return fmt.Errorf("status %q", s.OrderStatus)
		case s.Banner != s.OrderStatus:
			return fmt.Errorf("banner explains %q", s.Banner)
		case s.Recent[id] != s.OrderStatus:
			return fmt.Errorf("recent list shows %q", s.Recent[id])
		}
		return nil
	})
}

// expectSteps checks the timeline and the undo list against want (step name
// -> data-status; an undo entry is "undo:" + step name).
func expectSteps(t *testing.T, s pageState, want map[string]string) {
	t.Helper()
	got := map[string]string{}
	for k, v := range s.Steps {
		got[k] = v
	}
	for k, v := range s.Undo {
		got["undo:"+k] = v
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("order %s: steps and undos are %v, want %v\nbanner: %s\nhistory: %q", s.OrderID, got, want, s.BannerText, s.History)
	}
}

func expectBanner(t *testing.T, s pageState, words ...string) {
	t.Helper()
	for _, w := range words {
		if !strings.Contains(s.BannerText, w) {
			t.Errorf("order %s: banner %q does not say %q", s.OrderID, s.BannerText, w)
		}
	}
}

// TestBrowserRealStack places orders through the form against the real
// stack, in-process, on real Kafka and Redis with fresh topics and keys: the
// orders service (with this package's page), its read model, the
// orchestrator running the order saga, and the stock and payment
// participants. One order completes; one is declined by payment and
// compensated; then one is out of stock and one times out on payment. It
// checks what the page shows: the final states in the timeline and the
// recent list, the explanations, and the stock and balance panels changed
// by exactly the completed order.
func TestBrowserRealStack(t *testing.T) {
	chromiumPath(t) // skip (or fail under CI) before starting anything
	st := startStack(t)
	p := openPage(t, st.url)

	start := p.waitFor("the panels show the seeded catalogue and accounts", 15*time.Second, func(s pageState) error {
		if s.Stock["tea"]["available"] != 50 || s.Stock["teapot"]["available"] != 2 || s.Balances["alice"] != 100_000 || s.Balances["carol"] != 1_200 {
			return fmt.Errorf("stock %v, balances %v", s.Stock, s.Balances)
		}
		return nil
	})

	// 1. Alice buys two teas: every step succeeds.
	p.fillForm("ok", "alice", map[string]int{"tea": 2, "teapot": 0})
	completed := p.placeOrder()
	s := p.waitEnded(completed, 45*time.Second)
	if s.OrderStatus != "Completed" {
		p.screenshot("unexpected")
		t.Fatalf("order %s ended %s, want Completed; banner: %s; history: %q", completed, s.OrderStatus, s.BannerText, s.History)
	}
	expectSteps(t, s, map[string]string{"reserve-stock": "done", "charge-payment": "done", "confirm-order": "done"})
	expectBanner(t, s, "Completed", "Alice was charged €9.00")
	p.screenshot("1-completed")

	// 2. Payment declined: the scenario picks Carol, who has 12.00, and an
	// order she cannot pay (a 45.00 teapot). The teapot is reserved while
	// the charge is declined; the reservation is released (whether its
	// answer came before the decline or not: the two run at once).
	p.fillForm("declined", "", nil)
	if s := p.state(); s.Customer != "carol" || s.Quantities["teapot"] != "1" || s.Quantities["tea"] != "0" {
		t.Fatalf("the declined scenario prepared customer %q and quantities %v, want carol and one teapot", s.Customer, s.Quantities)
	}
	declined := p.placeOrder()
	s = p.waitEnded(declined, 45*time.Second)
	if s.OrderStatus != "Cancelled" {
		p.screenshot("unexpected")
		t.Fatalf("order %s ended %s, want Cancelled; banner: %s; history: %q", declined, s.OrderStatus, s.BannerText, s.History)
	}
	expectSteps(t, s, map[string]string{"reserve-stock": "compensated", "charge-payment": "failed", "confirm-order": "skipped",
		"undo:reserve-stock": "compensated"})
	expectBanner(t, s, "Cancelled", "the payment was declined", "insufficient funds",
		"step 1 was released", "Nothing was charged.")

	// The panels: tea moved from available to sold by exactly the two of the
	// completed order, the teapot is back where it was; Alice paid 9.00 and
	// Carol nothing. The recent list shows both orders as they ended.
	s = p.waitFor("the panels show both orders' effects", 15*time.Second, func(s pageState) error {
		want := map[string]map[string]int64{
			"tea":    {"available": start.Stock["tea"]["available"] - 2, "reserved": 0, "sold": start.Stock["tea"]["sold"] + 2},
			"teapot": start.Stock["teapot"],
		}
		for id, w := range want {
			if fmt.Sprint(s.Stock[id]) != fmt.Sprint(w) {
				return fmt.Errorf("stock of %s: %v, want %v", id, s.Stock[id], w)
			}
		}
		if got, want := s.Balances["alice"], start.Balances["alice"]-900; got != want {
			return fmt.Errorf("alice's balance: %d cents, want %d", got, want)
		}
		if got, want := s.Balances["carol"], start.Balances["carol"]; got != want {
			return fmt.Errorf("carol's balance: %d cents, want it unchanged at %d", got, want)
		}
		if s.Recent[completed] != "Completed" || s.Recent[declined] != "Cancelled" {
			return fmt.Errorf("recent list: %v", s.Recent)
		}
		return nil
	})
	p.screenshot("2-declined")

	// The two other failure scenarios, on the real participants: they prove
	// the page reads the real causes (a rejection, a timeout) right.
	// 3. Out of stock: three teapots, and there are two. The charge, sent
	// with the reservation, is refunded.
	p.fillForm("out-of-stock", "", nil)
	if s := p.state(); !strings.Contains(s.Expected, "step 1 fails") || !strings.Contains(s.Expected, "refunded") {
		t.Errorf("the out-of-stock scenario expects %q", s.Expected)
	}
	outOfStock := p.placeOrder()
	s = p.waitEnded(outOfStock, 45*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "failed", "charge-payment": "compensated", "confirm-order": "skipped",
		"undo:charge-payment": "compensated"})
	expectBanner(t, s, "Cancelled", "there was not enough stock", "step 2 was refunded")
	p.screenshot("3-out-of-stock")

	// 4. The payment answers too late: the payment participant charges but
	// withholds its reply, both attempts of step 2 time out (the stock was
	// reserved meanwhile), and the saga refunds the charge and releases the
	// stock, in that order.
	p.fillForm("slow-payment", "", nil)
	slow := p.placeOrder()
	// While the charge waits for its answer, the stock is reserved: the
	// recent list names the one step still running, not the first of the
	// pair that started together.
	p.waitFor("the recent list shows the slow order at the charge", 15*time.Second, func(s pageState) error {
		if line := s.RecentLine[slow]; !strings.HasSuffix(line, "· at: charge payment") {
			return fmt.Errorf("recent line of %s: %q", slow, line)
		}
		return nil
	})
	s = p.waitEnded(slow, 45*time.Second)
	expectSteps(t, s, map[string]string{"reserve-stock": "compensated", "charge-payment": "compensated", "confirm-order": "skipped",
		"undo:reserve-stock": "compensated", "undo:charge-payment": "compensated"})
	expectBanner(t, s, "Cancelled", "the payment service did not answer in 2 tries of 3 seconds each",
		"the stock reserved in step 1 was released")
	if h := strings.Join(s.History, "\n"); !strings.Contains(h, "Charge payment: the payment service did not answer within 3 seconds (attempt 1 of 2). Trying again in 100 ms.") {
		t.Errorf("the history does not tell the first timeout in words:\n%s", h)
	}

	// None of the failed orders changed anything the panels show.
	s = p.waitFor("the panels show only the completed order's effects", 15*time.Second, func(s pageState) error {
		if fmt.Sprint(s.Stock["teapot"]) != fmt.Sprint(start.Stock["teapot"]) {
			return fmt.Errorf("stock of teapot: %v, want %v", s.Stock["teapot"], start.Stock["teapot"])
		}
		if got, want := s.Balances["alice"], start.Balances["alice"]-900; got != want {
			return fmt.Errorf("alice's balance: %d cents, want %d", got, want)
		}
		if s.Recent[outOfStock] != "Cancelled" || s.Recent[slow] != "Cancelled" {
			return fmt.Errorf("recent list: %v", s.Recent)
		}
		return nil
	})
	p.screenshot("4-slow-payment")
	if errs := p.pageErrors(); len(errs) > 0 {
		t.Errorf("the page reported errors: %q", errs)
	}
}

// stack is the real system of the demo, in this process.
type stack struct {
	url string
}

// startStack runs the orders service (serving this package's page), its
// read model, the orchestrator and the stock and payment participants on
// fresh topics of the real Kafka and fresh keys of the real Redis, seeded
// with a small catalogue and three customers. It is the demo's assembly
// (package wire) on the test's topics and keys.
func startStack(t *testing.T) *stack {
	t.Helper()
	rdb := redistest.Client(t)
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tt := orderstest.NewTopics(t, 2)
	cfg := wire.Config{
		Kafka: tt.Kafka("web", "web0"),
		Topics: wire.Topics{Events: tt.Events, State: tt.State, Control: tt.Control,
			StockCommands: tt.StockCmd, StockReplies: tt.StockRep, PaymentCommands: tt.PayCmd, PaymentReplies: tt.PayRep},
		// Long enough that a loaded machine does not time a step out twice
		// in a row, short enough for the slow-payment order to give up soon.
		Saga:         orders.SagaConfig{StepTimeout: 3 * time.Second, Attempts: 2, Backoff: 100 * time.Millisecond, Deadline: time.Minute},
		TickInterval: 100 * time.Millisecond,
		RedisPrefix:  redistest.Prefix(t),
	}

	stores, err := wire.OpenStores(rdb, redistest.Prefix(t), log)
	if err != nil {
		t.Fatal(err)
	}
	stores.DemoScenarios = true
	if _, err := wire.Prepare(ctx, stores.Stock, []stock.Product{
		{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 50},
		{ID: "teapot", Name: "Cast-iron teapot", PriceCents: 4500, Available: 2},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := wire.Prepare(ctx, stores.Payment, []payment.Customer{
		{ID: "alice", Name: "Alice", BalanceCents: 100_000, LimitCents: 50_000},
		{ID: "bob", Name: "Bob", BalanceCents: 60_000, LimitCents: 20_000},
		{ID: "carol", Name: "Carol", BalanceCents: 1_200, LimitCents: 50_000},
	}); err != nil {
		t.Fatal(err)
	}

	// The participants and the orchestrator.
	parts, err := wire.Saga(cfg, stores, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range parts {
		orderstest.RunBackground(t, run)
	}

	// The orders service, with the page.
	o, err := wire.NewOrders(cfg, orders.Config{}, rdb, stores, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(o.Close)
	orderstest.RunBackground(t, o.ReadModel.Run)
	srv := httptest.NewServer(o.Service)
	t.Cleanup(func() {
		o.Service.Close() // ends the event streams, which srv.Close would wait for
		srv.Close()
	})
	return &stack{url: srv.URL}
}
