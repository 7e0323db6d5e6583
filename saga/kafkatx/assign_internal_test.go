package kafkatx

import (
	"errors"
	"fmt"
	"testing"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Every assigned partition gets an explicit start, so librdkafka never reads
// the committed offsets itself (issue 5586: a coordinator that moved during
// that read left the partition idle for good): the committed offset with its
// leader epoch where there is one, else where auto.offset.reset says.
func TestStartOffsetsLeaveNothingForTheClientToRead(t *testing.T) {
	topic, epoch := "t", int32(7)
	committed := []kafka.TopicPartition{
		{Topic: &topic, Partition: 0, Offset: 42, LeaderEpoch: &epoch, Metadata: new(string)},
		{Topic: &topic, Partition: 1, Offset: kafka.OffsetInvalid, LeaderEpoch: &epoch},
		{Topic: &topic, Partition: 2, Offset: 0},
	}
	got := startOffsets(committed, kafka.OffsetBeginning)
	want := []struct {
		offset kafka.Offset
		epoch  *int32
	}{{42, &epoch}, {kafka.OffsetBeginning, nil}, {0, nil}}
	if len(got) != len(want) {
		t.Fatalf("startOffsets gave %d partitions for %d", len(got), len(want))
	}
	for i, w := range want {
		p := got[i]
		if *p.Topic != topic || p.Partition != int32(i) || p.Offset != w.offset || p.LeaderEpoch != w.epoch || p.Metadata != nil {
			t.Errorf("partition %d starts at %v (epoch %v, metadata %v), want %v (epoch %v)", i, p.Offset, p.LeaderEpoch, p.Metadata, w.offset, w.epoch)
		}
	}
	if committed[1].Offset != kafka.OffsetInvalid {
		t.Errorf("startOffsets changed its argument: %v", committed[1].Offset)
	}
	for setting, want := range map[string]kafka.Offset{
		"earliest": kafka.OffsetBeginning, "smallest": kafka.OffsetBeginning, "beginning": kafka.OffsetBeginning,
		"latest": kafka.OffsetEnd, "largest": kafka.OffsetEnd, "end": kafka.OffsetEnd,
		"error": kafka.OffsetStored, "": kafka.OffsetStored,
	} {
		if got := resetOffset(setting); got != want {
			t.Errorf("resetOffset(%q) = %v, want %v", setting, got, want)
		}
	}
}

// A read of committed offsets is asked again while a transaction holds
// offsets of the partition; Unavailable covers a coordinator that moves.
func TestUnstableOffsetsAreWorthWaitingFor(t *testing.T) {
	unstable := fmt.Errorf("kafkatx: read committed offsets: %w",
		kafka.NewError(kafka.ErrUnstableOffsetCommit, "unstable", false))
	notCoord := kafka.NewError(kafka.ErrNotCoordinator, "not coordinator", false)
	if !unstableOffsets(unstable) || unstableOffsets(notCoord) || unstableOffsets(errors.New("x")) {
		t.Errorf("unstableOffsets: %v %v %v, want true false false",
			unstableOffsets(unstable), unstableOffsets(notCoord), unstableOffsets(errors.New("x")))
	}
}
