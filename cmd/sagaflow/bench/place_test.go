package bench

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// TestHTTPPlacerReadsARefusal: the order goes as the API's JSON; a 503
// problem answer becomes a Refused with the problem's kind and the
// Retry-After the API asked for, which the closed loop waits out; a 202
// gives the order id.
func TestHTTPPlacerReadsARefusal(t *testing.T) {
	refuse := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Idempotency-Key") == "" || r.URL.Path != "/orders" {
			t.Errorf("request without a key, or to %s", r.URL.Path)
		}
		want := `{"customer_id":"` + CustomerID(0) + `","lines":[{"product_id":"` + ProductID(0) + `","quantity":1}]}`
		if b, _ := io.ReadAll(r.Body); string(b) != want {
			t.Errorf("body %s, want %s", b, want)
		}
		if refuse {
			w.Header().Set("Retry-After", "2")
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"type":"urn:sagaflow:problem:overloaded","title":"Too many orders at once","status":503}`))
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte(`{"order_id":"ord-1","status":"Placed"}`))
	}))
	defer srv.Close()
	p := NewHTTPPlacer(srv.URL + "/")
	o := Order{Key: "k1", CustomerID: CustomerID(0), ProductID: ProductID(0), Quantity: 1}

	_, err := p.Place(context.Background(), o)
	var ref *Refused
	if !errors.As(err, &ref) || ref.What != "503 overloaded" || ref.RetryAfter != 2*time.Second {
		t.Fatalf("refusal read as %#v (%v)", ref, err)
	}
	if err.Error() != "POST /orders: 503 overloaded" {
		t.Fatalf("error counts as %q", err)
	}
	refuse = false
	if id, err := p.Place(context.Background(), o); err != nil || id != "ord-1" {
		t.Fatalf("accepted order: %q, %v", id, err)
	}
}

// TestJitterWaitsAtLeastWhatWasAsked: between d and 1.5 d, never less.
func TestJitterWaitsAtLeastWhatWasAsked(t *testing.T) {
	for range 1000 {
		if j := jitter(time.Second); j < time.Second || j > 1500*time.Millisecond {
			t.Fatalf("jitter(1s) = %s", j)
		}
	}
}
