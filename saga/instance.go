package saga

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// State is where a saga is. Running and Compensating also carry the current
// step, in Instance.Step.
type State string

const (
	// Started is the state of a saga that exists but has not sent anything.
	// Transition moves a new saga out of it within the same call, so snapshots
	// only show it as the From of the first history entry.
	Started State = "Started"
	// Running: the action of Instance.Step is in flight or waiting to be
	// retried; every earlier step is done.
	Running State = "Running"
	// Compensating: the compensation of Instance.Step is in flight or waiting
	// to be retried; later steps are compensated, failed or never ran.
	Compensating State = "Compensating"
	// Completed: every step succeeded. Terminal.
	Completed State = "Completed"
	// Cancelled: a step failed and everything that ran was compensated.
	// Terminal.
	Cancelled State = "Cancelled"
	// Failed: the saga cannot make progress without an operator, because a
	// compensation exhausted its budget, or a step that cannot be compensated
	// (the pivot or a step after it) failed. Instance.Reason says why. Terminal
	// for the runtime: only an Operator input moves it again.
	Failed State = "Failed"
)

// StepStatus is where one step is.
type StepStatus string

const (
	StepPending            StepStatus = "Pending"            // not reached yet
	StepRunning            StepStatus = "Running"            // action in flight or waiting to be retried
	StepDone               StepStatus = "Done"               // action succeeded
	StepFailed             StepStatus = "Failed"             // action failed or exhausted its budget; not compensated
	StepCompensating       StepStatus = "Compensating"       // compensation in flight or waiting to be retried
	StepCompensated        StepStatus = "Compensated"        // compensation succeeded
	StepCompensationFailed StepStatus = "CompensationFailed" // compensation exhausted its budget; the saga is Failed
	StepSkipped            StepStatus = "Skipped"            // never ran and never will: the saga turned back before it
)

// Phase says whether a command or reply is about a step's action or its
// compensation.
type Phase string

const (
	PhaseAction       Phase = "action"
	PhaseCompensation Phase = "compensation"
)

func (p Phase) valid() bool { return p == PhaseAction || p == PhaseCompensation }

// StepState is the progress of one step.
type StepState struct {
	Name string `json:"name"`
	// Compensable is false for the pivot and the steps after it; copied from
	// the definition so a snapshot can be checked and read on its own.
	Compensable bool       `json:"compensable"`
	Status      StepStatus `json:"status"`
	// Attempt is the number of the last command sent in the current phase
	// (action until compensation starts, then compensation); 0 if none was.
	// It only grows within a phase, so (step, phase, attempt) names each
	// command exactly once.
	Attempt int `json:"attempt"`
	// Limit is the highest attempt number the current budget allows. An
	// operator Retry raises it instead of resetting Attempt.
	Limit int `json:"limit"`
	// Result is the result of the action's successful reply, if it had one.
	Result json.RawMessage `json:"result,omitempty"`
}

// Change is one applied transition, kept in Instance.History for people (the
// demo page shows it) and for the chaos suite, which checks that every saga
// followed a legal path.
type Change struct {
	At   time.Time `json:"at"`
	From State     `json:"from"`
	To   State     `json:"to"`
	// Step is Instance.Step after the change; the step before it is the
	// previous entry's Step (0 for the first entry).
	Step int `json:"step"`
	// Cause says in words what happened, e.g. "step charge-payment timed out
	// after 5s (attempt 2/3)".
	Cause string `json:"cause"`
	// MessageID is the input that caused the change; empty for a Tick that
	// carried none.
	MessageID string `json:"message_id,omitempty"`
}

