package main

import (
	"context"
	"flag"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
)

func init() {
	commands["payment"] = participantCommand("payment", "run the payment participant: charge and refund accounts in Redis", paymentFlags)
}

func paymentFlags(fs *flag.FlagSet) participantSetup {
	seed := fs.Bool("seed", false, "open the demo accounts (accounts that exist keep their balance)")
	forget := fs.Bool("unsafe-forget-charges", false, "TESTS ONLY: forget each charge before applying it, so a redelivered charge charges twice "+
		"(the planted bug the chaos suite's own test must catch)")
	demo := fs.Bool("demo-scenarios", false, `honour the order's demo "scenario" (slow-payment: charge, withhold the reply)`)
	return func(ctx context.Context, rdb *redis.Client, w wire.Windows, log *zap.Logger) (saga.CommandHandler, error) {
		st, err := payment.NewStore(payment.Config{DedupTTL: w.DedupTTL, UnsafeForgetCharges: *forget}, rdb, log)
		if err != nil {
			return nil, err
		}
		if err := loadStore(ctx, st, *seed, payment.DemoCustomers(), log, "demo accounts opened", "accounts"); err != nil {
			return nil, err
		}
		if *forget {
			log.Warn("-unsafe-forget-charges: a redelivered charge charges again; never run this outside the chaos suite's test")
		}
		if *demo {
			log.Warn("demo scenarios on: an order can ask for its payment reply to be withheld")
		}
		return payment.NewService(st, payment.ServiceConfig{DemoScenarios: *demo}, log).Handle, nil
	}
}
