package saga

import (
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// What the participant runtime makes of its handler's answer to a command
// that takes no reply: nothing for a success, a dead letter for a refusal
// (and for a reply it cannot read), a transient error for a transient one.
func TestParticipantAnswersNothingToANoReplyCommand(t *testing.T) {
	p := &Participant{cfg: ParticipantConfig{Kafka: Kafka{DeadLetterTopic: "dlq"}, CommandTopic: "stock.commands"}, log: zap.NewNop()}
	cmd := Envelope{MessageID: "m-1", SagaID: "o1", Type: "CommitStock", Step: 2, Attempt: 1, Phase: PhaseAction,
		NoReply: true, Payload: json.RawMessage(`{}`)}
	m := cmd.Message("stock.commands")
	rec := kafkatx.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers, Partition: 1, Offset: 7}
	answer := func(o Outcome, reason string) Envelope {
		t.Helper()
		r, err := ReplyTo(cmd, "StockCommitted", o, reason, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	garbled := answer(Success, "")
	garbled.Payload = json.RawMessage(`{"outcome":"maybe"}`)

	for _, c := range []struct {
		name   string
		reply  Envelope
		dead   string // in the dead letter's reason; "" for none
		failed bool   // the batch fails transiently
	}{
		{"success", answer(Success, ""), "", false},
		{"no answer", Envelope{}, "", false},
		{"refusal", answer(Failure, "cannot confirm: nothing is reserved for this order"),
			"CommitStock refused, and its saga waits for no reply: cannot confirm: nothing is reserved for this order", false},
		{"transient", answer(Transient, "redis loading"), "", true},
		{"a reply it cannot read", garbled, "its handler answered with a bad reply", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := p.unanswered(rec, cmd, c.reply)
			if (err != nil) != c.failed {
				t.Fatalf("error %v, want one: %v", err, c.failed)
			}
			if c.dead == "" {
				if out.Topic != "" {
					t.Fatalf("sent %s to %s, want nothing", out.Value, out.Topic)
				}
				return
			}
			if out.Topic != "dlq" || string(out.Key) != "o1" || string(out.Header(HeaderType)) != "CommitStock" ||
				!strings.Contains(string(out.Header(kafkatx.HeaderDLQReason)), c.dead) ||
				string(out.Header(kafkatx.HeaderDLQOffset)) != "7" {
				t.Fatalf("dead letter to %q, key %q, type %q, reason %q, offset %q; want the command on dlq with %q",
					out.Topic, out.Key, out.Header(HeaderType), out.Header(kafkatx.HeaderDLQReason), out.Header(kafkatx.HeaderDLQOffset), c.dead)
			}
		})
	}
}
