// Package idempotency makes effects happen once although the messages and
// requests that cause them arrive more than once.
//
// Kafka delivers a command again after a crash, a rebalance or a timeout, and
// an HTTP client retries a POST whose answer it never got. Each of those
// copies must find out that the work is done and answer what the first copy
// answered. This package keeps that record in Redis, next to the state it
// guards, and writes both in one step:
//
//   - Script wraps a participant's domain Lua (reserve stock, charge an
//     account) so that checking the dedup key, applying the effect and
//     recording the outcome are one atomic script. A redelivered command
//     gets the recorded outcome, never a second effect.
//   - Barrier pairs an action with its compensation per saga step and adds
//     DTM's barrier rules: a compensation whose action never ran is a no-op
//     that succeeds, and an action arriving after its compensation is
//     refused (hanging) instead of leaving an effect nobody undoes.
//   - Store.Claim, Complete and Release guard effects that live outside
//     Redis, with a lease for crashed holders and a fencing token so a stale
//     holder cannot overwrite the one that took over.
//   - Middleware gives HTTP handlers Idempotency-Key semantics: the same key
//     and body replay the first response, another body is 422, a retry in
//     flight is 409.
//
// # Keys
//
// Dedup keys are per saga, step and operation (Key):
//
//	idem:{<saga>}:<step>:<op>                 apply-once records (Script)
//	idem:<barrier>:{<saga>}:<step>:action     barrier records (Barrier)
//	idem:<barrier>:{<saga>}:<step>:compensation
//	idem:http:{<scope>}:<key>[:lease]          HTTP records (Middleware)
//
// All records expire after Config.TTL, DefaultTTL (8 days) unless set: longer
// than Kafka keeps the commands they guard, so no redelivery can outlive its
// record.
//
// # Errors
//
// Three kinds, as everywhere in sagaflow. A business refusal is an outcome,
// not an error: the domain body returns it (`{"ok":false,...}`), it is
// recorded, and the participant replies with it (a hanging action is one
// too, Result.Hanging). ErrUnavailable is transient: retry with backoff, which
// is safe because the retry finds the record if the first try got through.
// ErrScript and ErrInvalidKey are poison: dead-letter the message.
//
// # Durability
//
// The record is exactly as durable as Redis makes it. With AOF and
// appendfsync always (what `make up` runs) an acknowledged script is on disk
// before the participant commits its reply and offset to Kafka. With
// everysec a crash can lose the last second of effects together with their
// records while Kafka already holds the replies and the committed offsets:
// the saga moves on trusting effects Redis forgot, and nothing redelivers
// the commands to apply them again.
package idempotency
