package saga_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// fuzzDefs are the shapes FuzzTransition drives: pivot last (with a saga
// deadline), pivot in the middle, pivot first, and no pivot at all with
// timers short enough for the fuzzer to hit them constantly.
func fuzzDefs() []*saga.Definition {
	pivotFirst := &saga.Definition{
		Name: "pivot-first",
		Steps: []saga.Step{
			{Name: "confirm", Topic: "orders.commands", Action: pass("Confirm"), Timeout: time.Second},
			{Name: "notify", Topic: "mail.commands", Action: pass("Notify"), Timeout: time.Second,
				Retry: saga.RetryPolicy{MaxAttempts: 3, Backoff: 300 * time.Millisecond}},
		},
		OnFailed: saga.Event{Topic: "orders.events", Type: "Stuck"},
	}
	noPivot := &saga.Definition{
		Name: "no-pivot",
		Steps: []saga.Step{
			{Name: "a", Topic: "a.commands", Action: pass("DoA"), Compensation: pass("UndoA"), Timeout: 100 * time.Millisecond,
				Retry: saga.RetryPolicy{MaxAttempts: 4, Backoff: 10 * time.Millisecond, MaxBackoff: 25 * time.Millisecond}},
			{Name: "b", Topic: "b.commands", Action: pass("DoB"), Compensation: pass("UndoB"), Timeout: 100 * time.Millisecond,
				Retry: saga.RetryPolicy{MaxAttempts: 2}},
		},
		Deadline:    300 * time.Millisecond,
		OnCompleted: saga.Event{Topic: "x.events", Type: "Done"},
		OnCancelled: saga.Event{Topic: "x.events", Type: "Undone"},
	}
	// Groups of parallel steps: the order saga's reserve and charge at once,
	// and a saga that is one group of three, with a short deadline.
	parallel := orderSaga()
	parallel.Name = "parallel-order"
	parallel.Steps[1].Parallel = true
	allAtOnce := &saga.Definition{
		Name: "all-at-once",
		Steps: []saga.Step{
			noPivot.Steps[0], noPivot.Steps[1],
			{Name: "c", Topic: "c.commands", Action: pass("DoC"), Compensation: pass("UndoC"), Timeout: 150 * time.Millisecond,
				Retry: saga.RetryPolicy{MaxAttempts: 3, Backoff: 20 * time.Millisecond}, Parallel: true},
		},
		Deadline:    250 * time.Millisecond,
		OnCompleted: saga.Event{Topic: "x.events", Type: "Done"},
		OnCancelled: saga.Event{Topic: "x.events", Type: "Undone"},
	}
	allAtOnce.Steps[1].Parallel = true
	return []*saga.Definition{orderSaga(), shippingSaga(), pivotFirst, noPivot, parallel, allAtOnce}
}

// fuzzData are the saga data variants: plain, and ones that make a builder
// fail or panic.
var fuzzData = []string{
	`{"order":"order-1"}`, ``, `{"fail":"ChargePayment"}`, `{"fail":"RefundPayment"}`, `{"panic":"ReleaseStock"}`,
	`{"fail":"Notify"}`, `{"fail":"Confirm"}`, `{"fail":"UndoA"}`, `{"panic":"DoB"}`, `{"fail":"ReserveStock"}`,
	`{"fail":"DoC"}`, `{"panic":"UndoC"}`,
}

var fuzzResults = []json.RawMessage{nil, json.RawMessage(`{"id":7}`), json.RawMessage(`"ok"`), json.RawMessage(`{bad`)}

type fuzzBytes struct{ b []byte }

func (r *fuzzBytes) more() bool { return len(r.b) > 0 }

