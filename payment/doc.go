// Package payment is the payment participant of the order saga: customer
// accounts in Redis, and the handler that charges and refunds them in answer
// to the orchestrator's commands (docs/messages.md).
//
// # Money
//
// Amounts are int64 cents. Every account has a balance, the amount captured
// from it for orders (charged and not refunded), a per-order limit (0: none)
// and what Seed deposited. Money is conserved: for every account, at every
// instant,
//
//	deposited = balance + captured,   each ≥ 0
//
// because a charge moves an amount from balance to captured and a refund
// moves it back, each in one atomic script that never moves more than the
// source holds.
//
// Redis scripts run in Lua, whose numbers are doubles: integers are exact
// only up to 2^53. So every amount, balance and limit is kept at or below
// MaxCents = 2^53-1 (about 90 trillion): Go refuses larger ones, the charge
// script checks again, the arithmetic itself is Redis's HINCRBY (exact
// int64), and amounts travel between Lua and Go as decimal strings, never
// through Lua's number formatting (14 significant digits).
//
// # Commands
//
//	ChargePayment (step charge-payment, action)        → PaymentCharged / PaymentDeclined
//	RefundPayment (step charge-payment, compensation)  → PaymentRefunded
//
// Both run behind idempotency's barrier for the saga's "charge-payment"
// step: each runs once per saga however often it is delivered; a refund
// whose charge never ran succeeds without doing anything (null
// compensation) and blocks that charge from then on; a charge that arrives
// after its refund is refused (hanging). A refund gives back exactly what
// the charge recorded, not what the refund command says.
//
// Declines are business failures with a reason for people: "insufficient
// funds: balance 12.00, order 30.00", "over the per-order limit of 500.00".
//
// # Errors
//
// As in stock: a business refusal is a reply with Outcome Failure
// (recorded, so every redelivery gets the same); Redis unreachable is
// transient (a plain error: the runtime retries); a command that can never
// apply is poison (wraps saga.ErrPoison: dead-lettered, nothing applied):
// not an order, an unknown customer, an amount ≤ 0 or above MaxCents, a
// total_cents that is not the sum of the lines.
//
// # Demo scenario
//
// With ServiceConfig.DemoScenarios on, an order whose scenario is
// "slow-payment" is charged but gets no reply, so the orchestrator's step
// times out and compensates: the refund then really gives the money back.
//
// # Keys
//
// Under Config.Prefix ("payment" by default):
//
//	payment:customer:<id>                   hash: name, balance, captured, limit, deposited
//	payment:customers                       set of customer ids
//	payment:order:{<saga>}                  hash: customer, amount, state (captured, refunded)
//	payment:idem:{<saga>}:charge-payment:…  barrier records of charge / refund
package payment
