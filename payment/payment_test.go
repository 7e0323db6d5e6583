package payment_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/participanttest"
)

func TestChargeRefund(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := e.charge(t, "o1", "alice", 3, 1000)
	expect(t, c, payment.TypePaymentCharged, saga.Success, "")
	if c.Result != `{"customer_id":"alice","charged_cents":3000}` {
		t.Errorf("charge result %s", c.Result)
	}
	if m := e.money(t, "alice"); m != (money{97_000, 3_000, 100_000}) {
		t.Errorf("alice after the charge: %+v", m)
	}
	if p, err := e.store.Payment(ctx(t), "o1"); err != nil || p != (payment.Payment{State: "captured", CustomerID: "alice", AmountCents: 3000}) {
		t.Errorf("payment record %+v, %v", p, err)
	}
	// The refund command carries another total: ignored, the charge's
	// record says what comes back.
	r := e.handle(t, command(payment.TypeRefundPayment, "o1", orderJSON("o1", "alice", 1, 99_999)))
	expect(t, r, payment.TypePaymentRefunded, saga.Success, "")
	if r.Result != `{"customer_id":"alice","refunded_cents":3000}` {
		t.Errorf("refund result %s", r.Result)
	}
	if m := e.money(t, "alice"); m != (money{100_000, 0, 100_000}) {
		t.Errorf("alice after the refund: %+v", m)
	}
	if again := e.refund(t, "o1", "alice"); again.Result != r.Result || again.Outcome != r.Outcome {
		t.Errorf("second refund %+v", again)
	}
	if p, _ := e.store.Payment(ctx(t), "o1"); p.State != "refunded" {
		t.Errorf("payment record %+v after the refund", p)
	}
	// A late copy of the charge, after its refund: refused as hanging.
	expect(t, e.charge(t, "o1", "alice", 3, 1000), payment.TypePaymentDeclined, saga.Failure, "hanging")
	if m := e.money(t, "alice"); m != (money{100_000, 0, 100_000}) {
		t.Errorf("alice after a hanging charge: %+v", m)
	}
	e.checkConserved(t)
}

func TestDeclines(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.accounts(t)
	poor := e.charge(t, "o1", "carol", 2, 1500)
	expect(t, poor, payment.TypePaymentDeclined, saga.Failure, "insufficient funds: balance 12.00, order 30.00")
	expect(t, e.charge(t, "o2", "alice", 1, 60_000), payment.TypePaymentDeclined, saga.Failure,
		"over the per-order limit of 500.00")
	// Within the limit, beyond the balance after earlier orders.
	for i := range 3 {
		expect(t, e.charge(t, "b"+strconv.Itoa(i), "bob", 1, 20_000), payment.TypePaymentCharged, saga.Success, "")
	}
	expect(t, e.charge(t, "b3", "bob", 1, 5), payment.TypePaymentDeclined, saga.Failure,
		"insufficient funds: balance 0.00, order 0.05")
	// A decline is recorded: the same command after money arrived gets the
	// same answer.
	e.refund(t, "b0", "bob")
	if again := e.charge(t, "b3", "bob", 1, 5); again.Reason != "insufficient funds: balance 0.00, order 0.05" {
		t.Errorf("redelivered decline %+v", again)
	}
	// Refund of a declined charge: nothing to give back.
	r := e.refund(t, "o1", "carol")
	expect(t, r, payment.TypePaymentRefunded, saga.Success, "declined")
	if replyCents(t, r) != 0 {
		t.Errorf("refund of a declined charge gave back %d", replyCents(t, r))
	}
	after := e.accounts(t)
	if after["carol"] != before["carol"] || after["alice"] != before["alice"] {
		t.Errorf("declines moved money: %v -> %v", before, after)
	}
	if m := after["bob"]; m != (money{20_000, 40_000, 60_000}) {
		t.Errorf("bob: %+v", m)
	}
	e.checkConserved(t)
}

// TestNullCompensationAndHanging: a refund whose charge never arrived
// succeeds and moves nothing; the charge arriving after it is refused with
// the barrier's reason; every copy of either gets the same answer.
func TestNullCompensationAndHanging(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.accounts(t)
	ref := command(payment.TypeRefundPayment, "late", orderJSON("late", "alice", 1, 4500))
	r1 := e.handle(t, ref)
	expect(t, r1, payment.TypePaymentRefunded, saga.Success, "never arrived")
	if replyCents(t, r1) != 0 {
		t.Errorf("null refund gave back %d", replyCents(t, r1))
	}
	chg := command(payment.TypeChargePayment, "late", orderJSON("late", "alice", 1, 4500))
	h1 := e.handle(t, chg)
	expect(t, h1, payment.TypePaymentDeclined, saga.Failure, "hanging")
	for range 3 {
		if r := e.handle(t, ref); r != r1 {
			t.Errorf("repeated null refund %+v, want %+v", r, r1)
		}
		if h := e.handle(t, chg); h != h1 {
			t.Errorf("repeated hanging charge %+v, want %+v", h, h1)
		}
	}
	if after := e.accounts(t); !reflect.DeepEqual(before, after) {
		t.Errorf("null refund or hanging charge moved money: %v -> %v", before, after)
	}
	if p, _ := e.store.Payment(ctx(t), "late"); p.State != "" {
		t.Errorf("payment record %+v for an order never charged", p)
	}
}

