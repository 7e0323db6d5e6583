package saga_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/sagaflow/sagaflow/saga"
)

func TestDecodeCommand(t *testing.T) {
	phases := map[string]saga.Phase{"Do": saga.PhaseAction, "Undo": saga.PhaseCompensation}
	cases := []struct {
		name, typ string
		phase     saga.Phase
		payload   string
		want      string // "" means success
	}{
		{"action", "Do", saga.PhaseAction, `{"n":1}`, ""},
		{"compensation", "Undo", saga.PhaseCompensation, `{"n":2}`, ""},
		{"unknown type", "Other", saga.PhaseAction, `{}`, `does not handle "Other"`},
		{"wrong phase", "Do", saga.PhaseCompensation, `{}`, `with phase "compensation", want "action"`},
		{"wrong shape", "Do", saga.PhaseAction, `{"n":"x"}`, "Do is not a thing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body struct{ N int }
			cmd := saga.Envelope{Type: c.typ, Phase: c.phase, Payload: json.RawMessage(c.payload)}
			err := saga.DecodeCommand("p", cmd, phases, "a thing", &body)
			if c.want == "" {
				if err != nil || body.N == 0 {
					t.Fatalf("err %v, body %+v", err, body)
				}
				return
			}
			if !errors.Is(err, saga.ErrPoison) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want poison mentioning %q", err, c.want)
			}
		})
	}
}
