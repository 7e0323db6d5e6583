package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Config configures a Loop. Zero values take the defaults named on each field.
type Config struct {
	// Brokers is the bootstrap list, "host:port[,host:port...]". Required.
	Brokers string
	// Group is the consumer group id. Required.
	Group string
	// Topics are the input topics. Required.
	Topics []string
	// TransactionalID identifies this instance. It must be stable across
	// restarts of the same instance and unique among live instances: a restart
	// with the same id fences its predecessor and aborts its open transaction at
	// once, instead of leaving it to block read_committed readers until the
	// transaction timeout. Required.
	TransactionalID string
	// StaticMembership sends TransactionalID as group.instance.id (KIP-345).
	// A restarted instance then takes its partitions back without a rebalance,
	// but a stopped one keeps them until the session times out, since a static
	// member does not leave the group on close.
	StaticMembership bool
	// Assignor is the partition assignment strategy. Default
	// "cooperative-sticky": a rebalance moves only the partitions that must
	// move. "range" co-partitions: with equal partition counts, partition p
	// of every input topic goes to the same member, which a consumer that
	// joins several topics by key needs (the orchestrator does).
	Assignor string

	// A batch is committed as soon as the consumer has nothing more ready,
	// so at low load every record gets a transaction of its own at once, and
	// under load batches grow while the previous transaction commits.
	// MaxBatch and MaxInterval bound that growth: the records in one
	// transaction (default 500) and how long the first of them waits for the
	// batch to close (default 50ms).
	MaxBatch    int
	MaxInterval time.Duration
	// BatchWait is how long a batch stays open from its first record for
	// more to join it, while the loop is busy: only when the batch before
	// it held more than one record and the loop has not been idle since.
	// A loop that was idle commits a lone record at once, so a quiet
	// system's hop waits for nothing. Default DefaultBatchWait; negative
	// never waits. At most MaxInterval, which closes a batch whatever it
	// waits for.
	BatchWait time.Duration
	// Linger is how long the producer holds a record for more to join its
	// request (librdkafka's linger.ms). Default DefaultLinger; negative sends
	// each record at once. A record becomes visible only when its
	// transaction commits, and the commit sends whatever is held at once
	// (librdkafka's flush ignores the linger), so what a linger trades is
	// requests against overlap: under load a batch's handler produces for
	// tens of milliseconds, and records sent as they came went out in two
	// or three Produce requests a partition; at idle, records held past
	// the offsets' round trips (which run beside the handler) wait for the
	// commit to send them, one round trip more
	// (docs/performance-journal.md, eighth pass).
	Linger time.Duration
	// TransactionTimeout is the broker-side limit of one transaction, and the
	// time this loop keeps retrying a commit whose outcome is unknown before it
	// recreates the producer. Default 30s.
	TransactionTimeout time.Duration
	// SessionTimeout is the consumer group session timeout. Default 10s.
	SessionTimeout time.Duration
	// StopTimeout bounds a stop: Run returns at most this long after its
	// context is done. Half of it goes to committing the in-flight batch,
	// the rest to leaving the group. Default 10s.
	StopTimeout time.Duration
	// WedgeTimeout bounds one transactional call of the client library
	// (send offsets, commit). librdkafka's send_offsets_to_transaction can
	// block past its own timeout while the group coordinator is away
	// (librdkafka issues 5456 and 5511; the chaos suite met it in the 3-node
	// mode): the loop then polls no more and holds its partitions from the
	// rest of the group. Past WedgeTimeout, Run gives that consumer and
	// producer up and goes on with new ones, whose InitTransactions fences
	// the stuck producer (see Run). Default TransactionTimeout + 20s: every
	// call has its own deadline within the transaction timeout, so a call
	// still running 20s past it has ignored its deadline.
	WedgeTimeout time.Duration
	// SlowTxn is how long a transaction may take, from its begin to its
	// commit, before the loop logs it at warn with where its time went
	// (begin, handler, offsets, commit): the transactions behind a
	// latency tail, and whose they are. At most one line a second; the
	// progress line counts them all. Default DefaultSlowTxn; negative
	// logs none.
	SlowTxn time.Duration
	// RetryBackoff is the first pause after a handler error; it doubles on each
	// consecutive failure up to MaxRetryBackoff. Defaults 100ms and 5s.
	RetryBackoff    time.Duration
	MaxRetryBackoff time.Duration

	// OnAssign runs for newly assigned partitions before any of their records
	// reach the handler (the orchestrator restores its instances here). It
	// runs after the group's committed offsets for parts are stable: no
	// transaction that commits offsets for them is still open, so whatever a
	// previous owner wrote in such a transaction is committed or aborted by
	// now. An error stops the loop: processing without the restored state
	// would be wrong, not merely slow.
	OnAssign func(ctx context.Context, parts []TopicPartition) error
	// OnRevoke runs after the in-flight batch was committed (or dropped when
	// the assignment was lost) and before the partitions go.
	OnRevoke func(parts []TopicPartition, lost bool)
	// OnPoison decides what a poison record becomes: usually a dead-letter
	// record (see DeadLetter). When nil, poison records go to DeadLetterTopic,
	// or are skipped with an error log when that is empty too. Either way the
	// partition moves on.
	OnPoison func(rec Record, reason error) []Message
	// DeadLetterTopic is used by the default OnPoison.
	DeadLetterTopic string
	// AfterCommit runs after each committed transaction.
	AfterCommit func(records, produced int)

	// ConsumerConfig and ProducerConfig are extra librdkafka properties; they
	// override ours, so a caller can tune anything, at its own risk.
	ConsumerConfig map[string]any
	ProducerConfig map[string]any
}

