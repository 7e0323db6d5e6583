package saga

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// State is where a saga is. Running and Compensating also carry the current
// step, in Instance.Step (while Running a group of parallel steps, its first).
type State string

const (
	// Started is the state of a saga that exists but has not sent anything.
	// Transition moves a new saga out of it within the same call, so snapshots
	// only show it as the From of the first history entry.
	Started State = "Started"
	// Running: the action of Instance.Step is in flight or waiting to be
	// retried; every earlier step is done. When Instance.Step begins a group
	// of parallel steps, each step of the group is in flight, waiting to be
	// retried, or done.
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
	// Parallel says the step runs together with the one before it
	// (Step.Parallel), copied from the definition when the saga started: a
	// saga keeps the shape it started with, so a definition changed under
	// running sagas does not regroup steps already in flight.
	Parallel bool `json:"parallel,omitempty"`
	// NoReply says the step takes no reply (Step.NoReply), copied from the
	// definition when the saga started, for the same reason as Parallel:
	// a saga that started waiting for its pivot's answer goes on waiting.
	NoReply bool `json:"no_reply,omitempty"`
	// Deadline is when the step's command in flight times out; zero when
	// none is.
	Deadline time.Time `json:"deadline,omitzero"`
	// RetryAt is when the step's next attempt is sent; zero unless it waits
	// out a backoff. A step with a command in flight or waiting to send one
	// has exactly one of Deadline and RetryAt; every other step has neither.
	RetryAt time.Time `json:"retry_at,omitzero"`
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

	// OldStepDeadline and OldRetryAt are the one step's timers as snapshots
	// kept them before each step had its own (StepState.Deadline, RetryAt).
	// DecodeSnapshot moves them to the current step, so that a saga in flight
	// across the upgrade still times out; nothing writes them any more.
	OldStepDeadline time.Time `json:"step_deadline,omitzero"`
	OldRetryAt      time.Time `json:"retry_at,omitzero"`
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
	var t time.Time
	earlier := func(u time.Time) {
		if !u.IsZero() && (t.IsZero() || u.Before(t)) {
			t = u
		}
	}
	// Only the steps that wait for something have timers (Check).
	for k := range i.Steps {
		earlier(i.Steps[k].Deadline)
		earlier(i.Steps[k].RetryAt)
	}
	if i.deadlineApplies() {
		earlier(i.Deadline)
	}
	return t
}

// group returns the first and the last step of the group step k belongs to:
// k itself and the Parallel steps joined to it on either side.
func group(steps []StepState, k int) (first, last int) {
	first, last = k, k
	for first > 0 && steps[first].Parallel {
		first--
	}
	for last+1 < len(steps) && steps[last+1].Parallel {
		last++
	}
	return first, last
}

// migrate moves the timers of a snapshot written before each step had its
// own to the step that was current.
func (i *Instance) migrate() {
	if i.OldStepDeadline.IsZero() && i.OldRetryAt.IsZero() {
		return
	}
	if i.Step >= 0 && i.Step < len(i.Steps) && (i.State == Running || i.State == Compensating) {
		i.Steps[i.Step].Deadline, i.Steps[i.Step].RetryAt = i.OldStepDeadline, i.OldRetryAt
	}
	i.OldStepDeadline, i.OldRetryAt = time.Time{}, time.Time{}
}

// deadlineApplies reports whether passing the saga deadline would make the
// saga compensate: only while running a compensable step, that is, before the
// pivot is in flight.
func (i *Instance) deadlineApplies() bool {
	return !i.Deadline.IsZero() && i.State == Running && i.Step < len(i.Steps) && i.Steps[i.Step].Compensable
}

// Awaited names one command whose reply a saga waits for.
type Awaited struct {
	Step    int
	Phase   Phase
	Attempt int
}

// InFlight returns the commands whose replies the saga is waiting for: one,
// or one per step of a parallel group still running. Exactly a reply with
// one of these steps, phases and attempts will be applied; any other is
// ignored. It is empty when no command is in flight (the saga has ended, or
// waits out a backoff).
func (i *Instance) InFlight() []Awaited {
	if i == nil || i.Step < 0 || i.Step >= len(i.Steps) {
		return nil
	}
	var in []Awaited
	first, last := group(i.Steps, i.Step)
	for k := first; k <= last; k++ {
		if ph, ok := i.awaits(k); ok {
			in = append(in, Awaited{Step: k, Phase: ph, Attempt: i.Steps[k].Attempt})
		}
	}
	return in
}

// awaits reports whether a command of step k is in flight, and its phase:
// the action of a running step of the current group, or the compensation of
// the current step.
func (i *Instance) awaits(k int) (Phase, bool) {
	if k < 0 || k >= len(i.Steps) || i.Steps[k].Deadline.IsZero() {
		return "", false
	}
	switch s := i.Steps[k].Status; {
	case i.State == Running && s == StepRunning && i.inGroup(k):
		return PhaseAction, true
	case i.State == Compensating && s == StepCompensating && k == i.Step:
		return PhaseCompensation, true
	}
	return "", false
}