// Instance is the durable state of one saga: a plain value, serialised as JSON
// to the compacted saga.state topic and restored from it. Transition never
// modifies an Instance; it returns a new one that may share byte slices and
// backing arrays with the old, so treat instances and their slices as
// immutable.
type Instance struct {
	ID    string `json:"id"`
	Type  string `json:"type"`
	State State  `json:"state"`
	// Step is the current step while Running or Compensating; in a terminal
	// state, the step the saga was at when it ended.
	Step  int         `json:"step"`
	Steps []StepState `json:"steps"`
	// Data is the Start's data, given to every Builder.
	Data json.RawMessage `json:"data,omitempty"`
	// Traceparent is the W3C trace context of the Start; every command and
	// event of the saga continues its trace.
	Traceparent string `json:"traceparent,omitempty"`

	// StepDeadline is when the command in flight times out; zero when none is
	// in flight.
	StepDeadline time.Time `json:"step_deadline,omitzero"`
	// RetryAt is when the current step's next attempt is sent; zero unless
	// waiting out a backoff. At most one of StepDeadline and RetryAt is set.
	RetryAt time.Time `json:"retry_at,omitzero"`
	// Deadline is when the saga gives up and compensates (see
	// Definition.Deadline); zero if it has none.
	Deadline time.Time `json:"deadline,omitzero"`

	// Version counts applied transitions; it equals len(History).
	Version uint64 `json:"version"`
	// Ignored counts inputs that were not applied (ErrIgnored, ErrIllegal).
	// A snapshot changed if Version or Ignored did.
	Ignored uint64 `json:"ignored"`
	// Reason says why the saga is compensating, cancelled or failed.
	Reason  string   `json:"reason,omitempty"`
	History []Change `json:"history"`
}

// IsTerminal reports whether the saga has ended: Completed, Cancelled or
// Failed. A Failed saga can still be moved by an Operator input.
func (i *Instance) IsTerminal() bool {
	return i != nil && (i.State == Completed || i.State == Cancelled || i.State == Failed)
}

// NextTimer returns the earliest time at which a Tick would change the saga,
// or the zero time if no Tick can. The runtime schedules a Tick at (or after)
// that time; ticking earlier is harmless.
func (i *Instance) NextTimer() time.Time {
	if i == nil || (i.State != Running && i.State != Compensating) {
		return time.Time{}
	}
	t := i.StepDeadline
	if t.IsZero() || (!i.RetryAt.IsZero() && i.RetryAt.Before(t)) {
		t = i.RetryAt
	}
	if i.deadlineApplies() && (t.IsZero() || i.Deadline.Before(t)) {
		t = i.Deadline
	}
	return t
}

// deadlineApplies reports whether passing the saga deadline would make the
// saga compensate: only while running a compensable step, that is, before the
// pivot is in flight.
func (i *Instance) deadlineApplies() bool {
	return !i.Deadline.IsZero() && i.State == Running && i.Step < len(i.Steps) && i.Steps[i.Step].Compensable
}

// InFlight returns the command whose reply the saga is waiting for. Exactly
// a reply with this step, phase and attempt will be applied; any other is
// ignored. ok is false when no command is in flight (the saga has ended, or is
// waiting out a backoff).
func (i *Instance) InFlight() (step int, phase Phase, attempt int, ok bool) {
	if i == nil || i.StepDeadline.IsZero() || i.Step < 0 || i.Step >= len(i.Steps) {
		return 0, "", 0, false
	}
	switch i.State {
	case Running:
		phase = PhaseAction
	case Compensating:
		phase = PhaseCompensation
	default:
		return 0, "", 0, false
	}
	return i.Step, phase, i.Steps[i.Step].Attempt, true
}

// clone returns a copy whose Steps can be modified and whose History can be
// appended to without touching i's.
func (i *Instance) clone() *Instance {
	c := *i
	c.Steps = slices.Clone(i.Steps)
	c.History = slices.Clip(i.History)
	return &c
}