// DefaultLinger is Config.Linger's default: long enough that a busy
// handler's records share requests, short enough that at idle they leave
// while the offsets are still on their way.
const DefaultLinger = 5 * time.Millisecond

// DefaultBatchWait is Config.BatchWait's default. Fewer, larger
// transactions cost the broker less a record, and where the broker is the
// limit that outweighs the wait: in docs/performance-journal.md's
// twenty-third pass, in turns against none, 32 waiting clients gained 6 to
// 37% in every pair, and saturation and 1,000 sagas/s were no worse.
const DefaultBatchWait = 3 * time.Millisecond

// DefaultSlowTxn is Config.SlowTxn's default: ten times what a transaction
// of a busy loop takes on docs/performance.md's machine, so that a line
// means a stall, not load.
const DefaultSlowTxn = 500 * time.Millisecond

func (c Config) withDefaults() Config {
	if c.Assignor == "" {
		c.Assignor = "cooperative-sticky"
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 500
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = 50 * time.Millisecond
	}
	switch {
	case c.Linger == 0:
		c.Linger = DefaultLinger
	case c.Linger < 0:
		c.Linger = 0
	}
	switch {
	case c.BatchWait == 0:
		c.BatchWait = DefaultBatchWait
	case c.BatchWait < 0:
		c.BatchWait = 0
	}
	c.BatchWait = min(c.BatchWait, c.MaxInterval)
	if c.TransactionTimeout == 0 {
		c.TransactionTimeout = 30 * time.Second
	}
	if c.SessionTimeout == 0 {
		c.SessionTimeout = 10 * time.Second
	}
	if c.WedgeTimeout == 0 {
		c.WedgeTimeout = c.TransactionTimeout + 20*time.Second
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = 10 * time.Second
	}
	if c.SlowTxn == 0 {
		c.SlowTxn = DefaultSlowTxn
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = 5 * time.Second
	}
	return c
}

// Validate reports the first thing wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Brokers == "" {
		errs = append(errs, errors.New("no Brokers"))
	}
	if c.Group == "" {
		errs = append(errs, errors.New("no Group"))
	}
	if len(c.Topics) == 0 {
		errs = append(errs, errors.New("no Topics"))
	}
	if c.TransactionalID == "" {
		errs = append(errs, errors.New("no TransactionalID"))
	}
	if c.MaxBatch < 0 {
		errs = append(errs, fmt.Errorf("MaxBatch %d is negative", c.MaxBatch))
	}
	if c.MaxInterval < 0 || c.TransactionTimeout < 0 || c.SessionTimeout < 0 || c.StopTimeout < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if c.TransactionTimeout > 0 && c.TransactionTimeout < time.Second {
		errs = append(errs, fmt.Errorf("TransactionTimeout %s is under 1s", c.TransactionTimeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("kafkatx: invalid config: %w", errors.Join(errs...))
	}
	return nil
}
