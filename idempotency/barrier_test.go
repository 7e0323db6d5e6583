package idempotency_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// stockFixture is one SKU with an available and a reserved counter and the
// stock barrier from the package example.
type stockFixture struct {
	rdb                 *redis.Client
	barrier             *idempotency.Barrier
	available, reserved string
	prefix              string
	ctx                 context.Context
}

func newStock(t testing.TB, initial int64) *stockFixture {
	t.Helper()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	var store *idempotency.Store
	var err error
	if tt, ok := t.(*testing.T); ok {
		store, err = idempotency.New(idempotency.Config{Prefix: prefix}, rdb, zaptest.NewLogger(tt))
	} else {
		store, err = idempotency.New(idempotency.Config{Prefix: prefix}, rdb, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	f := &stockFixture{
		rdb:       rdb,
		barrier:   store.Barrier("stock", reserveLua, releaseLua),
		available: prefix + ":stock:{sku-1}:available",
		reserved:  prefix + ":stock:{sku-1}:reserved",
		prefix:    prefix,
		ctx:       ctx,
	}
	if err := rdb.Set(ctx, f.available, initial, 0).Err(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *stockFixture) keys() []string { return []string{f.available, f.reserved} }

func (f *stockFixture) reserve(t testing.TB, ref idempotency.Ref, qty int) idempotency.Result {
	t.Helper()
	r, err := f.barrier.Action(f.ctx, ref, f.keys(), qty)
	if err != nil {
		t.Fatalf("reserve %+v: %v", ref, err)
	}
	return r
}

func (f *stockFixture) release(t testing.TB, ref idempotency.Ref) idempotency.Result {
	t.Helper()
	r, err := f.barrier.Compensate(f.ctx, ref, f.keys())
	if err != nil {
		t.Fatalf("release %+v: %v", ref, err)
	}
	return r
}

// counts returns (available, reserved).
func (f *stockFixture) counts(t testing.TB) (int64, int64) {
	t.Helper()
	vals, err := f.rdb.MGet(f.ctx, f.available, f.reserved).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := func(v any) int64 {
		if v == nil {
			return 0
		}
		i, err := strconv.ParseInt(v.(string), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return i
	}
	return n(vals[0]), n(vals[1])
}

func (f *stockFixture) wantCounts(t testing.TB, available, reserved int64) {
	t.Helper()
	if a, r := f.counts(t); a != available || r != reserved {
		t.Fatalf("available=%d reserved=%d, want %d and %d", a, r, available, reserved)
	}
}

func wantResult(t testing.TB, what string, got idempotency.Result, repeat, hanging, null bool) {
	t.Helper()
	if got.Repeat != repeat || got.Hanging != hanging || got.Null != null {
		t.Fatalf("%s: %+v, want repeat=%v hanging=%v null=%v", what, got, repeat, hanging, null)
	}
}

func TestBarrierNullCompensationBlocksLateAction(t *testing.T) {
	t.Parallel()
	f := newStock(t, 10)
	ref := idempotency.Ref{SagaID: "order-1", Step: "reserve-stock"}

	c := f.release(t, ref)
	wantResult(t, "compensation before action", c, false, false, true)
	if c.Outcome != idempotency.NullOutcome {
		t.Errorf("null compensation outcome %q", c.Outcome)
	}
	f.wantCounts(t, 10, 0)

	a := f.reserve(t, ref, 3)
	wantResult(t, "late action", a, false, true, false)
	if a.Outcome != idempotency.HangingOutcome || !errors.Is(a.Err(), idempotency.ErrHanging) {
		t.Errorf("late action: %+v", a)
	}
	f.wantCounts(t, 10, 0)

	wantResult(t, "late action again", f.reserve(t, ref, 3), true, true, false)
	wantResult(t, "compensation again", f.release(t, ref), true, false, true)
	f.wantCounts(t, 10, 0)
}

func TestBarrierActionCompensationThenRepeatBoth(t *testing.T) {
	t.Parallel()
	f := newStock(t, 10)
	ref := idempotency.Ref{SagaID: "order-2", Step: "reserve-stock"}

	a := f.reserve(t, ref, 3)
	wantResult(t, "action", a, false, false, false)
	f.wantCounts(t, 7, 3)
	wantResult(t, "action repeat", f.reserve(t, ref, 3), true, false, false)
	f.wantCounts(t, 7, 3)

	c := f.release(t, ref)
	wantResult(t, "compensation", c, false, false, false)
	f.wantCounts(t, 10, 0)

	for range 3 {
		c2 := f.release(t, ref)
		wantResult(t, "compensation repeat", c2, true, false, false)
		if c2.Outcome != c.Outcome {
			t.Errorf("compensation repeat outcome %q, want %q", c2.Outcome, c.Outcome)
		}
		// An action redelivered after its compensation is refused, not
		// answered its old "reserved": that reservation no longer exists.
		wantResult(t, "action after its compensation", f.reserve(t, ref, 3), true, true, false)
	}
	f.wantCounts(t, 10, 0)
}

// TestBarrierCompensationReadsActionOutcome: release gives back what reserve
// recorded, whatever the release command says, and only once.
func TestBarrierCompensationReadsActionOutcome(t *testing.T) {
	t.Parallel()
	f := newStock(t, 10)
	ref := idempotency.Ref{SagaID: "order-3", Step: "reserve-stock"}
	f.reserve(t, ref, 4)

	// A compensation body that shows what it was given.
	rdb := f.rdb
	store, err := idempotency.New(idempotency.Config{Prefix: f.prefix}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	echo := store.Barrier("echo", `return cjson.encode({ok = true, n = tonumber(ARGV[1])})`,
		`return cjson.encode({ok = true, action = ACTION, argv = ARGV})`)
	a, err := echo.Action(f.ctx, ref, nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	c, err := echo.Compensate(f.ctx, ref, nil, "x")
	if err != nil {
		t.Fatal(err)
	}
	var seen struct {
		Action string   `json:"action"`
		Argv   []string `json:"argv"`
	}
	if err := c.Decode(&seen); err != nil {
		t.Fatal(err)
	}
	if seen.Action != a.Outcome {
		t.Errorf("compensation saw ACTION %q, want the action's outcome %q", seen.Action, a.Outcome)
	}
	if len(seen.Argv) != 1 || seen.Argv[0] != "x" {
		t.Errorf("compensation saw ARGV %q, want its own args only", seen.Argv)
	}

	// The stock release is passed no quantity at all: it reads 4 from ACTION.
	r := f.release(t, ref)
	var out struct {
		Released int64 `json:"released"`
	}
	if err := r.Decode(&out); err != nil || out.Released != 4 {
		t.Errorf("release outcome %q: released %d, %v; want 4", r.Outcome, out.Released, err)
	}
	f.wantCounts(t, 10, 0)
}

// TestBarrierCompensationOfRefusedAction: the action ran but was refused by
// the domain; the compensation is not null (the action did arrive) and
// undoes nothing.
func TestBarrierCompensationOfRefusedAction(t *testing.T) {
	t.Parallel()
	f := newStock(t, 2)
	ref := idempotency.Ref{SagaID: "order-4", Step: "reserve-stock"}
	a := f.reserve(t, ref, 5)
	var out struct {
		OK     bool   `json:"ok"`
		Reason string `json:"reason"`
	}
	if err := a.Decode(&out); err != nil || out.OK || out.Reason != "insufficient stock" {
		t.Fatalf("reserve 5 of 2: %q, %v", a.Outcome, err)
	}
	c := f.release(t, ref)
	wantResult(t, "compensation of a refusal", c, false, false, false)
	f.wantCounts(t, 2, 0)
}

func TestBarrierKeysAndTTL(t *testing.T) {
	t.Parallel()
	f := newStock(t, 10)
	ref := idempotency.Ref{SagaID: "order:5{x}", Step: "reserve-stock"}
	f.reserve(t, ref, 1)
	f.release(t, ref)
	ak, ck := f.barrier.Keys(ref)
	if want := idempotency.Key(f.prefix+":stock", ref.SagaID, ref.Step, idempotency.OpAction); ak != want {
		t.Errorf("action key %q, want %q", ak, want)
	}
	for _, k := range []string{ak, ck} {
		ttl, err := f.rdb.PTTL(f.ctx, k).Result()
		if err != nil {
			t.Fatal(err)
		}
		if ttl <= idempotency.DefaultTTL-time.Minute || ttl > idempotency.DefaultTTL {
			t.Errorf("%s PTTL %v, want about %v", k, ttl, idempotency.DefaultTTL)
		}
	}
	if _, err := f.barrier.Action(f.ctx, idempotency.Ref{SagaID: "x"}, f.keys(), 1); !errors.Is(err, idempotency.ErrInvalidKey) {
		t.Errorf("empty step: %v, want ErrInvalidKey", err)
	}
}

// TestBarrierConcurrentActionAndCompensation races copies of both for many
// saga steps. Whatever order they land in, every step ends compensated, so
// all stock must be back and none reserved, and each operation has exactly
// one non-repeat.
func TestBarrierConcurrentActionAndCompensation(t *testing.T) {
	t.Parallel()
	const initial, steps, copies = 1000, 50, 8
	f := newStock(t, initial)
	for s := range steps {
		ref := idempotency.Ref{SagaID: "order-" + strconv.Itoa(s), Step: "reserve-stock"}
		var actionFirsts, compFirsts atomic.Int32
		var wg sync.WaitGroup
		for range copies {
			wg.Go(func() {
				r, err := f.barrier.Action(f.ctx, ref, f.keys(), 3)
				if err != nil {
					t.Error(err)
					return
				}
				if !r.Repeat {
					actionFirsts.Add(1)
				}
			})
			wg.Go(func() {
				r, err := f.barrier.Compensate(f.ctx, ref, f.keys())
				if err != nil {
					t.Error(err)
					return
				}
				if !r.Repeat {
					compFirsts.Add(1)
				}
			})
		}
		wg.Wait()
		if actionFirsts.Load() != 1 || compFirsts.Load() != 1 {
			t.Errorf("%s: %d first actions and %d first compensations, want 1 and 1", ref.SagaID, actionFirsts.Load(), compFirsts.Load())
		}
	}
	f.wantCounts(t, initial, 0)
}

// barrierModel is the barrier's contract written as plain Go, one per saga
// step, to check the Lua against.
type barrierModel struct {
	actionSeen   bool // an action call arrived (ran or was refused)
	actionRan    bool
	compensated  bool // a compensation call arrived
	compWasNull  bool
	reservedHere int64
}

func (m *barrierModel) action(qty, available int64) (res idempotency.Result, delta int64) {
	switch {
	case m.compensated:
		first := !m.actionSeen
		m.actionSeen = true
		return idempotency.Result{Repeat: !first, Hanging: true}, 0
	case m.actionSeen:
		return idempotency.Result{Repeat: true}, 0
	}
	m.actionSeen, m.actionRan = true, true
	if available < qty {
		return idempotency.Result{}, 0
	}
	m.reservedHere = qty
	return idempotency.Result{}, -qty
}

func (m *barrierModel) compensate() (res idempotency.Result, delta int64) {
	if m.compensated {
		return idempotency.Result{Repeat: true, Null: m.compWasNull}, 0
	}
	m.compensated = true
	if !m.actionRan {
		m.compWasNull = true
		return idempotency.Result{Null: true}, 0
	}
	return idempotency.Result{}, m.reservedHere
}

// FuzzBarrierMatchesModel plays random sequences of actions and
// compensations over a few saga steps against the real barrier and the
// model. The seeds run in every `go test`; `go test -fuzz
// FuzzBarrierMatchesModel` explores further (Redis needed either way).
func FuzzBarrierMatchesModel(f *testing.F) {
	f.Add([]byte{0, 1, 0, 1})
	f.Add([]byte{1, 0, 0, 1, 1})
	f.Add([]byte{2, 3, 4, 5, 6, 7, 1, 0})
	f.Add([]byte{0x10, 0x21, 0x30, 0x01, 0x11, 0x20})
	f.Add([]byte{0xff, 0xfe, 0x81, 0x80, 0x7f})
	var run atomic.Int64
	f.Fuzz(func(t *testing.T, ops []byte) {
		fx := newStock(t, 5)
		available := int64(5)
		n := run.Add(1)
		models := map[string]*barrierModel{}
		for i, op := range ops {
			saga := fmt.Sprintf("run%d-saga%d", n, (op>>1)%3)
			qty := int64(op>>3)%4 + 1
			ref := idempotency.Ref{SagaID: saga, Step: "reserve-stock"}
			m := models[saga]
			if m == nil {
				m = &barrierModel{}
				models[saga] = m
			}
			var want, got idempotency.Result
			var delta int64
			var err error
			if op&1 == 0 {
				want, delta = m.action(qty, available)
				got, err = fx.barrier.Action(fx.ctx, ref, fx.keys(), qty)
			} else {
				want, delta = m.compensate()
				got, err = fx.barrier.Compensate(fx.ctx, ref, fx.keys())
			}
			if err != nil {
				t.Fatal(err)
			}
			available += delta
			if got.Repeat != want.Repeat || got.Hanging != want.Hanging || got.Null != want.Null {
				t.Fatalf("op %d (%#x on %s): got %+v, model says %+v", i, op, saga, got, want)
			}
			if a, r := fx.counts(t); a != available || a+r != 5 {
				t.Fatalf("op %d (%#x on %s): available=%d reserved=%d, model says available=%d of 5", i, op, saga, a, r, available)
			}
		}
	})
}

// TestBarrierRandomSequences runs more random sequences than the fuzz seeds,
// deterministic per seed so a failure can be replayed.
func TestBarrierRandomSequences(t *testing.T) {
	t.Parallel()
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 0))
		fx := newStock(t, 5)
		available := int64(5)
		models := map[string]*barrierModel{}
		for i := range 40 {
			saga := "saga" + strconv.Itoa(rng.IntN(4))
			qty := int64(rng.IntN(4) + 1)
			ref := idempotency.Ref{SagaID: saga, Step: "reserve-stock"}
			m := models[saga]
			if m == nil {
				m = &barrierModel{}
				models[saga] = m
			}
			var want, got idempotency.Result
			var delta int64
			var err error
			if rng.IntN(2) == 0 {
				want, delta = m.action(qty, available)
				got, err = fx.barrier.Action(fx.ctx, ref, fx.keys(), qty)
			} else {
				want, delta = m.compensate()
				got, err = fx.barrier.Compensate(fx.ctx, ref, fx.keys())
			}
			if err != nil {
				t.Fatal(err)
			}
			available += delta
			if got.Repeat != want.Repeat || got.Hanging != want.Hanging || got.Null != want.Null {
				t.Fatalf("seed %d op %d on %s: got %+v, model says %+v", seed, i, saga, got, want)
			}
		}
		if a, r := fx.counts(t); a != available || a+r != 5 {
			t.Fatalf("seed %d: available=%d reserved=%d, model says available=%d of 5", seed, a, r, available)
		}
	}
}

func TestBarrierOutcomeJSON(t *testing.T) {
	t.Parallel()
	f := newStock(t, 10)
	r := f.reserve(t, idempotency.Ref{SagaID: "o", Step: "s"}, 2)
	var v struct {
		OK       bool    `json:"ok"`
		Reserved []int64 `json:"reserved"`
	}
	if err := json.Unmarshal([]byte(r.Outcome), &v); err != nil || !v.OK || len(v.Reserved) != 1 || v.Reserved[0] != 2 {
		t.Errorf("reserve outcome %q: %+v, %v", r.Outcome, v, err)
	}
}
