// Package sagatest holds the four tests every saga definition must pass,
// written once so that a new definition gets them by being in a registry
// (after Oxide omicron's saga test helpers):
//
//   - a plain run: every action succeeds, the saga completes, each action's
//     effect is there once;
//   - every action delivered twice: the participant sees each command twice
//     and the orchestrator each reply twice; the second reply is ignored
//     (no new version, no new command) and the run ends as the plain one;
//   - a failure injected at each step in turn, up to the pivot: the saga is
//     cancelled and nothing is left behind (every effect undone, no command
//     for a step after the failed one and the steps parallel to it). A
//     pivot that takes no reply (saga.Step.NoReply) is left out: the saga
//     never hears its outcome, and its participant dead-letters a refusal;
//   - the same with every compensation delivered twice.
//
// The tests drive the pure state machine (saga.Transition) against a model
// participant that applies each step's effect at most once and undoes it at
// most once, the contract of the idempotency package's barrier; every
// snapshot must pass Instance.Check. They need no Kafka and no Redis. The
// participants' side of the contract is tested on real Redis by
// saga/participanttest, and the whole under faults by the chaos suite.
//
// It also holds a faster JSON decoder to encoding/json for one type
// (DecodesLikeEncodingJSON): the services decode every record's body with
// saga.DecodeJSON, and each body type they decode is checked with it.
package sagatest

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// RunRegistry runs the four tests for every definition of reg; starts holds
// each definition's start data by name. A definition without start data is
// an error: registering one is how a definition gets its tests.
func RunRegistry(t *testing.T, reg *saga.Registry, starts map[string]json.RawMessage) {
	t.Helper()
	for _, name := range reg.Names() {
		def, _ := reg.Lookup(name)
		data, ok := starts[name]
		if !ok {
			t.Errorf("sagatest: no start data for saga %q: give it one", name)
			continue
		}
		t.Run(name, func(t *testing.T) { Run(t, def, data) })
	}
}

// Run runs the four tests for def, starting each saga with data.
func Run(t *testing.T, def *saga.Definition, data json.RawMessage) {
	t.Run("plain", func(t *testing.T) {
		w := drive(t, def, data, -1, 1, 1)
		w.expectCompleted(t)
	})
	t.Run("actions-twice", func(t *testing.T) {
		w := drive(t, def, data, -1, 2, 1)
		w.expectCompleted(t)
	})
	pivot := len(def.Steps)
	for i, s := range def.Steps {
		if s.Compensation == nil {
			pivot = i
			break
		}
	}
	for k := 0; k <= pivot && k < len(def.Steps); k++ {
		if def.Steps[k].NoReply {
			continue
		}
		for _, twice := range []int{1, 2} {
			name := fmt.Sprintf("fail-at-%s", def.Steps[k].Name)
			if twice == 2 {
				name += "-undo-twice"
			}
			t.Run(name, func(t *testing.T) {
				w := drive(t, def, data, k, 1, twice)
				w.expectNothingLeft(t, k)
			})
		}
	}
}

// world is the model participant: what each step's action did.
type world struct {
	def      *saga.Definition
	final    *saga.Instance
	applied  []int // times each step's action took effect
	undone   []int // times each step's effect was undone
	commands []int // commands received per step (deliveries)
}