func (r *fuzzBytes) next() int {
	if len(r.b) == 0 {
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return int(c)
}

type triple struct {
	step    int
	phase   saga.Phase
	attempt int
}

// FuzzTransition decodes the fuzz input into a run of inputs (starts, replies
// right and wrong, exact duplicates, ticks, operator commands) and checks
// after each one what must always hold; then it plays a well-behaved
// participant and a clock and expects the saga to end.
func FuzzTransition(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 1, 0, 1, 0})
	f.Add([]byte{0, 0, 0, 1, 0, 1, 1, 1, 0, 3, 0, 5, 5, 5, 6, 0, 5})
	f.Add([]byte{1, 0, 0, 1, 0, 1, 0, 1, 1, 6, 1, 6, 0, 1, 0})
	f.Add([]byte{3, 0, 0, 4, 20, 5, 5, 1, 2, 5, 5, 5, 6, 0, 3, 1, 7, 9})
	f.Add([]byte{2, 0, 0, 2, 0, 1, 0, 0, 2, 2, 1, 5, 1, 2, 6, 1, 6, 0})
	f.Add([]byte{0, 0, 3, 1, 0, 6, 1, 6, 0, 5, 2, 1, 2, 1, 0, 4, 200, 4, 200})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &fuzzBytes{data}
		defs := fuzzDefs()
		def := defs[r.next()%len(defs)]
		h := &harness{t: t, def: def, now: t0, sent: map[triple]bool{}, applied: map[triple]bool{}}

		for n := 0; r.more() && n < 300; n++ {
			switch r.next() % 8 {
			case 0: // start, first or again
				in := saga.Input{Kind: saga.KindStart, At: h.now, MessageID: fmt.Sprintf("start-%d", n),
					Start: saga.Start{SagaID: "order-1", Data: json.RawMessage(fuzzData[r.next()%len(fuzzData)])}}
				h.apply(in)
			case 1: // an answer to a command in flight
				w := saga.Awaited{Step: r.next() % 4, Phase: saga.PhaseAction, Attempt: 1}
				if in := h.inst.InFlight(); len(in) > 0 {
					w = in[r.next()%len(in)]
				}
				h.reply(w.Step, w.Phase, w.Attempt, []saga.Outcome{saga.Success, saga.Failure, saga.Transient}[r.next()%3], fuzzResults[r.next()%len(fuzzResults)])
			case 2: // a reply out of nowhere: wrong step, attempt or phase, or nonsense
				phases := []saga.Phase{saga.PhaseAction, saga.PhaseCompensation, "undo"}
				outcomes := []saga.Outcome{saga.Success, saga.Failure, saga.Transient, "maybe"}
				h.reply(r.next()%4, phases[r.next()%len(phases)], r.next()%5, outcomes[r.next()%len(outcomes)], nil)
			case 3: // an exact duplicate of an earlier reply
				if len(h.replies) > 0 {
					in := h.replies[r.next()%len(h.replies)]
					in.At = h.now
					h.apply(in)
				}
			case 4: // time passes
				h.now = h.now.Add(time.Duration(r.next()) * 50 * time.Millisecond)
				h.apply(saga.Input{Kind: saga.KindTick, At: h.now})
			case 5: // the timer the instance asked for
				if nt := h.inst.NextTimer(); !nt.IsZero() && nt.After(h.now) {
					h.now = nt
				}
				h.apply(saga.Input{Kind: saga.KindTick, At: h.now, MessageID: fmt.Sprintf("tick-%d", n)})
			case 6: // an operator
				op := []saga.Op{saga.OpRetry, saga.OpForceCompensate}[r.next()%2]
				h.apply(saga.Input{Kind: saga.KindOperator, At: h.now, MessageID: fmt.Sprintf("op-%d", n), Operator: saga.Operator{Op: op}})
			case 7: // a clock that stepped back (another orchestrator took over)
				h.apply(saga.Input{Kind: saga.KindTick, At: h.now.Add(-time.Duration(r.next()) * 10 * time.Millisecond)})
			}
		}

		// Inputs stop; from here on the participants answer every command
		// with success and the clock keeps going. Every saga must end.
		for n := 0; n < 100 && !h.inst.IsTerminal(); n++ {
			switch in := h.inst.InFlight(); {
			case h.inst == nil:
				h.apply(saga.Input{Kind: saga.KindStart, At: h.now, Start: saga.Start{SagaID: "order-1"}})
			case len(in) > 0:
				w := in[len(in)-1] // the group's steps answer in any order
				h.reply(w.Step, w.Phase, w.Attempt, saga.Success, nil)
			default:
				nt := h.inst.NextTimer()
				if nt.IsZero() {
					t.Fatalf("saga stuck at %s with no timer:\n%s", pos(h.inst), snapshot(t, h.inst))
				}
				h.now = h.now.Add(time.Hour)
				if nt.After(h.now) {
					h.now = nt
				}
				h.apply(saga.Input{Kind: saga.KindTick, At: h.now})
			}
		}
		if !h.inst.IsTerminal() {
			t.Fatalf("saga did not end: %s\n%s", pos(h.inst), snapshot(t, h.inst))
		}
	})
}

// harness applies inputs to one saga and checks every step.
type harness struct {
	t       *testing.T
	def     *saga.Definition
	inst    *saga.Instance
	now     time.Time
	sent    map[triple]bool // every command emitted so far
	applied map[triple]bool // every reply applied so far
	replies []saga.Input    // every reply given, for duplicates
}

