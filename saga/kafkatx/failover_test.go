package kafkatx_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestFailoverCoordinatorKilledMidTransaction kills a broker while a
// transaction is open: the one that coordinates the loop's transactions,
// then the one that coordinates its group (and takes its transactional
// offset commits), then the transaction coordinator again. The group is
// chosen so that one broker first coordinates both: losing it wedged
// librdkafka's send_offsets_to_transaction (librdkafka issues 5456 and
// 5511; Config.WedgeTimeout answers it). The loop must carry on by itself
// while that broker is down (another one takes the coordinator's
// partition over), and a read_committed reader must see every
// input exactly once. This is how the 3-node cluster failed before
// the loop recreated a producer fenced without a rebalance: the coordinator
// that moved with the broker aborted the transaction and bumped the epoch,
// and the loop took the fencing for a newer instance and stopped.
func TestFailoverCoordinatorKilledMidTransaction(t *testing.T) {
	brokers, nodes := kafkatest.Cluster(t, 3)
	const parts, perRound = 3, 400
	in := kafkatest.Topic(t, brokers, "in", parts)
	out := kafkatest.Topic(t, brokers, "out", parts)
	group := sharedCoordinatorGroup(t, brokers, "coordkill-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	cfg := baseConfig(brokers, in, group)
	cfg.MaxBatch = 20

	// The gate holds the first transaction after it is armed open, its
	// records produced, until the test has killed the coordinator.
	var armed atomic.Bool
	holding, release := make(chan struct{}), make(chan struct{})
	copyRecs := copyHandler(out)
	h := func(ctx context.Context, recs []kafkatx.Record, sink *kafkatx.Sink) error {
		if err := copyRecs(ctx, recs, sink); err != nil {
			return err
		}
		if armed.CompareAndSwap(true, false) {
			// Long enough for librdkafka to add the partitions to the
			// transaction at the coordinator.
			time.Sleep(500 * time.Millisecond)
			holding <- struct{}{}
			<-release
		}
		return nil
	}
	l, stop := runLoop(t, cfg, h, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))

	var want []string
	feed := func(round int) {
		msgs, vals := inputs(in, "r"+strconv.Itoa(round), perRound)
		kafkatest.Produce(t, brokers, msgs)
		want = append(want, vals...)
	}
	copied := func() int { return len(kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted)) }
	feed(0)
	kafkatest.WaitFor(t, 60*time.Second, "the first inputs to be copied", func() bool { return copied() == len(want) })

	rounds := []struct {
		name string
		find func(ctx context.Context, brokers, key string) (int32, error)
		key  string
	}{
		{"transaction coordinator", kafkatx.TransactionCoordinator, cfg.TransactionalID},
		{"group coordinator", kafkatx.GroupCoordinator, cfg.Group},
		{"transaction coordinator", kafkatx.TransactionCoordinator, cfg.TransactionalID},
	}
	for i, rc := range rounds {
		round := i + 1
		armed.Store(true)
		feed(round)
		select {
		case <-holding:
		case <-time.After(60 * time.Second):
			t.Fatal("no transaction opened within 60s")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		coord, err := rc.find(ctx, brokers, rc.key)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		kafkatest.Node(t, nodes, kafkactl.Kill, int(coord))
		killed := time.Now()
		release <- struct{}{}
		// The loop carries on with the node still down.
		kafkatest.WaitFor(t, 90*time.Second, "every input so far to be copied with the coordinator's broker down", func() bool {
			return copied() >= len(want)
		})
		t.Logf("round %d: the %s was node %d; all %d inputs copied %s after the kill; stats %+v",
			round, rc.name, coord, len(want), time.Since(killed).Round(time.Millisecond), l.Stats())
		kafkatest.Node(t, nodes, kafkactl.Start, int(coord))
	}
	if err := stop(); err != nil {
		t.Fatalf("the loop ended with %v; it should have carried on until stopped", err)
	}
	committed := kafkatest.Read(t, brokers, out, kafkatest.ReadCommitted)
	kafkatest.ExactlyOnce(t, committed, want)
	t.Logf("%d records copied exactly once; %d were in aborted transactions; producer recreated %d times",
		len(committed), len(kafkatest.Read(t, brokers, out, kafkatest.ReadUncommitted))-len(committed), l.Stats().ProducerRecreated)
}

// sharedCoordinatorGroup returns a group name, prefix-N, whose group
// coordinator also coordinates the transactions of its loop (baseConfig's
// transactional id, group + "-0").
func sharedCoordinatorGroup(t *testing.T, brokers, prefix string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for i := range 100 {
		g := prefix + "-" + strconv.Itoa(i)
		gc, err := kafkatx.GroupCoordinator(ctx, brokers, g)
		if err != nil {
			t.Fatal(err)
		}
		tc, err := kafkatx.TransactionCoordinator(ctx, brokers, g+"-0")
		if err != nil {
			t.Fatal(err)
		}
		if gc == tc {
			return g
		}
	}
	t.Fatal("no group among 100 shares its coordinator with its transactions")
	return ""
}