// TestSameCommandSequential: one command delivered N times has one effect
// and N identical replies.
func TestSameCommandSequential(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, typ := range []string{payment.TypeChargePayment, payment.TypeRefundPayment, payment.TypeChargePayment} {
		id := "o-" + typ
		if typ == payment.TypeRefundPayment {
			id = "o-" + payment.TypeChargePayment
		}
		cmd := command(typ, id, orderJSON(id, "alice", 2, 2500))
		first := e.handle(t, cmd)
		for range 9 {
			if r := e.handle(t, cmd); r != first {
				t.Errorf("%s redelivered: %+v, want %+v", typ, r, first)
			}
		}
	}
	// Charged, refunded, then a new charge command (another message id)
	// for the same saga step: hanging. One charge, one refund in all.
	if m := e.money(t, "alice"); m != (money{100_000, 0, 100_000}) {
		t.Errorf("alice: %+v", m)
	}
}

// TestSameCommandConcurrent: copies of one command handled at once by
// several participant instances have one effect and identical replies.
// Ten orders of 150.00 race for Bob's 600.00: exactly four are charged.
func TestSameCommandConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const instances, copies = 4, 6
	handlers := participanttest.Instances(t, instances, func(rdb redis.UniversalClient) saga.CommandHandler {
		_, svc := e.service(t, rdb, payment.ServiceConfig{})
		return svc.Handle
	})
	run := func(cmd saga.Envelope) reply {
		return participanttest.Deliver(t, cmd, instances*copies, true, handlers...)[0]
	}
	var wg sync.WaitGroup
	charged := make([]bool, 10)
	for i := range charged {
		wg.Go(func() {
			id := "o" + strconv.Itoa(i)
			charged[i] = run(command(payment.TypeChargePayment, id, orderJSON(id, "bob", 1, 15_000))).Outcome == saga.Success
		})
	}
	wg.Wait()
	n := 0
	for _, c := range charged {
		if c {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d orders charged, want 4", n)
	}
	if m := e.money(t, "bob"); m != (money{0, 60_000, 60_000}) {
		t.Errorf("bob: %+v", m)
	}
	// Refund them all, concurrently too.
	for i := range charged {
		id := "o" + strconv.Itoa(i)
		wg.Go(func() { run(command(payment.TypeRefundPayment, id, orderJSON(id, "bob", 1, 15_000))) })
	}
	wg.Wait()
	if m := e.money(t, "bob"); m != (money{60_000, 0, 60_000}) {
		t.Errorf("bob after the refunds: %+v", m)
	}
}

