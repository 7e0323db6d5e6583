package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/idempotency/embedded"
	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

func init() {
	commands["demo"] = command{"try it: everything in one process, with the web page (embedded Kafka and Redis unless -kafka/-redis)", runDemo}
}

// runDemo runs the whole system in one process: the orders API and web
// page, the orchestrator, and the stock and payment participants with demo
// scenarios on, seeded with the demo catalogue and customers. With no
// flags it brings its own Kafka-protocol broker and Redis, in memory.
//
// Its flags are its own rather than infraFlags: those default to the
// SAGAFLOW_KAFKA and SAGAFLOW_REDIS the Makefile exports, and `make demo`
// must not quietly turn into a demo on the test infrastructure.
func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	kafkaAddr := fs.String("kafka", "", "Kafka bootstrap servers; empty runs an embedded broker that keeps nothing")
	redisAddr := fs.String("redis", "", "Redis address (host:port or redis:// URL); empty runs an embedded Redis that keeps nothing")
	hf := ordersFlags(fs, "127.0.0.1:8080", "listen address of the web page and the API")
	partitions := fs.Int("partitions", 4, "partitions per topic")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	pprofAddr := fs.String("pprof", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); empty: off")
	host, _ := os.Hostname()
	instance := fs.String("instance", "demo-"+host, "this demo's name on Kafka (its transactional ids); give each demo sharing one Kafka its own")
	timings := sagaTimingFlags(fs, orders.DemoSagaConfig())
	windowsOf := windowFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	windows, err := windowsOf()
	if err != nil {
		return err
	}
	if *partitions < 1 {
		return fmt.Errorf("-partitions must be at least 1, got %d", *partitions)
	}
	lvl, err := zapcore.ParseLevel(*logLevel)
	if err != nil {
		return fmt.Errorf("-log-level: %w", err)
	}
	logCfg := zap.NewDevelopmentConfig()
	logCfg.Level = zap.NewAtomicLevelAt(lvl)
	logCfg.DisableStacktrace = true
	log, err := logCfg.Build()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if err := servePprof(*pprofAddr, log); err != nil {
		return err
	}
	start := time.Now()

	if *kafkaAddr == "" || *redisAddr == "" {
		fmt.Fprintln(stdout, "sagaflow demo: embedded mode. The embedded Kafka-protocol broker and Redis keep everything in memory:")
		fmt.Fprintln(stdout, "nothing is written to disk and all of it is gone when this process ends. It is for trying sagaflow,")
		fmt.Fprintln(stdout, "not for durability; -kafka and -redis run the same demo on real ones.")
	}
	brokers := *kafkaAddr
	if brokers == "" {
		b, err := kafkatx.StartEmbedded(*partitions)
		if err != nil {
			return err
		}
		defer b.Close()
		brokers = b.Brokers()
		fmt.Fprintf(stdout, "  Kafka: embedded broker at %s (in memory)\n", brokers)
	} else {
		cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		err := kafkatx.CreateTopics(cctx, brokers, windows.Topics(*partitions))
		cancel()
		if err != nil {
			return fmt.Errorf("kafka at %s: %w", brokers, err)
		}
		fmt.Fprintf(stdout, "  Kafka: %s\n", brokers)
	}
	rdb, closeRedis, err := demoRedis(ctx, *redisAddr, stdout)
	if err != nil {
		return err
	}
	defer closeRedis()

	stores, err := wire.OpenStoresFor(rdb, "", windows.DedupTTL, log)
	if err != nil {
		return err
	}
	stores.DemoScenarios = true
	// Seeding keeps what exists: on a real Redis a second demo goes on with
	// the stock and balances the first one left.
	if _, err := wire.Prepare(ctx, stores.Stock, stock.DemoCatalogue()); err != nil {
		return err
	}
	if _, err := wire.Prepare(ctx, stores.Payment, payment.DemoCustomers()); err != nil {
		return err
	}

	// No batch wait (kafkatx.DefaultBatchWait): it saves a loaded broker
	// work, but the demo serves a person or two, and with reserve and
	// charge at once a lone order's two replies already make the
	// orchestrator "busy", so the next order would wait 3 ms at a hop for
	// records that do not come (p50 14.8 against 11.9 ms, one client back
	// to back on the embedded broker).
	cfg := wire.Config{Kafka: saga.Kafka{Brokers: brokers, InstanceID: *instance, BatchWait: -1}, Saga: timings(), Windows: windows}
	parts, err := wire.Saga(cfg, stores, log)
	if err != nil {
		return err
	}
	parts["orders"] = func(ctx context.Context) error {
		return serveOrders(ctx, ordersServer{
			addr: *hf.addr, wire: cfg, cfg: hf.config(), apiLinger: *hf.apiLinger, coalesce: *hf.coalesce, rdb: rdb, stores: stores, log: log.Named("orders"),
			listening: func(url string) {
				fmt.Fprintf(stdout, "\nsagaflow demo ready in %.1fs: open %s\n", time.Since(start).Seconds(), url)
				fmt.Fprintln(stdout, "Customers alice, bob (per-order limit 200.00) and carol (12.00 in her account); the teapot has 2 in stock.")
				fmt.Fprintln(stdout, "Ctrl-C stops it.")
			},
		})
	}
	return runTogether(ctx, log, parts)
}

// demoRedis connects to addr, or starts an embedded Redis when addr is empty.
func demoRedis(ctx context.Context, addr string, stdout io.Writer) (*redis.Client, func(), error) {
	var stop func()
	if addr == "" {
		m, err := embedded.Redis()
		if err != nil {
			return nil, nil, err
		}
		addr, stop = m.Addr(), m.Close
		fmt.Fprintf(stdout, "  Redis: embedded at %s (in memory)\n", addr)
	} else {
		fmt.Fprintf(stdout, "  Redis: %s\n", addr)
	}
	opt := &redis.Options{Addr: addr}
	if strings.Contains(addr, "://") {
		var err error
		if opt, err = redis.ParseURL(addr); err != nil {
			return nil, nil, fmt.Errorf("-redis: %w", err)
		}
	}
	rdb := redis.NewClient(opt)
	closeAll := func() {
		_ = rdb.Close()
		if stop != nil {
			stop()
		}
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("redis at %s: %w", addr, err)
	}
	return rdb, closeAll, nil
}

// runTogether runs every part until ctx is done or one of them stops: a part
// that stops on its own (an error, or a return it should not make) stops
// the others, so the demo never runs half its system.
func runTogether(ctx context.Context, log *zap.Logger, parts map[string]func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for name, run := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(ctx)
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("stopped")
				}
				err = fmt.Errorf("%s: %w", name, err)
				log.Error("part of the demo stopped; stopping the rest", zap.Error(err))
			}
			mu.Lock()
			if first == nil && err != nil && !errors.Is(err, context.Canceled) {
				first = err
			}
			mu.Unlock()
			cancel()
		}()
	}
	wg.Wait()
	return first
}
