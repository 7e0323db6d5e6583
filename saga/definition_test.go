package saga_test

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

func TestRetryPolicyDelay(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		p    saga.RetryPolicy
		n    int
		want time.Duration
	}{
		{saga.RetryPolicy{}, 1, 0},
		{saga.RetryPolicy{Backoff: 100 * ms}, 0, 0},
		{saga.RetryPolicy{Backoff: 100 * ms}, 1, 100 * ms},
		{saga.RetryPolicy{Backoff: 100 * ms}, 2, 200 * ms},
		{saga.RetryPolicy{Backoff: 100 * ms}, 4, 800 * ms},
		{saga.RetryPolicy{Backoff: 100 * ms, MaxBackoff: 300 * ms}, 2, 200 * ms},
		{saga.RetryPolicy{Backoff: 100 * ms, MaxBackoff: 300 * ms}, 3, 300 * ms},
		{saga.RetryPolicy{Backoff: 100 * ms, MaxBackoff: 300 * ms}, 1000, 300 * ms},
		{saga.RetryPolicy{Backoff: time.Hour}, 1000, math.MaxInt64}, // no overflow
	}
	for _, tc := range tests {
		if got := tc.p.Delay(tc.n); got != tc.want {
			t.Errorf("%+v.Delay(%d) = %s, want %s", tc.p, tc.n, got, tc.want)
		}
	}
	if got := (saga.RetryPolicy{}).Attempts(); got != 1 {
		t.Errorf("zero policy allows %d attempts", got)
	}
}

func TestDefinitionValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *saga.Definition)
		want   string // in the error; "" for valid
	}{
		{"the order saga", func(d *saga.Definition) {}, ""},
		{"no name", func(d *saga.Definition) { d.Name = "" }, "empty name"},
		{"no steps", func(d *saga.Definition) { d.Steps = nil }, "no steps"},
		{"negative deadline", func(d *saga.Definition) { d.Deadline = -1 }, "negative deadline"},
		{"half an event", func(d *saga.Definition) { d.OnFailed.Topic = "" }, "OnFailed needs both"},
		{"no events", func(d *saga.Definition) {
			d.OnCompleted, d.OnCancelled, d.OnFailed = saga.Event{}, saga.Event{}, saga.Event{}
		}, ""},
		{"unnamed step", func(d *saga.Definition) { d.Steps[1].Name = "" }, "step 1 has no name"},
		{"repeated name", func(d *saga.Definition) { d.Steps[1].Name = "reserve-stock" }, "used twice"},
		{"no topic", func(d *saga.Definition) { d.Steps[0].Topic = "" }, "no topic"},
		{"no action", func(d *saga.Definition) { d.Steps[0].Action = nil }, "no action"},
		{"no timeout", func(d *saga.Definition) { d.Steps[0].Timeout = 0 }, "positive timeout"},
		{"negative attempts", func(d *saga.Definition) { d.Steps[0].Retry.MaxAttempts = -1 }, "negative retry"},
		{"cap below backoff", func(d *saga.Definition) { d.Steps[0].Retry.MaxBackoff = time.Millisecond }, "max backoff"},
		{"compensation after the pivot", func(d *saga.Definition) { d.Steps[0].Compensation = nil }, `follows the pivot "reserve-stock"`},
		{"no pivot at all", func(d *saga.Definition) { d.Steps[2].Compensation = pass("Unconfirm") }, ""},
		{"a pivot that takes no reply needs no timeout", func(d *saga.Definition) { d.Steps[2].NoReply, d.Steps[2].Timeout = true, 0 }, ""},
		{"no reply to a compensable step", func(d *saga.Definition) { d.Steps[1].NoReply = true }, "takes no reply but has a compensation"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := orderSaga()
			tc.change(d)
			err := d.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && (!errors.Is(err, saga.ErrInvalidDefinition) || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one with %q", err, tc.want)
			}
		})
	}
	var nilDef *saga.Definition
	if err := nilDef.Validate(); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Errorf("nil definition: %v", err)
	}
}

func TestRegistry(t *testing.T) {
	r, err := saga.NewRegistry(orderSaga(), shippingSaga())
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := r.Lookup("order"); !ok || d.Name != "order" {
		t.Errorf("lookup order: %v %v", d, ok)
	}
	if _, ok := r.Lookup("refund"); ok {
		t.Error("found an unregistered saga")
	}
	if got := strings.Join(r.Names(), ","); got != "order,shipping" {
		t.Errorf("names %s", got)
	}
	if _, err := saga.NewRegistry(orderSaga(), orderSaga()); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Errorf("duplicate: %v", err)
	}
	bad := orderSaga()
	bad.Steps = nil
	if _, err := saga.NewRegistry(bad); !errors.Is(err, saga.ErrInvalidDefinition) {
		t.Errorf("invalid: %v", err)
	}
}

