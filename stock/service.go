package stock

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
	TypeReserveStock   = "ReserveStock"
	TypeReleaseStock   = "ReleaseStock"
	TypeCommitStock    = "CommitStock"
	TypeStockReserved  = "StockReserved"
	TypeStockRejected  = "StockRejected"
	TypeStockReleased  = "StockReleased"
	TypeStockCommitted = "StockCommitted"
)

// order is the part of the saga's order (docs/messages.md) stock reads.
// Unknown fields are ignored, as the contract asks.
type order struct {
	OrderID string `json:"order_id"`
	Lines   []Line `json:"lines"`
}

// ReplyResult is the result of StockReserved, StockReleased and
// StockCommitted: the quantities reserved, released or sold (none for a
// release with nothing to give back).
type ReplyResult struct {
	Lines []Line `json:"lines"`
}

// Service answers the orchestrator's stock commands. Handle is a
// saga.CommandHandler; any number of Services may run at once, in one
// process or many, on the same Redis.
type Service struct {
	store *Store
	log   *zap.Logger
}

// NewService returns the handler for store. A nil log means zap.NewNop().
func NewService(store *Store, log *zap.Logger) *Service {
	if log == nil {
		log = zap.NewNop()
	}
	return &Service{store: store, log: log}
}

// Store returns the Store the Service works on.
func (s *Service) Store() *Store { return s.store }

// Handle applies one command and returns its reply, for saga.NewParticipant.
// A redelivered command gets a reply with the same type, outcome, reason and
// result as the first (new message id). The error is poison (wraps
// saga.ErrPoison: dead-letter) or transient (retry); see the package doc.
func (s *Service) Handle(ctx context.Context, cmd saga.Envelope) (saga.Envelope, error) {
	var o order
	if err := saga.DecodeCommand("stock", cmd, commandPhases, "an order", &o); err != nil {
		return saga.Envelope{}, err
	}
	if o.OrderID != "" && o.OrderID != cmd.SagaID {
		return saga.Envelope{}, fmt.Errorf("%w: stock: %s for order %q travels as saga %q", saga.ErrPoison, cmd.Type, o.OrderID, cmd.SagaID)
	}

	// docs/messages.md names one reply for ReleaseStock and one for
	// CommitStock: a refusal of either (a release after the commit, a commit
	// with nothing reserved) is that reply with Outcome Failure.
	var (
		res          Result
		err          error
		okType, fail string
	)
	switch cmd.Type {
	case TypeReserveStock:
		res, err = s.store.Reserve(ctx, cmd.SagaID, o.Lines)
		okType, fail = TypeStockReserved, TypeStockRejected
	case TypeReleaseStock:
		// Lenient: a release only needs the product ids to name its keys,
		// and must be able to succeed for any order whose reserve could
		// have been refused or dead-lettered.
		res, err = s.store.Release(ctx, cmd.SagaID, productIDs(o.Lines))
		okType, fail = TypeStockReleased, TypeStockReleased
	case TypeCommitStock:
		res, err = s.store.Commit(ctx, cmd.SagaID, productIDs(o.Lines))
		okType, fail = TypeStockCommitted, TypeStockCommitted
	}
	if err != nil {
		return saga.Envelope{}, s.classify(cmd, err)
	}
	if ce := s.log.Check(zap.DebugLevel, "stock command applied"); ce != nil {
		ce.Write(zap.String("saga_id", cmd.SagaID), zap.String("message_id", cmd.MessageID),
			zap.Int("step", cmd.Step), zap.String("type", cmd.Type), zap.Bool("ok", res.OK),
			zap.Bool("repeat", res.Repeat), zap.String("reason", res.Reason))
	}
	if !res.OK {
		return saga.ReplyTo(cmd, fail, saga.Failure, res.Reason, nil)
	}
	reason := res.Reason
	if res.Null {
		reason = "nothing to release: the reservation never arrived"
	}
	lines := res.Lines
	if lines == nil {
		lines = []Line{}
	}
	return saga.ReplyTo(cmd, okType, saga.Success, reason, ReplyResult{Lines: lines})
}

// classify tells poison from transient: a command that can never apply is
// dead-lettered; anything else (Redis down, and errors nobody foresaw) is
// retried, because retrying keeps the command while dead-lettering a good
// one would lose it.
func (s *Service) classify(cmd saga.Envelope, err error) error {
	err = fmt.Errorf("stock: %s for saga %s: %w", cmd.Type, cmd.SagaID, err)
	switch {
	case errors.Is(err, ErrInvalidOrder), errors.Is(err, ErrUnknownProduct),
		errors.Is(err, idempotency.ErrScript), errors.Is(err, idempotency.ErrInvalidKey):
		return fmt.Errorf("%w: %w", saga.ErrPoison, err)
	}
	return err
}

func productIDs(lines []Line) []string {
	ids := make([]string, len(lines))
	for i, l := range lines {
		ids[i] = l.ProductID
	}
	return ids
}

// commandPhases are the commands this participant handles, with the phase
// each must travel in (docs/messages.md).
var commandPhases = map[string]saga.Phase{TypeReserveStock: saga.PhaseAction, TypeCommitStock: saga.PhaseAction, TypeReleaseStock: saga.PhaseCompensation}
