package saga

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Kind says which of an Input's fields is meaningful.
type Kind string

const (
	KindStart    Kind = "start"    // Input.Start: create the saga
	KindReply    Kind = "reply"    // Input.Reply: a participant answered a command
	KindTick     Kind = "tick"     // no payload: timers due at Input.At fire
	KindOperator Kind = "operator" // Input.Operator: a person intervenes
)

// Input is one thing that happens to a saga. At is the time the runtime
// observed it: Transition reads no clock, so every deadline it sets is At plus
// a duration, and a replay of the same inputs gives the same result.
type Input struct {
	Kind Kind
	At   time.Time
	// MessageID identifies the input for history and causation; may be empty
	// for a Tick.
	MessageID string

	Start    Start
	Reply    Reply
	Operator Operator
}

// Start creates a saga.
type Start struct {
	SagaID string
	// Data is given to every Builder; it must be JSON (or empty).
	Data json.RawMessage
	// Traceparent is the W3C trace context of the start message; every command
	// and event of the saga continues that trace. Empty starts none (each
	// message then gets a trace of its own).
	Traceparent string
}

// Outcome is what a participant says about one command. The three kinds are
// told apart because each asks for a different reaction.
type Outcome string

const (
	// Success: the command took effect (or, for a compensation, the effect is
	// undone, including the null compensation of an action that never ran).
	Success Outcome = "success"
	// Failure is a business failure: the action was refused and did not take
	// effect (stock unavailable, payment declined), and retrying will not
	// change that, so the saga compensates. For a compensation a Failure is
	// retried like Transient: compensations must eventually succeed.
	Failure Outcome = "failure"
	// Transient: the participant could not decide now (a dependency was down)
	// and recorded nothing; the same command may succeed later, so it is
	// retried within the step's budget.
	Transient Outcome = "transient"
)

func (o Outcome) valid() bool { return o == Success || o == Failure || o == Transient }

// Reply is a participant's answer to one command, identified by the step,
// phase and attempt the command carried.
type Reply struct {
	// Step is the step index; StepName, when set, takes precedence.
	Step     int
	StepName string
	Attempt  int
	Phase    Phase
	Outcome  Outcome
	// Reason says why, for a Failure or Transient; it ends up in the history
	// and in Instance.Reason, so write it for a person ("payment declined:
	// insufficient funds").
	Reason string
	// Result is kept in the step's state on a successful action (must be JSON
	// or empty).
	Result json.RawMessage
}

// Op is an operator command.
type Op string

const (
	// OpRetry resumes a Failed saga where it stopped, with a fresh attempt
	// budget: the compensation that exhausted its budget, or the
	// uncompensable step that failed.
	OpRetry Op = "retry"
	// OpForceCompensate turns a saga back now: the step in flight is
	// compensated too, then the earlier ones. It is refused (ErrIllegal) once
	// the pivot is in flight or has succeeded, because the saga can then only
	// go forward; the one exception is a saga Failed at the pivot itself
	// (its outcome unknown after its budget ran out): there the operator
	// asserts the pivot did not take effect, and the steps before it are
	// compensated.
	OpForceCompensate Op = "force-compensate"
)

// Operator is a person's intervention.
type Operator struct {
	Op Op
	// Reason is recorded in the history ("customer called to cancel").
	Reason string
}

// Outgoing is a message Transition asks the runtime to send: a command for a
// participant (Phase set), or an end event (Phase empty, Step and Attempt 0).
// The runtime sends them in the same Kafka transaction that stores the new
// snapshot, so either both happen or neither.
type Outgoing struct {
	Topic   string
	Type    string
	SagaID  string
	Step    int
	Attempt int
	Phase   Phase
	Payload json.RawMessage
	// CausationID is the MessageID of the input that caused this message.
	CausationID string
	// Traceparent is the saga's trace context, to be continued by Envelope.
	Traceparent string
	// NoReply marks a command of a step that takes no reply (Step.NoReply).
	NoReply bool
}

// IsCommand reports whether o is a command to a participant rather than an end
// event.
func (o Outgoing) IsCommand() bool { return o.Phase != "" }

