// Command sagaflow runs the parts of the order saga system. It only turns
// flags and environment into configuration, wires the packages together and
// stops them gracefully; the logic lives in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	_ "net/http/pprof" // profiles behind -pprof
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

// commands holds the subcommands. Each service's file adds its own in an
// init function, so the wiring of one service lives in one file.
var commands = map[string]command{
	"topics": {"create the Kafka topics of docs/design.md (idempotent)", runTopics},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "sagaflow: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, args[1:], stdout); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "sagaflow %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "sagaflow: a saga orchestrator with idempotent consumers, on Kafka and Redis.")
	fmt.Fprintln(w, "\nUsage: sagaflow <command> [flags]   (sagaflow <command> -h for its flags)")
	fmt.Fprintln(w, "\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
}

// env returns the environment variable or def.
func env(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func runTopics(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	in := infraFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	w, err := in.windowsOf()
	if err != nil {
		return err
	}
	in.windows = w
	if *in.partitions < 1 {
		return fmt.Errorf("-partitions must be at least 1, got %d", *in.partitions)
	}
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	specs := in.wire().Topics.Specs(*in.partitions, in.windows)
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	counts, err := kafkatx.PartitionCounts(ctx, *in.kafka, names)
	if err != nil {
		return err
	}
	for _, s := range specs {
		switch n := counts[s.Name]; {
		case n == s.Partitions:
			fmt.Fprintf(stdout, "topic %s ready: %d partitions\n", s.Name, n)
		case n == 0:
			// Created a moment ago, not yet in this broker's metadata.
			fmt.Fprintf(stdout, "topic %s ready: %d partitions requested\n", s.Name, s.Partitions)
		default:
			fmt.Fprintf(stdout, "topic %s ready: %d partitions (it existed; %d requested, but a topic keeps its count:"+
				" changing it would move running sagas to other partitions; use another -namespace)\n", s.Name, n, s.Partitions)
		}
	}
	return nil
}

// infra holds the flags every service shares.
type infra struct {
	kafka, redis, instance, logLevel        *string
	namespace                               *string
	pprof, health                           *string
	windowsOf                               func() (wire.Windows, error)
	windows                                 wire.Windows
	partitions, lanes, maxBatch             *int
	redisPool                               *int
	static                                  *bool
	maxInterval, linger, batchWait, slowTxn *time.Duration
}

// infraFlags registers --kafka, --redis, --instance, --partitions and
// --log-level on fs, with defaults from the environment.
func infraFlags(fs *flag.FlagSet) *infra {
	host, _ := os.Hostname()
	return &infra{
		windowsOf: windowFlags(fs),
		kafka:     fs.String("kafka", env("SAGAFLOW_KAFKA", "127.0.0.1:19092"), "Kafka bootstrap servers (env SAGAFLOW_KAFKA)"),
		redis:     fs.String("redis", env("SAGAFLOW_REDIS", "127.0.0.1:16379"), "Redis address (env SAGAFLOW_REDIS)"),
		redisPool: fs.Int("redis-pool", defaultRedisPool, "most connections to Redis; a call that finds them all busy waits for one "+
			"(a pool_size in a redis:// URL wins; docs/performance.md)"),
		instance:   fs.String("instance", env("SAGAFLOW_INSTANCE", host), "this instance's stable name: its transactional id; unique among running instances of one service (env SAGAFLOW_INSTANCE)"),
		partitions: fs.Int("partitions", 4, "partitions per topic when creating topics: the most instances of a service (a topic keeps the count it was created with)"),
		namespace: fs.String("namespace", env("SAGAFLOW_NAMESPACE", ""), "prefix of every topic (NS.orders.events, ...) and consumer group: "+
			"systems with different namespaces share one Kafka without meeting (env SAGAFLOW_NAMESPACE); empty: the plain names"),
		logLevel: fs.String("log-level", env("SAGAFLOW_LOG_LEVEL", "info"), "debug, info, warn or error (env SAGAFLOW_LOG_LEVEL)"),
		lanes: fs.Int("lanes", 1, "transactional loops side by side in this instance, each with its own producer: "+
			"more transactions in flight (useful up to the partition count; docs/performance.md)"),
		health: fs.String("health", "", "stock, payment, orchestrator: serve /healthz and /readyz on this address (e.g. 127.0.0.1:8081); empty: off"),
		pprof:  fs.String("pprof", "", "serve Go's pprof profiles on this address (e.g. 127.0.0.1:6060); empty: off"),
		static: fs.Bool("static-membership", false, "join the group as a static member (group.instance.id = -instance): a restarted instance takes its partitions back "+
			"without waiting for the session timeout or a rebalance; a stopped one holds them until the timeout"),
		maxBatch:    fs.Int("max-batch", 500, "most records in one transaction; a batch commits as soon as nothing more is ready"),
		maxInterval: fs.Duration("max-interval", 50*time.Millisecond, "longest a record waits for its batch to close under continuous load"),
		batchWait: fs.Duration("batch-wait", kafkatx.DefaultBatchWait, "stock, payment, orchestrator: while busy (the last batch held more than one record), "+
			"how long a batch stays open for more: fewer, larger transactions, which cost the broker less; "+
			"a loop that was idle commits at once; 0 never waits (docs/performance.md)"),
		linger: fs.Duration("linger", kafkatx.DefaultLinger, "stock, payment, orchestrator: how long a record produced in a transaction waits for others "+
			"to share its request to Kafka (librdkafka's linger.ms): fewer requests under load; the commit sends what is held at once, "+
			"so no record waits past its transaction; 0 sends at once (docs/performance.md)"),
		slowTxn: fs.Duration("slow-txn", kafkatx.DefaultSlowTxn, "stock, payment, orchestrator: log a transaction that takes longer than this, "+
			"with where its time went (begin, handler, offsets, commit), at most one line a second; 0: none"),
	}
}

// parse parses args into fs and returns the logger of the flags, with the
// service and this instance attached; the caller syncs it.
func (in *infra) parse(fs *flag.FlagSet, args []string, service string) (*zap.Logger, error) {
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	w, err := in.windowsOf()
	if err != nil {
		return nil, err
	}
	in.windows = w
	if *in.lanes < 1 || *in.maxBatch < 1 || *in.redisPool < 1 || *in.maxInterval <= 0 {
		return nil, fmt.Errorf("-lanes, -max-batch and -redis-pool must be at least 1 and -max-interval positive; got %d, %d, %d, %s",
			*in.lanes, *in.maxBatch, *in.redisPool, *in.maxInterval)
	}
	if *in.linger < 0 || *in.linger > 5*time.Second {
		return nil, fmt.Errorf("-linger must be between 0 and 5s; got %s", *in.linger)
	}
	if *in.slowTxn < 0 {
		return nil, fmt.Errorf("-slow-txn must not be negative (0 logs none); got %s", *in.slowTxn)
	}
	// The default wait shortens by itself under a shorter -max-interval
	// (kafkatx.Config.BatchWait); one asked for is refused instead.
	if *in.batchWait < 0 || (*in.batchWait > *in.maxInterval && isSet(fs, "batch-wait")) {
		return nil, fmt.Errorf("-batch-wait must be between 0 and -max-interval (%s); got %s", *in.maxInterval, *in.batchWait)
	}
	log, err := in.logger()
	if err != nil {
		return nil, err
	}
	if err := servePprof(*in.pprof, log); err != nil {
		return nil, err
	}
	return log.With(zap.String("service", service), zap.String("instance", *in.instance)), nil
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) (set bool) {
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// servePprof serves Go's profiles on addr, unless it is empty.
func servePprof(addr string, log *zap.Logger) error {
	if addr == "" {
		return nil
	}
	// net/http/pprof registers on the default mux, which nothing else here
	// serves; it listens apart from the API.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("-pprof: %w", err)
	}
	go func() { _ = http.Serve(ln, nil) }()
	log.Info("pprof listening", zap.String("addr", ln.Addr().String()))
	return nil
}

// wire is this instance's system: --kafka, its namespace and windows.
func (in *infra) wire() wire.Config {
	linger, slowTxn, batchWait := *in.linger, *in.slowTxn, *in.batchWait
	if linger == 0 {
		linger = -1 // saga.Kafka's zero is the default; negative is none
	}
	if batchWait == 0 {
		batchWait = -1 // the same
	}
	if slowTxn == 0 {
		slowTxn = -1 // the same
	}
	k := saga.Kafka{Brokers: *in.kafka, InstanceID: *in.instance, StaticMembership: *in.static,
		Lanes: *in.lanes, MaxBatch: *in.maxBatch, MaxInterval: *in.maxInterval, Linger: linger, BatchWait: batchWait,
		SlowTxn: slowTxn}
	if *in.namespace != "" {
		k.Group = *in.namespace // each part's group is NS-part
	}
	return wire.Config{Kafka: k, Topics: wire.Namespaced(*in.namespace), Windows: in.windows}
}

// logger returns a console logger at the flag's level.
func (in *infra) logger() (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(*in.logLevel)
	if err != nil {
		return nil, fmt.Errorf("-log-level: %w", err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.Encoding = "console"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return cfg.Build()
}

// ensureTopics creates the docs/design.md topics if they are missing, so a service
// can start on an empty broker.
func (in *infra) ensureTopics(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := kafkatx.CreateTopics(ctx, *in.kafka, in.wire().Topics.Specs(*in.partitions, in.windows))
		// A broker restarting or a controller moving answers for a moment
		// with a transport failure; a service started then waits for it,
		// for a minute, rather than exit into its supervisor's restart.
		if err == nil || !kafkatx.Unavailable(err) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

// defaultRedisPool is the -redis-pool default. go-redis's own default, 10
// connections a core, made the orders API's POSTs queue for a connection
// under load: each holds one for every Redis call it makes (the key's
// claim, the customer, the product, the recorded answer), and up to 512 are
// served at once. Side by side in one session, 20 connections gave 506
// sagas/s at saturation and 256 gave 657 (docs/performance.md). More
// connections also let Redis answer more calls per pass of its event loop,
// and with appendfsync always one fsync covers every write of a pass. Redis
// serves 10,000 clients by default, so 256 a process is far from its limit.
const defaultRedisPool = 256

// redisClient connects to --redis (host:port or a redis:// URL) and checks
// that it answers.
func (in *infra) redisClient(ctx context.Context) (*redis.Client, error) {
	opt := &redis.Options{Addr: *in.redis}
	if strings.Contains(*in.redis, "://") {
		var err error
		if opt, err = redis.ParseURL(*in.redis); err != nil {
			return nil, fmt.Errorf("-redis: %w", err)
		}
	}
	if opt.PoolSize == 0 {
		opt.PoolSize = *in.redisPool
	}
	rdb := redis.NewClient(opt)
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("redis at %s: %w", *in.redis, err)
	}
	return rdb, nil
}
