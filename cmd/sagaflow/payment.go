package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

func init() {
	commands["payment"] = command{"run the payment participant: charge and refund accounts in Redis", runPayment}
}

func runPayment(ctx context.Context, args []string, _ io.Writer) error {
	fs := flag.NewFlagSet("payment", flag.ContinueOnError)
	in := infraFlags(fs)
	seed := fs.Bool("seed", false, "open the demo accounts (accounts that exist keep their balance)")
	demo := fs.Bool("demo-scenarios", false, `honour the order's demo "scenario" (slow-payment: charge, withhold the reply)`)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := in.logger()
	if err != nil {
		return err
	}
	defer func() { _ = log.Sync() }()
	log = log.With(zap.String("service", "payment"), zap.String("instance", *in.instance))

	rdb, err := in.redisClient(ctx)
	if err != nil {
		return err
	}
	defer rdb.Close()
	st, err := payment.NewStore(payment.Config{}, rdb, log)
	if err != nil {
		return err
	}
	if err := st.Load(ctx); err != nil {
		return fmt.Errorf("redis at %s: %w", *in.redis, err)
	}
	if *seed {
		n, err := st.Seed(ctx, payment.DemoCustomers())
		if err != nil {
			return err
		}
		log.Info("demo accounts opened", zap.Int("added", n), zap.Int("accounts", len(payment.DemoCustomers())))
	}
	if *demo {
		log.Warn("demo scenarios on: an order can ask for its payment reply to be withheld")
	}
	return runParticipantLoop(ctx, in, log, "payment", kafkatx.TopicPaymentCommands, kafkatx.TopicPaymentReplies,
		payment.NewService(st, payment.ServiceConfig{DemoScenarios: *demo}, log).Handle)
}