// EndEvent is the body of the OnCompleted, OnCancelled and OnFailed events.
type EndEvent struct {
	SagaID   string `json:"saga_id"`
	SagaType string `json:"saga_type"`
	State    State  `json:"state"`
	Reason   string `json:"reason,omitempty"`
	// Version is the Version of the snapshot that ends the saga, committed
	// in the same transaction. A reader that follows both the events and
	// saga.state sees them in no set order across the two topics; Version
	// tells it which of the two is newer.
	Version uint64 `json:"version"`
	// Data is the saga's data, so a reader of the event needs nothing else.
	Data json.RawMessage `json:"data,omitempty"`
	// Results holds the successful actions' results, by step name.
	Results map[string]json.RawMessage `json:"results,omitempty"`
}

// Transition applies in to inst and returns the new instance and the messages
// to send. It is pure: it does no I/O, reads no clock and never modifies inst
// (the result may share slices with it; see Instance).
//
// Errors and what to do with them:
//   - nil: persist the instance and send the messages, atomically. When a Tick
//     finds nothing due, Transition returns inst itself, unchanged.
//   - ErrIgnored: the input was not applied (a duplicate, stale or late reply,
//     a second Start). The instance differs from inst only by Ignored+1;
//     persist it. There are no messages.
//   - ErrIllegal: the input makes no sense here (see the error); handled like
//     ErrIgnored, but worth a warning.
//
// The instance is nil only when inst was nil (or had no ID) and the input did
// not create it. def must be the valid definition of inst's type.
//
// The rules, in short (doc.go draws them):
//   - Start creates the saga and sends step 0's action; a Start for an
//     existing saga is ignored.
//   - Only a reply to a command in flight (Instance.InFlight) is applied;
//     after a timeout, that attempt's replies are stale. A group of
//     parallel steps (Step.Parallel) has one command in flight per step
//     still running, each with its own timers.
//   - Action Success: next step (once every step of its group succeeded),
//     or Completed after the last.
//   - Action Failure (business): that step did not take effect; the other
//     steps of its group and the earlier steps are compensated in reverse,
//     Cancelled when none is left. After the pivot succeeded, nothing can be
//     compensated: Failed.
//   - Action Transient or timeout: retry with backoff within the budget. When
//     it runs out the step may have taken effect late, so it is compensated
//     too, then the earlier ones; if the step is the pivot or after it, Failed.
//   - Compensation Success: the previous compensable step is compensated next,
//     Cancelled when none is left. Failure, Transient or timeout: retry
//     within the budget, then Failed.
//   - Tick fires what is due at At, at most one timer per call, the saga
//     deadline first, then the steps' in step order.
//   - Operator: see OpRetry and OpForceCompensate.
func Transition(def *Definition, inst *Instance, in Input) (*Instance, []Outgoing, error) {
	exists := inst != nil && inst.ID != ""
	var refuse string
	switch {
	case def == nil:
		refuse = "no definition"
	case in.At.IsZero():
		refuse = fmt.Sprintf("%s input without a time", in.Kind)
	}
	if refuse != "" {
		if !exists {
			return inst, nil, fmt.Errorf("%w: %s", ErrIllegal, refuse)
		}
		return ignore(inst, ErrIllegal, "%s", refuse)
	}
	if in.Kind == KindStart {
		if exists {
			return ignore(inst, ErrIgnored, "saga %q already exists (%s)", inst.ID, inst.State)
		}
		return start(def, in)
	}
	if !exists {
		switch in.Kind {
		case KindTick:
			return inst, nil, nil
		case KindReply:
			// A reply for a saga this orchestrator never started or has lost:
			// nothing to apply it to, nothing to count it on.
			return inst, nil, fmt.Errorf("%w: %s reply for an unknown saga", ErrIgnored, in.Reply.Phase)
		default:
			return inst, nil, fmt.Errorf("%w: %s input for an unknown saga", ErrIllegal, in.Kind)
		}
	}
	if err := fits(def, inst); err != nil {
		return ignore(inst, ErrIllegal, "%v", err)
	}
	t := &tx{def: def, in: in, old: inst, at: in.At}
	// A clock that steps back (another orchestrator took the partition over)
	// must not make the history go back in time.
	if n := len(inst.History); n > 0 && t.at.Before(inst.History[n-1].At) {
		t.at = inst.History[n-1].At
	}
	switch in.Kind {
	case KindReply:
		return t.reply()
	case KindTick:
		return t.tick()
	case KindOperator:
		return t.operator()
	}
	return ignore(inst, ErrIllegal, "unknown input kind %q", in.Kind)
}

