package orders

import (
	"context"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestReadModelCaughtUpOnlyAfterWhatTheTopicsHeld: a read model started on
// topics that already hold sagas says it caught up only once it shows
// them, at their latest state (the API's /readyz waits for that).
func TestReadModelCaughtUpOnlyAfterWhatTheTopicsHeld(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	state := kafkatest.Topic(t, brokers, "rm-state", 2)
	events := kafkatest.Topic(t, brokers, "rm-events", 2)
	var msgs []kafkatx.Message
	const n = 200
	for i := range n {
		r := startSaga(t, testOrder("ord-"+strconv.Itoa(i), "alice"))
		msgs = append(msgs, kafkatx.NewMessage(state, []byte(r.inst.ID), r.snapshot()))
		r.reply("success")
		msgs = append(msgs, kafkatx.NewMessage(state, []byte(r.inst.ID), r.snapshot()))
	}
	kafkatest.Produce(t, brokers, msgs)

	m, err := NewReadModel(ReadModelConfig{Brokers: brokers, StateTopic: state, EventsTopic: events}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if m.CaughtUp() {
		t.Fatal("caught up before it ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(30 * time.Second)
	for !m.CaughtUp() {
		if time.Now().After(deadline) {
			t.Fatal("not caught up within 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i := range n {
		o, ok := m.Get("ord-" + strconv.Itoa(i))
		if !ok || o.Status != StatusRunning || len(o.Steps) == 0 || o.Steps[0].Status != saga.StepDone {
			t.Fatalf("caught up, but order %d is %+v (found %v), want Running with its first step done", i, o, ok)
		}
	}
}
