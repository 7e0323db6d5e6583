package orders

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// SagaType is the name of the order saga: the type stored in every instance
// and the value of OrderPlaced in the orchestrator's Starts.
const SagaType = "order"

// Step names (docs/messages.md). They are stored in snapshots and in the
// participants' dedup keys: never rename one while sagas may be running.
const (
	StepReserveStock  = "reserve-stock"
	StepChargePayment = "charge-payment"
	StepConfirmOrder  = "confirm-order"
)

// Message types of the order saga (docs/messages.md).
const (
	TypeOrderPlaced    = "OrderPlaced"
	TypeOrderConfirmed = "OrderConfirmed"
	TypeOrderCancelled = "OrderCancelled"
	TypeOrderFailed    = "OrderFailed"

	TypeReserveStock  = "ReserveStock"
	TypeReleaseStock  = "ReleaseStock"
	TypeCommitStock   = "CommitStock"
	TypeChargePayment = "ChargePayment"
	TypeRefundPayment = "RefundPayment"
)

// Replies returns the reply types the participant answers command with
// (docs/messages.md), or nil for a type that is not a command of the order
// saga. The orchestrator does not need them (it matches replies by step,
// phase and attempt, not by type); they are the contract written down once,
// for the AsyncAPI document's test and for readers.
func Replies(command string) []string { return slices.Clone(replies[command]) }

var replies = map[string][]string{
	TypeReserveStock:  {"StockReserved", "StockRejected"},
	TypeReleaseStock:  {"StockReleased"},
	TypeCommitStock:   {"StockCommitted"},
	TypeChargePayment: {"PaymentCharged", "PaymentDeclined"},
	TypeRefundPayment: {"PaymentRefunded"},
}

// Starts is the orchestrator's Starts for the order saga.
func Starts() map[string]string { return map[string]string{TypeOrderPlaced: SagaType} }

// SagaConfig sets the topics and timings of the order saga. Zero fields take
// the defaults of DefaultSagaConfig.
type SagaConfig struct {
	// StockTopic and PaymentTopic are the participants' command topics;
	// EventsTopic receives the end events.
	StockTopic, PaymentTopic, EventsTopic string
	// StepTimeout is how long one attempt waits for its reply.
	StepTimeout time.Duration
	// Attempts bounds the attempts of each action and each compensation.
	Attempts int
	// Backoff is the wait after the first failed attempt, doubling up to
	// MaxBackoff.
	Backoff, MaxBackoff time.Duration
	// Deadline bounds the saga until its pivot (confirm-order) is sent.
	Deadline time.Duration
	// Sequential charges the payment only after the stock is reserved.
	// By default both go out at once (saga.Step.Parallel), which takes one
	// round trip through Kafka off every order; the price is that an order
	// out of stock may be charged and then refunded.
	Sequential bool
	// AwaitConfirm waits for stock's answer to the pivot (CommitStock)
	// before the order is Confirmed. By default the pivot takes no reply
	// (saga.Step.NoReply): CommitStock goes out in the transaction that
	// confirms the order, and stock applies it after, which takes one
	// round trip through Kafka off every order. It cannot rightly be
	// refused, since the stock is reserved for this order and nothing
	// releases it once the pivot is sent; a refusal would be a bug, and
	// stock dead-letters it for an operator. The price: Confirmed means
	// "stock will be sold", and stock's counts catch up a moment later.
	AwaitConfirm bool
}

// DefaultSagaConfig is for real use: a participant gets 10 seconds per
// attempt and three attempts, which rides out a participant restart or a
// rebalance; the saga gives up on reserving and charging after two minutes.
func DefaultSagaConfig() SagaConfig {
	return SagaConfig{
		StockTopic:   kafkatx.TopicStockCommands,
		PaymentTopic: kafkatx.TopicPaymentCommands,
		EventsTopic:  kafkatx.TopicOrderEvents,
		StepTimeout:  10 * time.Second,
		Attempts:     3,
		Backoff:      500 * time.Millisecond,
		MaxBackoff:   5 * time.Second,
		Deadline:     2 * time.Minute,
	}
}

// DemoSagaConfig has short timings so that a person watching the demo sees a
// timed-out step compensated within seconds: the slow-payment scenario
// cancels after two 4-second attempts.
func DemoSagaConfig() SagaConfig {
	c := DefaultSagaConfig()
	c.StepTimeout = 4 * time.Second
	c.Attempts = 2
	c.Backoff = 250 * time.Millisecond
	c.MaxBackoff = time.Second
	c.Deadline = 30 * time.Second
	return c
}