// fits reports why def cannot drive inst, so a snapshot restored under a
// changed definition is refused instead of misread.
func fits(def *Definition, inst *Instance) error {
	if inst.Type != def.Name {
		return fmt.Errorf("saga %q is a %q, not a %q", inst.ID, inst.Type, def.Name)
	}
	if len(inst.Steps) != len(def.Steps) {
		return fmt.Errorf("saga %q has %d steps, definition %q has %d", inst.ID, len(inst.Steps), def.Name, len(def.Steps))
	}
	for k, s := range def.Steps {
		if inst.Steps[k].Name != s.Name || inst.Steps[k].Compensable != (s.Compensation != nil) {
			return fmt.Errorf("saga %q step %d is %q, definition %q has %q", inst.ID, k, inst.Steps[k].Name, def.Name, s.Name)
		}
		// The saga's own grouping counts, not the definition's (StepState):
		// it only has to be one a definition could have.
		if inst.Steps[k].Parallel && !canJoin(k, inst.Steps[k].Compensable) {
			return fmt.Errorf("saga %q step %d is parallel but is the first step or cannot be compensated", inst.ID, k)
		}
		if inst.Steps[k].NoReply && inst.Steps[k].Compensable {
			return fmt.Errorf("saga %q step %d takes no reply but can be compensated", inst.ID, k)
		}
	}
	if inst.Step < 0 || inst.Step >= len(inst.Steps) {
		return fmt.Errorf("saga %q: step index %d out of range", inst.ID, inst.Step)
	}
	return nil
}

// ignore returns inst with the input counted as ignored, and the error.
func ignore(inst *Instance, sentinel error, format string, args ...any) (*Instance, []Outgoing, error) {
	c := *inst // shallow: nothing shared is modified (see Instance)
	c.Ignored++
	return &c, nil, fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

// tx is one application of an input: the copy being built, the messages and
// the cause for the history.
type tx struct {
	def   *Definition
	in    Input
	old   *Instance
	at    time.Time
	i     *Instance
	from  State
	out   []Outgoing
	cause string
}

func start(def *Definition, in Input) (*Instance, []Outgoing, error) {
	s := in.Start
	if s.SagaID == "" {
		return nil, nil, fmt.Errorf("%w: start without a saga id", ErrIllegal)
	}
	if len(def.Steps) == 0 {
		return nil, nil, fmt.Errorf("%w: saga %q has no steps (see Definition.Validate)", ErrIllegal, def.Name)
	}
	if len(s.Data) > 0 && !ValidJSON(s.Data) {
		return nil, nil, fmt.Errorf("%w: start of saga %q: data is not JSON", ErrIllegal, s.SagaID)
	}
	i := &Instance{
		ID:          s.SagaID,
		Type:        def.Name,
		State:       Started,
		Steps:       make([]StepState, len(def.Steps)),
		Data:        s.Data,
		Traceparent: s.Traceparent,
	}
	for k, st := range def.Steps {
		i.Steps[k] = StepState{Name: st.Name, Compensable: st.Compensation != nil, Parallel: st.Parallel, NoReply: st.NoReply, Status: StepPending}
	}
	if def.Deadline > 0 {
		i.Deadline = in.At.Add(def.Deadline)
	}
	t := &tx{def: def, in: in, at: in.At, i: i, from: Started}
	t.note("saga started")
	t.beginStep(0)
	return t.commit()
}

// begin makes the copy the transition works on.
func (t *tx) begin() {
	t.i = t.old.clone()
	t.from = t.old.State
}

// commit records the change and returns the result.
func (t *tx) commit() (*Instance, []Outgoing, error) {
	i := t.i
	i.Version++
	i.History = append(i.History, Change{
		At:        t.at,
		From:      t.from,
		To:        i.State,
		Step:      i.Step,
		Cause:     t.cause,
		MessageID: t.in.MessageID,
	})
	return i, t.out, nil
}

func (t *tx) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if t.cause == "" {
		t.cause = s
	} else {
		t.cause += "; " + s
	}
}

