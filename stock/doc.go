// Package stock is the stock participant of the order saga: inventory in
// Redis, and the handler that reserves, releases and sells it in answer to
// the orchestrator's commands (docs/messages.md).
//
// # Quantities
//
// Every product has four counters: available (can be reserved), reserved
// (held for an order in flight), sold (confirmed orders) and stocked (what
// Seed put in). Stock is conserved: for every product, at every instant,
//
//	stocked = available + reserved + sold,   each ≥ 0
//
// because every script moves a quantity from one counter to another in one
// atomic step, and never moves more than the source holds.
//
// # Commands
//
//	ReserveStock (step reserve-stock, action)        → StockReserved / StockRejected
//	ReleaseStock (step reserve-stock, compensation)  → StockReleased
//	CommitStock  (step confirm-order, the pivot)     → StockCommitted, or none
//
// The order saga sends CommitStock with no reply asked (the "reply: none"
// header, saga.Step.NoReply): the order is Confirmed in the transaction that
// sends it, and the participant runtime sends no StockCommitted. A commit
// refused then (nothing reserved for the order: a bug, since nothing
// releases a reservation once the pivot is sent) is dead-lettered with its
// reason for an operator instead of answered.
//
// A reservation is all-or-nothing: one Lua script checks every line of the
// order and then moves them all, or moves none and answers the shortfall
// ("out of stock: Teapot (wanted 5, 2 left)"). Reserve and release run
// behind idempotency's barrier for the saga's "reserve-stock" step, so each
// runs once per saga however often it is delivered, a release whose reserve
// never ran succeeds without doing anything (null compensation), and a
// reserve that arrives after its release is refused (hanging). Release gives
// back what the reserve recorded, not what the release command says. Commit
// is apply-once: it sells what is reserved for the order, once.
//
// # Errors
//
// Three kinds, told apart by Handle:
//
//   - business refusal (out of stock, a hanging reserve, a commit with
//     nothing reserved): a reply with Outcome Failure and a reason for
//     people; recorded, so a redelivery gets the same refusal;
//   - transient (Redis unreachable, loading, out of memory): a plain error;
//     the participant runtime handles the batch again after a backoff, which
//     is safe because the scripts are idempotent;
//   - poison (not an order, no lines, an unknown product, a quantity ≤ 0 or
//     above MaxQuantity): an error wrapping saga.ErrPoison; the runtime
//     dead-letters the command with the reason and moves on. Nothing was
//     applied: every check runs before the first write.
//
// # Keys
//
// Under Config.Prefix ("stock" by default):
//
//	stock:product:<id>                    hash: name, price_cents, available, reserved, sold, stocked
//	stock:products                        set of product ids (the catalogue)
//	stock:order:{<saga>}                  hash: state (reserved, released, committed), lines
//	stock:idem:{<saga>}:reserve-stock:…   barrier records of reserve / release
//	stock:idem:{<saga>}:confirm-order:commit   apply-once record of commit
//
// A reservation touches several products in one script, so the keys of one
// order do not share a Redis Cluster slot: run stock on a single Redis (with
// replicas for failover), not on a cluster.
package stock
