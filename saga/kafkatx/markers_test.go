package kafkatx_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestFailoverMarkersReachAPartitionThatWasLeaderless is a test of the Kafka
// that dev/ runs, not of our code: a transaction committed while one of its
// partitions had no leader must still get its commit marker once the
// partition has one again. Kafka 4.1 to 4.4 skip that marker: their metadata
// cache answers "no such partition" for a partition whose leader is -1, and
// the transaction coordinator takes that for a deleted topic (KAFKA-20734).
// The transaction then hangs on that partition for good: read_committed
// readers stop at it, and a group whose offsets were in it cannot read them
// with require_stable. On the single node every broker kill makes all
// partitions leaderless for a moment, and the CI chaos run met exactly this
// (the orchestrators crash-looped on "read committed offsets: Local: Timed
// out"). So dev/kafka.sh runs a release without the bug; if someone moves it
// to one with the bug, this fails.
//
// The partition is made leaderless on purpose: a topic with its only replica
// on broker X (not the transaction coordinator), X paused past its session
// so the controller fences it, and the commit sent while it is fenced.
func TestFailoverMarkersReachAPartitionThatWasLeaderless(t *testing.T) {
	brokers, nodes := kafkatest.Cluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	tid := "markers-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	tc, err := kafkatx.TransactionCoordinator(ctx, brokers, tid)
	if err != nil {
		t.Fatal(err)
	}
	x := int32(1)
	for x == tc {
		x++
	}
	topic := "test.markers." + tid
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	res, err := ac.CreateTopics(ctx, []kafka.TopicSpecification{{
		Topic: topic, NumPartitions: 1, ReplicaAssignment: [][]int32{{x}},
		// One replica: when X comes back it must lead again, whichever
		// election rule this Kafka applies to a sole replica.
		Config: map[string]string{"min.insync.replicas": "1", "unclean.leader.election.enable": "true"},
	}})
	if err == nil && res[0].Error.Code() != kafka.ErrNoError {
		err = res[0].Error
	}
	if err != nil {
		t.Fatalf("create %s on broker %d: %v", topic, x, err)
	}
	// A defer, not t.Cleanup: it must run before ac.Close above.
	defer func() {
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		_, _ = ac.DeleteTopics(dctx, []string{topic})
	}()
	t.Logf("transactions of %s are coordinated by broker %d; %s lives on broker %d alone", tid, tc, topic, x)

	p := openTransaction(ctx, t, brokers, tid, 120_000, topic, nil, []byte("committed while leaderless"))

	// X stays paused until the commit returns. X is a replica of every
	// __transaction_state partition, so the coordinator can write its
	// PrepareCommit only after the controller fenced X (and so took it
	// out of the ISR); from then on the topic has no leader, and that is
	// when the coordinator looks for the partition's leader to send the
	// marker to.
	kafkatest.Node(t, nodes, kafkactl.Pause, int(x))
	commitErr := p.CommitTransaction(ctx)
	kafkatest.Node(t, nodes, kafkactl.Resume, int(x))
	if commitErr != nil {
		t.Fatalf("commit while broker %d was paused: %v", x, commitErr)
	}

	// The marker ends the transaction: then the partition's last stable
	// offset (what a read_committed reader may reach) is its end.
	end := func(isolation string) int64 {
		c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": tid,
			"isolation.level": isolation})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, hi, err := c.QueryWatermarkOffsets(topic, 0, 5_000)
		if err != nil {
			return -1
		}
		return hi
	}
	stable, last := int64(-2), int64(-2)
	kafkatest.WaitFor(t, 90*time.Second, "the commit marker on "+topic+" (its last stable offset at its end)", func() bool {
		s, l := end(kafkatest.ReadCommitted), end(kafkatest.ReadUncommitted)
		if s != stable || l != last {
			t.Logf("%s: last stable offset %d, end %d", topic, s, l)
		}
		stable, last = s, l
		return last > 1 && stable == last
	})
}