func (t *tx) reply() (*Instance, []Outgoing, error) {
	r := t.in.Reply
	if !r.Phase.valid() {
		return ignore(t.old, ErrIllegal, "reply with unknown phase %q", r.Phase)
	}
	if !r.Outcome.valid() {
		return ignore(t.old, ErrIllegal, "reply with unknown outcome %q", r.Outcome)
	}
	k := r.Step
	if r.StepName != "" {
		k = -1
		for j, s := range t.old.Steps {
			if s.Name == r.StepName {
				k = j
			}
		}
		if k < 0 {
			return ignore(t.old, ErrIgnored, "reply for unknown step %q", r.StepName)
		}
	}
	if phase, ok := t.old.awaits(k); !ok || r.Phase != phase || r.Attempt != t.old.Steps[k].Attempt {
		return ignore(t.old, ErrIgnored, "%s reply for step %s attempt %d is not one the saga waits for: %s",
			r.Phase, t.stepName(k), r.Attempt, t.waitsFor())
	}
	phase := r.Phase
	if len(r.Result) > 0 && !ValidJSON(r.Result) {
		return ignore(t.old, ErrIllegal, "reply for step %s: result is not JSON", t.stepName(k))
	}
	t.begin()
	name := t.def.Steps[k].Name
	why := ""
	if r.Reason != "" {
		why = ": " + r.Reason
	}
	switch {
	case phase == PhaseAction && r.Outcome == Success:
		t.note("step %s succeeded", name)
		t.i.Steps[k].Result = r.Result
		t.advance(k)
	case phase == PhaseAction && r.Outcome == Failure:
		reason := fmt.Sprintf("step %s failed%s", name, why)
		t.note("%s", reason)
		t.actionFailed(k, false, reason)
	case phase == PhaseAction:
		t.attemptFailed(k, fmt.Sprintf("step %s failed transiently (%s)%s", name, t.attemptText(k, 0), why))
	case r.Outcome == Success:
		t.note("step %s compensated", name)
		t.i.Steps[k].Status = StepCompensated
		t.clearTimers()
		t.compensateFrom(k - 1)
	default:
		t.attemptFailed(k, fmt.Sprintf("compensation of step %s failed (%s)%s", name, t.attemptText(k, 0), why))
	}
	return t.commit()
}

func (t *tx) tick() (*Instance, []Outgoing, error) {
	i := t.old
	if i.deadlineApplies() && !t.at.Before(i.Deadline) {
		t.begin()
		reason := "saga deadline passed"
		if t.def.Deadline > 0 {
			reason = fmt.Sprintf("saga deadline of %s passed", t.def.Deadline)
		}
		t.note("%s", reason)
		t.actionFailed(i.Step, true, reason)
		return t.commit()
	}
	if i.State != Running && i.State != Compensating {
		return i, nil, nil
	}
	// Only the steps that wait for something have timers (Check): the
	// current one, or the running steps of its group.
	for k := range i.Steps {
		s := &i.Steps[k]
		timedOut := !s.Deadline.IsZero() && !t.at.Before(s.Deadline)
		if !timedOut && (s.RetryAt.IsZero() || t.at.Before(s.RetryAt)) {
			continue
		}
		t.begin()
		what := "step " + t.def.Steps[k].Name
		if timedOut {
			if i.State == Compensating {
				what = "compensation of " + what
			}
			t.attemptFailed(k, fmt.Sprintf("%s timed out after %s (%s)", what, t.def.Steps[k].Timeout, t.attemptText(k, 0)))
			return t.commit()
		}
		if i.State == Compensating {
			what = "the compensation of " + what
		}
		t.note("backoff over, retrying %s (%s)", what, t.attemptText(k, 1))
		t.resend(k)
		return t.commit()
	}
	return i, nil, nil
}

