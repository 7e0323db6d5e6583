package saga

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"
)

// Command is what a Builder makes from the saga's data: the message type and
// its JSON body. The orchestrator adds the envelope (ids, step, attempt).
type Command struct {
	Type    string
	Payload json.RawMessage
}

// Builder makes the command for one step and phase from the saga's data (the
// Data of the Start that created the saga, unchanged).
//
// A Builder must be deterministic and free of side effects: it is called again
// for every attempt and again after a restore, and must build the same command
// each time. An error means the data cannot make this command, which no retry
// can fix: for an action it counts as a business failure of the step (the saga
// compensates), for a compensation it parks the saga in Failed. A Builder that
// panics is treated as one that returned an error, so one bad saga cannot stop
// a partition.
//
// Builders do not see the results of earlier steps: participants key their
// effects by saga id and step, so a compensation can find what its action did
// without them.
type Builder func(data json.RawMessage) (Command, error)

// RetryPolicy bounds the attempts of one phase (action or compensation) of a
// step. An attempt fails when its reply says Transient (or Failure, for a
// compensation) or when no reply arrives within Step.Timeout.
type RetryPolicy struct {
	// MaxAttempts counts the first attempt: 3 means one send and two retries.
	// Zero means 1 (no retry).
	MaxAttempts int
	// Backoff is the wait after the first failed attempt; each further failed
	// attempt doubles it. Zero resends at once.
	Backoff time.Duration
	// MaxBackoff caps the doubling. Zero means no cap.
	MaxBackoff time.Duration
}

// Attempts returns the number of attempts the policy allows, at least 1.
func (p RetryPolicy) Attempts() int {
	return max(p.MaxAttempts, 1)
}

// Delay returns how long to wait after attempt n (1 for the first attempt of
// a budget) failed before sending attempt n+1: Backoff·2^(n-1), capped at
// MaxBackoff. It is a pure function of its inputs so tests can compute the
// schedule; there is no jitter because the retries of one saga are already
// serialised by its partition, and sagas fail at different times.
func (p RetryPolicy) Delay(n int) time.Duration {
	if p.Backoff <= 0 || n < 1 {
		return 0
	}
	limit := time.Duration(math.MaxInt64)
	if p.MaxBackoff > 0 {
		limit = p.MaxBackoff
	}
	d := p.Backoff
	for i := 1; i < n; i++ {
		if d > limit/2 {
			return limit
		}
		d *= 2
	}
	return min(d, limit)
}

// Step is one local transaction of a saga, run by the participant that reads
// Topic.
type Step struct {
	// Name identifies the step in replies, snapshots and the history; unique
	// within the definition. Keep names stable: snapshots refer to them.
	Name string
	// Topic is the participant's command topic, for both the action and the
	// compensation.
	Topic string
	// Action builds the command that does the step.
	Action Builder
	// Compensation builds the command that undoes it. Nil makes the step
	// uncompensable: the first such step is the saga's pivot (the point of no
	// return, e.g. confirm order), and every step after it must be
	// uncompensable too (they can only be retried). Once the pivot succeeds the
	// saga can only go forward.
	Compensation Builder
	// Timeout is how long one attempt (of the action or the compensation) may
	// wait for its reply. Required, except for a step that takes no reply
	// (NoReply): without it a lost reply would hang the saga forever.
	Timeout time.Duration
	// Retry bounds the attempts of the action and, separately, of the
	// compensation.
	Retry RetryPolicy
	// Parallel starts the step's action together with the step before it
	// instead of after it succeeded. A step and the Parallel steps right
	// after it form a group: all their actions are in flight at once, and
	// the saga moves past the group when every one of them succeeded. If
	// one fails, the saga turns back: the others are compensated (the ones
	// still in flight too, as after a timeout: the participant's barrier
	// refuses an action that arrives after its compensation), then the
	// steps before the group, one at a time in reverse as always.
	//
	// It saves one round trip through Kafka per step so joined, for every
	// saga. The price: when one step of a group fails, the others have run
	// for nothing and are undone (a card charged and refunded for an order
	// that was out of stock). Only compensable steps can be Parallel, and
	// not the first: the pivot runs alone, after everything it stands on
	// succeeded.
	Parallel bool
	// NoReply sends the step's action without waiting for an answer: the
	// step counts as done once its command is committed, in the same
	// transaction, and the saga goes on (or ends) at once. The participant
	// sends no reply; one that refuses such a command dead-letters it with
	// the reason, for an operator. It is for a step the participant cannot
	// rightly refuse, such as committing stock the saga holds reserved, and
	// saves a round trip through Kafka on every saga. Only an uncompensable
	// step can take no reply: the saga cannot turn back on an outcome it
	// does not hear. Its Timeout and Retry are not used.
	NoReply bool
}

// canJoin says whether step k, compensable or not, may run together with
// the step before it (Step.Parallel): only a compensable step, and not the
// first. The one rule for definitions (Validate) and for the sagas they
// started (fits, Instance.Check), which keep the grouping they began with.
func canJoin(k int, compensable bool) bool { return k > 0 && compensable }

