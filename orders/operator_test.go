package orders

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

func TestOperatorEndpoints(t *testing.T) {
	const token = "operator-s3cret"
	w := newWorld(t, worldOptions{token: token})
	o := w.place("op-key", teaForAlice)
	auth := "Bearer " + token

	for _, c := range []struct {
		name, header string
	}{
		{"no token", ""},
		{"wrong token", "Bearer wrong"},
		{"token prefix", "Bearer " + token[:5]},
		{"token with more", auth + "x"},
		{"other scheme", "Basic " + token},
	} {
		h := []string{}
		if c.header != "" {
			h = append(h, "Authorization", c.header)
		}
		r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/compensate", nil, h...)
		if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
			t.Fatalf("%s: %s", c.name, r)
		}
		r.problem(t)
	}

	// The saga has not started (no orchestrator runs here): nothing to
	// compensate yet.
	if r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/compensate", nil, "Authorization", auth); r.status != http.StatusConflict {
		t.Fatalf("compensate a Placed order: %s", r)
	}
	if r := w.do(http.MethodPost, "/orders/ord-none/retry", nil, "Authorization", auth); r.status != http.StatusNotFound {
		t.Fatalf("retry an unknown order: %s", r)
	}
	if r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/retry", strings.NewReader(`{"reason":`), "Authorization", auth); r.status != http.StatusBadRequest {
		t.Fatalf("malformed body: %s", r)
	}
	if r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/retry", strings.NewReader(strings.Repeat("x", 20<<10)), "Authorization", auth); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize body: %s", r)
	}

	// Make the read model see the saga running, as the orchestrator's first
	// snapshot would.
	feed(t, w.rm, w.State, o.OrderID, startSaga(t, OrderPlaced{OrderID: o.OrderID, CustomerID: o.CustomerID,
		Lines: o.Lines, TotalCents: o.TotalCents}).snapshot())
	if r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/retry", nil, "Authorization", auth); r.status != http.StatusConflict {
		t.Fatalf("retry a Running order: %s", r)
	}
	r := w.do(http.MethodPost, "/orders/"+o.OrderID+"/compensate", strings.NewReader(`{"reason":"customer called"}`),
		"Authorization", auth, "Content-Type", "application/json")
	if r.status != http.StatusAccepted {
		t.Fatalf("compensate with the token: %s", r)
	}

	// The command is on the control topic, for the saga's partition.
	var found bool
	for _, rec := range kafkatest.Read(t, w.Brokers, w.Control, kafkatest.ReadCommitted) {
		env, err := saga.Decode(rec)
		if err != nil || env.Type != saga.TypeOperatorCommand || env.SagaID != o.OrderID {
			continue
		}
		var body saga.OperatorBody
		if err := json.Unmarshal(env.Payload, &body); err != nil {
			t.Fatal(err)
		}
		if body.Op != saga.OpForceCompensate || body.Reason != "customer called" {
			t.Fatalf("operator command %+v", body)
		}
		found = true
	}
	if !found {
		t.Fatal("no OperatorCommand on the control topic")
	}
}

// Without a configured token the operator endpoints are closed to everyone,
// whatever they send.
func TestOperatorEndpointsClosedWithoutToken(t *testing.T) {
	svc, m := newLiteService(t, Config{}, nil)
	o := testOrder("ord-op", "alice")
	m.placed(o, time.Now())
	feed(t, m, "saga.state", o.OrderID, startSaga(t, o).snapshot())
	for _, h := range []string{"", "Bearer ", "Bearer x", "Bearer  "} {
		req := httptest.NewRequest(http.MethodPost, "/orders/ord-op/compensate", nil)
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		rec := httptest.NewRecorder()
		svc.ServeHTTP(rec, req)
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("Authorization %q: %d %s", h, rec.Code, rec.Body)
		}
	}
}
