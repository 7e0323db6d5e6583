package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

func init() {
	commands["stock"] = command{"run the stock participant: reserve, release and sell inventory in Redis", runStock}
}

func runStock(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("stock", flag.ContinueOnError)
	in := infraFlags(fs)
	seed := fs.Bool("seed", false, "add the demo catalogue (products that exist keep their stock)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := in.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("service", "stock"), zap.String("instance", *in.instance))

	rdb, err := in.redisClient(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := stock.NewStore(stock.Config{}, rdb, log)
	if err != nil {
		return err
	}
	if err := st.Load(ctx); err != nil {
		return fmt.Errorf("redis at %s: %w", *in.redis, err)
	}
	if *seed {
		n, err := st.Seed(ctx, stock.DemoCatalogue())
		if err != nil {
			return err
		}
		log.Info("demo catalogue seeded", zap.Int("added", n), zap.Int("products", len(stock.DemoCatalogue())))
	}
	return runParticipantLoop(ctx, in, log, "stock", kafkatx.TopicStockCommands, kafkatx.TopicStockReplies,
		stock.NewService(st, log).Handle)
}

// runParticipantLoop runs one participant until ctx is done: the wiring stock
// and payment share.
func runParticipantLoop(ctx context.Context, in *infra, log *zap.Logger, scope, cmdTopic, replyTopic string, h saga.CommandHandler) error {
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
	p, err := saga.NewParticipant(saga.ParticipantConfig{
		Kafka:        saga.Kafka{Brokers: *in.kafka, InstanceID: *in.instance},
		CommandTopic: cmdTopic,
		ReplyTopic:   replyTopic,
		// Scoped: "participant/after-apply" crashes every participant of
		// the process, "stock/after-apply" only this one.
		Failpoint: failpoint.Scoped(scope),
	}, h, log)
	if err != nil {
		return err
	}
	log.Info("participant running", zap.String("commands", cmdTopic), zap.String("replies", replyTopic))
	return p.Run(ctx)
}
