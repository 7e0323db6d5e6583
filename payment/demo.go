package payment

// DemoCustomers are the accounts `sagaflow payment --seed` and the demo
// open. Carol has 12.00, so any real order of hers is declined for
// insufficient funds; Bob's per-order limit of 200.00 declines a large
// order although his balance would cover it.
func DemoCustomers() []Customer {
	return []Customer{
		{ID: "alice", Name: "Alice", BalanceCents: 100_000, LimitCents: 50_000},
		{ID: "bob", Name: "Bob", BalanceCents: 60_000, LimitCents: 20_000},
		{ID: "carol", Name: "Carol", BalanceCents: 1_200, LimitCents: 50_000},
	}
}
