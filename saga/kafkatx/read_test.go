package kafkatx_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestReadPartitionsWaitsForATransactionBelowTheEnd: a transaction whose
// records are in the log when ReadPartitions starts must be waited for and
// read once committed, not read around. Reading only to the last stable
// offset (a read_committed client's idea of the end) lost the orchestrator
// the snapshots of a transaction whose commit was decided but whose marker
// was not yet written, while its input offsets already counted: in the
// 3-node failover test, sagas went back a state and sent commands twice.
func TestReadPartitionsWaitsForATransactionBelowTheEnd(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	topic := kafkatest.Topic(t, brokers, "state", 1)
	kafkatest.Produce(t, brokers, []kafkatx.Message{kafkatx.NewMessage(topic, []byte("k"), []byte("before"))})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := openTransaction(ctx, t, brokers, "read-test-"+strconv.FormatInt(time.Now().UnixNano(), 36), 60_000,
		topic, []byte("k"), []byte("in the open transaction"))

	read := make(chan []string, 1)
	go func() {
		var vals []string
		err := kafkatx.ReadPartitions(ctx, brokers, topic, []int32{0}, func(r kafkatx.Record) error {
			vals = append(vals, string(r.Value))
			return nil
		})
		if err != nil {
			vals = append(vals, "error: "+err.Error())
		}
		read <- vals
	}()
	select {
	case vals := <-read:
		t.Fatalf("ReadPartitions returned %q while a transaction below the end was open", vals)
	case <-time.After(2 * time.Second):
	}
	if err := p.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case vals := <-read:
		if want := []string{"before", "in the open transaction"}; !slices.Equal(vals, want) {
			t.Fatalf("read %q, want %q", vals, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ReadPartitions did not return within 30s of the commit")
	}
}

// openTransaction starts a transactional producer with id tid, begins a
// transaction and writes one record (key, value) to topic[0] in it, acked
// but not committed; the caller commits, aborts or leaves it open. The
// producer is closed when the test ends.
func openTransaction(ctx context.Context, t *testing.T, brokers, tid string, timeoutMs int, topic string, key, value []byte) *kafka.Producer {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{"bootstrap.servers": brokers, "transactional.id": tid,
		"transaction.timeout.ms": timeoutMs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	if err := p.InitTransactions(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	delivered := make(chan kafka.Event, 1)
	if err := p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: 0},
		Key: key, Value: value}, delivered); err != nil {
		t.Fatal(err)
	}
	if m := (<-delivered).(*kafka.Message); m.TopicPartition.Error != nil {
		t.Fatalf("delivery: %v", m.TopicPartition.Error)
	}
	return p
}

// TestFollowSinceSaysWhenItCaughtUp: caughtUp comes once, after fn got every
// record the topics held when the follow began, also when a partition ends
// in a transaction marker (no record at the end offset) and when a topic is
// empty; records that come later do not call it again. The orders API's
// /readyz waits for it.
func TestFollowSinceSaysWhenItCaughtUp(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	full := kafkatest.Topic(t, brokers, "follow-full", 2)
	empty := kafkatest.Topic(t, brokers, "follow-empty", 2)
	var msgs []kafkatx.Message
	for i := range 10 {
		msgs = append(msgs, kafkatx.NewMessage(full, []byte(strconv.Itoa(i)), []byte("v"+strconv.Itoa(i))))
	}
	kafkatest.Produce(t, brokers, msgs)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p := openTransaction(ctx, t, brokers, "follow-test-"+strconv.FormatInt(time.Now().UnixNano(), 36), 60_000,
		full, []byte("k"), []byte("committed"))
	if err := p.CommitTransaction(ctx); err != nil {
		t.Fatal(err)
	}

	seen := make(chan string, 100)
	caught := make(chan int, 10)
	var n int // read by the callbacks only, which run on one goroutine
	done := make(chan error, 1)
	go func() {
		done <- kafkatx.FollowSince(ctx, brokers, []string{full, empty}, nil, func() { caught <- n }, func(r kafkatx.Record) {
			n++
			seen <- string(r.Value)
		})
	}()
	select {
	case got := <-caught:
		if got != 11 {
			t.Fatalf("caught up after %d records, want the 11 the topics held", got)
		}
	case err := <-done:
		t.Fatalf("follow ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("not caught up within 30s (%d records read)", len(seen))
	}
	kafkatest.Produce(t, brokers, []kafkatx.Message{kafkatx.NewMessage(full, []byte("k"), []byte("later"))})
	deadline := time.After(30 * time.Second)
	for v := ""; v != "later"; {
		select {
		case v = <-seen:
		case <-deadline:
			t.Fatal("the later record was not followed within 30s")
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if extra := len(caught); extra != 0 {
		t.Fatalf("caughtUp called %d more times", extra)
	}
}
