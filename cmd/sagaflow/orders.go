package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/orders"
)

func init() {
	commands["orders"] = command{"serve the orders HTTP API and the demo page", runOrders}
}

func runOrders(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	in := infraFlags(fs)
	hf := ordersFlags(fs, env("SAGAFLOW_ADDR", "127.0.0.1:8080"), "listen address of the HTTP API (env SAGAFLOW_ADDR)")
	log, err := in.parse(fs, args, "orders")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	rdb, err := in.redisClient(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	// The catalogue and the accounts are the stock and payment services'
	// stores, read from the same Redis; this service only reads them.
	stores, err := wire.OpenStores(rdb, "", log)
	if err != nil {
		return err
	}
	return serveOrders(ctx, ordersServer{
		addr: *hf.addr, wire: in.wire(), cfg: hf.config(), apiLinger: *hf.apiLinger, coalesce: *hf.coalesce,
		rdb: rdb, stores: stores, log: log,
		listening: func(url string) { fmt.Fprintf(stdout, "orders API listening on %s\n", url) },
	})
}

// ordersServer is what serveOrders needs; `orders` and `demo` share it.
type ordersServer struct {
	addr string
	wire wire.Config
	cfg  orders.Config
	// apiLinger is -api-linger (wire.Config.APILinger).
	apiLinger time.Duration
	// coalesce is -redis-coalesce: 0, or the Coalescer's limit.
	coalesce int
	rdb      *redis.Client
	stores   wire.Stores
	log      *zap.Logger
	// listening is called with the URL once the port is open.
	listening func(url string)
}

// serveOrders runs the read model and the HTTP API until ctx is done, then
// shuts the server down gracefully: it stops accepting, ends the event
// streams, and lets requests in flight (a POST waiting for Kafka's
// acknowledgement) finish.
func serveOrders(ctx context.Context, s ordersServer) error {
	log := s.log
	if s.apiLinger < 0 || s.apiLinger > 5*time.Second {
		return fmt.Errorf("-api-linger must be between 0 and 5s; got %s", s.apiLinger)
	}
	if s.coalesce < 0 || s.coalesce > 1024 {
		return fmt.Errorf("-redis-coalesce must be between 0 and 1024; got %d", s.coalesce)
	}
	s.wire.APILinger = s.apiLinger
	o, err := wire.NewOrders(s.wire, s.cfg, s.rdb, s.stores, log)
	if err != nil {
		return err
	}
	defer o.Close()
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("-addr %s: %w (another process may use the port; -addr 127.0.0.1:0 takes any free one)", s.addr, err)
	}
	srv := &http.Server{
		Handler:           o.Service,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Event streams lift it for themselves (see orders.Service).
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     zap.NewStdLog(log.Named("http")),
	}
	if co := coalesceRequests(srv, s.rdb, s.coalesce); co != nil {
		defer func() {
			st := co.Stats()
			log.Info("redis calls coalesced", zap.Int64("alone", st.Alone), zap.Int64("joined", st.Joined), zap.Int64("rounds", st.Rounds))
		}()
	}
	// Shutdown waits for handlers to return, and an event stream returns
	// only when told to.
	srv.RegisterOnShutdown(o.Service.Close)

	rctx, stopRead := context.WithCancel(ctx)
	readDone := make(chan error, 1)
	go func() { readDone <- o.ReadModel.Run(rctx) }()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	url := "http://" + ln.Addr().String() + "/"
	log.Info("orders API listening", zap.String("url", url))
	if s.listening != nil {
		s.listening(url)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-served:
	}
	// A POST waits at most for its Kafka produce; 5s lets those answer
	// and keeps the whole stop within a few seconds of SIGTERM.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("HTTP shutdown did not finish in time", zap.Error(err))
	}
	stopRead()
	<-readDone
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	return serveErr
}

// coalesceRequests has the Redis calls that srv's handlers make on rdb go
// through a Coalescer of limit n, and returns it (nil for n 0: none). Every
// request's context comes from the server's base context, so the handlers'
// calls, and only theirs, are coalesced; the read model's are not.
func coalesceRequests(srv *http.Server, rdb redis.UniversalClient, n int) *idempotency.Coalescer {
	if n <= 0 {
		return nil
	}
	co := idempotency.NewCoalescer(rdb, n)
	srv.BaseContext = func(net.Listener) context.Context { return co.Context(context.Background()) }
	return co
}