// drive runs one saga to its end: the action of step failAt (-1: none)
// fails; each action is delivered actionTimes, each compensation undoTimes.
func drive(t *testing.T, def *saga.Definition, data json.RawMessage, failAt, actionTimes, undoTimes int) *world {
	t.Helper()
	n := len(def.Steps)
	w := &world{def: def, applied: make([]int, n), undone: make([]int, n), commands: make([]int, n)}
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	seq := 0
	next := func() saga.Input {
		seq++
		at = at.Add(time.Millisecond)
		return saga.Input{At: at, MessageID: fmt.Sprintf("m%d", seq)}
	}
	in := next()
	in.Kind, in.Start = saga.KindStart, saga.Start{SagaID: "saga-1", Data: data}
	inst, out, err := saga.Transition(def, nil, in)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	check(t, inst)
	// The commands sent and not yet delivered, in the order sent: a
	// participant reads one step's commands in order (one partition), and
	// the steps of a parallel group are all in flight at once.
	var queue []saga.Outgoing
	queue = appendCommands(queue, out)
	for steps := 0; len(queue) > 0; steps++ {
		if steps > 10*n+10 {
			t.Fatalf("the saga did not end: %s at step %d", inst.State, inst.Step)
		}
		cmd := &queue[0]
		queue = queue[1:]
		times := actionTimes
		if cmd.Phase == saga.PhaseCompensation {
			times = undoTimes
		}
		var reply saga.Reply
		for range times {
			reply = w.deliver(*cmd, failAt)
		}
		if cmd.NoReply {
			continue // the saga moved on when it sent it
		}
		in := next()
		in.Kind, in.Reply = saga.KindReply, reply
		awaited := slices.Contains(inst.InFlight(), saga.Awaited{Step: cmd.Step, Phase: cmd.Phase, Attempt: cmd.Attempt})
		after, nextOut, err := saga.Transition(def, inst, in)
		if !awaited && errors.Is(err, saga.ErrIgnored) {
			// The saga turned back while this parallel step's action was
			// on its way; the compensation queued after it undoes what it
			// did.
			check(t, after)
			inst = after
			continue
		}
		if err != nil {
			t.Fatalf("reply %+v: %v", reply, err)
		}
		check(t, after)
		for range times - 1 {
			dup := next()
			dup.Kind, dup.Reply = saga.KindReply, reply
			again, more, err := saga.Transition(def, after, dup)
			if !errors.Is(err, saga.ErrIgnored) && !errors.Is(err, saga.ErrIllegal) {
				t.Errorf("a reply delivered twice: %v, want it ignored", err)
			}
			if again.Version != after.Version || len(more) > 0 {
				t.Errorf("a reply delivered twice moved the saga (version %d -> %d) or sent %d messages", after.Version, again.Version, len(more))
			}
		}
		inst = after
		queue = appendCommands(queue, nextOut)
	}
	if !inst.IsTerminal() {
		t.Fatalf("the saga sent nothing more but is %s at step %d", inst.State, inst.Step)
	}
	w.final = inst
	return w
}

// appendCommands appends the commands among out to queue.
func appendCommands(queue, out []saga.Outgoing) []saga.Outgoing {
	for _, o := range out {
		if o.IsCommand() {
			queue = append(queue, o)
		}
	}
	return queue
}

// deliver applies cmd in the model and returns the participant's reply.
func (w *world) deliver(cmd saga.Outgoing, failAt int) saga.Reply {
	k := cmd.Step
	w.commands[k]++
	r := saga.Reply{Step: k, Attempt: cmd.Attempt, Phase: cmd.Phase, Outcome: saga.Success}
	switch {
	case cmd.Phase == saga.PhaseCompensation:
		if w.applied[k] > w.undone[k] { // undo once; a null compensation otherwise
			w.undone[k]++
		}
	case k == failAt:
		r.Outcome, r.Reason = saga.Failure, "sagatest: injected failure"
	case w.applied[k] == 0 && w.undone[k] == 0: // apply once; never after the undo
		w.applied[k]++
	}
	return r
}

func check(t *testing.T, inst *saga.Instance) {
	t.Helper()
	if err := inst.Check(); err != nil {
		t.Fatalf("snapshot version %d: %v", inst.Version, err)
	}
}

func (w *world) expectCompleted(t *testing.T) {
	t.Helper()
	if w.final.State != saga.Completed {
		t.Fatalf("ended %s (%s), want Completed", w.final.State, w.final.Reason)
	}
	for k, s := range w.final.Steps {
		if s.Status != saga.StepDone || w.applied[k] != 1 || w.undone[k] != 0 {
			t.Errorf("step %s: %s, applied %d, undone %d; want Done, applied once", s.Name, s.Status, w.applied[k], w.undone[k])
		}
	}
}

func (w *world) expectNothingLeft(t *testing.T, failed int) {
	t.Helper()
	if w.final.State != saga.Cancelled {
		t.Fatalf("failing step %d ended the saga %s (%s), want Cancelled", failed, w.final.State, w.final.Reason)
	}
	last := failed // the last step of the failed one's group
	for last+1 < len(w.def.Steps) && w.def.Steps[last+1].Parallel {
		last++
	}
	for k, s := range w.final.Steps {
		if w.applied[k] != w.undone[k] {
			t.Errorf("step %s (%s): applied %d, undone %d: left behind", s.Name, s.Status, w.applied[k], w.undone[k])
		}
		if k > last && w.commands[k] > 0 {
			t.Errorf("step %s after the failed one got %d commands", s.Name, w.commands[k])
		}
	}
}