func (t *tx) operator() (*Instance, []Outgoing, error) {
	op := t.in.Operator
	i := t.old
	k := i.Step
	why := ""
	if op.Reason != "" {
		why = ": " + op.Reason
	}
	pivot := t.def.pivot()
	switch op.Op {
	case OpRetry:
		if i.State != Failed {
			return ignore(i, ErrIllegal, "operator retry: only a Failed saga can be retried, saga is %s", i.State)
		}
		st := i.Steps[k]
		if st.Status != StepFailed && st.Status != StepCompensationFailed {
			return ignore(i, ErrIllegal, "operator retry: failed step %s is %s", st.Name, st.Status)
		}
		t.begin()
		s := &t.i.Steps[k]
		s.Limit = s.Attempt + t.def.Steps[k].Retry.Attempts()
		if st.Status == StepCompensationFailed {
			t.note("operator retry of the compensation of step %s%s", st.Name, why)
			s.Status = StepCompensating
			t.i.State = Compensating
		} else {
			t.note("operator retry of step %s%s", st.Name, why)
			s.Status = StepRunning
			t.i.State = Running
			t.i.Reason = ""
		}
		t.resend(k)
	case OpForceCompensate:
		reason := "operator force-compensate" + why
		switch {
		case i.State == Started:
			t.begin()
			t.note("%s", reason)
			t.i.Reason = reason
			t.skipAfter(-1)
			t.cancel()
		case i.State == Running && k < pivot:
			t.begin()
			t.note("%s", reason)
			t.actionFailed(k, true, reason)
		case i.State == Running && k == pivot:
			return ignore(i, ErrIllegal, "operator force-compensate: the pivot step %s is in flight and its outcome decides; wait for it (it times out after %s)",
				i.Steps[k].Name, t.def.Steps[k].Timeout)
		case (i.State == Running || i.State == Failed) && k > pivot:
			return ignore(i, ErrIllegal, "operator force-compensate: the pivot step %s succeeded, the saga can only go forward", i.Steps[pivot].Name)
		case i.State == Failed && k == pivot && i.Steps[k].Status == StepFailed:
			// The pivot ran out of attempts without an answer; the operator
			// vouches that it did not take effect.
			t.begin()
			t.note("%s", reason)
			t.i.Reason = reason
			t.skipAfter(k)
			t.compensateFrom(k - 1)
		case i.State == Compensating || i.State == Failed:
			return ignore(i, ErrIllegal, "operator force-compensate: saga is already compensating (%s); use retry", i.State)
		default:
			return ignore(i, ErrIllegal, "operator force-compensate: saga is %s", i.State)
		}
	default:
		return ignore(i, ErrIllegal, "unknown operator command %q", op.Op)
	}
	return t.commit()
}

// beginStep starts the action of step k, and of the steps parallel to it.
func (t *tx) beginStep(k int) {
	_, last := group(t.i.Steps, k)
	t.i.State = Running
	t.i.Step = k
	// Every command of the group is built before any is sent: one that
	// cannot be built turns the saga back with none of the group sent, so
	// there is nothing of it to compensate.
	var one [1]Command
	cmds := one[:0]
	for j := k; j <= last; j++ {
		cmd, err := build(t.def.Steps[j].Action, t.i.Data)
		if err != nil {
			t.cannotBuild(j, PhaseAction, err)
			return
		}
		cmds = append(cmds, cmd)
	}
	for j := k; j <= last; j++ {
		s := &t.i.Steps[j]
		s.Status = StepRunning
		s.Attempt = 0
		s.Limit = t.def.Steps[j].Retry.Attempts()
		t.send(j, PhaseAction, cmds[j-k])
	}
	t.unanswered(k)
}

// unanswered moves past step k, whose action was just sent, if the step
// takes no reply (Step.NoReply): it is done once its command is committed,
// which is in this transaction. Such a step is alone in its group, since
// it cannot be compensated and so nothing joins it.
func (t *tx) unanswered(k int) {
	if t.i.Steps[k].NoReply && t.i.Steps[k].Status == StepRunning {
		t.note("step %s sent (it takes no reply)", t.def.Steps[k].Name)
		t.advance(k)
	}
}

// advance moves past step k, whose action succeeded, once the other steps
// of its group succeeded too.
func (t *tx) advance(k int) {
	t.i.Steps[k].Status = StepDone
	t.clearStep(k)
	first, last := group(t.i.Steps, k)
	for j := first; j <= last; j++ {
		if t.i.Steps[j].Status != StepDone {
			t.note("waiting for step %s", t.i.Steps[j].Name)
			return
		}
	}
	if last == len(t.i.Steps)-1 {
		t.i.State = Completed
		t.i.Step = last
		t.i.Reason = ""
		t.end(t.def.OnCompleted)
		return
	}
	t.beginStep(last + 1)
}