// TestPoisonAppliesNothing: commands that can never apply are poison and
// leave no trace in Redis, not even a dedup record.
func TestPoisonAppliesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	before := e.snapshot(t)
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	charge := func(id string, payload json.RawMessage) saga.Envelope {
		return command(payment.TypeChargePayment, id, payload)
	}
	const max = payment.MaxCents
	for _, tc := range []struct {
		name string
		cmd  saga.Envelope
	}{
		{"not an order", charge("p1", raw(`[1]`))},
		{"not JSON", charge("p2", raw(`{"total_cents":`))},
		{"total not a number", charge("p3", raw(`{"customer_id":"alice","total_cents":"lots"}`))},
		{"unknown customer", charge("p4", orderJSON("p4", "mallory", 1, 100))},
		{"malformed customer id", charge("p5", orderJSON("p5", "al{ice}", 1, 100))},
		{"no customer", charge("p6", orderJSON("p6", "", 1, 100))},
		{"zero total", charge("p7", orderRaw("p7", "alice", 1, 0, 0, ""))},
		{"negative total", charge("p8", orderRaw("p8", "alice", 1, 500, -500, ""))},
		{"negative price", charge("p8b", orderRaw("p8b", "alice", 1, -500, -500, ""))},
		{"total not the sum of the lines", charge("p9", orderRaw("p9", "alice", 2, 450, 450, ""))},
		{"total of 2^53", charge("p10", orderRaw("p10", "alice", 1, 100, max+1, ""))},
		{"price of 2^53", charge("p10b", orderRaw("p10b", "alice", 1, max+1, max+1, ""))},
		{"total overflowing int64", charge("p11", raw(`{"customer_id":"alice","total_cents":99999999999999999999,"lines":[]}`))},
		{"lines overflowing", charge("p12", raw(`{"customer_id":"alice","total_cents":1,"lines":[`+
			`{"product_id":"a","quantity":1000000,"unit_price_cents":9007199254740991}]}`))},
		{"lines summing past 2^53", charge("p13", raw(`{"customer_id":"alice","total_cents":1,"lines":[`+
			`{"product_id":"a","quantity":1,"unit_price_cents":9007199254740991},`+
			`{"product_id":"b","quantity":1,"unit_price_cents":1}]}`))},
		{"zero quantity", charge("p14", orderRaw("p14", "alice", 0, 100, 0, ""))},
		{"one negative price", charge("p15", raw(`{"customer_id":"alice","total_cents":100,"lines":[`+
			`{"product_id":"a","quantity":2,"unit_price_cents":100},{"product_id":"b","quantity":1,"unit_price_cents":-100}]}`))},
		{"no lines", charge("p16", raw(`{"customer_id":"alice","total_cents":100,"lines":[]}`))},
		{"order id is not the saga id", charge("p17", orderJSON("other", "alice", 1, 100))},
		{"unknown command", command("StealPayment", "p18", orderJSON("p18", "alice", 1, 100))},
		{"charge as a compensation", func() saga.Envelope {
			c := charge("p19", orderJSON("p19", "alice", 1, 100))
			c.Phase = saga.PhaseCompensation
			return c
		}()},
		{"refund not an order", command(payment.TypeRefundPayment, "p20", raw(`"x"`))},
	} {
		_, err := e.svc.Handle(ctx(t), tc.cmd)
		if !errors.Is(err, saga.ErrPoison) {
			t.Errorf("%s: %v, want poison", tc.name, err)
		} else {
			t.Logf("%s: %v", tc.name, err)
		}
	}
	if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
		t.Errorf("poison changed Redis:\nbefore %v\nafter  %v", before, after)
	}
	_, err := e.svc.Handle(ctx(t), charge("p4", orderJSON("p4", "mallory", 1, 100)))
	if !errors.Is(err, payment.ErrUnknownCustomer) {
		t.Errorf("unknown customer: %v, want ErrUnknownCustomer", err)
	}
}

// TestRefundForAnotherCustomerIsPoison: the refund's customer names the key
// the money goes back to; if it is not the one charged, giving the money to
// it would move money between customers.
func TestRefundForAnotherCustomerIsPoison(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.charge(t, "o1", "alice", 1, 1000)
	before := e.snapshot(t)
	if _, err := e.svc.Handle(ctx(t), command(payment.TypeRefundPayment, "o1", orderJSON("o1", "bob", 1, 1000))); !errors.Is(err, saga.ErrPoison) {
		t.Fatalf("refund to bob of alice's charge: %v, want poison", err)
	}
	if after := e.snapshot(t); !reflect.DeepEqual(before, after) {
		t.Errorf("a poison refund changed Redis")
	}
	if _, err := e.svc.Handle(ctx(t), command(payment.TypeRefundPayment, "o1", orderJSON("o1", "a{b}", 1, 1000))); !errors.Is(err, saga.ErrPoison) {
		t.Fatalf("refund to a malformed id of alice's charge: %v, want poison", err)
	}
	expect(t, e.refund(t, "o1", "alice"), payment.TypePaymentRefunded, saga.Success, "")
	// A refund naming a malformed customer for an order never charged is a
	// null compensation like any other, and blocks the late charge.
	expect(t, e.refund(t, "o2", "a{b}"), payment.TypePaymentRefunded, saga.Success, "never arrived")
	expect(t, e.charge(t, "o2", "alice", 1, 1000), payment.TypePaymentDeclined, saga.Failure, "hanging")
	e.checkConserved(t)
}

func TestSlowPaymentScenario(t *testing.T) {
	t.Parallel()
	e := newEnvWith(t, accounts(), payment.ServiceConfig{DemoScenarios: true})
	cmd := command(payment.TypeChargePayment, "slow", orderRaw("slow", "alice", 1, 2000, 2000, payment.ScenarioSlowPayment))
	for range 2 {
		out, err := e.svc.Handle(ctx(t), cmd)
		if err != nil || out.Type != "" {
			t.Fatalf("slow-payment: %+v, %v, want no reply", out, err)
		}
	}
	if m := e.money(t, "alice"); m != (money{98_000, 2_000, 100_000}) {
		t.Errorf("alice after a slow payment: %+v (the charge must apply)", m)
	}
	// The orchestrator times out and compensates: the refund really refunds.
	r := e.handle(t, command(payment.TypeRefundPayment, "slow", orderRaw("slow", "alice", 1, 2000, 2000, payment.ScenarioSlowPayment)))
	if replyCents(t, r) != 2000 {
		t.Errorf("refund after a slow payment: %+v", r)
	}
	e.checkConserved(t)
	// Off by default: the scenario is ignored.
	_, plain := e.service(t, e.rdb, payment.ServiceConfig{})
	out, err := plain.Handle(ctx(t), command(payment.TypeChargePayment, "slow2", orderRaw("slow2", "alice", 1, 2000, 2000, payment.ScenarioSlowPayment)))
	if err != nil || out.Type != payment.TypePaymentCharged {
		t.Errorf("slow-payment without DemoScenarios: %+v, %v", out, err)
	}
}