// inGroup reports whether step k is in the group of the current step.
func (i *Instance) inGroup(k int) bool {
	first, last := group(i.Steps, i.Step)
	return k >= first && k <= last
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
		if s.Parallel && !canJoin(j, s.Compensable) {
			return bad("step %q is parallel but is the first step or cannot be compensated", s.Name)
		}
		if s.NoReply && s.Compensable {
			return bad("step %q takes no reply but can be compensated", s.Name)
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

	// The current step's group: the steps in flight together while Running
	// (just the current step when it is not parallel).
	first, last := group(i.Steps, i.Step)
	// statuses checks the steps before and after the current one; a step
	// of the current group before it may also be in the statuses of
	// inGroup.
	statuses := func(before, inGroup, after []StepStatus) error {
		for j, s := range i.Steps {
			allowed := after
			switch {
			case j == i.Step:
				continue
			case j < i.Step && j >= first:
				allowed = inGroup
			case j < i.Step:
				allowed = before
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
	// Compensating a group turns back while some of its steps may still
	// be running (their outcome unknown, compensated next) or may have
	// failed (not compensated).
	unsettled := []StepStatus{StepDone, StepRunning, StepFailed}
	cur := i.Steps[i.Step].Status
	if !i.OldStepDeadline.IsZero() || !i.OldRetryAt.IsZero() {
		return bad("the saga's old step timers are set (DecodeSnapshot moves them to the step)")
	}
	for j, s := range i.Steps {
		waits := (i.State == Running && j >= first && j <= last && s.Status == StepRunning) ||
			(i.State == Compensating && j == i.Step)
		switch {
		case waits && s.Deadline.IsZero() == s.RetryAt.IsZero():
			return bad("step %q: exactly one of its deadline and retry-at must be set", s.Name)
		case !waits && (!s.Deadline.IsZero() || !s.RetryAt.IsZero()):
			return bad("step %q has timers set but waits for nothing", s.Name)
		}
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
		err = statuses(nil, nil, pending)
		if cur != StepPending {
			return bad("current step is %s", cur)
		}
	case Running:
		if i.Step != first {
			return bad("the current step is not the first of its group (%d)", first)
		}
		// The group moves on once every step of it is done.
		running := false
		for j := first; j <= last; j++ {
			switch i.Steps[j].Status {
			case StepRunning:
				running = true
			case StepDone:
			default:
				return bad("step %q of the running group is %s", i.Steps[j].Name, i.Steps[j].Status)
			}
		}
		if !running {
			return bad("every step of the running group is done")
		}
		for j, s := range i.Steps {
			if (j < first && s.Status != StepDone) || (j > last && s.Status != StepPending) {
				return bad("step %q is %s", s.Name, s.Status)
			}
		}
	case Compensating:
		if cur != StepCompensating {
			return bad("current step is %s", cur)
		}
		err = statuses(done, unsettled, undone)
	case Completed:
		err = statuses(done, done, done)
		if cur != StepDone || i.Step != n-1 {
			return bad("completed at step %d (%s)", i.Step, cur)
		}
	case Cancelled:
		if !slices.Contains(undone, cur) {
			return bad("current step is %s", cur)
		}
		err = statuses(undone, undone, undone)
	case Failed:
		switch cur {
		case StepFailed: // forward failure of an uncompensable step
			if i.Steps[i.Step].Compensable {
				return bad("a compensable step failing forward must compensate, not fail the saga")
			}
			err = statuses(done, done, pending)
		case StepCompensationFailed:
			err = statuses(done, unsettled, undone)
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
		case !legalEdge(c.From, fromStep, c.To, c.Step, i.Steps):
			return bad("is not a transition of the state machine")
		}
		from, fromStep, last = c.To, c.Step, c.At
	}
	if from != i.State || fromStep != i.Step {
		return fmt.Errorf("%w: saga %q: history ends at %s(%d), instance is %s(%d)", ErrInvariant, i.ID, from, fromStep, i.State, i.Step)
	}
	return nil
}

// legalEdge is the state machine drawn in doc.go, as a predicate. Running
// at a group of parallel steps counts as running at its last step, where
// the saga moves on from.
func legalEdge(from State, fs int, to State, ts int, steps []StepState) bool {
	n := len(steps)
	if from == Running {
		_, fs = group(steps, fs)
	}
	switch from {
	case Started:
		// Step 0 sent, or it could not be built (nothing to compensate), or an
		// operator force-compensated before anything ran. Steps that take no
		// reply are passed in the same transition, from the start too.
		switch to {
		case Running:
			return ts <= sentOn(steps, -1)+1
		case Cancelled:
			return ts == 0
		case Completed:
			return sentOn(steps, -1) == n-1 && ts == n-1
		case Failed:
			return ts >= 1 && ts <= sentOn(steps, -1)+1
		}
		return false
	case Running:
		switch to {
		case Running:
			first, _ := group(steps, fs)
			return ts == first || (ts > fs && ts <= sentOn(steps, fs)+1)
		case Completed:
			return sentOn(steps, fs) == n-1 && ts == n-1
		case Compensating:
			return ts <= fs
		case Failed:
			// Past fs: step fs succeeded and a later one, after the pivot,
			// could not be built.
			return ts <= sentOn(steps, fs)+1
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
		// A retried step that takes no reply is done as it is sent.
		past := fs - 1
		if steps[fs].NoReply {
			past = sentOn(steps, fs)
		}
		switch to {
		case Running:
			return ts == fs || (ts > fs && ts <= past+1)
		case Compensating:
			return ts <= fs
		case Failed:
			return ts <= max(fs, past+1)
		case Cancelled:
			return ts == 0
		case Completed:
			return past == n-1 && ts == n-1
		}
	}
	return false
}

// sentOn returns the last step that is done once step k is: k itself, and
// the steps after it that take no reply, which go out in the same
// transition.
func sentOn(steps []StepState, k int) int {
	for k+1 < len(steps) && steps[k+1].NoReply {
		k++
	}
	return k
}
