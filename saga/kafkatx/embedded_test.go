package kafkatx_test

import (
	"context"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

func TestStartEmbedded(t *testing.T) {
	const parts = 3
	b, err := kafkatx.StartEmbedded(parts)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The probe `make up` waits for: a transactional write read back with
	// read_committed.
	if err := kafkatx.Probe(ctx, b.Brokers()); err != nil {
		t.Fatalf("probe: %v", err)
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": b.Brokers()})
	if err != nil {
		t.Fatal(err)
	}
	md, err := ac.GetMetadata(nil, true, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	for _, spec := range kafkatx.SagaflowTopics(parts) {
		tm, ok := md.Topics[spec.Name]
		if !ok || len(tm.Partitions) != parts {
			t.Errorf("topic %s: exists %v with %d partitions, want %d", spec.Name, ok, len(tm.Partitions), parts)
		}
	}
	res, err := ac.DescribeConfigs(ctx, []kafka.ConfigResource{{Type: kafka.ResourceTopic, Name: kafkatx.TopicSagaState}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res[0].Config["cleanup.policy"].Value; got != "compact" {
		t.Errorf("%s cleanup.policy = %q, want compact", kafkatx.TopicSagaState, got)
	}
	// Creating what exists is not an error (CreateTopics's contract).
	if err := kafkatx.CreateTopics(ctx, b.Brokers(), kafkatx.SagaflowTopics(parts)); err != nil {
		t.Errorf("creating the topics again: %v, want nil (they exist)", err)
	}
	ac.Close()
	b.Close()
	b.Close() // a second Close is harmless
}

func TestStartEmbeddedRejectsNoPartitions(t *testing.T) {
	if b, err := kafkatx.StartEmbedded(0); err == nil {
		b.Close()
		t.Fatal("StartEmbedded(0) succeeded")
	}
}
