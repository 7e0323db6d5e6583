package saga_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

// pass builds a command that carries the saga's data; it fails when the data
// asks it to ({"fail":"ChargePayment"}), so tests can reach the builder error
// paths with data alone.
func pass(typ string) saga.Builder {
	return func(data json.RawMessage) (saga.Command, error) {
		if bytes.Contains(data, []byte(`"fail":"`+typ+`"`)) {
			return saga.Command{}, fmt.Errorf("no %s for this order", typ)
		}
		if bytes.Contains(data, []byte(`"panic":"`+typ+`"`)) {
			panic("bug in " + typ + " builder")
		}
		return saga.Command{Type: typ, Payload: data}, nil
	}
}

// orderSaga is the order saga of docs/design.md, with timings small enough to read.
func orderSaga() *saga.Definition {
	return &saga.Definition{
		Name: "order",
		Steps: []saga.Step{
			{
				Name: "reserve-stock", Topic: "stock.commands",
				Action: pass("ReserveStock"), Compensation: pass("ReleaseStock"),
				Timeout: 5 * time.Second,
				Retry:   saga.RetryPolicy{MaxAttempts: 3, Backoff: 100 * time.Millisecond, MaxBackoff: time.Second},
			},
			{
				Name: "charge-payment", Topic: "payment.commands",
				Action: pass("ChargePayment"), Compensation: pass("RefundPayment"),
				Timeout: 5 * time.Second,
				Retry:   saga.RetryPolicy{MaxAttempts: 3, Backoff: 200 * time.Millisecond},
			},
			{
				Name: "confirm-order", Topic: "orders.commands",
				Action:  pass("ConfirmOrder"),
				Timeout: 5 * time.Second,
				Retry:   saga.RetryPolicy{MaxAttempts: 2},
			},
		},
		Deadline:    30 * time.Second,
		OnCompleted: saga.Event{Topic: "orders.events", Type: "OrderConfirmed"},
		OnCancelled: saga.Event{Topic: "orders.events", Type: "OrderCancelled"},
		OnFailed:    saga.Event{Topic: "orders.events", Type: "OrderFailed"},
	}
}

// shippingSaga has a step after its pivot: reserve (compensable), confirm
// (the pivot), notify (retriable only).
func shippingSaga() *saga.Definition {
	return &saga.Definition{
		Name: "shipping",
		Steps: []saga.Step{
			{Name: "reserve", Topic: "stock.commands", Action: pass("Reserve"), Compensation: pass("Release"),
				Timeout: time.Second, Retry: saga.RetryPolicy{MaxAttempts: 2}},
			{Name: "confirm", Topic: "orders.commands", Action: pass("Confirm"),
				Timeout: time.Second, Retry: saga.RetryPolicy{MaxAttempts: 2}},
			{Name: "notify", Topic: "mail.commands", Action: pass("Notify"),
				Timeout: time.Second, Retry: saga.RetryPolicy{MaxAttempts: 2, Backoff: time.Second}},
		},
		OnCompleted: saga.Event{Topic: "orders.events", Type: "Shipped"},
	}
}

// Inputs, by what they do.

func startAt(d time.Duration, data string) saga.Input {
	return saga.Input{Kind: saga.KindStart, At: at(d), MessageID: "m-start",
		Start: saga.Start{SagaID: "order-1", Data: json.RawMessage(data)}}
}

func start() saga.Input { return startAt(0, `{"order":"order-1","amount":1250}`) }

func reply(d time.Duration, step, attempt int, phase saga.Phase, o saga.Outcome, reason string) saga.Input {
	return saga.Input{Kind: saga.KindReply, At: at(d), MessageID: fmt.Sprintf("m-%d-%d-%s-%s", step, attempt, phase, o),
		Reply: saga.Reply{Step: step, Attempt: attempt, Phase: phase, Outcome: o, Reason: reason}}
}

func ok(step, attempt int) saga.Input {
	return reply(time.Second, step, attempt, saga.PhaseAction, saga.Success, "")
}

