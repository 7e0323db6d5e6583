package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
)

// participantSetup builds a participant's handler on its Redis, once the
// flags are parsed.
type participantSetup func(ctx context.Context, rdb *redis.Client, w wire.Windows, log *zap.Logger) (saga.CommandHandler, error)

// runParticipant is the stock and payment subcommands: flags registers the
// participant's own flags next to the shared ones and returns its setup;
// the participant then runs until ctx is done.
func runParticipant(ctx context.Context, args []string, scope string, flags func(fs *flag.FlagSet) participantSetup) error {
	fs := flag.NewFlagSet(scope, flag.ContinueOnError)
	in := infraFlags(fs)
	setup := flags(fs)
	pipeline := fs.Bool("redis-pipeline", true, "send the Redis calls that a batch's sagas make at one time as one pipeline, not one round trip each (docs/performance.md)")
	log, err := in.parse(fs, args, scope)
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()

	rdb, err := in.redisClient(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	h, err := setup(ctx, rdb, in.windows, log)
	if err != nil {
		return fmt.Errorf("redis at %s: %w", *in.redis, err)
	}
	// A chaos run whose failpoint silently did not arm would prove nothing.
	if err := failpoint.EnvErr(); err != nil {
		return err
	}
	if armed := failpoint.Armed(); len(armed) > 0 {
		log.Warn("failpoints armed: this process will crash or stall on purpose", zap.Strings("failpoints", armed))
	}
	if err := in.ensureTopics(ctx); err != nil {
		return err
	}
	var pl *idempotency.Pipeliner
	if *pipeline {
		pl = idempotency.NewPipeliner(rdb, 0)
	}
	p, err := wire.NewParticipant(in.wire(), wire.Participant{
		Scope: scope, Handler: h, Pipeline: pl,
		// Scoped: "participant/after-apply" crashes every participant of
		// the process, "stock/after-apply" only this one.
		Failpoint: failpoint.Scoped(scope),
	}, log)
	if err != nil {
		return err
	}
	hl := &health{assigned: func() int64 { return p.Stats().Assigned }}
	if _, err := hl.serve(ctx, *in.health, log); err != nil {
		return err
	}
	log.Info("participant running")
	return hl.run(ctx, p.Run)
}

// participantCommand is the subcommand of the participant scope.
func participantCommand(scope, summary string, flags func(fs *flag.FlagSet) participantSetup) command {
	return command{summary, func(ctx context.Context, args []string, _ io.Writer) error {
		return runParticipant(ctx, args, scope, flags)
	}}
}

// loadStore loads a participant's store and, with seed, adds the demo data
// it lacks, logging how many of them it added under key.
func loadStore[T any](ctx context.Context, st interface {
	Load(context.Context) error
	Seed(context.Context, []T) (int, error)
}, seed bool, demo []T, log *zap.Logger, msg, key string) error {
	if !seed {
		demo = nil
	}
	n, err := wire.Prepare(ctx, st, demo)
	if err != nil {
		return err
	}
	if seed {
		log.Info(msg, zap.Int("added", n), zap.Int(key, len(demo)))
	}
	return nil
}