// actionFailed handles the end of step k's action without success. unknown
// says whether the action may have taken effect anyway (no answer, or only
// transient ones), as opposed to a business failure, which says it did not.
func (t *tx) actionFailed(k int, unknown bool, reason string) {
	t.clearTimers()
	s := &t.i.Steps[k]
	// Turning back starts at the end of k's group: its other steps are done
	// or still in flight, and are compensated like k itself after a timeout.
	_, last := group(t.i.Steps, k)
	switch pivot := t.def.pivot(); {
	case unknown && k < pivot:
		// Compensate the step itself too: if its action lands late, the
		// participant's barrier refuses it; if it never ran, its compensation
		// is a no-op that succeeds.
		t.i.Reason = reason
		t.skipAfter(last)
		t.compensateFrom(last)
	case !unknown && k <= pivot:
		// At the pivot too: a pivot that says no is the normal way for a saga
		// to turn back. k itself, Failed, is not compensated.
		s.Status = StepFailed
		t.i.Reason = reason
		t.skipAfter(last)
		t.compensateFrom(last)
	default:
		// The pivot may have taken effect, or has and a later step failed:
		// compensating now could undo steps under a confirmed order.
		s.Status = StepFailed
		t.fail(k, reason)
	}
}

// attemptFailed handles a failed attempt of the current step (a timeout, a
// Transient reply, or a failed compensation): retry within the budget, else
// give up on the phase.
func (t *tx) attemptFailed(k int, what string) {
	t.clearStep(k)
	s := &t.i.Steps[k]
	if s.Attempt < s.Limit {
		p := t.def.Steps[k].Retry
		if d := p.Delay(s.Attempt - (s.Limit - p.Attempts())); d > 0 {
			s.RetryAt = t.at.Add(d)
			t.note("%s; retrying in %s", what, d)
			return
		}
		t.note("%s", what)
		t.resend(k)
		return
	}
	t.note("%s", what)
	if t.i.State == Running {
		t.actionFailed(k, true, what)
		return
	}
	s.Status = StepCompensationFailed
	t.fail(k, what)
}

// resend sends the next attempt of the current phase of step k.
func (t *tx) resend(k int) {
	def := &t.def.Steps[k]
	phase, b := PhaseAction, def.Action
	if t.i.State == Compensating {
		phase, b = PhaseCompensation, def.Compensation
	}
	cmd, err := build(b, t.i.Data)
	if err != nil {
		t.cannotBuild(k, phase, err)
		return
	}
	t.send(k, phase, cmd)
	if phase == PhaseAction {
		t.unanswered(k)
	}
}

// cannotBuild handles a command of step k that its builder refused.
func (t *tx) cannotBuild(k int, phase Phase, err error) {
	reason := fmt.Sprintf("cannot build the %s of step %s: %v", phase, t.def.Steps[k].Name, err)
	t.note("%s", reason)
	if phase == PhaseAction {
		// The data cannot make this command, so this attempt did not
		// take effect; earlier attempts, if any, might have.
		t.actionFailed(k, t.i.Steps[k].Attempt > 0, reason)
		return
	}
	t.i.Steps[k].Status = StepCompensationFailed
	t.fail(k, reason)
}

// send sends cmd as the next attempt of the phase of step k.
func (t *tx) send(k int, phase Phase, cmd Command) {
	s := &t.i.Steps[k]
	def := &t.def.Steps[k]
	s.Attempt++
	s.Deadline = t.at.Add(def.Timeout)
	s.RetryAt = time.Time{}
	t.out = append(t.out, Outgoing{
		NoReply:     s.NoReply && phase == PhaseAction,
		Topic:       def.Topic,
		Type:        cmd.Type,
		SagaID:      t.i.ID,
		Step:        k,
		Attempt:     s.Attempt,
		Phase:       phase,
		Payload:     cmd.Payload,
		CausationID: t.in.MessageID,
		Traceparent: t.i.Traceparent,
	})
}

// compensateFrom compensates the highest step at or below j that ran (or may
// have run) and can be compensated; Cancelled when there is none.
func (t *tx) compensateFrom(j int) {
	t.clearTimers()
	for ; j >= 0; j-- {
		s := &t.i.Steps[j]
		if s.Compensable && (s.Status == StepDone || s.Status == StepRunning) {
			s.Status = StepCompensating
			s.Attempt = 0
			s.Limit = t.def.Steps[j].Retry.Attempts()
			t.i.State = Compensating
			t.i.Step = j
			t.resend(j)
			return
		}
		if s.Status == StepPending {
			s.Status = StepSkipped
		}
	}
	t.cancel()
}

