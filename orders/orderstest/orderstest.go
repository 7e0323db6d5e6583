// Package orderstest holds the test helpers the orders tests share: the
// order saga's topics, fresh for one test on the real Kafka, and a runner
// for the parts a test starts in the background.
//
// It never imports orders, so the orders package's own tests can use it.
package orderstest

import (
	"context"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// Topics are one test's fresh topics of the order saga on the real Kafka.
type Topics struct {
	Brokers string

	Events, State, Control, StockCmd, StockRep, PayCmd, PayRep, DLQ string
}

// NewTopics creates the topics of the order saga for t, with partitions
// partitions each, on the Kafka of kafkatest.Brokers.
func NewTopics(t testing.TB, partitions int) Topics {
	t.Helper()
	b := kafkatest.Brokers(t)
	topic := func(name string) string { return kafkatest.Topic(t, b, name, partitions) }
	return Topics{
		Brokers: b,
		Events:  topic("events"), State: topic("state"), Control: topic("control"),
		StockCmd: topic("stockcmd"), StockRep: topic("stockrep"),
		PayCmd: topic("paycmd"), PayRep: topic("payrep"),
		DLQ: topic("dlq"),
	}
}

// Kafka is the settings of a saga runtime on these topics: its group is
// group suffixed with the test's events topic (so tests never share one),
// and its transactions are short enough for a test.
func (tt Topics) Kafka(group, instance string) saga.Kafka {
	return saga.Kafka{Brokers: tt.Brokers, Group: group + "-" + tt.Events, InstanceID: instance, DeadLetterTopic: tt.DLQ,
		MaxBatch: 100, MaxInterval: 20 * time.Millisecond, TransactionTimeout: 10 * time.Second,
		SessionTimeout: 6 * time.Second}
}

// RunBackground runs f until the test ends, and fails the test if f returns
// an error or does not return within 60s of being cancelled.
func RunBackground(t testing.TB, f func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("background runner stopped with: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("background runner did not stop within 60s")
		}
	})
}
