package saga_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

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
