// Package chaos runs the order saga system as real processes on real Kafka
// and Redis, drives it with orders the way real clients send them, injects
// faults on a schedule drawn from a seed, heals, drains, and then checks from
// outside that nothing was lost, applied twice or left hanging:
// `sagaflow chaos` and `make chaos`.
//
// The tree, in the manner of etcd's robustness tests:
//
//	scenario  (system.go)   orders, 2 orchestrators, 2 stock, 2 payment
//	                        processes in their own namespace of topics and
//	                        groups, on their own Redis (AOF always), with
//	                        in-process TCP proxies between them and Redis
//	                        and between them and each Kafka broker
//	faults    (faults.go)   SIGKILL and restart, SIGSTOP past the session
//	                        timeout, broker kill and pause, Redis kill -9,
//	                        latency, stalls and cut connections to Redis
//	                        and to Kafka,
//	                        failpoints at the crash windows, re-published
//	                        commands and replies, poison records
//	traffic   (traffic.go)  clients that retry with the same Idempotency-Key,
//	                        post some orders twice on purpose, and mix orders
//	                        that complete, are declined or run out of stock
//	checks    (check.go)    the invariants of docs/design.md, read from Redis
//	                        and from the topics with read_committed consumers
//	report    (report.go)   text and a self-contained HTML page
//
// The same seed draws the same schedule (Schedule is a pure function of the
// configuration); what the system does under it is not deterministic, which
// is the point of running many seeds.
package chaos
