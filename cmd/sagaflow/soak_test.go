package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/bench"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestSoakNoSagaLeftBehind runs the whole system on the real Kafka and Redis
// and drives it with sagaflow bench at a low and a high rate: every order
// placed must end, and end as its mix says. It is here for the commit policy
// (commit as soon as nothing more is ready): with it, an earlier build left
// orders in Placed while the orchestrator sat in Poll, and a soak at both
// rates is what would catch such a stall again. The figures it logs are not
// asserted: speed is measured by `make bench`, not by tests.
func TestSoakNoSagaLeftBehind(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	redisAddr := os.Getenv("SAGAFLOW_REDIS")
	if redisAddr == "" || redisAddr == "embedded" {
		redisAddr = "127.0.0.1:16379"
	}
	out := &lineWriter{re: regexp.MustCompile(`open (http://\S+/)\n`), found: make(chan string, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- runDemo(ctx, []string{"-kafka", brokers, "-redis", redisAddr, "-addr", "127.0.0.1:0",
			"-log-level", "error", "-instance", fmt.Sprintf("soak-%d", time.Now().UnixNano())}, out)
	}()
	var url string
	select {
	case url = <-out.found:
	case err := <-done:
		t.Fatalf("the system stopped: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("the system was not ready within 90s")
	}
	rdb := redis.NewClient(&redis.Options{Addr: redisAddr})
	defer rdb.Close()
	if err := bench.Seed(ctx, rdb); err != nil {
		t.Fatal(err)
	}
	// The demo's services join their groups after the page is up.
	time.Sleep(3 * time.Second)

	for _, c := range []struct {
		name string
		rate float64
	}{{"low", 5}, {"high", 150}} {
		t.Run(c.name, func(t *testing.T) {
			res, err := bench.Run(ctx, bench.Config{Via: "http", URL: url, Brokers: brokers, Rate: c.rate,
				Duration: 15 * time.Second, Drain: 60 * time.Second, Decline: 0.1, OutOfStock: 0.1, FloorSamples: 10},
				bench.NewHTTPPlacer(url))
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%.0f/s offered: %d sent, %d ended (%v), p50 %s p99 %s max %s",
				c.rate, res.Sent, res.Ended, res.Outcomes, res.Latency.P50, res.Latency.P99, res.Latency.Max)
			if res.Sent < int64(c.rate*15*0.9) {
				t.Errorf("only %d orders accepted of %.0f offered; errors: %v", res.Sent, c.rate*15, res.Errors)
			}
			if res.Unfinished != 0 || res.Ended != res.Sent {
				t.Errorf("%d of %d sagas did not end within 60s of the load", res.Unfinished, res.Sent)
			}
			// Declined and out-of-stock orders cancel, the rest complete.
			if res.Outcomes[bench.Cancelled] == 0 || res.Outcomes[bench.Completed] == 0 || res.Outcomes[bench.Failed] != 0 {
				t.Errorf("outcomes %v: want completed and cancelled sagas, none failed", res.Outcomes)
			}
		})
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the system stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the system did not stop within 30s")
	}
}
