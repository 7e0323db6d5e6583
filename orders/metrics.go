package orders

import (
	"bufio"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metrics are written in the Prometheus text format by hand: a handful of
// counters do not justify a client library and its dependencies.
type metrics struct {
	placed atomic.Int64
	// shed counts POST /orders refused because MaxInFlight were in flight.
	shed atomic.Int64
	// backlogged counts POST /orders refused because of MaxBacklog.
	backlogged atomic.Int64

	mu       sync.Mutex
	requests map[requestKey]*requestStats
}

type requestKey struct {
	route  string
	status int
}

type requestStats struct {
	count   int64
	seconds float64
}

func newMetrics() *metrics { return &metrics{requests: map[requestKey]*requestStats{}} }

// request counts one request by route pattern (not path: /orders/{id} is
// one series, not one per order) and status.
func (m *metrics) request(route string, status int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	k := requestKey{route, status}
	st := m.requests[k]
	if st == nil {
		st = &requestStats{}
		m.requests[k] = st
	}
	st.count++
	st.seconds += d.Seconds()
}

// serveMetrics serves GET /metrics.
func (s *Service) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	defer b.Flush()

	family := func(name, typ, help string) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	family("sagaflow_orders_placed_total", "counter", "Orders accepted by this instance (OrderPlaced acknowledged by Kafka).")
	fmt.Fprintf(b, "sagaflow_orders_placed_total %d\n", s.metrics.placed.Load())
	family("sagaflow_orders_shed_total", "counter", "POST /orders answered 503 at once because MaxInFlight were in flight.")
	fmt.Fprintf(b, "sagaflow_orders_shed_total %d\n", s.metrics.shed.Load())
	family("sagaflow_orders_backlogged_total", "counter", "POST /orders answered 503 at once because the running orders would take longer than MaxBacklog to end.")
	fmt.Fprintf(b, "sagaflow_orders_backlogged_total %d\n", s.metrics.backlogged.Load())

	family("sagaflow_orders", "gauge", "Orders in the read model, by status (the saga's state; Placed before it starts).")
	counts := s.deps.Orders.Counts()
	for _, st := range statuses {
		fmt.Fprintf(b, "sagaflow_orders{status=%s} %d\n", label(string(st)), counts[st])
	}

	applied, skipped := s.deps.Orders.Stats()
	family("sagaflow_readmodel_records_total", "counter", "Records the read model read from saga.state and orders.events, by outcome.")
	fmt.Fprintf(b, "sagaflow_readmodel_records_total{outcome=\"applied\"} %d\n", applied)
	fmt.Fprintf(b, "sagaflow_readmodel_records_total{outcome=\"skipped\"} %d\n", skipped)

	family("sagaflow_event_streams", "gauge", "Open Server-Sent Event subscriptions.")
	fmt.Fprintf(b, "sagaflow_event_streams %d\n", s.deps.Orders.Subscribers())

	s.metrics.mu.Lock()
	keys := make([]requestKey, 0, len(s.metrics.requests))
	for k := range s.metrics.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].route != keys[j].route {
			return keys[i].route < keys[j].route
		}
		return keys[i].status < keys[j].status
	})
	stats := make([]requestStats, len(keys))
	for i, k := range keys {
		stats[i] = *s.metrics.requests[k]
	}
	s.metrics.mu.Unlock()
	family("sagaflow_http_requests_total", "counter", "HTTP requests by route pattern and status.")
	for i, k := range keys {
		fmt.Fprintf(b, "sagaflow_http_requests_total{route=%s,status=\"%d\"} %d\n", label(k.route), k.status, stats[i].count)
	}
	family("sagaflow_http_request_seconds_total", "counter", "Time spent serving HTTP requests by route pattern and status (event streams count when they end).")
	for i, k := range keys {
		fmt.Fprintf(b, "sagaflow_http_request_seconds_total{route=%s,status=\"%d\"} %s\n", label(k.route), k.status,
			strconv.FormatFloat(stats[i].seconds, 'g', -1, 64))
	}
}

// label quotes a label value as the text format wants.
func label(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(v) + `"`
}
