package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// What a broker failover returns from InitTransactions is worth waiting
// out; what waiting cannot fix is not, and a fence never is (a twin).
func TestUnavailableSaysWhatWaitingFixes(t *testing.T) {
	wrap := func(code kafka.ErrorCode) error {
		return fmt.Errorf("kafkatx: producer x: %w", kafka.NewError(code, code.String(), false))
	}
	for _, c := range []struct {
		err  error
		want bool
	}{
		{wrap(kafka.ErrTimedOut), true},
		{wrap(kafka.ErrTransport), true},
		{wrap(kafka.ErrNotCoordinator), true},
		{wrap(kafka.ErrCoordinatorLoadInProgress), true},
		{wrap(kafka.ErrAllBrokersDown), true},
		{wrap(kafka.ErrDestroyBroker), true},
		{fmt.Errorf("create topics: %w", context.DeadlineExceeded), true},
		{wrap(kafka.ErrProducerFenced), false},
		{wrap(kafka.ErrFenced), false},
		{wrap(kafka.ErrTransactionalIDAuthorizationFailed), false},
		{wrap(kafka.ErrInvalidConfig), false},
		{kafka.NewError(kafka.ErrTimedOut, "fatal", true), false},
		{errors.New("not from Kafka"), false},
	} {
		if got := Unavailable(c.err); got != c.want {
			t.Errorf("Unavailable(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
