package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// /readyz follows the loop: 503 before it runs and while it owns no
// partition, 200 while it runs with partitions, 503 again once it stopped.
func TestReadyzFollowsTheLoop(t *testing.T) {
	var assigned atomic.Int64
	h := &health{assigned: assigned.Load}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := h.serve(ctx, "127.0.0.1:0", zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	status := func(path string) int {
		res, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if s := status("/healthz"); s != 200 {
		t.Fatalf("/healthz %d", s)
	}
	if s := status("/readyz"); s != 503 {
		t.Fatalf("/readyz before the loop runs: %d", s)
	}
	loopDone := make(chan struct{})
	release := make(chan struct{})
	go func() {
		_ = h.run(context.Background(), func(context.Context) error { <-release; return nil })
		close(loopDone)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !h.running.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if s := status("/readyz"); s != 503 {
		t.Fatalf("/readyz running without partitions: %d", s)
	}
	assigned.Store(4)
	if s := status("/readyz"); s != 200 {
		t.Fatalf("/readyz running with partitions: %d", s)
	}
	close(release)
	<-loopDone
	if s := status("/readyz"); s != 503 {
		t.Fatalf("/readyz after the loop stopped: %d", s)
	}
}