func (h *harness) reply(step int, ph saga.Phase, attempt int, o saga.Outcome, result json.RawMessage) {
	in := saga.Input{Kind: saga.KindReply, At: h.now, MessageID: fmt.Sprintf("reply-%d", len(h.replies)),
		Reply: saga.Reply{Step: step, Attempt: attempt, Phase: ph, Outcome: o, Reason: "because", Result: result}}
	h.replies = append(h.replies, in)
	h.apply(in)
}

func (h *harness) apply(in saga.Input) {
	t := h.t
	t.Helper()
	before := snapshot(t, h.inst)
	next, out, err := saga.Transition(h.def, h.inst, in)

	// Pure: the argument is untouched and the same call gives the same answer.
	if snapshot(t, h.inst) != before {
		t.Fatalf("Transition modified its argument (%s input)", in.Kind)
	}
	next2, out2, err2 := saga.Transition(h.def, h.inst, in)
	if snapshot(t, next) != snapshot(t, next2) || !reflect.DeepEqual(out, out2) || fmt.Sprint(err) != fmt.Sprint(err2) {
		t.Fatalf("Transition is not deterministic for a %s input", in.Kind)
	}

	if err != nil {
		if !errors.Is(err, saga.ErrIgnored) && !errors.Is(err, saga.ErrIllegal) {
			t.Fatalf("error wraps no sentinel: %v", err)
		}
		if len(out) > 0 {
			t.Fatalf("messages with an error: %v", err)
		}
		if h.inst != nil && (next.Version != h.inst.Version || next.Ignored != h.inst.Ignored+1) {
			t.Fatalf("ignored input changed the version or did not count: %v", err)
		}
	} else if next != h.inst && h.inst != nil && next.Version != h.inst.Version+1 {
		t.Fatalf("applied %s input moved the version from %d to %d", in.Kind, h.inst.Version, next.Version)
	}
	if next == nil {
		if h.inst != nil {
			t.Fatalf("instance lost")
		}
		return
	}
	if cerr := next.Check(); cerr != nil {
		t.Fatalf("after %s input (%v): %v\n%s", in.Kind, err, cerr, snapshot(t, next))
	}

	// The snapshot survives saga.state: JSON and back gives the same value.
	b := snapshot(t, next)
	var restored saga.Instance
	if err := json.Unmarshal([]byte(b), &restored); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if snapshot(t, &restored) != b {
		t.Fatalf("restore changed the snapshot")
	}

	// A reply is applied only if it answers a command in flight, and once.
	if in.Kind == saga.KindReply && err == nil {
		got := triple{in.Reply.Step, in.Reply.Phase, in.Reply.Attempt}
		if !awaits(h.inst, got) {
			t.Fatalf("applied reply %+v while %v were in flight", got, h.inst.InFlight())
		}
		if h.applied[got] {
			t.Fatalf("reply %+v applied twice", got)
		}
		h.applied[got] = true
	}

	// Each command is sent once, and it is then in flight.
	commands := 0
	for _, o := range out {
		if !o.IsCommand() {
			if !next.IsTerminal() {
				t.Fatalf("end event %s while %s", o.Type, pos(next))
			}
			// Readers order it against the snapshots by its version.
			var ev saga.EndEvent
			if err := json.Unmarshal(o.Payload, &ev); err != nil || ev.Version != next.Version || ev.State != next.State {
				t.Fatalf("end event %s says %s at version %d (%v), the snapshot %s at %d", o.Type, ev.State, ev.Version, err, next.State, next.Version)
			}
			continue
		}
		commands++
		id := triple{o.Step, o.Phase, o.Attempt}
		if h.sent[id] {
			t.Fatalf("command %+v sent twice", id)
		}
		h.sent[id] = true
		if !awaits(next, id) {
			t.Fatalf("sent %+v but %v are in flight", id, next.InFlight())
		}
		if o.SagaID != next.ID || o.Topic != h.def.Steps[o.Step].Topic || o.Attempt > next.Steps[o.Step].Limit {
			t.Fatalf("command %+v does not fit the saga", o)
		}
	}
	if commands > len(next.Steps) {
		t.Fatalf("%d commands from one input", commands)
	}
	h.inst = next
}

// awaits reports whether inst waits for the reply to the command id.
func awaits(inst *saga.Instance, id triple) bool {
	return slices.Contains(inst.InFlight(), saga.Awaited{Step: id.step, Phase: id.phase, Attempt: id.attempt})
}
