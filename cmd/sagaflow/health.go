package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// health serves /healthz and /readyz for a service without an API of its own
// (the participants and the orchestrator), so a supervisor or a load
// balancer can see it: /healthz answers 200 while the process serves at all;
// /readyz answers 200 only while the service's loop runs and the group has
// given it partitions, 503 otherwise (starting, rebalancing, stopped).
type health struct {
	running  atomic.Bool
	assigned func() int64
}

// serve listens on addr until ctx is done and returns the address it
// listens on. An empty addr serves nothing.
func (h *health) serve(ctx context.Context, addr string, log *zap.Logger) (string, error) {
	if addr == "" {
		return "", nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("-health %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch n := h.assigned(); {
		case !h.running.Load():
			http.Error(w, "not ready: the loop is not running", http.StatusServiceUnavailable)
		case n == 0:
			http.Error(w, "not ready: no partitions assigned (joining the group, or more instances than partitions)", http.StatusServiceUnavailable)
		default:
			fmt.Fprintf(w, "ready: %d partitions\n", n)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	log.Info("health endpoints listening", zap.String("url", "http://"+ln.Addr().String()+"/readyz"))
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("health endpoints stopped", zap.Error(err))
		}
	}()
	return ln.Addr().String(), nil
}

// run runs f with the loop marked running.
func (h *health) run(ctx context.Context, f func(context.Context) error) error {
	h.running.Store(true)
	defer h.running.Store(false)
	return f(ctx)
}
