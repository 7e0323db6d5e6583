package stock_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
	"github.com/sagaflow/sagaflow/stock"
)

func TestReserveCommit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reserve(t, "o1", line{"tea", 3}, line{"mug", 2})
	expect(t, r, stock.TypeStockReserved, saga.Success, "")
	if got, want := replyLines(t, r), []line{{"tea", 3}, {"mug", 2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("reserved %v, want %v", got, want)
	}
	if c := e.counts(t, "tea"); c != (counts{17, 3, 0, 20}) {
		t.Errorf("tea after reserve: %+v", c)
	}
	c := e.commit(t, "o1", line{"tea", 3}, line{"mug", 2})
	expect(t, c, stock.TypeStockCommitted, saga.Success, "")
	if c := e.counts(t, "tea"); c != (counts{17, 0, 3, 20}) {
		t.Errorf("tea after commit: %+v", c)
	}
	if c := e.counts(t, "mug"); c != (counts{8, 0, 2, 10}) {
		t.Errorf("mug after commit: %+v", c)
	}
	res, err := e.store.Reservation(ctx(t), "o1")
	if err != nil || res.State != "committed" {
		t.Errorf("reservation %+v, %v", res, err)
	}
	// After the pivot a release is a bug upstream: refused, loudly, and
	// nothing comes back.
	rel := e.release(t, "o1", line{"tea", 3}, line{"mug", 2})
	expect(t, rel, stock.TypeStockReleased, saga.Failure, "confirmed")
	if c := e.counts(t, "tea"); c != (counts{17, 0, 3, 20}) {
		t.Errorf("tea after a release of a committed order: %+v", c)
	}
	e.checkConserved(t)
}

func TestReserveIsAllOrNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.snapshot(t)
	r := e.reserve(t, "o1", line{"tea", 5}, line{"teapot", 5}, line{"mug", 11})
	expect(t, r, stock.TypeStockRejected, saga.Failure,
		"out of stock: Cast-iron teapot (wanted 5, 2 left), Mug (wanted 11, 10 left)")
	after := e.snapshot(t)
	for k, v := range before {
		if after[k] != v {
			t.Errorf("%s changed by a refused reserve: %s -> %s", k, v, after[k])
		}
	}
	// The refusal is recorded: stock arriving later does not change the
	// answer to the same command.
	if again := e.reserve(t, "o1", line{"tea", 1}); !reflect.DeepEqual(again.Reason, r.Reason) || again.Outcome != saga.Failure {
		t.Errorf("redelivery answered %+v, want the recorded refusal", again)
	}
	// Nothing was reserved: release gives nothing back, commit has nothing.
	expect(t, e.release(t, "o1", line{"tea", 5}), stock.TypeStockReleased, saga.Success, "refused")
	expect(t, e.commit(t, "o1", line{"tea", 5}), stock.TypeStockCommitted, saga.Failure, "nothing is reserved")
	if c := e.counts(t, "tea"); c != (counts{20, 0, 0, 20}) {
		t.Errorf("tea: %+v", c)
	}
	e.checkConserved(t)
}

func TestReleaseGivesBackWhatWasReserved(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	expect(t, e.reserve(t, "o1", line{"tea", 4}, line{"teapot", 2}), stock.TypeStockReserved, saga.Success, "")
	// The release command says other quantities: they are ignored, the
	// recorded reservation is what comes back.
	r := e.release(t, "o1", line{"teapot", 1}, line{"tea", 999})
	expect(t, r, stock.TypeStockReleased, saga.Success, "")
	if got, want := replyLines(t, r), []line{{"tea", 4}, {"teapot", 2}}; !reflect.DeepEqual(got, want) {
		t.Errorf("released %v, want %v", got, want)
	}
	for _, id := range []string{"tea", "teapot"} {
		if c := e.counts(t, id); c.Reserved != 0 || c.Available != c.Stocked {
			t.Errorf("%s after release: %+v", id, c)
		}
	}
	// Once: a second release (a redelivery) gives nothing more.
	if again := e.release(t, "o1", line{"tea", 4}, line{"teapot", 2}); again.Result != r.Result || again.Outcome != r.Outcome {
		t.Errorf("second release %+v, want %+v", again, r)
	}
	expect(t, e.commit(t, "o1", line{"tea", 4}), stock.TypeStockCommitted, saga.Failure, "released")
	e.checkConserved(t)
}

