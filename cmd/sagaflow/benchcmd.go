package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/bench"
)

func init() {
	commands["bench"] = command{"drive a running system with orders and measure each saga, end to end", runBench}
}

func runBench(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stdout)
	in := infraFlags(fs)
	var cfg bench.Config
	fs.StringVar(&cfg.Via, "via", "http", "how orders are placed: http (POST /orders at -url) or kafka (OrderPlaced straight to orders.events)")
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080/", "the orders API, for -via http")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open loop: sagas per second offered, whatever the system does")
	fs.IntVar(&cfg.Clients, "clients", 0, "closed loop: clients, each waiting for its saga to end before the next")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the load runs")
	fs.DurationVar(&cfg.Drain, "drain", 30*time.Second, "how long to wait after the load for running sagas to end")
	fs.Float64Var(&cfg.Decline, "decline", 0, "share of orders (0..1) from a customer without money: payment declines, the saga compensates")
	fs.Float64Var(&cfg.OutOfStock, "out-of-stock", 0, "share of orders (0..1) for a product with no stock: stock refuses")
	fs.IntVar(&cfg.FloorSamples, "floor-samples", 100, "single transactional hops timed before the load (the floor)")
	jsonOut := fs.String("json", "", "write the result as JSON to this file")
	htmlOut := fs.String("html", "", "write a self-contained HTML page with throughput and latency over time to this file")
	quiet := fs.Bool("quiet", false, "no progress line")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sagaflow bench (-rate N | -clients N) [flags]")
		fmt.Fprintln(fs.Output(), "\nPlaces orders on a running system (the services, or `sagaflow demo -kafka ... -redis ...`)")
		fmt.Fprintln(fs.Output(), "and measures each saga from its request to its end event. It seeds products and")
		fmt.Fprintln(fs.Output(), "customers of its own in -redis (ids bench-*), and measures one transactional hop on")
		fmt.Fprintln(fs.Output(), "-kafka first (the floor). Flags:")
		fs.PrintDefaults()
	}
	// The shared parse: it also serves -pprof, since the load generator
	// shares the cores with what it measures and its own profile says what
	// it costs them.
	log, err := in.parse(fs, args, "bench")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	cfg.Brokers = *in.kafka
	// -namespace: the system under test runs under its own topic names
	// (dev/bench.sh gives each partition count its own).
	cfg.EventsTopic = in.wire().Topics.Events
	if !*quiet {
		cfg.Progress = os.Stderr
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	rdb, err := in.redisClient(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := bench.Seed(ctx, rdb); err != nil {
		return err
	}
	var placer bench.Placer
	if cfg.Via == "kafka" {
		kp, err := bench.NewKafkaPlacer(cfg.Brokers, cfg.EventsTopic)
		if err != nil {
			return err
		}
		defer kp.Close()
		placer = kp
	} else {
		placer = bench.NewHTTPPlacer(cfg.URL)
	}
	res, err := bench.Run(ctx, cfg, placer)
	if err != nil {
		return err
	}
	res.WriteTable(stdout)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if *htmlOut != "" {
		f, err := os.Create(*htmlOut)
		if err != nil {
			return err
		}
		if err := res.WriteHTML(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	if res.Unfinished > 0 {
		return fmt.Errorf("%d sagas did not end within -drain %s", res.Unfinished, cfg.Drain)
	}
	return nil
}
