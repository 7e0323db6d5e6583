package saga_test

import (
	"errors"
	"testing"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// BenchmarkTransition measures the orchestrator's per-message cost without
// Kafka: a start, a success reply that sends the next command, and a stale
// reply that is ignored.
func BenchmarkTransition(b *testing.B) {
	def := orderSaga()
	running := run(b, def, start())

	b.Run("start", func(b *testing.B) {
		in := start()
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := saga.Transition(def, nil, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("success", func(b *testing.B) {
		in := ok(0, 1)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := saga.Transition(def, running, in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("stale", func(b *testing.B) {
		in := ok(0, 7)
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := saga.Transition(def, running, in); !errors.Is(err, saga.ErrIgnored) {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkEnvelope(b *testing.B) {
	e := saga.Envelope{MessageID: "0194e4c8-7a3b-7cde-8f00-000000000001", SagaID: "order-1", Type: "ChargePayment",
		CausationID: "m-0", Traceparent: tp, Step: 1, Attempt: 1, Phase: saga.PhaseAction, Payload: []byte(`{"amount":1250}`)}
	m := e.Message("payment.commands")
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := saga.Decode(recordOf(m)); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func recordOf(m kafkatx.Message) kafkatx.Record {
	return kafkatx.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers}
}