func TestDuplicateLinesAreMerged(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	r := e.reserve(t, "o1", line{"tea", 2}, line{"mug", 1}, line{"tea", 3})
	if got, want := replyLines(t, r), []line{{"tea", 5}, {"mug", 1}}; !reflect.DeepEqual(got, want) {
		t.Errorf("reserved %v, want %v", got, want)
	}
	if c := e.counts(t, "tea"); c.Reserved != 5 {
		t.Errorf("tea: %+v", c)
	}
	// Merged lines are checked together: 2 + 2 teapots is 4, not 2 and 2.
	expect(t, e.reserve(t, "o2", line{"teapot", 2}, line{"teapot", 2}), stock.TypeStockRejected, saga.Failure,
		"wanted 4, 2 left")
}

// TestNullCompensationAndHanging: the release of a reserve that never
// arrived succeeds and changes nothing; the reserve arriving after it is
// refused with the barrier's reason, and every copy of either gets the same
// answer.
func TestNullCompensationAndHanging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.snapshotProducts(t)
	rel := command(stock.TypeReleaseStock, "late", orderJSON("late", line{"teapot", 2}))
	r1 := e.handle(t, rel)
	expect(t, r1, stock.TypeStockReleased, saga.Success, "never arrived")
	if len(replyLines(t, r1)) != 0 {
		t.Errorf("null compensation released %v", replyLines(t, r1))
	}
	res := command(stock.TypeReserveStock, "late", orderJSON("late", line{"teapot", 2}))
	h1 := e.handle(t, res)
	expect(t, h1, stock.TypeStockRejected, saga.Failure, "hanging")
	for range 3 {
		if r := e.handle(t, rel); r != r1 {
			t.Errorf("repeated null compensation %+v, want %+v", r, r1)
		}
		if h := e.handle(t, res); h != h1 {
			t.Errorf("repeated hanging reserve %+v, want %+v", h, h1)
		}
	}
	if after := e.snapshotProducts(t); !reflect.DeepEqual(before, after) {
		t.Errorf("null compensation or hanging reserve moved stock: %v -> %v", before, after)
	}
	expect(t, e.commit(t, "late", line{"teapot", 2}), stock.TypeStockCommitted, saga.Failure, "nothing is reserved")
	// A reserve that ran, then its release, then a late copy of the
	// reserve: refused too, although the reserve itself succeeded once.
	expect(t, e.reserve(t, "o2", line{"teapot", 1}), stock.TypeStockReserved, saga.Success, "")
	expect(t, e.release(t, "o2", line{"teapot", 1}), stock.TypeStockReleased, saga.Success, "")
	expect(t, e.reserve(t, "o2", line{"teapot", 1}), stock.TypeStockRejected, saga.Failure, "hanging")
	if c := e.counts(t, "teapot"); c != (counts{2, 0, 0, 2}) {
		t.Errorf("teapot: %+v", c)
	}
}

func (e *env) snapshotProducts(t testing.TB) map[string]counts {
	out := map[string]counts{}
	for _, p := range catalogue() {
		out[p.ID] = e.counts(t, p.ID)
	}
	return out
}

// TestSameCommandSequential: one command delivered N times has one effect
// and N identical replies.
func TestSameCommandSequential(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const n = 10
	for _, typ := range []string{stock.TypeReserveStock, stock.TypeCommitStock} {
		cmd := command(typ, "o1", orderJSON("o1", line{"tea", 3}, line{"teapot", 1}))
		first := e.handle(t, cmd)
		if first.Outcome != saga.Success {
			t.Fatalf("%s: %+v", typ, first)
		}
		for range n - 1 {
			if r := e.handle(t, cmd); r != first {
				t.Errorf("%s redelivered: %+v, want %+v", typ, r, first)
			}
		}
	}
	if c := e.counts(t, "tea"); c != (counts{17, 0, 3, 20}) {
		t.Errorf("tea after %d reserves and commits: %+v", n, c)
	}
	if c := e.counts(t, "teapot"); c != (counts{1, 0, 1, 2}) {
		t.Errorf("teapot: %+v", c)
	}
}

