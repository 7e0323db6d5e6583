// Package participanttest is the test harness that every saga participant
// (stock, payment) shares: replies reduced to what every delivery must
// repeat, delivering one command many times, a participant on fresh topics
// of the real Kafka (in process, or in a child process that crashes at a
// failpoint and starts again), killing Redis under load, and the
// benchmarks' plumbing. What a command does, and what the domain's Redis
// must hold afterwards, stays in each participant's own tests.
package participanttest