// Check reports the first invariant the snapshot violates, wrapped in
// ErrInvariant. It needs no definition, so the chaos suite can run it on raw
// snapshots read from saga.state. A nil error means the snapshot is one the
// state machine can produce, and its History is a legal path to it.
func (i *Instance) Check() error {
	if i == nil {
		return fmt.Errorf("%w: nil instance", ErrInvariant)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: saga %q (%s step %d): %s", ErrInvariant, i.ID, i.State, i.Step, fmt.Sprintf(format, args...))
	}
	n := len(i.Steps)
	switch {
	case i.ID == "":
		return bad("empty id")
	case i.Type == "":
		return bad("empty type")
	case n == 0:
		return bad("no steps")
	case i.Step < 0 || i.Step >= n:
		return bad("step index out of range 0..%d", n-1)
	case len(i.Data) > 0 && !json.Valid(i.Data):
		return bad("data is not JSON")
	case i.Version != uint64(len(i.History)):
		return bad("version %d but %d history entries", i.Version, len(i.History))
	}

	names := make(map[string]bool, n)
	failed := 0
	for j, s := range i.Steps {
		if s.Name == "" || names[s.Name] {
			return bad("step %d: empty or repeated name %q", j, s.Name)
		}
		names[s.Name] = true
		if j > 0 && !i.Steps[j-1].Compensable && s.Compensable {
			return bad("step %q is compensable but follows an uncompensable step", s.Name)
		}
		if s.Attempt < 0 || s.Attempt > s.Limit {
			return bad("step %q: attempt %d outside its budget of %d", s.Name, s.Attempt, s.Limit)
		}
		if len(s.Result) > 0 && !json.Valid(s.Result) {
			return bad("step %q: result is not JSON", s.Name)
		}
		switch s.Status {
		case StepPending, StepSkipped:
			if s.Attempt != 0 || len(s.Result) > 0 {
				return bad("step %q is %s but has attempts or a result", s.Name, s.Status)
			}
		case StepRunning, StepCompensating:
			if s.Attempt < 1 {
				return bad("step %q is %s without an attempt", s.Name, s.Status)
			}
		case StepDone:
			if s.Attempt < 1 {
				return bad("step %q is Done without an attempt", s.Name)
			}
		case StepFailed:
			failed++
			if len(s.Result) > 0 {
				return bad("step %q failed but has a result", s.Name)
			}
		case StepCompensated, StepCompensationFailed:
		default:
			return bad("step %q has unknown status %q", s.Name, s.Status)
		}
		if (s.Status == StepCompensating || s.Status == StepCompensated || s.Status == StepCompensationFailed) && !s.Compensable {
			return bad("step %q is %s but cannot be compensated", s.Name, s.Status)
		}
		if s.Status == StepRunning && len(s.Result) > 0 {
			return bad("step %q is running but has a result", s.Name)
		}
	}
	if failed > 1 {
		return bad("%d failed steps, at most one can fail", failed)
	}

	// statuses checks the steps before and after the current one.
	statuses := func(before, after []StepStatus) error {
		for j, s := range i.Steps {
			allowed := after
			if j < i.Step {
				allowed = before
			} else if j == i.Step {
				continue
			}
			if !slices.Contains(allowed, s.Status) {
				return bad("step %q is %s", s.Name, s.Status)
			}
		}
		return nil
	}
	done := []StepStatus{StepDone}
	pending := []StepStatus{StepPending}
	undone := []StepStatus{StepCompensated, StepFailed, StepSkipped}
	cur := i.Steps[i.Step].Status
	active := i.State == Running || i.State == Compensating
	if active && i.StepDeadline.IsZero() == i.RetryAt.IsZero() {
		return bad("exactly one of step deadline and retry-at must be set")
	}
	if !active && (!i.StepDeadline.IsZero() || !i.RetryAt.IsZero()) {
		return bad("timers set in a state that waits for nothing")
	}
	if (i.Reason == "") != (i.State == Started || i.State == Running || i.State == Completed) {
		return bad("reason %q does not fit the state", i.Reason)
	}
	var err error
	switch i.State {
	case Started:
		if i.Step != 0 || i.Version != 0 {
			return bad("a started saga has not moved yet")
		}
		err = statuses(nil, pending)
		if cur != StepPending {
			return bad("current step is %s", cur)
		}
	case Running:
		if cur != StepRunning {
			return bad("current step is %s", cur)
		}
		err = statuses(done, pending)
	case Compensating:
		if cur != StepCompensating {
			return bad("current step is %s", cur)
		}
		err = statuses(done, undone)
	case Completed:
		err = statuses(done, done)
		if cur != StepDone || i.Step != n-1 {
			return bad("completed at step %d (%s)", i.Step, cur)
		}
	case Cancelled:
		if !slices.Contains(undone, cur) {
			return bad("current step is %s", cur)
		}
		err = statuses(undone, undone)
	case Failed:
		switch cur {
		case StepFailed: // forward failure of an uncompensable step
			if i.Steps[i.Step].Compensable {
				return bad("a compensable step failing forward must compensate, not fail the saga")
			}
			err = statuses(done, pending)
		case StepCompensationFailed:
			err = statuses(done, undone)
		default:
			return bad("current step is %s", cur)
		}
	default:
		return bad("unknown state")
	}
	if err != nil {
		return err
	}
	return i.checkHistory()
}

