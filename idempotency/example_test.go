package idempotency_test

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/idempotency"
)

// reserveLua is what a stock participant writes for "reserve": only its
// domain. KEYS come in pairs per order line (available, reserved), ARGV holds
// the quantities. It checks every line before it writes anything, answers
// a refusal as an outcome, and records the quantities it moved so that
// release can give back exactly those.
const reserveLua = `
for i = 1, #ARGV do
  local have = tonumber(redis.call('GET', KEYS[2*i-1]) or '0')
  if have < tonumber(ARGV[i]) then
    return cjson.encode({ok = false, reason = 'insufficient stock', line = i})
  end
end
local moved = {}
for i = 1, #ARGV do
  redis.call('DECRBY', KEYS[2*i-1], ARGV[i])
  redis.call('INCRBY', KEYS[2*i], ARGV[i])
  moved[i] = tonumber(ARGV[i])
end
return cjson.encode({ok = true, reserved = moved})
`

// releaseLua undoes reserve from what reserve recorded (ACTION), not from
// the release command's arguments: a refund or release gives back exactly
// what was taken, and nothing when the reserve was refused.
const releaseLua = `
local action = cjson.decode(ACTION)
if not action.ok then
  return cjson.encode({ok = true, released = 0})
end
local n = 0
for i, q in ipairs(action.reserved) do
  redis.call('INCRBY', KEYS[2*i-1], q)
  redis.call('DECRBY', KEYS[2*i], q)
  n = n + q
end
return cjson.encode({ok = true, released = n})
`

func Example_stockBarrier() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:16379"})
	store, err := idempotency.New(idempotency.Config{}, rdb, nil)
	if err != nil {
		panic(err)
	}
	stock := store.Barrier("stock", reserveLua, releaseLua)

	ref := idempotency.Ref{SagaID: "0192b5c4-order-1", Step: "reserve-stock"}
	keys := []string{"stock:{sku-1}:available", "stock:{sku-1}:reserved"}

	res, err := stock.Action(ctx, ref, keys, 2) // ReserveStock, maybe redelivered
	switch {
	case err != nil:
		// errors.Is(err, idempotency.ErrUnavailable): retry; ErrScript: dead-letter.
	case res.Hanging:
		// Reply StockRejected: the orchestrator already compensated this step.
	default:
		fmt.Println(res.Outcome, res.Repeat) // reply StockReserved or StockRejected from the outcome
	}

	// ReleaseStock: same keys, quantities come from what reserve recorded.
	res, err = stock.Compensate(ctx, ref, keys)
	fmt.Println(res.Outcome, res.Null, err)
}