func (c SagaConfig) withDefaults() SagaConfig {
	d := DefaultSagaConfig()
	if c.StockTopic == "" {
		c.StockTopic = d.StockTopic
	}
	if c.PaymentTopic == "" {
		c.PaymentTopic = d.PaymentTopic
	}
	if c.EventsTopic == "" {
		c.EventsTopic = d.EventsTopic
	}
	if c.StepTimeout == 0 {
		c.StepTimeout = d.StepTimeout
	}
	if c.Attempts == 0 {
		c.Attempts = d.Attempts
	}
	if c.Backoff == 0 {
		c.Backoff = d.Backoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(d.MaxBackoff, c.Backoff)
	}
	if c.Deadline == 0 {
		c.Deadline = d.Deadline
	}
	return c
}

// Definition returns the order saga: reserve stock (undone by releasing it)
// and charge payment (undone by a refund), at once unless cfg.Sequential,
// then confirm the order (the pivot: once the reserved stock is committed
// as sold, the order stands; the saga does not wait for stock's answer
// unless cfg.AwaitConfirm). Every command
// carries the order itself (OrderPlaced) and each participant reads the
// fields it needs. saga.NewRegistry validates it; invalid timings (negative,
// a max backoff below the backoff) are reported there.
func Definition(cfg SagaConfig) *saga.Definition {
	cfg = cfg.withDefaults()
	retry := saga.RetryPolicy{MaxAttempts: cfg.Attempts, Backoff: cfg.Backoff, MaxBackoff: cfg.MaxBackoff}
	step := func(name, topic string, action, compensation saga.Builder) saga.Step {
		return saga.Step{Name: name, Topic: topic, Action: action, Compensation: compensation,
			Timeout: cfg.StepTimeout, Retry: retry}
	}
	charge := step(StepChargePayment, cfg.PaymentTopic, command(TypeChargePayment), command(TypeRefundPayment))
	charge.Parallel = !cfg.Sequential
	confirm := step(StepConfirmOrder, cfg.StockTopic, command(TypeCommitStock), nil)
	confirm.NoReply = !cfg.AwaitConfirm
	return &saga.Definition{
		Name: SagaType,
		Steps: []saga.Step{
			step(StepReserveStock, cfg.StockTopic, command(TypeReserveStock), command(TypeReleaseStock)),
			charge,
			confirm,
		},
		Deadline:    cfg.Deadline,
		OnCompleted: saga.Event{Topic: cfg.EventsTopic, Type: TypeOrderConfirmed},
		OnCancelled: saga.Event{Topic: cfg.EventsTopic, Type: TypeOrderCancelled},
		OnFailed:    saga.Event{Topic: cfg.EventsTopic, Type: TypeOrderFailed},
	}
}

// command builds a command whose payload is the order. It checks that the
// saga's data is an order, because a participant handed something else
// could only dead-letter it and the step would time out: refusing here
// cancels the saga at once with the reason in its history.
func command(typ string) saga.Builder {
	return func(data json.RawMessage) (saga.Command, error) {
		if _, err := decodeOrderPlaced(data); err != nil {
			return saga.Command{}, fmt.Errorf("orders: cannot build %s: %w", typ, err)
		}
		return saga.Command{Type: typ, Payload: data}, nil
	}
}

// errBadOrder is what decodeOrderPlaced wraps: the saga data or event body is
// not an order.
var errBadOrder = errors.New("orders: not an order")

// decodeOrderPlaced reads an OrderPlaced body. Unknown fields are ignored
// (newer writers may add some); what a participant cannot do without is
// required.
func decodeOrderPlaced(data []byte) (OrderPlaced, error) {
	var o OrderPlaced
	if err := saga.DecodeJSON(data, &o); err != nil {
		return OrderPlaced{}, fmt.Errorf("%w: %v", errBadOrder, err)
	}
	switch {
	case o.OrderID == "":
		return OrderPlaced{}, fmt.Errorf("%w: no order_id", errBadOrder)
	case o.CustomerID == "":
		return OrderPlaced{}, fmt.Errorf("%w: no customer_id", errBadOrder)
	case len(o.Lines) == 0:
		return OrderPlaced{}, fmt.Errorf("%w: no lines", errBadOrder)
	}
	return o, nil
}
