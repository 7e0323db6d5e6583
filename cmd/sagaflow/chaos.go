package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/sagaflow/sagaflow/chaos"
	"github.com/sagaflow/sagaflow/dev/kafkactl"
)

func init() {
	commands["chaos"] = command{"run the system under faults, then check nothing was lost or applied twice", runChaos}
}

func runChaos(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	seed := fs.Uint64("seed", 0, "seed of the fault schedule and the traffic; 0 draws one (printed: the same seed replays the same schedule)")
	duration := fs.Duration("duration", 3*time.Minute, "how long traffic and faults run")
	orders := fs.Int("orders", 0, "end the load once this many orders were accepted, even before -duration (0: -duration alone)")
	drain := fs.Duration("drain", 2*time.Minute, "after healing, every accepted order must end within this")
	rate := fs.Float64("rate", 25, "orders offered per second")
	clients := fs.Int("clients", 64, "most orders in flight at once")
	every := fs.Duration("every", 8*time.Second, "mean time between faults")
	faults := fs.String("faults", "all", "fault kinds, comma-separated: "+kindNames())
	brokers := fs.String("kafka", env("SAGAFLOW_KAFKA", "127.0.0.1:19092"), "Kafka bootstrap servers (env SAGAFLOW_KAFKA)")
	control := fs.String("kafka-control", "", "script that kills, starts, pauses and resumes Kafka nodes by number, as dev/kafka.sh does; empty: no broker faults")
	nodes := fs.Int("kafka-nodes", 0, "Kafka nodes the control script knows (0: as many as -kafka lists)")
	redisBin := fs.String("redis-server", "", "redis-server binary for the run's own Redis (empty: from PATH)")
	dir := fs.String("dir", filepath.Join(".cache", "chaos"), "folder for each run's logs, Redis data and reports")
	partitions := fs.Int("partitions", 4, "partitions of each topic of the run")
	plant := fs.String("plant", "", "run with a bug on purpose to see the suite find it: forget-charges (payment applies a redelivered charge again)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `Usage: sagaflow chaos [flags]

Runs orders, 2 orchestrators, 2 stock and 2 payment processes in a namespace of
their own on the given Kafka and on a Redis of the run's own (AOF always), each
behind a proxy in this process (Kafka's when -kafka-control names the brokers'
proxied listeners, as dev/kafka.sh does), sends orders the way real clients do (retries with the same
Idempotency-Key, duplicate POSTs, orders that complete, are declined or run out
of stock), injects faults drawn from -seed, heals, drains, and checks from
outside: stock and money conserved, nothing charged twice, every accepted order
ended, legal saga paths, no command lost or doubled, poison dead-lettered.
Prints a report, writes report.html and report.json in the run's folder, and
exits 1 on any violation. docs/chaos.md says more.`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	kinds, err := chaos.ParseKinds(*faults)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	rep, err := chaos.Run(ctx, chaos.Config{Seed: *seed, Duration: *duration, Orders: *orders, Drain: *drain, Rate: *rate, Clients: *clients,
		Every: *every, Kinds: kinds, Brokers: *brokers, Kafka: kafkactl.Nodes{Script: *control, Count: *nodes},
		RedisServer: *redisBin, Launch: launcher(self, nil), Dir: *dir, Partitions: *partitions, Plant: *plant, Progress: stdout})
	if err != nil {
		return err
	}
	return writeChaosReport(rep, stdout)
}

// launcher runs bin with a sagaflow command line; env is added to the
// environment (the test binary needs its own variable to act as sagaflow).
func launcher(bin string, env []string) chaos.Launcher {
	return func(args []string, extra []string) *exec.Cmd {
		c := exec.Command(bin, args...)
		c.Env = append(append(os.Environ(), env...), extra...)
		return c
	}
}

// writeChaosReport prints the report, writes its HTML and JSON next to the
// run's logs, and returns an error when it found violations.
func writeChaosReport(rep *chaos.Report, stdout io.Writer) error {
	rep.WriteText(stdout)
	for name, write := range map[string]func(io.Writer) error{"report.html": rep.WriteHTML, "report.json": rep.WriteJSON} {
		f, err := os.Create(filepath.Join(rep.Dir, name))
		if err != nil {
			return err
		}
		if err := write(f); err != nil {
			_ = f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s\n", name, filepath.Join(rep.Dir, name))
	}
	if !rep.OK() {
		return fmt.Errorf("%d violations (seed %d)", len(rep.Violations), rep.Seed)
	}
	return nil
}

func kindNames() string {
	s := ""
	for i, k := range chaos.AllKinds {
		if i > 0 {
			s += ","
		}
		s += string(k)
	}
	return s
}
