package orders

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// OrderPlaced is the order as the saga carries it: the body of OrderPlaced on
// orders.events, the saga's data, and the payload of every command
// (docs/messages.md). Amounts are int64 cents, priced from the catalogue when
// the order was placed.
type OrderPlaced struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Lines      []Line `json:"lines"`
	TotalCents int64  `json:"total_cents"`
	// Scenario is for the demo only: "" or ScenarioSlowPayment.
	Scenario string `json:"scenario"`
}

// Line is one product of an order.
type Line struct {
	ProductID      string `json:"product_id"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// ScenarioSlowPayment asks a payment participant started with demo scenarios
// on to withhold its reply, so that the charge times out and the saga
// compensates.
const ScenarioSlowPayment = "slow-payment"

// Status is where an order is, as the API shows it: the saga's state, or
// Placed before the orchestrator has started the saga.
type Status string

const (
	StatusPlaced       Status = "Placed"
	StatusRunning      Status = "Running"
	StatusCompensating Status = "Compensating"
	StatusCompleted    Status = "Completed"
	StatusCancelled    Status = "Cancelled"
	StatusFailed       Status = "Failed"
)

// Terminal says whether an order in this status has ended: Completed,
// Cancelled, or Failed (which waits for an operator).
func (s Status) Terminal() bool {
	return s == StatusCompleted || s == StatusCancelled || s == StatusFailed
}

// Statuses returns every status, in the order an order can reach them.
func Statuses() []Status { return slices.Clone(statuses) }

var statuses = []Status{StatusPlaced, StatusRunning, StatusCompensating, StatusCompleted, StatusCancelled, StatusFailed}

// statusOf maps a saga state to an order status. Started never reaches a
// snapshot (Transition leaves it within the call that creates the saga), so
// it reads as Placed.
func statusOf(s saga.State) Status {
	switch s {
	case saga.Running:
		return StatusRunning
	case saga.Compensating:
		return StatusCompensating
	case saga.Completed:
		return StatusCompleted
	case saga.Cancelled:
		return StatusCancelled
	case saga.Failed:
		return StatusFailed
	}
	return StatusPlaced
}

// Order is an order with its saga's progress: the API's Order
// (docs/http-api.md). Values are immutable once published by the read
// model: their slices are shared, never written.
type Order struct {
	OrderID    string    `json:"order_id"`
	CustomerID string    `json:"customer_id"`
	Scenario   string    `json:"scenario"`
	Lines      []Line    `json:"lines"`
	TotalCents int64     `json:"total_cents"`
	Status     Status    `json:"status"`
	Reason     string    `json:"reason"`
	PlacedAt   time.Time `json:"placed_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// Steps and History are the saga instance's; empty while Placed.
	Steps   []saga.StepState `json:"steps"`
	History []saga.Change    `json:"history"`
	// step is the index of the saga's current step (Instance.Step); rev
	// counts the read model's changes to this order, so a stream can tell a
	// change it already sent.
	step int
	rev  uint64
}

// Summary is an order without its lines, steps and history, plus the names
// of the steps it is at: the API's OrderSummary, for lists and the
// all-orders stream.
type Summary struct {
	OrderID    string `json:"order_id"`
	CustomerID string `json:"customer_id"`
	Scenario   string `json:"scenario"`
	TotalCents int64  `json:"total_cents"`
	Status     Status `json:"status"`
	Reason     string `json:"reason"`
	// Step is the current step's name (Instance.Step): the first step of a
	// group whose steps run at once.
	Step string `json:"step"`
	// ActiveSteps are the steps with a command in flight or waiting to be
	// retried, action or compensation, in the saga's order: two while the
	// stock is reserved and the payment charged at once, and one of them
	// once the other is done. Empty while Placed and once the saga ended.
	ActiveSteps []string  `json:"active_steps"`
	PlacedAt    time.Time `json:"placed_at"`
	UpdatedAt   time.Time `json:"updated_at"`
}

// Summary returns o's summary.
func (o Order) Summary() Summary {
	s := Summary{OrderID: o.OrderID, CustomerID: o.CustomerID, Scenario: o.Scenario, TotalCents: o.TotalCents,
		Status: o.Status, Reason: o.Reason, PlacedAt: o.PlacedAt, UpdatedAt: o.UpdatedAt}
	if o.step >= 0 && o.step < len(o.Steps) {
		s.Step = o.Steps[o.step].Name
	}
	s.ActiveSteps = []string{}
	// An order that ended may still carry the steps of the snapshot before
	// its end (the end event can come first); nothing of it runs.
	if o.Status != StatusRunning && o.Status != StatusCompensating {
		return s
	}
	for _, st := range o.Steps {
		if st.Status == saga.StepRunning || st.Status == saga.StepCompensating {
			s.ActiveSteps = append(s.ActiveSteps, st.Name)
		}
	}
	return s
}

// Product is a catalogue entry with its stock (GET /products).
type Product struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	Available  int64  `json:"available"`
	Reserved   int64  `json:"reserved"`
	Sold       int64  `json:"sold"`
}

// Customer is an account (GET /customers/{id}).
type Customer struct {
	ID              string `json:"id"`
	Name            string `json:"name"`
	BalanceCents    int64  `json:"balance_cents"`
	OrderLimitCents int64  `json:"order_limit_cents"`
}

// ErrNotFound is what Catalog.Product and Accounts.Customer wrap when the id
// names nothing.
var ErrNotFound = errors.New("orders: not found")

// Catalog is the product catalogue with stock levels; the stock
// participant's store provides it.
type Catalog interface {
	// Products returns every product, in a stable order.
	Products(ctx context.Context) ([]Product, error)
	// Product returns one product; an error wrapping ErrNotFound means there
	// is no such product, any other error that the catalogue cannot be read
	// now (the request may be retried).
	Product(ctx context.Context, id string) (Product, error)
}

// Accounts holds the customers and their balances; the payment
// participant's store provides it.
type Accounts interface {
	// Customers returns every customer, in a stable order.
	Customers(ctx context.Context) ([]Customer, error)
	// Customer returns one customer; an error wrapping ErrNotFound means
	// there is no such customer, any other error that the accounts cannot be
	// read now.
	Customer(ctx context.Context, id string) (Customer, error)
}
