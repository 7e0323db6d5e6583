package kafkatx

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kversion"
)

// EmbeddedBroker is a Kafka-protocol broker running inside this process, so
// that `sagaflow demo` needs nothing installed. It is for trying sagaflow,
// not for keeping anything: records, offsets and transactions live in memory,
// nothing is replicated or written to disk, and all of it is gone at Close or
// when the process exits.
//
// It is franz-go's kfake, a broker written in Go that serves what this package
// relies on: transactions whose read_committed fetches stop at the last stable
// offset and leave out aborted records, offsets sent in a transaction, stable
// offset fetches (KIP-447), consumer groups with session timeouts, producer
// fencing, and topic admin. It passes the same conformance suite as real
// Kafka (conformance_test.go). It listens on a random loopback port, so other
// processes on this machine (the tests' child processes, a second `sagaflow`
// command) can use it while this process lives.
//
// librdkafka's mock cluster (kafka.NewMockCluster) was the first candidate and
// was rejected: its fetch reports the high watermark as the last stable offset
// and no aborted transactions, so read_committed consumers see the records of
// aborted and still-open transactions; and it does not serve CreateTopics.
type EmbeddedBroker struct {
	c       *kfake.Cluster
	brokers string
}

// StartEmbedded starts an embedded broker and creates the topics of docs/design.md
// (SagaflowTopics) on it with the given partition count.
func StartEmbedded(partitions int) (*EmbeddedBroker, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("kafkatx: embedded broker: %d partitions, want at least 1", partitions)
	}
	// Real Kafka advertises the client telemetry APIs (KIP-714) only when a
	// metrics receiver is configured, which ours is not; without this, every
	// librdkafka client would log a telemetry line and push metrics nobody
	// reads.
	versions := kversion.Stable()
	versions.SetMaxKeyVersion(71, -1) // GetTelemetrySubscriptions
	versions.SetMaxKeyVersion(72, -1) // PushTelemetry
	// Topics are not created on first use (kfake's default, and what
	// dev/kafka.sh sets on the real broker): a misspelt topic fails instead
	// of quietly becoming a new one.
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.MaxVersions(versions))
	if err != nil {
		return nil, fmt.Errorf("kafkatx: embedded broker: %w", err)
	}
	b := &EmbeddedBroker{c: c, brokers: c.ListenAddrs()[0]}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// saga.state is compacted here too, by a cleaner that runs once an
	// hour; kfake stores min.compaction.lag.ms but does not apply it.
	if err := CreateTopics(ctx, b.brokers, SagaflowTopics(partitions)); err != nil {
		c.Close()
		return nil, fmt.Errorf("kafkatx: embedded broker: %w", err)
	}
	return b, nil
}

// Brokers returns the bootstrap list: one 127.0.0.1 address.
func (b *EmbeddedBroker) Brokers() string { return b.brokers }

// Close stops the broker and drops everything it held. Clients still
// connected see the broker go down. Close may be called more than once.
func (b *EmbeddedBroker) Close() {
	if b == nil || b.c == nil {
		return
	}
	b.c.Close()
}