// TestSameCommandConcurrent: copies of one command handled at the same time
// by several participant instances (own Store, own Redis client) still have
// one effect and identical replies, for every command type.
func TestSameCommandConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const instances, copies = 4, 6
	handlers := participanttest.Instances(t, instances, func(rdb redis.UniversalClient) saga.CommandHandler {
		_, svc := e.service(t, rdb)
		return svc.Handle
	})
	run := func(cmd saga.Envelope) []reply {
		return participanttest.Deliver(t, cmd, instances*copies, true, handlers...)
	}
	// Twelve orders race for the two teapots: each order's copies agree,
	// and exactly two orders get one.
	reserved := 0
	for i := range 12 {
		id := "o" + string(rune('a'+i))
		rs := run(command(stock.TypeReserveStock, id, orderJSON(id, line{"teapot", 1}, line{"tea", 1})))
		if rs[0].Outcome == saga.Success {
			reserved++
			run(command(stock.TypeCommitStock, id, orderJSON(id, line{"teapot", 1}, line{"tea", 1})))
		} else {
			run(command(stock.TypeReleaseStock, id, orderJSON(id, line{"teapot", 1}, line{"tea", 1})))
		}
	}
	if reserved != 2 {
		t.Errorf("%d orders reserved a teapot, want 2", reserved)
	}
	if c := e.counts(t, "teapot"); c != (counts{0, 0, 2, 2}) {
		t.Errorf("teapot: %+v", c)
	}
	if c := e.counts(t, "tea"); c != (counts{18, 0, 2, 20}) {
		t.Errorf("tea: %+v", c)
	}
}

// TestPoisonAppliesNothing: commands that can never apply are poison
// (dead-lettered by the runtime) and leave no trace in Redis, not even a
// dedup record.
func TestPoisonAppliesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.snapshot(t)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	for _, tc := range []struct {
		name string
		cmd  saga.Envelope
	}{
		{"not an order", command(stock.TypeReserveStock, "p1", raw(`[1,2,3]`))},
		{"lines not a list", command(stock.TypeReserveStock, "p2", raw(`{"lines":"tea"}`))},
		{"not JSON", command(stock.TypeReserveStock, "p3", raw(`{"lines":[`))},
		{"no lines", command(stock.TypeReserveStock, "p4", raw(`{"lines":[]}`))},
		{"null", command(stock.TypeReserveStock, "p5", raw(`null`))},
		{"unknown product", command(stock.TypeReserveStock, "p6", orderJSON("p6", line{"tea", 1}, line{"unicorn", 1}))},
		{"zero quantity", command(stock.TypeReserveStock, "p7", orderJSON("p7", line{"tea", 0}))},
		{"negative quantity", command(stock.TypeReserveStock, "p8", orderJSON("p8", line{"tea", -3}))},
		{"quantity over the maximum", command(stock.TypeReserveStock, "p9", orderJSON("p9", line{"tea", stock.MaxQuantity + 1}))},
		{"merged lines over the maximum", command(stock.TypeReserveStock, "p10",
			orderJSON("p10", line{"tea", stock.MaxQuantity}, line{"tea", 1}))},
		{"quantity overflowing int64", command(stock.TypeReserveStock, "p11",
			raw(`{"lines":[{"product_id":"tea","quantity":99999999999999999999}]}`))},
		{"fractional quantity", command(stock.TypeReserveStock, "p12", raw(`{"lines":[{"product_id":"tea","quantity":1.5}]}`))},
		{"malformed product id", command(stock.TypeReserveStock, "p13", orderJSON("p13", line{"tea}{x", 1}))},
		{"order id is not the saga id", command(stock.TypeReserveStock, "p14", orderJSON("other", line{"tea", 1}))},
		{"unknown command", command("ShipStock", "p15", orderJSON("p15", line{"tea", 1}))},
		{"reserve as a compensation", func() saga.Envelope {
			c := command(stock.TypeReserveStock, "p16", orderJSON("p16", line{"tea", 1}))
			c.Phase = saga.PhaseCompensation
			return c
		}()},
		{"release not an order", command(stock.TypeReleaseStock, "p17", raw(`"x"`))},
		{"release naming too many products", command(stock.TypeReleaseStock, "p18", func() json.RawMessage {
			ls := make([]line, stock.MaxLines+1)
			for i := range ls {
				ls[i] = line{"p" + strconv.Itoa(i), 1}
			}
			return orderJSON("p18", ls...)
		}())},
	} {
		_, err := e.svc.Handle(ctx(t), tc.cmd)
		if !errors.Is(err, saga.ErrPoison) {
			t.Errorf("%s: %v, want poison", tc.name, err)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	after := e.snapshot(t)
	if !reflect.DeepEqual(before, after) {
		t.Errorf("poison changed Redis:\nbefore %v\nafter  %v", before, after)
	}
	_, err := e.svc.Handle(ctx(t), command(stock.TypeReserveStock, "p6", orderJSON("p6", line{"unicorn", 1})))
	if !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("unknown product: %v, want ErrUnknownProduct", err)
	}
}

