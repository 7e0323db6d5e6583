package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

var (
	// ErrFenced means a newer instance with the same transactional id took
	// over. The loop stops: recreating the producer would fence the newer
	// instance in turn, and the two would take turns forever.
	ErrFenced = errors.New("kafkatx: fenced by a newer instance with the same transactional id")
	// ErrWedged means a call into the client library did not return within
	// Config.WedgeTimeout and the loop could not be replaced inside the
	// process (see Loop.Run): it was given up, for the process to be
	// restarted.
	ErrWedged = errors.New("kafkatx: a transactional call did not return; loop abandoned")
	// ErrStopTimeout means Run gave up waiting for the loop to stop within
	// Config.StopTimeout and abandoned it (see Loop.Run).
	ErrStopTimeout = errors.New("kafkatx: loop did not stop within its stop timeout; abandoned")
	// ErrOffsetOutOfRange means a read was asked to start outside the log
	// (see ReadPartitionsFrom).
	ErrOffsetOutOfRange = errors.New("offset out of range")
	// ErrPoison marks a record no retry can fix (it cannot be decoded, or it
	// names something that does not exist). Wrap it with Poison.
	ErrPoison = errors.New("kafkatx: poison record")
	// errStoppedInInit means the stop cut short a new producer's wait for
	// Kafka: a stop, not a failure.
	errStoppedInInit = errors.New("kafkatx: stopped while initializing transactions")
)

// PoisonError is returned by a handler to set one record aside: the loop
// aborts the attempt, hands the record to Config.OnPoison and handles the
// batch again without it.
type PoisonError struct {
	Record Record
	Reason error
}

func (e *PoisonError) Error() string {
	return fmt.Sprintf("kafkatx: poison record %s[%d]@%d: %v", e.Record.Topic, e.Record.Partition, e.Record.Offset, e.Reason)
}

// Unwrap lets errors.Is find both ErrPoison and the reason.
func (e *PoisonError) Unwrap() []error { return []error{ErrPoison, e.Reason} }

// Poison marks rec as poison because of reason.
func Poison(rec Record, reason error) error {
	return &PoisonError{Record: rec, Reason: reason}
}

// Dead-letter headers, added to the original record's headers.
const (
	HeaderDLQReason    = "dlq-reason"
	HeaderDLQTopic     = "dlq-origin-topic"
	HeaderDLQPartition = "dlq-origin-partition"
	HeaderDLQOffset    = "dlq-origin-offset"
	HeaderDLQAt        = "dlq-at"
)

// DeadLetter returns rec as a record for topic, with the reason and origin in
// headers and the original key, value and headers kept, so an operator can
// read why and replay it.
func DeadLetter(topic string, rec Record, reason error) Message {
	hs := make([]Header, 0, len(rec.Headers)+5)
	hs = append(hs, rec.Headers...)
	hs = append(hs,
		Header{HeaderDLQReason, []byte(reason.Error())},
		Header{HeaderDLQTopic, []byte(rec.Topic)},
		Header{HeaderDLQPartition, []byte(strconv.Itoa(int(rec.Partition)))},
		Header{HeaderDLQOffset, []byte(strconv.FormatInt(rec.Offset, 10))},
		Header{HeaderDLQAt, []byte(time.Now().UTC().Format(time.RFC3339Nano))},
	)
	return NewMessage(topic, rec.Key, rec.Value, hs...)
}

// kafkaErr returns err as a kafka.Error, or false for a non-Kafka error.
func kafkaErr(err error) (kafka.Error, bool) {
	var ke kafka.Error
	ok := errors.As(err, &ke)
	return ke, ok
}

// Unavailable reports whether err means Kafka could not be reached or was
// between owners (a broker down, a coordinator moving or loading, a request
// timing out), so the same call can succeed later. Settings, authorization
// and fencing errors are not: waiting does not fix them.
func Unavailable(err error) bool {
	ke, ok := kafkaErr(err)
	if !ok {
		return errors.Is(err, context.DeadlineExceeded)
	}
	if ke.IsFatal() || fenced(err) {
		return false
	}
	switch ke.Code() {
	case kafka.ErrTimedOut, kafka.ErrTimedOutQueue, kafka.ErrTransport, kafka.ErrAllBrokersDown,
		kafka.ErrNotCoordinator, kafka.ErrCoordinatorNotAvailable, kafka.ErrCoordinatorLoadInProgress,
		kafka.ErrRequestTimedOut, kafka.ErrNetworkException, kafka.ErrBrokerNotAvailable,
		kafka.ErrLeaderNotAvailable, kafka.ErrNotController, kafka.ErrNotEnoughReplicas,
		kafka.ErrNotEnoughReplicasAfterAppend, kafka.ErrConcurrentTransactions,
		// A request on a broker handle that librdkafka decommissioned
		// because the broker left the metadata (it is restarting): the
		// client is fine, and asking again reaches the broker in charge.
		// Seen as an orchestrator's exit in a failover test.
		kafka.ErrDestroyBroker:
		return true
	}
	return ke.IsRetriable()
}

// metadataLags reports whether err is what a partition query answers while
// the cluster's metadata moves (a broker restarting, a leader being elected):
// worth asking again. A topic that truly does not exist answers the same,
// so a caller asks again only for a bounded time.
func metadataLags(err error) bool {
	ke, ok := kafkaErr(err)
	if !ok {
		return false
	}
	switch ke.Code() {
	case kafka.ErrUnknownPartition, kafka.ErrUnknownTopicOrPart, kafka.ErrUnknownTopic,
		kafka.ErrNotLeaderForPartition, kafka.ErrLeaderNotAvailable:
		return true
	}
	return Unavailable(err)
}

// unstableOffsets reports whether err is the broker's answer to a read of
// committed offsets while a transaction that commits offsets of the same
// partitions is still open: asked again, it answers once that one ended.
func unstableOffsets(err error) bool {
	ke, ok := kafkaErr(err)
	return ok && ke.Code() == kafka.ErrUnstableOffsetCommit
}

// fenced reports whether err means another producer with our transactional id
// is now the owner.
func fenced(err error) bool {
	ke, ok := kafkaErr(err)
	if !ok {
		return false
	}
	switch ke.Code() {
	case kafka.ErrFenced, kafka.ErrProducerFenced, kafka.ErrFencedInstanceID:
		return true
	}
	return false
}
