package saga

import (
	"errors"
	"fmt"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Kafka is the part of a runtime's configuration that says how it meets
// Kafka; the orchestrator and the participants share it.
type Kafka struct {
	// Brokers is the bootstrap list. Required.
	Brokers string
	// Group is the consumer group; instances of one service share it.
	Group string
	// InstanceID names this instance, stable across its restarts and unique
	// among live instances: it becomes the transactional id, so a restarted
	// instance fences its crashed predecessor at once. Required.
	InstanceID string
	// StaticMembership keeps the partitions of a restarted instance without
	// a rebalance (see kafkatx.Config.StaticMembership).
	StaticMembership bool
	// MaxBatch, MaxInterval, BatchWait, TransactionTimeout and
	// SessionTimeout bound each transaction; zero takes kafkatx's defaults
	// (for BatchWait kafkatx.DefaultBatchWait; negative never waits).
	MaxBatch           int
	MaxInterval        time.Duration
	BatchWait          time.Duration
	TransactionTimeout time.Duration
	// Linger is the transactional producers' linger (kafkatx.Config.Linger):
	// zero takes kafkatx.DefaultLinger, negative sends each record at once.
	Linger         time.Duration
	SessionTimeout time.Duration
	// SlowTxn is how long a transaction may take before it is logged with
	// where its time went (kafkatx.Config.SlowTxn): zero takes
	// kafkatx.DefaultSlowTxn, negative logs none.
	SlowTxn time.Duration
	// DeadLetterTopic receives poison records with the reason in headers.
	// Default saga.deadletter.
	DeadLetterTopic string
	// Lanes is how many transactional loops this instance runs side by side,
	// each a group member with its own producer (kafkatx.Lanes): more
	// transactions in flight, for as many partitions as there are. Default 1.
	Lanes int
}

func (k Kafka) validate(what string) error {
	var errs []error
	if k.Brokers == "" {
		errs = append(errs, errors.New("no Kafka.Brokers"))
	}
	if k.InstanceID == "" {
		errs = append(errs, errors.New("no Kafka.InstanceID"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("saga: invalid %s config: %w", what, errors.Join(errs...))
	}
	return nil
}

// loop returns the kafkatx configuration for topics; the transactional id is
// the group and the instance, so two services never share one.
func (k Kafka) loop(topics []string) kafkatx.Config {
	dlq := k.DeadLetterTopic
	if dlq == "" {
		dlq = kafkatx.TopicSagaDeadLetter
	}
	return kafkatx.Config{
		Brokers:            k.Brokers,
		Group:              k.Group,
		Topics:             topics,
		TransactionalID:    k.Group + "/" + k.InstanceID,
		StaticMembership:   k.StaticMembership,
		MaxBatch:           k.MaxBatch,
		MaxInterval:        k.MaxInterval,
		BatchWait:          k.BatchWait,
		Linger:             k.Linger,
		TransactionTimeout: k.TransactionTimeout,
		SessionTimeout:     k.SessionTimeout,
		SlowTxn:            k.SlowTxn,
		DeadLetterTopic:    dlq,
	}
}