// Event names an event the orchestrator publishes when a saga ends; its body
// is an EndEvent. The zero Event publishes nothing.
type Event struct {
	Topic string
	Type  string
}

func (e Event) enabled() bool { return e.Type != "" }

// Definition describes one kind of saga. It is read-only once registered: a
// Definition is shared by every instance and goroutine.
type Definition struct {
	// Name is the saga type, stored in every instance.
	Name string
	// Steps run in order; compensations run in reverse.
	Steps []Step
	// Deadline bounds the whole saga from its start: when it passes while a
	// compensable step is running, the saga compensates. It is not enforced
	// once the pivot is in flight or done, because the saga can then only go
	// forward (each step still has its own timeout). Zero means no deadline.
	Deadline time.Duration

	// OnCompleted, OnCancelled and OnFailed are published when the saga
	// reaches that state, e.g. {"orders.events", "OrderConfirmed"}.
	OnCompleted Event
	OnCancelled Event
	OnFailed    Event
}

// Validate reports the first problem that would make the definition unsafe to
// run, wrapped in ErrInvalidDefinition.
func (d *Definition) Validate() error {
	if d == nil {
		return fmt.Errorf("%w: nil definition", ErrInvalidDefinition)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: saga %q: %s", ErrInvalidDefinition, d.Name, fmt.Sprintf(format, args...))
	}
	if d.Name == "" {
		return bad("empty name")
	}
	if len(d.Steps) == 0 {
		return bad("no steps")
	}
	if d.Deadline < 0 {
		return bad("negative deadline %s", d.Deadline)
	}
	for _, e := range []struct {
		name string
		ev   Event
	}{{"OnCompleted", d.OnCompleted}, {"OnCancelled", d.OnCancelled}, {"OnFailed", d.OnFailed}} {
		if (e.ev.Topic == "") != (e.ev.Type == "") {
			return bad("%s needs both a topic and a type", e.name)
		}
	}
	seen := make(map[string]bool, len(d.Steps))
	pivot := ""
	for i, s := range d.Steps {
		if s.Name == "" {
			return bad("step %d has no name", i)
		}
		if seen[s.Name] {
			return bad("step name %q used twice", s.Name)
		}
		seen[s.Name] = true
		if s.Topic == "" {
			return bad("step %q has no topic", s.Name)
		}
		if s.Action == nil {
			return bad("step %q has no action", s.Name)
		}
		if s.NoReply && s.Compensation != nil {
			return bad("step %q takes no reply but has a compensation: the saga could not turn back on an outcome it does not hear", s.Name)
		}
		if s.Timeout <= 0 && !s.NoReply {
			return bad("step %q needs a positive timeout", s.Name)
		}
		if s.Retry.MaxAttempts < 0 || s.Retry.Backoff < 0 || s.Retry.MaxBackoff < 0 {
			return bad("step %q has a negative retry setting", s.Name)
		}
		if s.Retry.MaxBackoff > 0 && s.Retry.MaxBackoff < s.Retry.Backoff {
			return bad("step %q: max backoff %s is below backoff %s", s.Name, s.Retry.MaxBackoff, s.Retry.Backoff)
		}
		if s.Parallel && !canJoin(i, s.Compensation != nil) {
			return bad("step %q is parallel but is the first step or has no compensation: only a compensable step can run together with the one before it", s.Name)
		}
		switch {
		case s.Compensation == nil && pivot == "":
			pivot = s.Name
		case s.Compensation != nil && pivot != "":
			// It could never run: compensation never goes back past a pivot.
			return bad("step %q has a compensation but follows the pivot %q, after which the saga can only go forward", s.Name, pivot)
		}
	}
	return nil
}

// pivot returns the index of the first step without compensation, or
// len(Steps) if every step can be compensated.
func (d *Definition) pivot() int {
	for i, s := range d.Steps {
		if s.Compensation == nil {
			return i
		}
	}
	return len(d.Steps)
}

// Registry maps saga type names to their definitions. It is immutable once
// built, so it is safe for concurrent use.
type Registry struct {
	defs map[string]*Definition
}

// NewRegistry validates defs and indexes them by name. Two definitions with
// the same name are an error: a snapshot names its type, and must find
// exactly one.
func NewRegistry(defs ...*Definition) (*Registry, error) {
	r := &Registry{defs: make(map[string]*Definition, len(defs))}
	for _, d := range defs {
		if err := d.Validate(); err != nil {
			return nil, err
		}
		if _, dup := r.defs[d.Name]; dup {
			return nil, fmt.Errorf("%w: saga %q registered twice", ErrInvalidDefinition, d.Name)
		}
		r.defs[d.Name] = d
	}
	return r, nil
}

// Lookup returns the definition of the saga type name.
func (r *Registry) Lookup(name string) (*Definition, bool) {
	d, ok := r.defs[name]
	return d, ok
}

// Names returns the registered saga types, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.defs))
	for n := range r.defs {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