func TestRedisDownIsTransient(t *testing.T) {
	t.Parallel()
	participanttest.RedisDownIsTransient(t, newHandler,
		command(payment.TypeChargePayment, "o1", orderJSON("o1", "alice", 1, 100)),
		command(payment.TypeRefundPayment, "o1", orderJSON("o1", "alice", 1, 100)))
}

func TestSeedCustomersTotals(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c := ctx(t)
	e.charge(t, "o1", "alice", 1, 4000)
	added, err := e.store.Seed(c, append(accounts(), payment.Customer{ID: "dave", Name: "Dave", BalanceCents: 500}))
	if err != nil || added != 1 {
		t.Fatalf("second seed: added %d, %v", added, err)
	}
	cs, err := e.store.Customers(c)
	if err != nil || len(cs) != 4 || cs[0].ID != "alice" || cs[3].ID != "dave" {
		t.Fatalf("Customers: %+v, %v", cs, err)
	}
	alice, err := e.store.Customer(c, "alice")
	want := payment.Customer{ID: "alice", Name: "Alice", BalanceCents: 96_000, LimitCents: 50_000, CapturedCents: 4000, DepositedCents: 100_000}
	if err != nil || alice != want {
		t.Errorf("Customer(alice) = %+v, %v, want %+v", alice, err, want)
	}
	if _, err := e.store.Customer(c, "mallory"); !errors.Is(err, payment.ErrUnknownCustomer) {
		t.Errorf("Customer(mallory): %v", err)
	}
	tot, err := e.store.Totals(c)
	if err != nil || !tot.Conserved() || tot.Deposited != 161_700 || tot.Captured != 4000 || tot.Customers != 4 {
		t.Errorf("Totals %+v, %v", tot, err)
	}
	for _, bad := range [][]payment.Customer{
		{{ID: "", Name: "x"}},
		{{ID: "x", Name: " "}},
		{{ID: "x", Name: "x", BalanceCents: -1}},
		{{ID: "x", Name: "x", BalanceCents: payment.MaxCents + 1}},
		{{ID: "x", Name: "x", LimitCents: -1}},
		{{ID: "x", Name: "x"}, {ID: "x", Name: "x"}},
	} {
		if _, err := e.store.Seed(c, bad); !errors.Is(err, payment.ErrInvalidCustomer) {
			t.Errorf("Seed(%+v) = %v, want ErrInvalidCustomer", bad, err)
		}
	}
}

// TestLargestAmountIsExact charges and refunds 2^53-1 cents: the amount
// must come back to the cent, through Lua and its doubles.
func TestLargestAmountIsExact(t *testing.T) {
	t.Parallel()
	const max = payment.MaxCents
	e := newEnvWith(t, []payment.Customer{{ID: "rich", Name: "Rich", BalanceCents: max}}, payment.ServiceConfig{})
	c := e.charge(t, "o1", "rich", 1, max)
	if c.Outcome != saga.Success || replyCents(t, c) != max {
		t.Fatalf("charge of 2^53-1: %+v", c)
	}
	if m := e.money(t, "rich"); m != (money{0, max, max}) {
		t.Errorf("rich: %+v", m)
	}
	if r := e.refund(t, "o1", "rich"); replyCents(t, r) != max {
		t.Errorf("refund: %+v", r)
	}
	if m := e.money(t, "rich"); m != (money{max, 0, max}) {
		t.Errorf("rich after the refund: %+v", m)
	}
	d := e.charge(t, "o2", "rich", 1, max-1)
	e.charge(t, "o3", "rich", 1, 2)
	if d.Outcome != saga.Success {
		t.Fatalf("%+v", d)
	}
	expect(t, e.charge(t, "o4", "rich", 1, 2), payment.TypePaymentDeclined, saga.Failure,
		"insufficient funds: balance 0.01, order 0.02")
}

func TestConfigValidate(t *testing.T) {
	if err := (payment.Config{}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (payment.Config{Prefix: "{x}"}).Validate(); !errors.Is(err, payment.ErrConfig) {
		t.Errorf("prefix with braces: %v", err)
	}
	if _, err := payment.NewStore(payment.Config{}, nil, nil); !errors.Is(err, payment.ErrConfig) {
		t.Errorf("nil client: %v", err)
	}
}