// skipAfter marks the steps after k that never ran as never to run.
func (t *tx) skipAfter(k int) {
	for j := k + 1; j < len(t.i.Steps); j++ {
		if t.i.Steps[j].Status == StepPending {
			t.i.Steps[j].Status = StepSkipped
		}
	}
}

func (t *tx) cancel() {
	t.clearTimers()
	t.i.State = Cancelled
	t.i.Step = 0
	t.end(t.def.OnCancelled)
}

func (t *tx) fail(k int, reason string) {
	t.clearTimers()
	t.i.State = Failed
	t.i.Step = k
	t.i.Reason = reason
	t.end(t.def.OnFailed)
}

// clearTimers stops every step's timers: the saga stops waiting for what
// it sent.
func (t *tx) clearTimers() {
	for k := range t.i.Steps {
		t.clearStep(k)
	}
}

// clearStep stops the timers of step k alone.
func (t *tx) clearStep(k int) {
	t.i.Steps[k].Deadline = time.Time{}
	t.i.Steps[k].RetryAt = time.Time{}
}

// waitsFor says which replies the saga waits for, for a reply it ignores.
func (t *tx) waitsFor() string {
	in := t.old.InFlight()
	if len(in) == 0 {
		return fmt.Sprintf("none (saga is %s)", t.old.State)
	}
	var b strings.Builder
	for n, a := range in {
		if n > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "the %s of step %s attempt %d", a.Phase, t.stepName(a.Step), a.Attempt)
	}
	return b.String()
}

// end emits the end event e, if the definition asks for one.
func (t *tx) end(e Event) {
	if !e.enabled() {
		return
	}
	// commit adds the one Version this transition takes.
	version := t.i.Version + 1
	body := EndEvent{SagaID: t.i.ID, SagaType: t.i.Type, State: t.i.State, Reason: t.i.Reason, Version: version, Data: t.i.Data}
	for _, s := range t.i.Steps {
		if len(s.Result) > 0 {
			if body.Results == nil {
				body.Results = make(map[string]json.RawMessage)
			}
			body.Results[s.Name] = s.Result
		}
	}
	payload, err := json.Marshal(body)
	if err != nil {
		// Data and results were checked to be JSON on the way in, so this
		// cannot happen short of a corrupted snapshot; say so in the event
		// rather than dropping it.
		payload, _ = json.Marshal(EndEvent{SagaID: t.i.ID, SagaType: t.i.Type, State: t.i.State, Version: version,
			Reason: "cannot encode end event: " + err.Error()})
	}
	t.out = append(t.out, Outgoing{
		Topic:       e.Topic,
		Type:        e.Type,
		SagaID:      t.i.ID,
		Step:        0,
		Payload:     payload,
		CausationID: t.in.MessageID,
		Traceparent: t.i.Traceparent,
	})
}

// attemptText says which attempt of its budget the current attempt of step k
// (plus delta) is, as in "attempt 2/3".
func (t *tx) attemptText(k, delta int) string {
	s := t.i.Steps[k]
	n := t.def.Steps[k].Retry.Attempts()
	return fmt.Sprintf("attempt %d/%d", s.Attempt+delta-(s.Limit-n), n)
}

func (t *tx) stepName(k int) string {
	if k >= 0 && k < len(t.old.Steps) {
		return t.old.Steps[k].Name
	}
	return fmt.Sprintf("#%d", k)
}

// build calls b, turning a panic or a malformed command into an error: a
// Builder is user code run inside the orchestrator's partition loop, and one
// saga's bad data must not stop the others.
func build(b Builder, data json.RawMessage) (cmd Command, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("builder panicked: %v", r)
		}
	}()
	if b == nil {
		return Command{}, fmt.Errorf("no builder")
	}
	cmd, err = b(data)
	switch {
	case err != nil:
		return Command{}, err
	case cmd.Type == "":
		return Command{}, fmt.Errorf("builder returned a command without a type")
	case len(cmd.Payload) == 0:
		cmd.Payload = json.RawMessage("{}")
	case !ValidJSON(cmd.Payload):
		return Command{}, fmt.Errorf("builder returned a %s payload that is not JSON", cmd.Type)
	}
	return cmd, nil
}