func nok(step, attempt int, reason string) saga.Input {
	return reply(time.Second, step, attempt, saga.PhaseAction, saga.Failure, reason)
}

func flaky(step, attempt int) saga.Input {
	return reply(time.Second, step, attempt, saga.PhaseAction, saga.Transient, "redis unavailable")
}

func undone(step, attempt int) saga.Input {
	return reply(time.Second, step, attempt, saga.PhaseCompensation, saga.Success, "")
}

func undoFailed(step, attempt int) saga.Input {
	return reply(time.Second, step, attempt, saga.PhaseCompensation, saga.Failure, "bank offline")
}

func tick(d time.Duration) saga.Input {
	return saga.Input{Kind: saga.KindTick, At: at(d)}
}

func operator(op saga.Op) saga.Input {
	return saga.Input{Kind: saga.KindOperator, At: at(time.Minute), MessageID: "m-op",
		Operator: saga.Operator{Op: op, Reason: "ticket 42"}}
}

// pos renders where a saga is, e.g. "Running(1)".
func pos(i *saga.Instance) string {
	if i == nil {
		return "nil"
	}
	switch i.State {
	case saga.Completed, saga.Cancelled:
		return string(i.State)
	}
	return fmt.Sprintf("%s(%d)", i.State, i.Step)
}

// outs renders messages, e.g. "ChargePayment 1/action#2" or "OrderCancelled".
func outs(ms []saga.Outgoing) string {
	var b []string
	for _, m := range ms {
		if m.IsCommand() {
			b = append(b, fmt.Sprintf("%s %d/%s#%d", m.Type, m.Step, m.Phase, m.Attempt))
		} else {
			b = append(b, m.Type)
		}
	}
	return strings.Join(b, ", ")
}

func snapshot(t testing.TB, i *saga.Instance) string {
	t.Helper()
	if i == nil {
		return "null"
	}
	b, err := json.Marshal(i)
	if err != nil {
		t.Fatalf("marshal instance: %v", err)
	}
	// The orchestrator writes and reads snapshots with the faster codec;
	// every instance a test looks at must come out of it as encoding/json
	// has it, and go back in unchanged.
	fast, err := saga.EncodeSnapshot(i)
	if err != nil || !bytes.Equal(fast, b) {
		t.Fatalf("EncodeSnapshot differs from encoding/json (%v):\n%s\n%s", err, fast, b)
	}
	var want saga.Instance
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatalf("unmarshal instance: %v", err)
	}
	if got, err := saga.DecodeSnapshot(b); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeSnapshot differs from encoding/json (%v):\n%+v\n%+v", err, got, want)
	}
	return string(b)
}

// apply runs Transition and checks what holds for every call: the argument is
// not modified, the result passes Check, and an error is one of the two
// sentinels.
func apply(t testing.TB, def *saga.Definition, inst *saga.Instance, in saga.Input) (*saga.Instance, []saga.Outgoing, error) {
	t.Helper()
	before := snapshot(t, inst)
	next, out, err := saga.Transition(def, inst, in)
	if after := snapshot(t, inst); after != before {
		t.Fatalf("Transition modified its argument:\nbefore %s\nafter  %s", before, after)
	}
	if err != nil && !errors.Is(err, saga.ErrIgnored) && !errors.Is(err, saga.ErrIllegal) {
		t.Fatalf("error wraps neither ErrIgnored nor ErrIllegal: %v", err)
	}
	if next != nil {
		if cerr := next.Check(); cerr != nil {
			t.Fatalf("after %s input: %v\n%s", in.Kind, cerr, snapshot(t, next))
		}
	}
	return next, out, err
}

// run applies ins in order, failing the test on any error.
func run(t testing.TB, def *saga.Definition, ins ...saga.Input) *saga.Instance {
	t.Helper()
	var inst *saga.Instance
	for k, in := range ins {
		var err error
		inst, _, err = apply(t, def, inst, in)
		if err != nil {
			t.Fatalf("input %d (%s): %v", k, in.Kind, err)
		}
	}
	return inst
}
