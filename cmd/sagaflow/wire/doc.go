// Package wire assembles the order saga system in one process: the adapters
// that let the orders service read the stock and payment stores (orders never
// imports stock or payment, docs/design.md), the orchestrator and the
// participants, and the orders service with its read model. `sagaflow demo`
// runs what it builds, and so does the browser test of orders/web, so the
// test drives the same assembly the demo shows.
//
// It is wiring, not logic: each function only fills in the packages'
// configurations and calls their constructors.
package wire
