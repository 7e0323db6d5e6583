package main

import (
	"context"
	"flag"
	"io"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/orders"
)

func init() {
	commands["orchestrator"] = command{"run the saga orchestrator for the order saga", runOrchestrator}
}

func runOrchestrator(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("orchestrator", flag.ContinueOnError)
	in := infraFlags(fs)
	timings := sagaTimingFlags(fs, orders.DefaultSagaConfig())
	log, err := in.parse(fs, args, "orchestrator")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	o, err := wire.NewOrchestrator(withTimings(in.wire(), timings()), log)
	if err != nil {
		return err
	}
	h := &health{assigned: func() int64 { return o.LoopStats().Assigned }}
	if _, err := h.serve(ctx, *in.health, log); err != nil {
		return err
	}
	log.Info("orchestrator running")
	return h.run(ctx, o.Run)
}

func withTimings(c wire.Config, s orders.SagaConfig) wire.Config {
	c.Saga = s
	return c
}
