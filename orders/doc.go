// Package orders is the orders service: the order saga's definition, the
// HTTP API that places orders and shows them, and the read model behind it.
//
// Placing an order (POST /orders) validates the request, prices it from the
// catalogue, and produces OrderPlaced to orders.events, the start of an
// order saga (Definition). The API answers 202 once Kafka acknowledged the
// record: from then on the saga will run, whatever happens to this process.
// Behind idempotency.Middleware, a retried request with the same
// Idempotency-Key gets the first answer again instead of a second order.
//
// The API never asks the orchestrator what an order's state is. It reads
// ReadModel, a view built by following saga.state (the orchestrator's
// snapshots, written in the same Kafka transactions as its commands) and
// orders.events with read_committed, so it shows exactly what the
// orchestrator committed, a few milliseconds later, and can be rebuilt from
// the log at any time.
//
// The contracts are docs/http-api.md (HTTP, also served as openapi.yaml),
// docs/messages.md and docs/asyncapi.yaml (Kafka).
package orders
