package saga_test

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/sagaflow/sagaflow/saga"
)

// Order is the saga's data: what the orders service put in OrderPlaced.
type Order struct {
	ID          string `json:"id"`
	SKU         string `json:"sku"`
	Quantity    int    `json:"quantity"`
	Account     string `json:"account"`
	AmountCents int64  `json:"amount_cents"`
}

// orderCommand makes a Builder that reads the Order and builds one command
// body from it. Participants key their effects by saga id and step, so the
// compensations need nothing but the order either.
func orderCommand(typ string, body func(o Order) any) saga.Builder {
	return func(data json.RawMessage) (saga.Command, error) {
		var o Order
		if err := json.Unmarshal(data, &o); err != nil {
			return saga.Command{}, fmt.Errorf("order data: %w", err)
		}
		payload, err := json.Marshal(body(o))
		return saga.Command{Type: typ, Payload: payload}, err
	}
}

func newOrderSaga() *saga.Definition {
	stock := func(o Order) any { return map[string]any{"sku": o.SKU, "quantity": o.Quantity} }
	money := func(o Order) any { return map[string]any{"account": o.Account, "amount_cents": o.AmountCents} }
	return &saga.Definition{
		Name: "order",
		Steps: []saga.Step{
			{
				Name:         "reserve-stock",
				Topic:        "stock.commands",
				Action:       orderCommand("ReserveStock", stock),
				Compensation: orderCommand("ReleaseStock", stock),
				Timeout:      5 * time.Second,
				Retry:        saga.RetryPolicy{MaxAttempts: 3, Backoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second},
			},
			{
				Name:         "charge-payment",
				Topic:        "payment.commands",
				Action:       orderCommand("ChargePayment", money),
				Compensation: orderCommand("RefundPayment", money),
				Timeout:      5 * time.Second,
				Retry:        saga.RetryPolicy{MaxAttempts: 3, Backoff: 200 * time.Millisecond, MaxBackoff: 2 * time.Second},
			},
			{
				// No compensation: confirming is the pivot. Once it
				// succeeded the order stands, and a failure here can no
				// longer be undone by compensation.
				Name:    "confirm-order",
				Topic:   "orders.commands",
				Action:  orderCommand("ConfirmOrder", func(o Order) any { return map[string]any{"id": o.ID} }),
				Timeout: 5 * time.Second,
				Retry:   saga.RetryPolicy{MaxAttempts: 5, Backoff: time.Second, MaxBackoff: 10 * time.Second},
			},
		},
		Deadline:    time.Minute,
		OnCompleted: saga.Event{Topic: "orders.events", Type: "OrderConfirmed"},
		OnCancelled: saga.Event{Topic: "orders.events", Type: "OrderCancelled"},
	}
}

// A saga is a Definition: its steps in order, each with a participant topic,
// an action, a compensation (none for the pivot), a timeout and a retry
// budget. A Registry holds the definitions the orchestrator runs.
func ExampleDefinition() {
	registry, err := saga.NewRegistry(newOrderSaga())
	if err != nil {
		fmt.Println(err)
		return
	}
	def, _ := registry.Lookup("order")
	for _, s := range def.Steps {
		fmt.Printf("%s on %s, compensable: %v\n", s.Name, s.Topic, s.Compensation != nil)
	}

	broken := newOrderSaga()
	broken.Steps[0].Compensation = nil // a pivot before compensable steps
	fmt.Println(broken.Validate())
	// Output:
	// reserve-stock on stock.commands, compensable: true
	// charge-payment on payment.commands, compensable: true
	// confirm-order on orders.commands, compensable: false
	// saga: invalid definition: saga "order": step "charge-payment" has a compensation but follows the pivot "reserve-stock", after which the saga can only go forward
}

