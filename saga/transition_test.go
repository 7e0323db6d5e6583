package saga_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// act is one input and what must come of it.
type act struct {
	in  saga.Input
	pos string // position after, see pos
	out string // messages, see outs
	err error  // sentinel the error must wrap, nil for none
}

func TestTransitionScenarios(t *testing.T) {
	S := time.Second
	ms := time.Millisecond
	tests := []struct {
		name  string
		def   func() *saga.Definition
		acts  []act
		check func(t *testing.T, i *saga.Instance)
	}{
		{
			name: "happy path",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: ok(2, 1), pos: "Completed", out: "OrderConfirmed"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				if i.Version != 4 || len(i.History) != 4 || i.Reason != "" || !i.IsTerminal() || !i.NextTimer().IsZero() {
					t.Errorf("version %d, history %d, reason %q, terminal %v, next timer %v", i.Version, len(i.History), i.Reason, i.IsTerminal(), i.NextTimer())
				}
			},
		},
		{
			name: "business failure of the first step cancels with nothing to compensate",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: nok(0, 1, "out of stock: sku-7"), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepFailed, saga.StepSkipped, saga.StepSkipped)
				if i.Reason != "step reserve-stock failed: out of stock: sku-7" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "business failure compensates the earlier steps in reverse",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: nok(1, 1, "payment declined: insufficient funds"), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepCompensated, saga.StepFailed, saga.StepSkipped)
				if got := i.History[2].Cause; got != "step charge-payment failed: payment declined: insufficient funds" {
					t.Errorf("cause %q", got)
				}
			},
		},
		{
			name: "a pivot that says no turns the saga back",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: nok(2, 1, "order withdrawn"), pos: "Compensating(1)", out: "RefundPayment 1/compensation#1"},
				{in: undone(1, 1), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepCompensated, saga.StepCompensated, saga.StepFailed)
			},
		},
		{
			name: "transient failure retries after the backoff",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: flaky(0, 1), pos: "Running(0)"},
				{in: tick(1*S + 50*ms), pos: "Running(0)"}, // nothing due yet
				{in: tick(1*S + 100*ms), pos: "Running(0)", out: "ReserveStock 0/action#2"},
				{in: flaky(0, 2), pos: "Running(0)"},
				{in: tick(1*S + 300*ms), pos: "Running(0)", out: "ReserveStock 0/action#3"},
				{in: ok(0, 3), pos: "Running(1)", out: "ChargePayment 1/action#1"},
			},
		},
		{
			name: "duplicate and stale replies are ignored and counted",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: start(), pos: "Running(0)", err: saga.ErrIgnored},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(0, 1), pos: "Running(1)", err: saga.ErrIgnored},                                               // exact duplicate
				{in: ok(1, 2), pos: "Running(1)", err: saga.ErrIgnored},                                               // attempt never sent
				{in: undone(1, 1), pos: "Running(1)", err: saga.ErrIgnored},                                           // wrong phase
				{in: reply(S, 7, 1, saga.PhaseAction, saga.Success, ""), pos: "Running(1)", err: saga.ErrIgnored},     // no such step
				{in: reply(S, 1, 1, saga.PhaseAction, "maybe", ""), pos: "Running(1)", err: saga.ErrIllegal},          // nonsense
				{in: reply(S, 1, 1, "rollback", saga.Success, ""), pos: "Running(1)", err: saga.ErrIllegal},           // nonsense
				{in: byName("charge-payment", 1, saga.Success), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},    // by name
				{in: byName("nope", 1, saga.Success), pos: "Running(2)", err: saga.ErrIgnored},                        //
				{in: ok(2, 1), pos: "Completed", out: "OrderConfirmed"},                                               //
				{in: ok(2, 1), pos: "Completed", err: saga.ErrIgnored},                                                // after the end
				{in: start(), pos: "Completed", err: saga.ErrIgnored},                                                 //
				{in: saga.Input{Kind: "dance", At: at(S)}, pos: "Completed", err: saga.ErrIllegal},                    //
				{in: saga.Input{Kind: saga.KindReply, Reply: ok(2, 1).Reply}, pos: "Completed", err: saga.ErrIllegal}, // no time
				{in: saga.Input{Kind: saga.KindOperator, At: at(S), Operator: saga.Operator{Op: "undo"}}, pos: "Completed", err: saga.ErrIllegal},
			},
			check: func(t *testing.T, i *saga.Instance) {
				if i.Ignored != 13 || i.Version != 4 {
					t.Errorf("ignored %d, version %d; want 13, 4", i.Ignored, i.Version)
				}
			},
		},
		{
			name: "late reply after a timeout is stale; the timed-out step is compensated too",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: tick(5 * S), pos: "Running(0)"}, // attempt 1 timed out, retry in 100ms
				{in: ok(0, 1), pos: "Running(0)", err: saga.ErrIgnored},
				{in: tick(5*S + 100*ms), pos: "Running(0)", out: "ReserveStock 0/action#2"},
				{in: ok(0, 1), pos: "Running(0)", err: saga.ErrIgnored},
				{in: tick(10*S + 100*ms), pos: "Running(0)"},
				{in: tick(10*S + 300*ms), pos: "Running(0)", out: "ReserveStock 0/action#3"},
				{in: tick(15*S + 300*ms), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: ok(0, 3), pos: "Compensating(0)", err: saga.ErrIgnored},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepCompensated, saga.StepSkipped, saga.StepSkipped)
				wantCause(t, i, 1, "step reserve-stock timed out after 5s (attempt 1/3); retrying in 100ms")
				wantCause(t, i, 5, "step reserve-stock timed out after 5s (attempt 3/3)")
				if i.Reason != "step reserve-stock timed out after 5s (attempt 3/3)" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "saga deadline compensates the running step too, before its own timeout",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: tick(30 * S), pos: "Compensating(1)", out: "RefundPayment 1/compensation#1"},
				{in: undone(1, 1), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				if i.Reason != "saga deadline of 30s passed" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "saga deadline does not apply once the pivot is in flight",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: tick(31 * S), pos: "Running(2)", out: "ConfirmOrder 2/action#2"}, // its timeout fired, not the deadline
				{in: ok(2, 2), pos: "Completed", out: "OrderConfirmed"},
			},
		},
		{
			name: "compensation failure retries, then fails; operator retry resumes it",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: nok(1, 1, "card expired"), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undoFailed(0, 1), pos: "Compensating(0)"},
				{in: tick(1*S + 100*ms), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#2"},
				{in: tick(6*S + 100*ms), pos: "Compensating(0)"}, // compensation timed out
				{in: tick(6*S + 300*ms), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#3"},
				{in: undoFailed(0, 3), pos: "Failed(0)", out: "OrderFailed"},
				{in: tick(time.Hour), pos: "Failed(0)"},
				{in: undoFailed(0, 3), pos: "Failed(0)", err: saga.ErrIgnored},
				{in: operator(saga.OpForceCompensate), pos: "Failed(0)", err: saga.ErrIllegal},
				{in: operator(saga.OpRetry), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#4"},
				{in: undone(0, 4), pos: "Cancelled", out: "OrderCancelled"},
				{in: operator(saga.OpRetry), pos: "Cancelled", err: saga.ErrIllegal},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantCause(t, i, 7, "compensation of step reserve-stock failed (attempt 3/3): bank offline")
				wantCause(t, i, 8, "operator retry of the compensation of step reserve-stock: ticket 42")
				if i.Reason != "compensation of step reserve-stock failed (attempt 3/3): bank offline" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "operator force-compensate while running compensates the step in flight",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: operator(saga.OpRetry), pos: "Running(0)", err: saga.ErrIllegal},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: operator(saga.OpForceCompensate), pos: "Compensating(1)", out: "RefundPayment 1/compensation#1"},
				{in: operator(saga.OpForceCompensate), pos: "Compensating(1)", err: saga.ErrIllegal},
				{in: ok(1, 1), pos: "Compensating(1)", err: saga.ErrIgnored}, // the action landed late
				{in: undone(1, 1), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
				{in: operator(saga.OpForceCompensate), pos: "Cancelled", err: saga.ErrIllegal},
			},
			check: func(t *testing.T, i *saga.Instance) {
				if i.Reason != "operator force-compensate: ticket 42" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "operator force-compensate is refused while the pivot is in flight and after it",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: operator(saga.OpForceCompensate), pos: "Running(2)", err: saga.ErrIllegal},
				{in: ok(2, 1), pos: "Completed", out: "OrderConfirmed"},
				{in: operator(saga.OpForceCompensate), pos: "Completed", err: saga.ErrIllegal},
			},
		},
		{
			name: "a pivot out of attempts fails the saga; force-compensate undoes what came before",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: tick(6 * S), pos: "Running(2)", out: "ConfirmOrder 2/action#2"}, // no backoff: resent at once
				{in: tick(11 * S), pos: "Failed(2)", out: "OrderFailed"},
				{in: operator(saga.OpForceCompensate), pos: "Compensating(1)", out: "RefundPayment 1/compensation#1"},
				{in: undone(1, 1), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
				{in: undone(0, 1), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepCompensated, saga.StepCompensated, saga.StepFailed)
			},
		},
		{
			name: "a pivot out of attempts can be retried with a fresh budget",
			acts: []act{
				{in: start(), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "ConfirmOrder 2/action#1"},
				{in: reply(S, 2, 1, saga.PhaseAction, saga.Transient, "db busy"), pos: "Running(2)", out: "ConfirmOrder 2/action#2"},
				{in: reply(S, 2, 2, saga.PhaseAction, saga.Transient, "db busy"), pos: "Failed(2)", out: "OrderFailed"},
				{in: operator(saga.OpRetry), pos: "Running(2)", out: "ConfirmOrder 2/action#3"},
				{in: tick(time.Minute + 5*S), pos: "Running(2)", out: "ConfirmOrder 2/action#4"},
				{in: tick(time.Minute + 10*S), pos: "Failed(2)", out: "OrderFailed"},
				{in: operator(saga.OpRetry), pos: "Running(2)", out: "ConfirmOrder 2/action#5"},
				{in: ok(2, 5), pos: "Completed", out: "OrderConfirmed"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantCause(t, i, 6, "step confirm-order timed out after 5s (attempt 1/2)")
				wantCause(t, i, 7, "step confirm-order timed out after 5s (attempt 2/2)")
			},
		},
		{
			name: "after the pivot a business failure cannot be compensated",
			def:  shippingSaga,
			acts: []act{
				{in: start(), pos: "Running(0)", out: "Reserve 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "Confirm 1/action#1"},
				{in: ok(1, 1), pos: "Running(2)", out: "Notify 2/action#1"},
				{in: operator(saga.OpForceCompensate), pos: "Running(2)", err: saga.ErrIllegal},
				{in: nok(2, 1, "no such address"), pos: "Failed(2)"}, // no OnFailed event configured
				{in: operator(saga.OpForceCompensate), pos: "Failed(2)", err: saga.ErrIllegal},
				{in: operator(saga.OpRetry), pos: "Running(2)", out: "Notify 2/action#2"},
				{in: flaky(2, 2), pos: "Running(2)"},
				{in: tick(time.Minute + S), pos: "Running(2)", out: "Notify 2/action#3"},
				{in: ok(2, 3), pos: "Completed", out: "Shipped"},
			},
		},
		{
			// Found by FuzzTransition (testdata/fuzz/FuzzTransition/step-after-pivot-cannot-be-built):
			// Check refused the legal edge Running(k) -> Failed(k+1).
			name: "a step after the pivot that cannot be built fails the saga",
			def:  shippingSaga,
			acts: []act{
				{in: startAt(0, `{"fail":"Notify"}`), pos: "Running(0)", out: "Reserve 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "Confirm 1/action#1"},
				{in: ok(1, 1), pos: "Failed(2)"},
				{in: operator(saga.OpForceCompensate), pos: "Failed(2)", err: saga.ErrIllegal},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepDone, saga.StepDone, saga.StepFailed)
			},
		},
		{
			name: "an action that cannot be built at the start cancels",
			acts: []act{
				{in: startAt(0, `{"fail":"ReserveStock"}`), pos: "Cancelled", out: "OrderCancelled"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				if i.Reason != "cannot build the action of step reserve-stock: no ReserveStock for this order" {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "a builder that panics counts as a failed build",
			acts: []act{
				{in: startAt(0, `{"panic":"ChargePayment"}`), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Compensating(0)", out: "ReleaseStock 0/compensation#1"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepCompensating, saga.StepFailed, saga.StepSkipped)
				if !strings.Contains(i.Reason, "builder panicked: bug in ChargePayment builder") {
					t.Errorf("reason %q", i.Reason)
				}
			},
		},
		{
			name: "a compensation that cannot be built fails the saga",
			acts: []act{
				{in: startAt(0, `{"fail":"RefundPayment"}`), pos: "Running(0)", out: "ReserveStock 0/action#1"},
				{in: ok(0, 1), pos: "Running(1)", out: "ChargePayment 1/action#1"},
				{in: operator(saga.OpForceCompensate), pos: "Failed(1)", out: "OrderFailed"},
				{in: operator(saga.OpRetry), pos: "Failed(1)", out: "OrderFailed"},
			},
			check: func(t *testing.T, i *saga.Instance) {
				wantStatuses(t, i, saga.StepDone, saga.StepCompensationFailed, saga.StepSkipped)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			def := orderSaga()
			if tc.def != nil {
				def = tc.def()
			}
			var inst *saga.Instance
			for k, a := range tc.acts {
				next, out, err := apply(t, def, inst, a.in)
				switch {
				case a.err == nil && err != nil:
					t.Fatalf("act %d (%s): unexpected error %v", k, a.in.Kind, err)
				case a.err != nil && !errors.Is(err, a.err):
					t.Fatalf("act %d (%s): error %v, want %v", k, a.in.Kind, err, a.err)
				}
				if got := pos(next); got != a.pos {
					t.Fatalf("act %d (%s): at %s, want %s (%v)", k, a.in.Kind, got, a.pos, err)
				}
				if got := outs(out); got != a.out {
					t.Fatalf("act %d (%s): sent %q, want %q", k, a.in.Kind, got, a.out)
				}
				if err != nil && next.Ignored != inst.Ignored+1 {
					t.Fatalf("act %d: ignored %d -> %d", k, inst.Ignored, next.Ignored)
				}
				inst = next
			}
			if tc.check != nil {
				tc.check(t, inst)
			}
		})
	}
}

func byName(name string, attempt int, o saga.Outcome) saga.Input {
	in := reply(time.Second, 0, attempt, saga.PhaseAction, o, "")
	in.Reply.Step = 99 // ignored when the name is set
	in.Reply.StepName = name
	return in
}

func wantStatuses(t *testing.T, i *saga.Instance, want ...saga.StepStatus) {
	t.Helper()
	for k, s := range i.Steps {
		if s.Status != want[k] {
			t.Errorf("step %d (%s) is %s, want %s", k, s.Name, s.Status, want[k])
		}
	}
}

func wantCause(t *testing.T, i *saga.Instance, k int, want string) {
	t.Helper()
	if k >= len(i.History) {
		t.Fatalf("no history entry %d", k)
	}
	if got := i.History[k].Cause; got != want {
		t.Errorf("history[%d].Cause = %q, want %q", k, got, want)
	}
}

// TestStateInputMatrix applies every kind of input to the saga in every state,
// so that no (state, input) pair is left to chance.
func TestStateInputMatrix(t *testing.T) {
	S := time.Second
	states := []struct {
		name string
		ins  []saga.Input
	}{
		{"Running waiting for a reply", []saga.Input{start(), ok(0, 1)}},
		{"Running in backoff", []saga.Input{start(), ok(0, 1), flaky(1, 1)}},
		{"Compensating waiting for a reply", []saga.Input{start(), ok(0, 1), nok(1, 1, "declined")}},
		{"Compensating in backoff", []saga.Input{start(), ok(0, 1), nok(1, 1, "declined"), undoFailed(0, 1)}},
		{"Completed", []saga.Input{start(), ok(0, 1), ok(1, 1), ok(2, 1)}},
		{"Cancelled", []saga.Input{start(), nok(0, 1, "no stock")}},
		{"Failed compensating", []saga.Input{start(), ok(0, 1), nok(1, 1, "declined"), undoFailed(0, 1), tick(2 * S), undoFailed(0, 2), tick(3 * S), undoFailed(0, 3)}},
		{"Failed at the pivot", []saga.Input{start(), ok(0, 1), ok(1, 1), tick(6 * S), tick(11 * S)}},
	}
	inputs := []struct {
		name string
		in   saga.Input
	}{
		{"start", startAt(S, `{}`)},
		{"reply success to step 1 attempt 1", ok(1, 1)},
		{"reply failure to step 1 attempt 1", nok(1, 1, "declined")},
		{"reply transient to step 1 attempt 1", flaky(1, 1)},
		{"compensation success for step 0 attempt 1", undone(0, 1)},
		{"stale reply", ok(0, 1)},
		{"tick with nothing due", tick(1500 * time.Millisecond)},
		{"tick far ahead", tick(time.Hour)},
		{"operator retry", operator(saga.OpRetry)},
		{"operator force-compensate", operator(saga.OpForceCompensate)},
	}
	want := map[string][]string{
		// one row per state, one column per input: position after, or
		// "ignored"/"illegal"
		"Running waiting for a reply":      {"ignored", "Running(2)", "Compensating(0)", "Running(1)", "ignored", "ignored", "Running(1)", "Compensating(1)", "illegal", "Compensating(1)"},
		"Running in backoff":               {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Running(1)", "Compensating(1)", "illegal", "Compensating(1)"},
		"Compensating waiting for a reply": {"ignored", "ignored", "ignored", "ignored", "Cancelled", "ignored", "Compensating(0)", "Compensating(0)", "illegal", "illegal"},
		"Compensating in backoff":          {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Compensating(0)", "Compensating(0)", "illegal", "illegal"},
		"Completed":                        {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Completed", "Completed", "illegal", "illegal"},
		"Cancelled":                        {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Cancelled", "Cancelled", "illegal", "illegal"},
		"Failed compensating":              {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Failed(0)", "Failed(0)", "Compensating(0)", "illegal"},
		"Failed at the pivot":              {"ignored", "ignored", "ignored", "ignored", "ignored", "ignored", "Failed(2)", "Failed(2)", "Running(2)", "Compensating(1)"},
	}
	def := orderSaga()
	for _, st := range states {
		base := run(t, def, st.ins...)
		for k, in := range inputs {
			t.Run(st.name+"/"+in.name, func(t *testing.T) {
				next, _, err := apply(t, def, base, in.in)
				got := pos(next)
				switch {
				case errors.Is(err, saga.ErrIgnored):
					got = "ignored"
				case errors.Is(err, saga.ErrIllegal):
					got = "illegal"
				}
				if w := want[st.name][k]; got != w {
					t.Errorf("got %s, want %s (%v)", got, w, err)
				}
			})
		}
	}
}

func TestTransitionWithoutInstance(t *testing.T) {
	def := orderSaga()
	next, out, err := saga.Transition(def, nil, ok(0, 1))
	if next != nil || out != nil || !errors.Is(err, saga.ErrIgnored) {
		t.Errorf("reply to nothing: %v %v %v", next, out, err)
	}
	if next, _, err := saga.Transition(def, nil, tick(time.Hour)); next != nil || err != nil {
		t.Errorf("tick on nothing: %v %v", next, err)
	}
	if _, _, err := saga.Transition(def, nil, operator(saga.OpRetry)); !errors.Is(err, saga.ErrIllegal) {
		t.Errorf("operator on nothing: %v", err)
	}
	if _, _, err := saga.Transition(def, nil, startAt(0, `{"broken`)); !errors.Is(err, saga.ErrIllegal) {
		t.Errorf("start with bad data: %v", err)
	}
	in := start()
	in.Start.SagaID = ""
	if _, _, err := saga.Transition(def, nil, in); !errors.Is(err, saga.ErrIllegal) {
		t.Errorf("start without id: %v", err)
	}
	if _, _, err := saga.Transition(nil, nil, start()); !errors.Is(err, saga.ErrIllegal) {
		t.Errorf("nil definition: %v", err)
	}
}

func TestTransitionRefusesAnotherDefinition(t *testing.T) {
	inst := run(t, orderSaga(), start())
	next, _, err := apply(t, shippingSaga(), inst, ok(0, 1))
	if !errors.Is(err, saga.ErrIllegal) || next.Ignored != 1 {
		t.Fatalf("got %v, ignored %d", err, next.Ignored)
	}
	changed := orderSaga()
	changed.Steps[1].Name = "charge"
	if _, _, err := apply(t, changed, inst, ok(0, 1)); !errors.Is(err, saga.ErrIllegal) || !strings.Contains(err.Error(), `"charge"`) {
		t.Fatalf("renamed step: %v", err)
	}
}

func TestTickWithNothingDueReturnsTheSameInstance(t *testing.T) {
	inst := run(t, orderSaga(), start())
	next, out, err := saga.Transition(orderSaga(), inst, tick(time.Second))
	if next != inst || out != nil || err != nil {
		t.Fatalf("got %p %v %v, want %p", next, out, err, inst)
	}
}

func TestTimersAndOutgoing(t *testing.T) {
	def := orderSaga()
	inst := run(t, def, start())
	if s := inst.Steps[0]; !s.Deadline.Equal(at(5*time.Second)) || !inst.Deadline.Equal(at(30*time.Second)) || !s.RetryAt.IsZero() {
		t.Errorf("timers: step %v deadline %v retry %v", s.Deadline, inst.Deadline, s.RetryAt)
	}
	if got := inst.NextTimer(); !got.Equal(at(5 * time.Second)) {
		t.Errorf("next timer %v", got)
	}
	if in := inst.InFlight(); !slices.Equal(in, []saga.Awaited{{Step: 0, Phase: saga.PhaseAction, Attempt: 1}}) {
		t.Errorf("in flight: %v", in)
	}

	inst, _, _ = apply(t, def, inst, reply(2*time.Second, 0, 1, saga.PhaseAction, saga.Transient, "busy"))
	if s := inst.Steps[0]; !s.RetryAt.Equal(at(2100*time.Millisecond)) || !s.Deadline.IsZero() || !inst.NextTimer().Equal(s.RetryAt) {
		t.Errorf("backoff: retry %v step %v next %v", s.RetryAt, s.Deadline, inst.NextTimer())
	}
	if in := inst.InFlight(); len(in) > 0 {
		t.Errorf("in flight during a backoff: %v", in)
	}

	in := tick(2100 * time.Millisecond)
	in.MessageID = "tick-1"
	inst, out, err := apply(t, def, inst, in)
	if err != nil || len(out) != 1 {
		t.Fatalf("%v %v", out, err)
	}
	want := saga.Outgoing{Topic: "stock.commands", Type: "ReserveStock", SagaID: "order-1", Step: 0, Attempt: 2,
		Phase: saga.PhaseAction, Payload: json.RawMessage(`{"order":"order-1","amount":1250}`), CausationID: "tick-1"}
	if o := out[0]; o.Topic != want.Topic || o.Type != want.Type || o.SagaID != want.SagaID || o.Step != want.Step ||
		o.Attempt != want.Attempt || o.Phase != want.Phase || string(o.Payload) != string(want.Payload) || o.CausationID != want.CausationID {
		t.Errorf("got %+v\nwant %+v", o, want)
	}
	wantCause(t, inst, 2, "backoff over, retrying step reserve-stock (attempt 2/3)")

	// The saga deadline comes first when it is earlier than the step's.
	inst = run(t, def, start(), reply(28*time.Second, 0, 1, saga.PhaseAction, saga.Success, ""))
	if got := inst.NextTimer(); !got.Equal(at(30 * time.Second)) {
		t.Errorf("next timer %v, want the saga deadline", got)
	}
	// ...and stops counting at the pivot.
	inst, _, _ = apply(t, def, inst, reply(29*time.Second, 1, 1, saga.PhaseAction, saga.Success, ""))
	if got := inst.NextTimer(); !got.Equal(at(34 * time.Second)) {
		t.Errorf("next timer %v, want the pivot's step deadline", got)
	}
}

func TestEndEventBody(t *testing.T) {
	def := orderSaga()
	inst := run(t, def, start(), ok(0, 1))
	res := reply(time.Second, 1, 1, saga.PhaseAction, saga.Success, "")
	res.Reply.Result = json.RawMessage(`{"charge_id":"ch_1"}`)
	inst, _, _ = apply(t, def, inst, res)
	_, out, err := apply(t, def, inst, ok(2, 1))
	if err != nil || len(out) != 1 {
		t.Fatal(out, err)
	}
	var ev saga.EndEvent
	if err := json.Unmarshal(out[0].Payload, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.SagaID != "order-1" || ev.SagaType != "order" || ev.State != saga.Completed ||
		string(ev.Results["charge-payment"]) != `{"charge_id":"ch_1"}` || string(ev.Data) != `{"order":"order-1","amount":1250}` {
		t.Errorf("%+v", ev)
	}
	if out[0].Topic != "orders.events" || out[0].IsCommand() {
		t.Errorf("%+v", out[0])
	}

	bad := reply(time.Second, 0, 1, saga.PhaseAction, saga.Success, "")
	bad.Reply.Result = json.RawMessage(`{nope`)
	if _, _, err := apply(t, def, run(t, def, start()), bad); !errors.Is(err, saga.ErrIllegal) {
		t.Errorf("result that is not JSON: %v", err)
	}
}

func TestHistoryNeverGoesBack(t *testing.T) {
	def := orderSaga()
	inst := run(t, def, startAt(10*time.Second, `{}`))
	inst, _, err := apply(t, def, inst, reply(time.Second, 0, 1, saga.PhaseAction, saga.Success, ""))
	if err != nil {
		t.Fatal(err)
	}
	if got := inst.History[1].At; !got.Equal(at(10 * time.Second)) {
		t.Errorf("history at %v", got)
	}
	if d := inst.Steps[1].Deadline; !d.Equal(at(15 * time.Second)) {
		t.Errorf("step deadline %v", d)
	}
}

func TestTransitionDoesNotAliasHistory(t *testing.T) {
	// Two transitions from the same instance must not share the appended
	// history entry.
	def := orderSaga()
	base := run(t, def, start())
	a, _, _ := apply(t, def, base, ok(0, 1))
	b, _, _ := apply(t, def, base, nok(0, 1, "no"))
	if a.History[1].To != saga.Running || b.History[1].To != saga.Cancelled {
		t.Fatalf("a %+v b %+v", a.History[1], b.History[1])
	}
}

func TestInstanceJSONRoundTrip(t *testing.T) {
	def := orderSaga()
	inst := run(t, def, start(), ok(0, 1), flaky(1, 1))
	b, err := json.Marshal(inst)
	if err != nil {
		t.Fatal(err)
	}
	var back saga.Instance
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if err := back.Check(); err != nil {
		t.Fatal(err)
	}
	if b2, _ := json.Marshal(&back); string(b2) != string(b) {
		t.Fatalf("round trip changed the snapshot:\n%s\n%s", b, b2)
	}
	// The restored snapshot carries on.
	next, out, err := apply(t, def, &back, tick(time.Hour))
	if err != nil || pos(next) != "Compensating(1)" || outs(out) != "RefundPayment 1/compensation#1" {
		t.Fatalf("%s %s %v", pos(next), outs(out), err)
	}
	// Unknown fields are ignored.
	if err := json.Unmarshal([]byte(`{"id":"x","future":true}`), &back); err != nil {
		t.Fatal(err)
	}
}

// parallelOrder is orderSaga with reserve-stock and charge-payment in one
// group: both actions go out together.
func parallelOrder() *saga.Definition {
	def := orderSaga()
	def.Steps[1].Parallel = true
	return def
}

// statuses renders the steps' statuses, e.g. "Done Running Pending".
func statuses(i *saga.Instance) string {
	var b []string
	for _, s := range i.Steps {
		b = append(b, string(s.Status))
	}
	return strings.Join(b, " ")
}

// step applies in and checks where the saga is, what it sent and what its
// steps are.
func step(t *testing.T, def *saga.Definition, inst *saga.Instance, in saga.Input, wantPos, wantOut, wantSteps string) *saga.Instance {
	t.Helper()
	next, out, err := apply(t, def, inst, in)
	if err != nil {
		t.Fatalf("%s input: %v", in.Kind, err)
	}
	if pos(next) != wantPos || outs(out) != wantOut || statuses(next) != wantSteps {
		t.Fatalf("after %s input: %s sent [%s], steps %s; want %s sent [%s], steps %s",
			in.Kind, pos(next), outs(out), statuses(next), wantPos, wantOut, wantSteps)
	}
	return next
}

func TestParallelStepsRunTogether(t *testing.T) {
	def := parallelOrder()
	inst := step(t, def, nil, start(), "Running(0)",
		"ReserveStock 0/action#1, ChargePayment 1/action#1", "Running Running Pending")
	if in := inst.InFlight(); len(in) != 2 {
		t.Fatalf("in flight: %v, want both actions", in)
	}
	// The charge answers first: the saga waits for the reservation.
	inst = step(t, def, inst, ok(1, 1), "Running(0)", "", "Running Done Pending")
	if c := inst.History[len(inst.History)-1].Cause; !strings.Contains(c, "waiting for step reserve-stock") {
		t.Errorf("cause %q does not say what the saga waits for", c)
	}
	// A duplicate of the charge's reply changes nothing.
	if _, _, err := apply(t, def, inst, ok(1, 1)); !errors.Is(err, saga.ErrIgnored) {
		t.Errorf("duplicate reply: %v, want ErrIgnored", err)
	}
	inst = step(t, def, inst, ok(0, 1), "Running(2)", "ConfirmOrder 2/action#1", "Done Done Running")
	step(t, def, inst, ok(2, 1), "Completed", "OrderConfirmed", "Done Done Done")
}

func TestParallelStepFailureUndoesTheOthers(t *testing.T) {
	def := parallelOrder()
	inst := run(t, def, start())

	// Out of stock while the charge is in flight: the charge is refunded
	// (its barrier refuses it if it is still on its way); the reservation,
	// refused, is not released.
	refused := step(t, def, inst, nok(0, 1, "out of stock"), "Compensating(1)",
		"RefundPayment 1/compensation#1", "Failed Compensating Skipped")
	if _, _, err := apply(t, def, refused, ok(1, 1)); !errors.Is(err, saga.ErrIgnored) {
		t.Errorf("the charge's late success: %v, want ErrIgnored", err)
	}
	step(t, def, refused, undone(1, 1), "Cancelled", "OrderCancelled", "Failed Compensated Skipped")

	// Declined after the stock was reserved: release the stock.
	charged := step(t, def, inst, ok(0, 1), "Running(0)", "", "Done Running Pending")
	charged = step(t, def, charged, nok(1, 1, "declined"), "Compensating(0)",
		"ReleaseStock 0/compensation#1", "Compensating Failed Skipped")
	step(t, def, charged, undone(0, 1), "Cancelled", "OrderCancelled", "Compensated Failed Skipped")
}

func TestParallelStepTimeoutCompensatesTheWholeGroup(t *testing.T) {
	def := parallelOrder()
	inst := run(t, def, start(), ok(1, 1))
	// Only the reservation's timer runs: the charge is done.
	if got := inst.NextTimer(); !got.Equal(at(5 * time.Second)) {
		t.Fatalf("next timer %v", got)
	}
	inst = step(t, def, inst, tick(5*time.Second), "Running(0)", "", "Running Done Pending")
	if s := inst.Steps[0]; !s.RetryAt.Equal(at(5100*time.Millisecond)) || !s.Deadline.IsZero() {
		t.Fatalf("reserve-stock timers: deadline %v retry %v", s.Deadline, s.RetryAt)
	}
	inst = step(t, def, inst, tick(5100*time.Millisecond), "Running(0)", "ReserveStock 0/action#2", "Running Done Pending")
	inst = step(t, def, inst, tick(11*time.Second), "Running(0)", "", "Running Done Pending")
	inst = step(t, def, inst, tick(11200*time.Millisecond), "Running(0)", "ReserveStock 0/action#3", "Running Done Pending")
	// The last attempt times out: it may have taken effect, so both steps
	// are compensated, the later one first.
	inst = step(t, def, inst, tick(17*time.Second), "Compensating(1)", "RefundPayment 1/compensation#1", "Running Compensating Skipped")
	inst = step(t, def, inst, undone(1, 1), "Compensating(0)", "ReleaseStock 0/compensation#1", "Compensating Compensated Skipped")
	inst = step(t, def, inst, undone(0, 1), "Cancelled", "OrderCancelled", "Compensated Compensated Skipped")
	if !strings.Contains(inst.Reason, "reserve-stock timed out") {
		t.Errorf("reason %q", inst.Reason)
	}
}

func TestParallelStepRetriesAlone(t *testing.T) {
	def := parallelOrder()
	inst := run(t, def, start())
	// The reservation is busy and backs off; the charge is still in flight
	// and its answer counts during the backoff.
	inst = step(t, def, inst, flaky(0, 1), "Running(0)", "", "Running Running Pending")
	if in := inst.InFlight(); !slices.Equal(in, []saga.Awaited{{Step: 1, Phase: saga.PhaseAction, Attempt: 1}}) {
		t.Fatalf("in flight during the reservation's backoff: %v", in)
	}
	inst = step(t, def, inst, reply(1050*time.Millisecond, 1, 1, saga.PhaseAction, saga.Success, ""), "Running(0)", "", "Running Done Pending")
	inst = step(t, def, inst, tick(1100*time.Millisecond), "Running(0)", "ReserveStock 0/action#2", "Running Done Pending")
	step(t, def, inst, reply(1200*time.Millisecond, 0, 2, saga.PhaseAction, saga.Success, ""), "Running(2)", "ConfirmOrder 2/action#1", "Done Done Running")
}

func TestParallelStepsSagaDeadline(t *testing.T) {
	def := parallelOrder()
	def.Steps[0].Timeout, def.Steps[1].Timeout = time.Minute, time.Minute
	inst := run(t, def, start(), ok(0, 1))
	inst = step(t, def, inst, tick(30*time.Second), "Compensating(1)", "RefundPayment 1/compensation#1", "Done Compensating Skipped")
	step(t, def, inst, undone(1, 1), "Compensating(0)", "ReleaseStock 0/compensation#1", "Compensating Compensated Skipped")
}

func TestParallelStepThatCannotBeBuiltSendsNothingOfItsGroup(t *testing.T) {
	def := parallelOrder()
	inst := step(t, def, nil, startAt(0, `{"fail":"ChargePayment"}`), "Cancelled", "OrderCancelled", "Skipped Failed Skipped")
	if !strings.Contains(inst.Reason, "cannot build the action of step charge-payment") {
		t.Errorf("reason %q", inst.Reason)
	}
}

func TestParallelStepValidation(t *testing.T) {
	first := parallelOrder()
	first.Steps[0].Parallel = true
	pivot := parallelOrder()
	pivot.Steps[2].Parallel = true
	for name, def := range map[string]*saga.Definition{"first step": first, "pivot": pivot} {
		if err := def.Validate(); !errors.Is(err, saga.ErrInvalidDefinition) {
			t.Errorf("%s parallel: %v, want ErrInvalidDefinition", name, err)
		}
	}
	if err := parallelOrder().Validate(); err != nil {
		t.Errorf("reserve and charge in parallel: %v", err)
	}
}

// A saga keeps the grouping it started with: one started with its steps in
// sequence goes on in sequence under a definition that made them parallel.
func TestParallelStepsFollowTheSnapshot(t *testing.T) {
	inst := run(t, orderSaga(), start())
	step(t, parallelOrder(), inst, ok(0, 1), "Running(1)", "ChargePayment 1/action#1", "Done Running Pending")
}

// A snapshot from before each step had its own timers still times out.
func TestDecodeSnapshotMovesOldTimersToTheStep(t *testing.T) {
	inst := run(t, orderSaga(), start(), ok(0, 1))
	b := snapshot(t, inst)
	deadline := `"deadline":"2025-01-02T03:04:11Z"`
	if !strings.Contains(b, deadline) {
		t.Fatalf("snapshot has no %s: %s", deadline, b)
	}
	old := strings.Replace(b, ","+deadline, "", 1)
	old = strings.Replace(old, `"data"`, `"step_deadline":"2025-01-02T03:04:11Z","data"`, 1)
	got, err := saga.DecodeSnapshot([]byte(old))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Check(); err != nil {
		t.Fatalf("migrated snapshot: %v\n%s", err, old)
	}
	if !got.Steps[1].Deadline.Equal(at(6*time.Second)) || !got.NextTimer().Equal(at(6*time.Second)) {
		t.Errorf("charge-payment deadline %v, next timer %v", got.Steps[1].Deadline, got.NextTimer())
	}
}

// A step that takes no reply is done in the transaction that sends it: the
// order saga's pivot so marked ends the saga with the reservation and charge,
// and a reply that comes anyway is ignored.
func TestNoReplyStepEndsTheSagaAtOnce(t *testing.T) {
	def := parallelOrder()
	def.Steps[2].NoReply = true
	inst := run(t, def, start(), ok(1, 1))
	next, out, err := apply(t, def, inst, ok(0, 1))
	if err != nil {
		t.Fatal(err)
	}
	if pos(next) != "Completed" || outs(out) != "ConfirmOrder 2/action#1, OrderConfirmed" || statuses(next) != "Done Done Done" {
		t.Fatalf("%s sent [%s], steps %s", pos(next), outs(out), statuses(next))
	}
	if !out[0].NoReply || !out[0].Envelope().NoReply || out[1].NoReply {
		t.Errorf("NoReply of the command %v (envelope %v), of the end event %v", out[0].NoReply, out[0].Envelope().NoReply, out[1].NoReply)
	}
	if !next.NextTimer().IsZero() || len(next.InFlight()) != 0 {
		t.Errorf("next timer %v, in flight %v: the saga waits for nothing", next.NextTimer(), next.InFlight())
	}
	wantCause(t, next, len(next.History)-1, "step reserve-stock succeeded; step confirm-order sent (it takes no reply)")
	if _, _, err := apply(t, def, next, ok(2, 1)); !errors.Is(err, saga.ErrIgnored) {
		t.Errorf("a reply to the unanswered command: %v, want ErrIgnored", err)
	}
}

// Steps after a step that takes no reply go out in the same transaction.
func TestNoReplyStepBeforeAnother(t *testing.T) {
	def := shippingSaga()
	def.Steps[1].NoReply = true
	inst := step(t, def, nil, start(), "Running(0)", "Reserve 0/action#1", "Running Pending Pending")
	inst = step(t, def, inst, ok(0, 1), "Running(2)", "Confirm 1/action#1, Notify 2/action#1", "Done Done Running")
	step(t, def, inst, ok(2, 1), "Completed", "Shipped", "Done Done Done")
}
