package payment

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
)

// Command and reply types (docs/messages.md).
const (
	TypeChargePayment   = "ChargePayment"
	TypeRefundPayment   = "RefundPayment"
	TypePaymentCharged  = "PaymentCharged"
	TypePaymentDeclined = "PaymentDeclined"
	TypePaymentRefunded = "PaymentRefunded"
)

// ScenarioSlowPayment is the order's demo scenario that withholds the
// charge's reply (see ServiceConfig.DemoScenarios).
const ScenarioSlowPayment = "slow-payment"

// order is the part of the saga's order (docs/messages.md) payment reads.
// Unknown fields are ignored, as the contract asks.
type order struct {
	OrderID    string      `json:"order_id"`
	CustomerID string      `json:"customer_id"`
	Lines      []orderLine `json:"lines"`
	TotalCents int64       `json:"total_cents"`
	Scenario   string      `json:"scenario"`
}

type orderLine struct {
	ProductID      string `json:"product_id"`
	Quantity       int64  `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
}

// ChargedResult is the result of PaymentCharged.
type ChargedResult struct {
	CustomerID   string `json:"customer_id"`
	ChargedCents int64  `json:"charged_cents"`
}

// RefundedResult is the result of PaymentRefunded; RefundedCents is 0 when
// nothing was charged.
type RefundedResult struct {
	CustomerID    string `json:"customer_id,omitempty"`
	RefundedCents int64  `json:"refunded_cents"`
}

// ServiceConfig configures a Service. The zero value is what production
// runs.
type ServiceConfig struct {
	// DemoScenarios makes the service honour the order's "scenario" field:
	// "slow-payment" charges but sends no reply. Off by default, since a
	// client could otherwise make real orders time out on purpose.
	DemoScenarios bool
}

// Service answers the orchestrator's payment commands. Handle is a
// saga.CommandHandler; any number of Services may run at once on the same
// Redis.
type Service struct {
	store *Store
	cfg   ServiceConfig
	log   *zap.Logger
}

// NewService returns the handler for store. A nil log means zap.NewNop().
func NewService(store *Store, cfg ServiceConfig, log *zap.Logger) *Service {
	if log == nil {
		log = zap.NewNop()
	}
	return &Service{store: store, cfg: cfg, log: log}
}

// Store returns the Store the Service works on.
func (s *Service) Store() *Store { return s.store }

// Handle applies one command and returns its reply, for saga.NewParticipant.
// A redelivered command gets a reply with the same type, outcome, reason and
// result as the first (new message id). The error is poison (wraps
// saga.ErrPoison: dead-letter) or transient (retry); see the package doc.
func (s *Service) Handle(ctx context.Context, cmd saga.Envelope) (saga.Envelope, error) {
	var o order
	if err := saga.DecodeCommand("payment", cmd, commandPhases, "an order", &o); err != nil {
		return saga.Envelope{}, err
	}
	if o.OrderID != "" && o.OrderID != cmd.SagaID {
		return saga.Envelope{}, fmt.Errorf("%w: payment: %s for order %q travels as saga %q", saga.ErrPoison, cmd.Type, o.OrderID, cmd.SagaID)
	}

	if cmd.Type == TypeRefundPayment {
		// Lenient: a refund needs only the customer id to name its key
		// (the amount comes from the charge's record), and must be able to
		// succeed for any order whose charge could have been declined or
		// dead-lettered.
		res, err := s.store.Refund(ctx, cmd.SagaID, o.CustomerID)
		if err != nil {
			return saga.Envelope{}, s.classify(cmd, err)
		}
		s.debug(cmd, res)
		reason := res.Reason
		if res.Null {
			reason = "nothing to refund: the charge never arrived"
		}
		return saga.ReplyTo(cmd, TypePaymentRefunded, saga.Success, reason,
			RefundedResult{CustomerID: res.CustomerID, RefundedCents: res.AmountCents})
	}

	if err := o.check(); err != nil {
		return saga.Envelope{}, s.classify(cmd, err)
	}
	res, err := s.store.Charge(ctx, cmd.SagaID, o.CustomerID, o.TotalCents)
	if err != nil {
		return saga.Envelope{}, s.classify(cmd, err)
	}
	s.debug(cmd, res)
	if s.cfg.DemoScenarios && o.Scenario == ScenarioSlowPayment {
		// The charge is applied (and recorded, so a retry of the command
		// finds it); only the reply is withheld.
		s.log.Info("demo scenario slow-payment: reply withheld", zap.String("saga_id", cmd.SagaID),
			zap.String("message_id", cmd.MessageID), zap.Bool("charged", res.OK))
		return saga.Envelope{}, nil
	}
	if !res.OK {
		return saga.ReplyTo(cmd, TypePaymentDeclined, saga.Failure, res.Reason, nil)
	}
	return saga.ReplyTo(cmd, TypePaymentCharged, saga.Success, "",
		ChargedResult{CustomerID: res.CustomerID, ChargedCents: res.AmountCents})
}

// check refuses an order whose total is not what its lines add up to, or
// whose numbers are out of range: such an order was built wrong upstream,
// and charging it would charge a wrong amount.
func (o order) check() error {
	if len(o.Lines) > MaxLines {
		return fmt.Errorf("%w: %d lines, at most %d", ErrInvalidOrder, len(o.Lines), MaxLines)
	}
	var sum int64
	for _, l := range o.Lines {
		if l.Quantity < 1 || l.Quantity > MaxQuantity {
			return fmt.Errorf("%w: quantity %d of %s: want 1 to %d", ErrInvalidOrder, l.Quantity, l.ProductID, MaxQuantity)
		}
		if l.UnitPriceCents < 0 || l.UnitPriceCents > MaxCents {
			return fmt.Errorf("%w: unit price %d cents of %s out of range", ErrInvalidOrder, l.UnitPriceCents, l.ProductID)
		}
		// Both factors are positive and bounded, so this division is the
		// overflow check of the product and of the running sum.
		if l.UnitPriceCents > (MaxCents-sum)/l.Quantity {
			return fmt.Errorf("%w: the lines add up to more than %d cents", ErrInvalidOrder, int64(MaxCents))
		}
		sum += l.Quantity * l.UnitPriceCents
	}
	if o.TotalCents < 1 || o.TotalCents > MaxCents {
		return fmt.Errorf("%w: total %d cents: want 1 to %d", ErrInvalidOrder, o.TotalCents, int64(MaxCents))
	}
	if o.TotalCents != sum {
		return fmt.Errorf("%w: total %d cents is not the sum of the lines, %d", ErrInvalidOrder, o.TotalCents, sum)
	}
	return nil
}

func (s *Service) debug(cmd saga.Envelope, res Result) {
	if ce := s.log.Check(zap.DebugLevel, "payment command applied"); ce != nil {
		ce.Write(zap.String("saga_id", cmd.SagaID), zap.String("message_id", cmd.MessageID),
			zap.Int("step", cmd.Step), zap.String("type", cmd.Type), zap.Bool("ok", res.OK),
			zap.Bool("repeat", res.Repeat), zap.Int64("amount_cents", res.AmountCents), zap.String("reason", res.Reason))
	}
}

// classify tells poison from transient: a command that can never apply is
// dead-lettered; anything else (Redis down, and errors nobody foresaw) is
// retried, because retrying keeps the command while dead-lettering a good
// one would lose it.
func (s *Service) classify(cmd saga.Envelope, err error) error {
	err = fmt.Errorf("payment: %s for saga %s: %w", cmd.Type, cmd.SagaID, err)
	switch {
	case errors.Is(err, ErrInvalidOrder), errors.Is(err, ErrUnknownCustomer),
		errors.Is(err, idempotency.ErrScript), errors.Is(err, idempotency.ErrInvalidKey):
		return fmt.Errorf("%w: %w", saga.ErrPoison, err)
	}
	return err
}

// commandPhases are the commands this participant handles, with the phase
// each must travel in (docs/messages.md).
var commandPhases = map[string]saga.Phase{TypeChargePayment: saga.PhaseAction, TypeRefundPayment: saga.PhaseCompensation}