// checkHistory checks that History is a legal path from Started to the current
// state.
func (i *Instance) checkHistory() error {
	if len(i.History) == 0 {
		if i.State != Started {
			return fmt.Errorf("%w: saga %q: %s without history", ErrInvariant, i.ID, i.State)
		}
		return nil
	}
	from, fromStep := Started, 0
	var last time.Time
	for k, c := range i.History {
		bad := func(what string) error {
			return fmt.Errorf("%w: saga %q: history entry %d (%s(%d) -> %s(%d), %q): %s",
				ErrInvariant, i.ID, k, c.From, fromStep, c.To, c.Step, c.Cause, what)
		}
		switch {
		case c.From != from:
			return bad(fmt.Sprintf("does not start where the previous one ended (%s)", from))
		case c.At.Before(last):
			return bad("goes back in time")
		case c.Cause == "":
			return bad("has no cause")
		case c.Step < 0 || c.Step >= len(i.Steps):
			return bad("step out of range")
		case !legalEdge(c.From, fromStep, c.To, c.Step, len(i.Steps)):
			return bad("is not a transition of the state machine")
		}
		from, fromStep, last = c.To, c.Step, c.At
	}
	if from != i.State || fromStep != i.Step {
		return fmt.Errorf("%w: saga %q: history ends at %s(%d), instance is %s(%d)", ErrInvariant, i.ID, from, fromStep, i.State, i.Step)
	}
	return nil
}

// legalEdge is the state machine drawn in doc.go, as a predicate.
func legalEdge(from State, fs int, to State, ts int, n int) bool {
	switch from {
	case Started:
		// Step 0 sent, or it could not be built (nothing to compensate), or an
		// operator force-compensated before anything ran.
		return ts == 0 && (to == Running || to == Cancelled)
	case Running:
		switch to {
		case Running:
			return ts == fs || ts == fs+1
		case Completed:
			return fs == n-1 && ts == fs
		case Compensating:
			return ts <= fs
		case Failed:
			// fs+1: step fs succeeded and the next one, after the pivot,
			// could not be built.
			return ts <= fs+1
		case Cancelled:
			return ts == 0
		}
	case Compensating:
		switch to {
		case Compensating, Failed:
			return ts <= fs
		case Cancelled:
			return ts == 0
		}
	case Failed:
		// Operator Retry resumes the same step (or fails again building it);
		// ForceCompensate turns back.
		switch to {
		case Running:
			return ts == fs
		case Compensating, Failed:
			return ts <= fs
		case Cancelled:
			return ts == 0
		}
	}
	return false
}
