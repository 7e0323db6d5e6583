// Package web is the demo web page of the orders service: a form to place an
// order, a live view of its saga step by step, stock and balance panels and a
// list of recent sagas. It is plain HTML, CSS and JavaScript embedded in the
// binary (no build step, nothing fetched from elsewhere), written against the
// JSON and Server-Sent Events API of docs/http-api.md, which the orders
// service serves on the same origin.
//
// The page knows the order saga's step names (reserve-stock, charge-payment,
// confirm-order) and the wording of saga.Change causes, so that it can tell a
// person who has never heard of sagas what happened and why; an unknown step
// or cause is still shown, as written.
package web
