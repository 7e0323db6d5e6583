package wire

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Windows are how long the system keeps what it keeps (docs/design.md,
// "Bounded state"). Each is a flag of every service; each service uses the
// ones it owns, and every service checks that they nest.
type Windows struct {
	// SagaRetention: the orchestrator remembers an ended saga's id this long
	// (duplicate starts and late replies are ignored), then tombstones it.
	SagaRetention time.Duration
	// IdempotencyTTL: the orders API answers a repeated Idempotency-Key
	// from its record this long.
	IdempotencyTTL time.Duration
	// OrderMemory: the read model keeps an ended order in memory this long;
	// OrderTTL: then in Redis this long, after which GET /orders/{id} is 404.
	OrderMemory, OrderTTL time.Duration
	// CommandRetention: the command topics keep a command this long.
	CommandRetention time.Duration
	// EventRetention: the other topics that are not compacted
	// (orders.events, the replies, saga.control, saga.deadletter) keep a
	// record this long.
	EventRetention time.Duration
	// DedupTTL: the participants' dedup, barrier and per-order records live
	// this long after they are written.
	DedupTTL time.Duration
}

// DefaultWindows are the windows when no flag says otherwise.
func DefaultWindows() Windows {
	return Windows{SagaRetention: saga.DefaultRetention, IdempotencyTTL: 10 * time.Minute,
		OrderMemory: orders.DefaultMemory, OrderTTL: 24 * time.Hour,
		CommandRetention: kafkatx.DefaultCommandRetention, EventRetention: kafkatx.DefaultEventRetention, DedupTTL: 2 * time.Hour}
}

// DedupMargin is what DedupTTL must exceed CommandRetention by. A command is
// applied (and its record written) after it was appended, so a record that
// lives the retention outlives the command; the margin covers clock skew
// between the brokers, which expire by record timestamp, and Redis, and
// Kafka deleting whole segments a little after their retention.
const DedupMargin = time.Minute

// ErrWindows is returned for windows that do not nest.
var ErrWindows = errors.New("wire: retention windows do not nest")

// Validate reports windows that are not positive or do not nest:
//
//   - IdempotencyTTL <= SagaRetention. The API derives an order's id from
//     its key and body, so a client's retry reaches the orchestrator as the
//     same start; while the key's record lives the API answers it, and the
//     orchestrator must still remember the saga for as long, or a retry
//     that the API lets through (its record could not be written) would
//     start the saga again.
//   - DedupTTL >= CommandRetention + DedupMargin. A command can be delivered
//     again as long as Kafka keeps it (a redelivery after a crash, a group
//     reset, a replay from an old offset); its dedup record, written when it
//     was first applied, must outlive it. A replay from an offset older than
//     the retention finds nothing to replay.
//   - OrderMemory <= OrderTTL: an order leaves memory for Redis, not for
//     nothing.
//   - EventRetention >= CommandRetention. An OrderPlaced the API
//     acknowledged waits on orders.events for an orchestrator, and replies
//     wait for it on their topics: the orchestrator may be down at least as
//     long as a participant may (whose commands wait CommandRetention)
//     before anything is lost.
func (w Windows) Validate() error {
	var errs []error
	for name, d := range map[string]time.Duration{"saga-retention": w.SagaRetention, "idempotency-ttl": w.IdempotencyTTL,
		"order-memory": w.OrderMemory, "order-ttl": w.OrderTTL, "command-retention": w.CommandRetention, "event-retention": w.EventRetention, "dedup-ttl": w.DedupTTL} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("-%s must be positive, got %s", name, d))
		}
	}
	if w.IdempotencyTTL > w.SagaRetention {
		errs = append(errs, fmt.Errorf("-idempotency-ttl %s is longer than -saga-retention %s: a retried order could start a second saga",
			w.IdempotencyTTL, w.SagaRetention))
	}
	if w.DedupTTL < w.CommandRetention+DedupMargin {
		errs = append(errs, fmt.Errorf("-dedup-ttl %s must be at least -command-retention %s + %s: a command Kafka still keeps could apply twice",
			w.DedupTTL, w.CommandRetention, DedupMargin))
	}
	if w.OrderMemory > w.OrderTTL {
		errs = append(errs, fmt.Errorf("-order-memory %s is longer than -order-ttl %s", w.OrderMemory, w.OrderTTL))
	}
	if w.EventRetention < w.CommandRetention {
		errs = append(errs, fmt.Errorf("-event-retention %s is shorter than -command-retention %s: an orchestrator down that long would lose acknowledged orders",
			w.EventRetention, w.CommandRetention))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrWindows, errors.Join(errs...))
	}
	return nil
}

// Topics is the topics of the system with the retentions of w.
func (w Windows) Topics(partitions int) []kafkatx.TopicSpec {
	return kafkatx.SagaflowTopicsRetaining(partitions, w.CommandRetention, w.EventRetention)
}

// orderArchive keeps ended orders in Redis, one key each, with a TTL: the
// read model's Archive.
type orderArchive struct {
	rdb    *redis.Client
	prefix string
	ttl    time.Duration
}

func (a orderArchive) key(id string) string { return a.prefix + "order:" + id }

// Put writes the orders in one pipeline: one round trip per sweep.
func (a orderArchive) Put(ctx context.Context, os []orders.ArchivedOrder) error {
	if len(os) == 0 {
		return nil
	}
	_, err := a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, o := range os {
			p.Set(ctx, a.key(o.ID), o.Value, a.ttl)
		}
		return nil
	})
	return err
}

// Get reads one order's record.
func (a orderArchive) Get(ctx context.Context, id string) ([]byte, bool, error) {
	b, err := a.rdb.Get(ctx, a.key(id)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}
