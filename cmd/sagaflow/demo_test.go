package main

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lineWriter collects what a command prints and reports the first match of
// a pattern.
type lineWriter struct {
	mu    sync.Mutex
	buf   strings.Builder
	re    *regexp.Regexp
	found chan string
	once  sync.Once
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if m := w.re.FindStringSubmatch(w.buf.String()); m != nil {
		w.once.Do(func() { w.found <- m[1] })
	}
	return len(p), nil
}

// TestDemoRunsTheSagaInOneProcess is the README's demo command, in process:
// with no flags it starts on the embedded broker and Redis, says they keep
// nothing, serves the page, runs an order to Completed through the real
// stock and payment participants, and stops cleanly when cancelled.
func TestDemoRunsTheSagaInOneProcess(t *testing.T) {
	out := &lineWriter{re: regexp.MustCompile(`open (http://\S+/)\n`), found: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- runDemo(ctx, []string{"-addr", "127.0.0.1:0", "-log-level", "error"}, out) }()

	var url string
	select {
	case url = <-out.found:
	case err := <-done:
		t.Fatalf("demo stopped: %v\n%s", err, out.buf.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("demo did not print its URL within 30s:\n%s", out.buf.String())
	}
	t.Logf("demo ready in %s", time.Since(start))
	out.mu.Lock()
	printed := out.buf.String()
	out.mu.Unlock()
	if !strings.Contains(printed, "nothing is written to disk") {
		t.Errorf("the embedded mode does not say it keeps nothing:\n%s", printed)
	}

	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", res.StatusCode, res.Header.Get("Content-Type"))
	}

	req, _ := http.NewRequest(http.MethodPost, url+"orders",
		strings.NewReader(`{"customer_id":"alice","lines":[{"product_id":"tea","quantity":2}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", "demo-test")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var placed struct {
		OrderID string `json:"order_id"`
	}
	_ = json.NewDecoder(res.Body).Decode(&placed)
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("POST /orders: %d", res.StatusCode)
	}

	deadline := time.Now().Add(30 * time.Second)
	for {
		var o struct {
			Status string `json:"status"`
		}
		res, err := http.Get(url + "orders/" + placed.OrderID)
		if err == nil {
			_ = json.NewDecoder(res.Body).Decode(&o)
			res.Body.Close()
		}
		if o.Status == "Completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s is %q after 30s", placed.OrderID, o.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The confirmation takes no reply from stock (orders.SagaConfig
	// AwaitConfirm): the sale shows in stock's counts just after the order
	// is Completed, so wait a little for it.
	type product struct {
		ID       string `json:"id"`
		Sold     int64  `json:"sold"`
		Reserved int64  `json:"reserved"`
	}
	var tea product
	for deadline := time.Now().Add(10 * time.Second); ; {
		var stock struct {
			Products []product `json:"products"`
		}
		res, err = http.Get(url + "products")
		if err != nil {
			t.Fatal(err)
		}
		_ = json.NewDecoder(res.Body).Decode(&stock)
		res.Body.Close()
		for _, p := range stock.Products {
			if p.ID == "tea" {
				tea = p
			}
		}
		if tea.Sold == 2 && tea.Reserved == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tea 10s after the order: %+v, want 2 sold and none reserved", tea)
		}
		time.Sleep(50 * time.Millisecond)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("demo stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop within 30s of being cancelled")
	}
}