// TestReleaseMustNameReservedProducts: a release whose lines miss a product
// the reservation holds cannot give it back; it is poison rather than a
// partial release.
func TestReleaseMustNameReservedProducts(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.reserve(t, "o1", line{"tea", 1}, line{"mug", 1})
	before := e.snapshot(t)
	_, err := e.svc.Handle(ctx(t), command(stock.TypeReleaseStock, "o1", orderJSON("o1", line{"tea", 1})))
	if !errors.Is(err, saga.ErrPoison) {
		t.Fatalf("release missing a product: %v, want poison", err)
	}
	if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
		t.Errorf("a poison release changed Redis")
	}
	expect(t, e.release(t, "o1", line{"mug", 1}, line{"tea", 1}), stock.TypeStockReleased, saga.Success, "")
	e.checkConserved(t)
}

// TestRedisDownIsTransient: no Redis is not the command's fault: a plain
// error, so the runtime retries instead of dead-lettering.
func TestRedisDownIsTransient(t *testing.T) {
	t.Parallel()
	var cmds []saga.Envelope
	for _, typ := range []string{stock.TypeReserveStock, stock.TypeReleaseStock, stock.TypeCommitStock} {
		cmds = append(cmds, command(typ, "o1", orderJSON("o1", line{"tea", 1})))
	}
	participanttest.RedisDownIsTransient(t, newHandler, cmds...)
}

func TestSeedProductsTotals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := ctx(t)
	// Seeding again never resets stock in use.
	e.reserve(t, "o1", line{"tea", 5})
	added, err := e.store.Seed(c, append(catalogue(), stock.Product{ID: "cup", Name: "Cup", PriceCents: 300, Available: 7}))
	if err != nil || added != 1 {
		t.Fatalf("second seed: added %d, %v", added, err)
	}
	ps, err := e.store.Products(c)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.ID)
	}
	if want := []string{"cup", "mug", "tea", "teapot"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("products %v, want %v", ids, want)
	}
	tea, err := e.store.Product(c, "tea")
	if want := (stock.Product{ID: "tea", Name: "Green tea", PriceCents: 450, Available: 15, Reserved: 5, Stocked: 20}); err != nil || tea != want {
		t.Errorf("Product(tea) = %+v, %v, want %+v", tea, err, want)
	}
	if _, err := e.store.Product(c, "unicorn"); !errors.Is(err, stock.ErrUnknownProduct) {
		t.Errorf("Product(unicorn): %v", err)
	}
	tot, err := e.store.Totals(c)
	if err != nil || !tot.Conserved() || tot.Stocked != 39 || tot.Reserved != 5 || tot.Products != 4 {
		t.Errorf("Totals %+v, %v", tot, err)
	}
	for _, bad := range [][]stock.Product{
		{{ID: "", Name: "x"}},
		{{ID: "a b", Name: "x"}},
		{{ID: "x", Name: ""}},
		{{ID: "x", Name: "x", Available: -1}},
		{{ID: "x", Name: "x", PriceCents: -1}},
		{{ID: "x", Name: "x", Available: stock.MaxStock + 1}},
		{{ID: "x", Name: "x"}, {ID: "x", Name: "y"}},
	} {
		if _, err := e.store.Seed(c, bad); !errors.Is(err, stock.ErrInvalidProduct) {
			t.Errorf("Seed(%+v) = %v, want ErrInvalidProduct", bad, err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (stock.Config{}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (stock.Config{Prefix: "a{b}"}).Validate(); !errors.Is(err, stock.ErrConfig) {
		t.Errorf("prefix with braces: %v", err)
	}
	if _, err := stock.NewStore(stock.Config{}, nil, nil); !errors.Is(err, stock.ErrConfig) {
		t.Errorf("nil client: %v", err)
	}
}
