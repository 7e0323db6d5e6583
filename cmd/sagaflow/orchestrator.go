package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/saga"
)

func init() {
	commands["orchestrator"] = command{"run the saga orchestrator for the order saga", runOrchestrator}
}

func runOrchestrator(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("orchestrator", flag.ContinueOnError)
	in := infraFlags(fs)
	timings := sagaTimingFlags(fs, orders.DefaultSagaConfig())
	ckDir := fs.String("checkpoint-dir", defaultCheckpointDir(),
		"where the state of each owned partition is checkpointed, so that a restart reads saga.state from there on, not from its beginning; empty: no checkpoints")
	ckEvery := fs.Duration("checkpoint-every", saga.DefaultCheckpointEvery,
		"how often the checkpoints are written; a restart reads what was written to saga.state since the last one")
	log, err := in.parse(fs, args, "orchestrator")
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	cfg := withTimings(in.wire(), timings())
	cfg.CheckpointDir, cfg.CheckpointEvery = *ckDir, *ckEvery
	o, err := wire.NewOrchestrator(cfg, log)
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

// defaultCheckpointDir is under the user's cache directory: losing it costs
// a slower restart and nothing else. Without a home, there are none.
func defaultCheckpointDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "sagaflow", "checkpoints")
}
