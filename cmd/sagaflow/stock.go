package main

import (
	"context"
	"flag"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/stock"
)

func init() {
	commands["stock"] = participantCommand("stock", "run the stock participant: reserve, release and sell inventory in Redis", stockFlags)
}

func stockFlags(fs *flag.FlagSet) participantSetup {
	seed := fs.Bool("seed", false, "add the demo catalogue (products that exist keep their stock)")
	return func(ctx context.Context, rdb *redis.Client, w wire.Windows, log *zap.Logger) (saga.CommandHandler, error) {
		st, err := stock.NewStore(stock.Config{DedupTTL: w.DedupTTL}, rdb, log)
		if err != nil {
			return nil, err
		}
		if err := loadStore(ctx, st, *seed, stock.DemoCatalogue(), log, "demo catalogue seeded", "products"); err != nil {
			return nil, err
		}
		return stock.NewService(st, log).Handle, nil
	}
}
