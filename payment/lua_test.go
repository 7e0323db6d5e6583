package payment

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

// TestChargeScriptChecksAmounts calls the charge script past the Go checks:
// Lua refuses, before writing anything, amounts its doubles cannot hold
// exactly and strings that are not whole positive numbers.
func TestChargeScriptChecksAmounts(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	s, err := NewStore(Config{Prefix: prefix}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Seed(ctx, []Customer{{ID: "rich", Name: "Rich", BalanceCents: MaxCents}}); err != nil {
		t.Fatal(err)
	}
	for _, amount := range []string{"9007199254740992", "9223372036854775807", "99999999999999999999",
		"0", "-5", "1.5", "1e3", "", "12abc", "0012"} {
		ref := idempotency.Ref{SagaID: "o-" + amount, Step: StepCharge}
		_, err := s.barrier.Action(ctx, ref, []string{s.customerKey("rich"), s.orderKey(ref.SagaID)},
			amount, "rich", int64(60_000))
		if !errors.Is(err, idempotency.ErrScript) {
			t.Errorf("amount %q: %v, want the script to refuse", amount, err)
		}
		if n, _ := rdb.Exists(ctx, s.orderKey(ref.SagaID)).Result(); n != 0 {
			t.Errorf("amount %q wrote the order record", amount)
		}
	}
	c, err := s.Customer(ctx, "rich")
	if err != nil || c.BalanceCents != MaxCents || c.CapturedCents != 0 {
		t.Errorf("rich after refused amounts: %+v, %v", c, err)
	}
}

// TestMoneyFormatting checks the Lua formatter on the edges, through the
// decline reason.
func TestMoneyFormatting(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	s, err := NewStore(Config{Prefix: redistest.Prefix(t)}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i, tc := range []struct {
		balance, amount int64
		want            string
	}{
		{0, 1, "insufficient funds: balance 0.00, order 0.01"},
		{5, 10, "insufficient funds: balance 0.05, order 0.10"},
		{99, 100, "insufficient funds: balance 0.99, order 1.00"},
		{1200, 3000, "insufficient funds: balance 12.00, order 30.00"},
		{MaxCents - 1, MaxCents, "insufficient funds: balance 90071992547409.90, order 90071992547409.91"},
	} {
		id := "c" + string(rune('a'+i))
		if _, err := s.Seed(ctx, []Customer{{ID: id, Name: id, BalanceCents: tc.balance}}); err != nil {
			t.Fatal(err)
		}
		r, err := s.Charge(ctx, "o"+id, id, tc.amount)
		if err != nil || r.OK || r.Reason != tc.want {
			t.Errorf("balance %d, amount %d: %+v, %v; want %q", tc.balance, tc.amount, r, err, tc.want)
		}
	}
	if _, err := s.Seed(ctx, []Customer{{ID: "limited", Name: "L", BalanceCents: 10_000, LimitCents: 7}}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Charge(ctx, "olim", "limited", 8); r.Reason != "over the per-order limit of 0.07" {
		t.Errorf("limit reason %q", r.Reason)
	}
}
