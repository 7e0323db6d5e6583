package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/saga"
)

func init() {
	commands["orchestrator"] = command{"run the saga orchestrator for the order saga", runOrchestrator}
}

func runOrchestrator(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("orchestrator", flag.ContinueOnError)
	in := infraFlags(fs)
	def := orders.DefaultSagaConfig()
	timings := sagaTimingFlags(fs, def)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := in.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("service", "orchestrator"))
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	o, err := newOrderOrchestrator(*in.kafka, *in.instance, timings(), log)
	if err != nil {
		return err
	}
	log.Info("orchestrator running", zap.String("instance", *in.instance))
	return o.Run(ctx)
}

// sagaTimingFlags registers the order saga's timings on fs and returns a
// function that reads them after Parse.
func sagaTimingFlags(fs *flag.FlagSet, def orders.SagaConfig) func() orders.SagaConfig {
	timeout := fs.Duration("step-timeout", def.StepTimeout, "how long one attempt of a step waits for its reply")
	attempts := fs.Int("attempts", def.Attempts, "attempts of each action and each compensation")
	backoff := fs.Duration("backoff", def.Backoff, "wait after a failed attempt, doubling each time")
	maxBackoff := fs.Duration("max-backoff", def.MaxBackoff, "cap of the doubling backoff")
	deadline := fs.Duration("deadline", def.Deadline, "how long a saga may take before it confirms; past it, it compensates")
	return func() orders.SagaConfig {
		c := def
		c.StepTimeout, c.Attempts, c.Backoff, c.MaxBackoff, c.Deadline = *timeout, *attempts, *backoff, *maxBackoff, *deadline
		return c
	}
}

// newOrderOrchestrator is the orchestrator of the order saga on the DESIGN.md
// topics.
func newOrderOrchestrator(brokers, instance string, cfg orders.SagaConfig, log *zap.Logger) (*saga.Orchestrator, error) {
	if cfg.StepTimeout <= 0 || cfg.Attempts < 1 || cfg.Backoff < 0 || cfg.MaxBackoff < 0 || cfg.Deadline < 0 {
		return nil, fmt.Errorf("saga timings: step timeout and attempts must be positive, backoffs and deadline not negative")
	}
	reg, err := saga.NewRegistry(orders.Definition(cfg))
	if err != nil {
		return nil, err
	}
	return saga.NewOrchestrator(saga.OrchestratorConfig{
		Kafka:    saga.Kafka{Brokers: brokers, InstanceID: instance},
		Registry: reg,
		Starts:   orders.Starts(),
	}, log)
}