// TestCheckFindsCorruption breaks a legal snapshot in the ways a bug or a bad
// restore could, and expects Check to notice each.
func TestCheckFindsCorruption(t *testing.T) {
	def := orderSaga()
	running := func() *saga.Instance { return run(t, def, start(), ok(0, 1)) }
	failed := func() *saga.Instance {
		return run(t, def, start(), ok(0, 1), ok(1, 1), tick(6*time.Second), tick(11*time.Second))
	}
	tests := []struct {
		name   string
		base   func() *saga.Instance
		break_ func(i *saga.Instance)
	}{
		{"no id", running, func(i *saga.Instance) { i.ID = "" }},
		{"no type", running, func(i *saga.Instance) { i.Type = "" }},
		{"step out of range", running, func(i *saga.Instance) { i.Step = 3 }},
		{"version off", running, func(i *saga.Instance) { i.Version++ }},
		{"data not JSON", running, func(i *saga.Instance) { i.Data = []byte("{") }},
		{"earlier step not done", running, func(i *saga.Instance) { i.Steps[0].Status = saga.StepPending; i.Steps[0].Attempt = 0 }},
		{"later step ran", running, func(i *saga.Instance) { i.Steps[2].Status = saga.StepDone; i.Steps[2].Attempt, i.Steps[2].Limit = 1, 1 }},
		{"current step not running", running, func(i *saga.Instance) { i.Steps[1].Status = saga.StepDone }},
		{"attempt over budget", running, func(i *saga.Instance) { i.Steps[1].Attempt = 4 }},
		{"no timer while running", running, func(i *saga.Instance) { i.Steps[1].Deadline = time.Time{} }},
		{"two timers", running, func(i *saga.Instance) { i.Steps[1].RetryAt = i.Steps[1].Deadline }},
		{"timer on a step that waits for nothing", running, func(i *saga.Instance) { i.Steps[0].RetryAt = t0 }},
		{"old timer left", running, func(i *saga.Instance) { i.OldStepDeadline = t0 }},
		{"first step parallel", running, func(i *saga.Instance) { i.Steps[0].Parallel = true }},
		{"pivot parallel", running, func(i *saga.Instance) { i.Steps[2].Parallel = true }},
		{"reason while running", running, func(i *saga.Instance) { i.Reason = "why" }},
		{"unknown state", running, func(i *saga.Instance) { i.State = "Paused" }},
		{"unknown status", running, func(i *saga.Instance) { i.Steps[2].Status = "Meh" }},
		{"pivot compensated", failed, func(i *saga.Instance) { i.Steps[2].Status = saga.StepCompensated }},
		{"compensable after pivot", running, func(i *saga.Instance) { i.Steps[0].Compensable = false }},
		{"failed without reason", failed, func(i *saga.Instance) { i.Reason = "" }},
		{"timer on a failed saga", failed, func(i *saga.Instance) { i.Steps[2].Deadline = t0 }},
		{"history does not end here", running, func(i *saga.Instance) { i.History[1].To = saga.Compensating }},
		{"history skips a step", running, func(i *saga.Instance) {
			i.History[1].Step = 2
			i.Step = 2
			i.Steps[1].Status = saga.StepDone
			i.Steps[2].Status = saga.StepRunning
			i.Steps[2].Attempt, i.Steps[2].Limit = 1, 2
		}},
		{"history skips a step that waited for its reply", func() *saga.Instance { return run(t, def, start(), ok(0, 1), ok(1, 1), ok(2, 1)) },
			func(i *saga.Instance) {
				// Completed straight from the charge, as a pivot that takes
				// no reply would be; but this saga's pivot waits for one.
				i.History = i.History[:3]
				i.History[2].To, i.History[2].Step = saga.Completed, 2
				i.Version = 3
			}},
		{"a compensable step that takes no reply", running, func(i *saga.Instance) { i.Steps[1].NoReply = true }},
		{"history goes back in time", running, func(i *saga.Instance) { i.History[1].At = t0.Add(-time.Second) }},
		{"history without cause", running, func(i *saga.Instance) { i.History[0].Cause = "" }},
		{"completed with a step undone", func() *saga.Instance { return run(t, def, start(), ok(0, 1), ok(1, 1), ok(2, 1)) },
			func(i *saga.Instance) { i.Steps[1].Status = saga.StepCompensated }},
		{"cancelled with a step done", func() *saga.Instance { return run(t, def, start(), ok(0, 1), nok(1, 1, "no"), undone(0, 1)) },
			func(i *saga.Instance) { i.Steps[0].Status = saga.StepDone }},
		{"two failed steps", func() *saga.Instance { return run(t, def, start(), ok(0, 1), nok(1, 1, "no"), undone(0, 1)) },
			func(i *saga.Instance) { i.Steps[0].Status = saga.StepFailed }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			i := tc.base()
			if err := i.Check(); err != nil {
				t.Fatalf("base is not legal: %v", err)
			}
			tc.break_(i)
			if err := i.Check(); !errors.Is(err, saga.ErrInvariant) {
				t.Fatalf("Check() = %v, want ErrInvariant", err)
			} else {
				t.Log(err)
			}
		})
	}
	var nilInst *saga.Instance
	if err := nilInst.Check(); !errors.Is(err, saga.ErrInvariant) {
		t.Errorf("nil: %v", err)
	}
}
