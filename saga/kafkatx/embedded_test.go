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
	// Every topic is bounded: compacted, or with a retention of its own
	// (a cluster's default may be unlimited).
	bounded := func(command, event string) {
		t.Helper()
		for _, spec := range kafkatx.SagaflowTopics(parts) {
			res, err := ac.DescribeConfigs(ctx, []kafka.ConfigResource{{Type: kafka.ResourceTopic, Name: spec.Name}})
			if err != nil {
				t.Fatal(err)
			}
			want := event
			switch spec.Name {
			case kafkatx.TopicSagaState:
				if got := res[0].Config["cleanup.policy"].Value; got != "compact" {
					t.Errorf("%s cleanup.policy = %q, want compact", spec.Name, got)
				}
				continue
			case kafkatx.TopicStockCommands, kafkatx.TopicPaymentCommands:
				want = command
			}
			if got := res[0].Config["retention.ms"].Value; got != want {
				t.Errorf("%s retention.ms = %q, want %s", spec.Name, got, want)
			}
		}
	}
	bounded("3600000", "604800000")
	// Creating what exists is not an error (CreateTopics's contract), and
	// the retentions asked for are set on the topics that exist.
	if err := kafkatx.CreateTopics(ctx, b.Brokers(), kafkatx.SagaflowTopicsRetaining(parts, 2*time.Hour, 48*time.Hour)); err != nil {
		t.Errorf("creating the topics again: %v, want nil (they exist)", err)
	}
	bounded("7200000", "172800000")
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