// Transition is all the orchestrator runtime calls: it gives the instance and
// an input, then stores the new instance and sends the messages in one Kafka
// transaction. Here the payment is declined, so the stock is released.
func ExampleTransition() {
	def := newOrderSaga()
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	show := func(inst *saga.Instance, out []saga.Outgoing, err error) *saga.Instance {
		for _, o := range out {
			fmt.Printf("  send %s to %s: %s\n", o.Type, o.Topic, o.Payload)
		}
		if err != nil {
			fmt.Println("  ", err)
		}
		return inst
	}

	fmt.Println("OrderPlaced:")
	inst := show(saga.Transition(def, nil, saga.Input{
		Kind: saga.KindStart, At: now, MessageID: "m-1",
		Start: saga.Start{SagaID: "order-42", Data: json.RawMessage(`{"id":"order-42","sku":"mug","quantity":2,"account":"alice","amount_cents":1800}`)},
	}))

	fmt.Println("StockReserved:")
	inst = show(saga.Transition(def, inst, saga.Input{
		Kind: saga.KindReply, At: now.Add(40 * time.Millisecond), MessageID: "m-2",
		Reply: saga.Reply{Step: 0, Attempt: 1, Phase: saga.PhaseAction, Outcome: saga.Success},
	}))

	fmt.Println("StockReserved again (redelivered):")
	inst = show(saga.Transition(def, inst, saga.Input{
		Kind: saga.KindReply, At: now.Add(50 * time.Millisecond), MessageID: "m-2",
		Reply: saga.Reply{Step: 0, Attempt: 1, Phase: saga.PhaseAction, Outcome: saga.Success},
	}))

	fmt.Println("PaymentDeclined:")
	inst = show(saga.Transition(def, inst, saga.Input{
		Kind: saga.KindReply, At: now.Add(90 * time.Millisecond), MessageID: "m-3",
		Reply: saga.Reply{Step: 1, Attempt: 1, Phase: saga.PhaseAction, Outcome: saga.Failure, Reason: "payment declined: insufficient funds"},
	}))

	fmt.Println("StockReleased:")
	inst = show(saga.Transition(def, inst, saga.Input{
		Kind: saga.KindReply, At: now.Add(120 * time.Millisecond), MessageID: "m-4",
		Reply: saga.Reply{Step: 0, Attempt: 1, Phase: saga.PhaseCompensation, Outcome: saga.Success},
	}))

	fmt.Printf("%s, reason %q, ignored %d\n", inst.State, inst.Reason, inst.Ignored)
	for _, c := range inst.History {
		fmt.Printf("  %s -> %s(%d): %s\n", c.From, c.To, c.Step, c.Cause)
	}
	// Output:
	// OrderPlaced:
	//   send ReserveStock to stock.commands: {"quantity":2,"sku":"mug"}
	// StockReserved:
	//   send ChargePayment to payment.commands: {"account":"alice","amount_cents":1800}
	// StockReserved again (redelivered):
	//    saga: input ignored: action reply for step reserve-stock attempt 1 is not one the saga waits for: the action of step charge-payment attempt 1
	// PaymentDeclined:
	//   send ReleaseStock to stock.commands: {"quantity":2,"sku":"mug"}
	// StockReleased:
	//   send OrderCancelled to orders.events: {"saga_id":"order-42","saga_type":"order","state":"Cancelled","reason":"step charge-payment failed: payment declined: insufficient funds","version":4,"data":{"id":"order-42","sku":"mug","quantity":2,"account":"alice","amount_cents":1800}}
	// Cancelled, reason "step charge-payment failed: payment declined: insufficient funds", ignored 1
	//   Started -> Running(0): saga started
	//   Running -> Running(1): step reserve-stock succeeded
	//   Running -> Compensating(0): step charge-payment failed: payment declined: insufficient funds
	//   Compensating -> Cancelled(0): step reserve-stock compensated
}

// A participant answers a command with one call; the reply carries the
// command's step, attempt and phase back to the orchestrator.
func ExampleReplyTo() {
	cmd := saga.Envelope{
		MessageID: saga.NewMessageID(), SagaID: "order-42", Type: "ChargePayment",
		Traceparent: saga.NewTraceparent(), Step: 1, Attempt: 2, Phase: saga.PhaseAction,
		Payload: json.RawMessage(`{"account":"alice","amount_cents":1800}`),
	}
	reply, err := saga.ReplyTo(cmd, "PaymentDeclined", saga.Failure, "payment declined: insufficient funds", map[string]int64{"balance_cents": 300})
	if err != nil {
		fmt.Println(err)
		return
	}
	msg := reply.Message("payment.replies")
	fmt.Printf("%s key=%s step=%s attempt=%s phase=%s\n", msg.Topic, msg.Key, msg.Header("step"), msg.Header("attempt"), msg.Header("phase"))
	fmt.Printf("answers the command: %v, same trace: %v\n", reply.CausationID == cmd.MessageID, saga.TraceID(reply.Traceparent) == saga.TraceID(cmd.Traceparent))
	fmt.Println(string(msg.Value))
	// Output:
	// payment.replies key=order-42 step=1 attempt=2 phase=action
	// answers the command: true, same trace: true
	// {"outcome":"failure","reason":"payment declined: insufficient funds","result":{"balance_cents":300}}
}

func ExampleRetryPolicy_Delay() {
	p := saga.RetryPolicy{MaxAttempts: 5, Backoff: 200 * time.Millisecond, MaxBackoff: time.Second}
	for n := 1; n < p.Attempts(); n++ {
		fmt.Printf("after attempt %d fails, wait %s\n", n, p.Delay(n))
	}
	// Output:
	// after attempt 1 fails, wait 200ms
	// after attempt 2 fails, wait 400ms
	// after attempt 3 fails, wait 800ms
	// after attempt 4 fails, wait 1s
}
