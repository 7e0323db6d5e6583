package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/orders/web"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

func init() {
	commands["orders"] = command{"serve the orders HTTP API and the demo page", runOrders}
}

func runOrders(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("orders", flag.ContinueOnError)
	in := infraFlags(fs)
	addr := fs.String("addr", env("SAGAFLOW_ADDR", "127.0.0.1:8080"), "listen address of the HTTP API (env SAGAFLOW_ADDR)")
	token := fs.String("operator-token", "", "bearer token of the operator endpoints (env SAGAFLOW_OPERATOR_TOKEN; prefer the environment, flags show in ps); none: they answer 401")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *token == "" {
		*token = os.Getenv("SAGAFLOW_OPERATOR_TOKEN")
	}
	log, err := in.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("service", "orders"), zap.String("instance", *in.instance))

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
	stocks, err := stock.NewStore(stock.Config{}, rdb, log)
	if err != nil {
		return err
	}
	accounts, err := payment.NewStore(payment.Config{}, rdb, log)
	if err != nil {
		return err
	}
	return serveOrders(ctx, ordersServer{
		addr: *addr, brokers: *in.kafka, rdb: rdb,
		catalog: catalog{stocks}, accounts: customers{accounts},
		cfg: orders.Config{OperatorToken: *token}, log: log,
		listening: func(url string) { fmt.Fprintf(stdout, "orders API listening on %s\n", url) },
	})
}

// ordersServer is what serveOrders needs; `orders` and `demo` share it.
type ordersServer struct {
	addr     string
	brokers  string
	rdb      *redis.Client
	catalog  orders.Catalog
	accounts orders.Accounts
	cfg      orders.Config
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
	producer, err := kafkatx.NewProducer(s.brokers, log)
	if err != nil {
		return err
	}
	defer producer.Close()
	store, err := idempotency.New(idempotency.Config{}, s.rdb, log)
	if err != nil {
		return err
	}
	rm, err := orders.NewReadModel(orders.ReadModelConfig{Brokers: s.brokers}, log)
	if err != nil {
		return err
	}
	svc, err := orders.New(s.cfg, orders.Deps{
		Producer: producer, Idempotency: store, Orders: rm, Catalog: s.catalog, Accounts: s.accounts,
		Ready: map[string]orders.Check{
			"kafka": kafkaCheck(s.brokers),
			"redis": func(ctx context.Context) error { return s.rdb.Ping(ctx).Err() },
		},
		Web: web.Handler(),
	}, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("-addr %s: %w (another process may use the port; -addr 127.0.0.1:0 takes any free one)", s.addr, err)
	}
	srv := &http.Server{
		Handler:           svc,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Event streams lift it for themselves (see orders.Service).
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorLog:     zap.NewStdLog(log.Named("http")),
	}
	// Shutdown waits for handlers to return, and an event stream returns
	// only when told to.
	srv.RegisterOnShutdown(svc.Close)

	rctx, stopRead := context.WithCancel(ctx)
	readDone := make(chan error, 1)
	go func() { readDone <- rm.Run(rctx) }()
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
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
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

// kafkaCheck is /readyz's Kafka check: a metadata request.
func kafkaCheck(brokers string) orders.Check {
	return func(ctx context.Context) error { return kafkatx.Ping(ctx, brokers) }
}

// catalog adapts the stock store to orders.Catalog: the orders package
// never imports stock (DESIGN.md), so the wiring translates.
type catalog struct{ s *stock.Store }

func (c catalog) Products(ctx context.Context) ([]orders.Product, error) {
	ps, err := c.s.Products(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]orders.Product, len(ps))
	for i, p := range ps {
		out[i] = orderProduct(p)
	}
	return out, nil
}

func (c catalog) Product(ctx context.Context, id string) (orders.Product, error) {
	p, err := c.s.Product(ctx, id)
	if errors.Is(err, stock.ErrUnknownProduct) {
		return orders.Product{}, fmt.Errorf("%w: %w", orders.ErrNotFound, err)
	}
	if err != nil {
		return orders.Product{}, err
	}
	return orderProduct(p), nil
}

func orderProduct(p stock.Product) orders.Product {
	return orders.Product{ID: p.ID, Name: p.Name, PriceCents: p.PriceCents,
		Available: p.Available, Reserved: p.Reserved, Sold: p.Sold}
}

// customers adapts the payment store to orders.Accounts.
type customers struct{ s *payment.Store }

func (a customers) Customers(ctx context.Context) ([]orders.Customer, error) {
	cs, err := a.s.Customers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]orders.Customer, len(cs))
	for i, c := range cs {
		out[i] = orderCustomer(c)
	}
	return out, nil
}

func (a customers) Customer(ctx context.Context, id string) (orders.Customer, error) {
	c, err := a.s.Customer(ctx, id)
	if errors.Is(err, payment.ErrUnknownCustomer) {
		return orders.Customer{}, fmt.Errorf("%w: %w", orders.ErrNotFound, err)
	}
	if err != nil {
		return orders.Customer{}, err
	}
	return orderCustomer(c), nil
}

func orderCustomer(c payment.Customer) orders.Customer {
	return orders.Customer{ID: c.ID, Name: c.Name, BalanceCents: c.BalanceCents, OrderLimitCents: c.LimitCents}
}
