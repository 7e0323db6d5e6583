// Command check waits until a Kafka cluster really serves this project: it
// calls kafkatx.Probe (metadata, one transactional produce and commit, a
// read_committed read back) until it succeeds or the deadline passes. A port
// that accepts connections is not enough: a KRaft node listens well before its
// quorum, the transaction coordinator and __transaction_state are ready.
//
// dev/up.sh runs it after starting Kafka; a person can too:
//
//	go run ./dev/check -kafka 127.0.0.1:19092 -timeout 90s
//
// Exit status 0 means the probe succeeded, 1 that the deadline passed (the
// last error is printed), 2 a usage error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

func main() {
	def := os.Getenv("SAGAFLOW_KAFKA")
	if def == "" {
		def = "127.0.0.1:19092"
	}
	brokers := flag.String("kafka", def, "bootstrap servers, comma-separated (default $SAGAFLOW_KAFKA)")
	timeout := flag.Duration("timeout", 90*time.Second, "give up after this long")
	attempt := flag.Duration("attempt", 15*time.Second, "bound on one probe (a fresh client then tries again)")
	interval := flag.Duration("interval", time.Second, "pause between failed probes")
	flag.Parse()
	if flag.NArg() > 0 || *brokers == "" || *timeout <= 0 || *attempt <= 0 {
		flag.Usage()
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	start := time.Now()
	var last error
	for n := 1; ; n++ {
		err := probe(ctx, *brokers, *attempt)
		if err == nil {
			fmt.Printf("check: kafka %s ready after %s (%d probe(s))\n",
				*brokers, time.Since(start).Round(100*time.Millisecond), n)
			return
		}
		// Say what is wrong once per change, not once per second.
		if last == nil || err.Error() != last.Error() {
			fmt.Fprintf(os.Stderr, "check: kafka %s not ready yet: %v\n", *brokers, err)
		}
		last = err
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "check: kafka %s not ready after %s: %v\n",
				*brokers, time.Since(start).Round(100*time.Millisecond), last)
			os.Exit(1)
		case <-time.After(*interval):
		}
	}
}

// probe runs one Probe bounded by d, so a probe stuck on a half-started node
// is retried rather than eating the whole deadline.
func probe(ctx context.Context, brokers string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	err := kafkatx.Probe(ctx, brokers)
	if err != nil && errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("probe gave up after %s: %w", d, err)
	}
	return err
}
