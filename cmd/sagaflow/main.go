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
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands = map[string]command{
	"topics": {"create the Kafka topics of DESIGN.md (idempotent)", runTopics},
	"demo":   {"run everything in one process and open the demo web page", runDemo},
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
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
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
	brokers := fs.String("kafka", env("SAGAFLOW_KAFKA", "127.0.0.1:19092"), "Kafka bootstrap servers (env SAGAFLOW_KAFKA)")
	partitions := fs.Int("partitions", 4, "partitions per topic; all topics share it so a saga id maps to one partition number everywhere")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *partitions < 1 {
		return fmt.Errorf("-partitions must be at least 1, got %d", *partitions)
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	specs := kafkatx.SagaflowTopics(*partitions)
	if err := kafkatx.CreateTopics(ctx, *brokers, specs); err != nil {
		return err
	}
	for _, s := range specs {
		fmt.Fprintf(stdout, "topic %s ready (%d partitions requested)\n", s.Name, s.Partitions)
	}
	return nil
}

// runDemo stands in until the orders service and the embedded mode exist
// (issue 5); it says so rather than pretending.
func runDemo(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, `sagaflow demo is not built yet. What is coming:
  - one process running the orders API, the orchestrator, stock and payment,
    on an embedded Kafka-protocol broker and an embedded Redis (nothing to install);
  - a web form at the printed URL: place an order, watch its saga reserve stock,
    charge payment and confirm, or compensate in reverse order when a step fails.
What works today: the transactional Kafka loop (saga/kafkatx) and its tests: make test`)
	return nil
}
