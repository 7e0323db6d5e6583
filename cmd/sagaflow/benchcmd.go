package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
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
	var rates floatList
	var clients intList
	fs.Var(&rates, "rate", "open loop: sagas per second offered, whatever the system does; a list (200,400,800) runs one step after another, a sweep")
	fs.Var(&clients, "clients", "closed loop: clients, each waiting for its saga to end before the next; a list (1,8,32) is a sweep")
	cpu := fs.String("cpu", "", "count the CPU of these processes per saga, with the bench's own (loadgen): NAME=PID,... (one name twice sums; Linux)")
	fs.DurationVar(&cfg.Duration, "duration", 30*time.Second, "how long the load runs")
	fs.DurationVar(&cfg.Drain, "drain", 30*time.Second, "how long to wait after the load for running sagas to end")
	fs.Float64Var(&cfg.Decline, "decline", 0, "share of orders (0..1) from a customer without money: payment declines, the saga compensates")
	fs.Float64Var(&cfg.OutOfStock, "out-of-stock", 0, "share of orders (0..1) for a product with no stock: stock refuses")
	fs.IntVar(&cfg.FloorSamples, "floor-samples", 100, "single transactional hops timed before the load (the floor)")
	jsonOut := fs.String("json", "", "write the result as JSON to this file")
	htmlOut := fs.String("html", "", "write a self-contained HTML page to this file: throughput and latency over time, or for a sweep latency, throughput and CPU against the load")
	quiet := fs.Bool("quiet", false, "no progress line")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sagaflow bench (-rate N[,N...] | -clients N[,N...]) [flags]")
		fmt.Fprintln(fs.Output(), "\nPlaces orders on a running system (the services, or `sagaflow demo -kafka ... -redis ...`)")
		fmt.Fprintln(fs.Output(), "and measures each saga from its request to its end event. It seeds products and")
		fmt.Fprintln(fs.Output(), "customers of its own in -redis (ids bench-*), and measures one transactional hop on")
		fmt.Fprintln(fs.Output(), "-kafka first (the floor). Several rates or client counts run one after another,")
		fmt.Fprintln(fs.Output(), "each with its -duration and -drain: a sweep, reported as a table and (-html)")
		fmt.Fprintln(fs.Output(), "as latency, throughput and CPU against the load. Flags:")
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
	if *cpu != "" {
		if cfg.Watch, err = bench.ParseProcs(*cpu); err != nil {
			return err
		}
	}
	steps, err := sweepSteps(rates, clients)
	if err != nil {
		return err
	}
	if err := cfg.ValidateSteps(steps); err != nil {
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
	results, err := bench.Sweep(ctx, cfg, steps, placer)
	if err != nil {
		return err
	}
	var out interface {
		WriteTable(io.Writer)
		WriteHTML(io.Writer) error
	} = results[0]
	var doc any = results[0]
	if len(results) > 1 {
		out, doc = bench.Curve(results), map[string]any{"steps": results}
	}
	out.WriteTable(stdout)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(doc, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			return err
		}
	}
	if *htmlOut != "" {
		f, err := os.Create(*htmlOut)
		if err != nil {
			return err
		}
		if err := out.WriteHTML(f); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	var unfinished int64
	for _, r := range results {
		unfinished += r.Unfinished
	}
	return unfinishedErr(ctx, unfinished, cfg.Drain)
}

// unfinishedErr is the run's verdict on the sagas it did not see end.
func unfinishedErr(ctx context.Context, unfinished int64, drain time.Duration) error {
	switch {
	case unfinished == 0:
		return nil
	case ctx.Err() != nil:
		// Stopped (SIGTERM, ^C) during the load or the drain: the
		// figures printed are what it measured until then, and the
		// drain was not waited out, so these are not late sagas.
		return fmt.Errorf("stopped before the end: %d sagas had not ended yet", unfinished)
	default:
		return fmt.Errorf("%d sagas did not end within -drain %s", unfinished, drain)
	}
}

// sweepSteps are the loads -rate or -clients ask for, in their order.
func sweepSteps(rates floatList, clients intList) ([]bench.Step, error) {
	if (len(rates) > 0) == (len(clients) > 0) {
		return nil, errors.New("set exactly one of -rate (open loop) and -clients (closed loop)")
	}
	var steps []bench.Step
	for _, r := range rates {
		steps = append(steps, bench.Step{Rate: r})
	}
	for _, n := range clients {
		steps = append(steps, bench.Step{Clients: n})
	}
	return steps, nil
}

// floatList is a flag of comma-separated positive numbers.
type floatList []float64

func (l *floatList) String() string {
	var ss []string
	for _, v := range *l {
		ss = append(ss, strconv.FormatFloat(v, 'g', -1, 64))
	}
	return strings.Join(ss, ",")
}

func (l *floatList) Set(s string) error {
	*l = nil
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || !(v > 0) || math.IsInf(v, 0) { // !(v > 0) refuses NaN too
			return fmt.Errorf("%q is not a positive number", f)
		}
		*l = append(*l, v)
	}
	return nil
}

// intList is a flag of comma-separated positive whole numbers.
type intList []int

func (l *intList) String() string {
	var ss []string
	for _, v := range *l {
		ss = append(ss, strconv.Itoa(v))
	}
	return strings.Join(ss, ",")
}

func (l *intList) Set(s string) error {
	*l = nil
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || v <= 0 {
			return fmt.Errorf("%q is not a positive whole number", f)
		}
		*l = append(*l, v)
	}
	return nil
}
