// Package kafkatest gives tests a Kafka: the real broker `make up` starts
// (SAGAFLOW_KAFKA, default 127.0.0.1:19092) or an embedded one
// (kafkatx.StartEmbedded), throwaway topics, and readers that see what a
// read_committed consumer sees.
//
// Outside CI a test skips with a clear message when no real broker answers;
// under CI=true it fails, because a suite that silently skipped proves
// nothing.
package kafkatest

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// DefaultBrokers is where `make up` puts the broker.
const DefaultBrokers = "127.0.0.1:19092"

var (
	probeOnce sync.Once
	probeErr  error
)

// EmbeddedEnv is the SAGAFLOW_KAFKA value that makes Brokers answer with an
// embedded broker, so a package whose tests only call Brokers can run without
// a real Kafka: SAGAFLOW_KAFKA=embedded go test ./...
const EmbeddedEnv = "embedded"

var (
	sharedOnce sync.Once
	shared     *kafkatx.EmbeddedBroker
	sharedErr  error
)

// Brokers returns the bootstrap list of a broker that passed kafkatx.Probe:
// the real broker at SAGAFLOW_KAFKA, or, when SAGAFLOW_KAFKA=embedded, one
// embedded broker shared by every test of the process (tests keep apart by
// their topic and group names, as they do on the real broker).
func Brokers(t testing.TB) string {
	t.Helper()
	b := os.Getenv("SAGAFLOW_KAFKA")
	if b == EmbeddedEnv {
		sharedOnce.Do(func() { shared, sharedErr = kafkatx.StartEmbedded(EmbeddedPartitions) })
		if sharedErr != nil {
			t.Fatalf("SAGAFLOW_KAFKA=%s: %v", EmbeddedEnv, sharedErr)
		}
		return shared.Brokers()
	}
	if b == "" {
		b = DefaultBrokers
	}
	probeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		probeErr = kafkatx.Probe(ctx, b)
	})
	if probeErr != nil {
		msg := fmt.Sprintf("no usable Kafka at %s (run `make up`, or set SAGAFLOW_KAFKA): %v", b, probeErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return b
}

// EmbeddedPartitions is the partition count of the docs/design.md topics on the
// embedded brokers this package starts.
const EmbeddedPartitions = 4

// Embedded starts an embedded broker (kafkatx.StartEmbedded) for this test
// alone and closes it when the test ends. It listens on loopback TCP, so child
// processes the test starts can connect to it too.
func Embedded(t testing.TB) string {
	t.Helper()
	b, err := kafkatx.StartEmbedded(EmbeddedPartitions)
	if err != nil {
		t.Fatalf("embedded broker: %v", err)
	}
	t.Cleanup(b.Close)
	return b.Brokers()
}

var unsafe = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// Topic creates a fresh topic named after the test and deletes it when the
// test ends.
func Topic(t testing.TB, brokers, suffix string, partitions int) string {
	t.Helper()
	name := fmt.Sprintf("test.%s.%s.%d", unsafe.ReplaceAllString(t.Name(), "_"), suffix, time.Now().UnixNano())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkatx.CreateTopics(ctx, brokers, []kafkatx.TopicSpec{{Name: name, Partitions: partitions}}); err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() { deleteTopic(brokers, name) })
	return name
}

func deleteTopic(brokers, name string) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return
	}
	defer ac.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, _ = ac.DeleteTopics(ctx, []string{name})
}

// Produce writes msgs with an idempotent (not transactional) producer and
// fails the test unless every one is acknowledged.
func Produce(t testing.TB, brokers string, msgs []kafkatx.Message) {
	t.Helper()
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"enable.idempotence": true,
		"partitioner":        "murmur2_random",
		"linger.ms":          5,
	})
	if err != nil {
		t.Fatalf("producer: %v", err)
	}
	defer p.Close()
	done := make(chan kafka.Event, len(msgs))
	for i := range msgs {
		m := msgs[i]
		km := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &m.Topic, Partition: kafka.PartitionAny},
			Key: m.Key, Value: m.Value}
		for _, h := range m.Headers {
			km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
		for {
			err := p.Produce(km, done)
			if ke, ok := err.(kafka.Error); ok && ke.Code() == kafka.ErrQueueFull {
				p.Flush(100)
				continue
			}
			if err != nil {
				t.Fatalf("produce: %v", err)
			}
			break
		}
	}
	deadline := time.After(60 * time.Second)
	for range msgs {
		select {
		case ev := <-done:
			if m := ev.(*kafka.Message); m.TopicPartition.Error != nil {
				t.Fatalf("delivery: %v", m.TopicPartition.Error)
			}
		case <-deadline:
			t.Fatal("produce: deliveries not acknowledged within 60s")
		}
	}
}

// Isolation levels for Read.
const (
	ReadCommitted   = "read_committed"
	ReadUncommitted = "read_uncommitted"
)

// Read returns every record of topic up to the end of each partition as seen
// at the given isolation level. With read_committed the end is the last
// stable offset, so records of a transaction still open are not returned;
// callers read after the writers settled.
func Read(t testing.TB, brokers, topic, isolation string) []kafkatx.Record {
	t.Helper()
	recs, err := read(brokers, topic, isolation)
	if err != nil {
		t.Fatalf("read %s: %v", topic, err)
	}
	return recs
}

func read(brokers, topic, isolation string) ([]kafkatx.Record, error) {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":    brokers,
		"group.id":             "kafkatest-reader",
		"isolation.level":      isolation,
		"enable.auto.commit":   false,
		"enable.partition.eof": true,
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	// A topic created a moment ago may not be in every broker's metadata yet.
	var tm kafka.TopicMetadata
	for try := 0; ; try++ {
		md, err := c.GetMetadata(&topic, false, 10_000)
		if err != nil {
			return nil, err
		}
		tm = md.Topics[topic]
		if tm.Error.Code() == kafka.ErrNoError && len(tm.Partitions) > 0 {
			break
		}
		if try == 50 {
			return nil, fmt.Errorf("topic %s has no partitions: %v", topic, tm.Error)
		}
		time.Sleep(100 * time.Millisecond)
	}
	var parts []kafka.TopicPartition
	pending := map[int32]bool{}
	for _, p := range tm.Partitions {
		parts = append(parts, kafka.TopicPartition{Topic: &topic, Partition: p.ID, Offset: kafka.OffsetBeginning})
		pending[p.ID] = true
	}
	if err := c.Assign(parts); err != nil {
		return nil, err
	}
	var out []kafkatx.Record
	deadline := time.Now().Add(60 * time.Second)
	for len(pending) > 0 {
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("end of %d partitions not reached within 60s", len(pending))
		}
		switch ev := c.Poll(200).(type) {
		case *kafka.Message:
			r := kafkatx.Record{Topic: topic, Partition: ev.TopicPartition.Partition,
				Offset: int64(ev.TopicPartition.Offset), Key: ev.Key, Value: ev.Value, Timestamp: ev.Timestamp}
			for _, h := range ev.Headers {
				r.Headers = append(r.Headers, kafkatx.Header{Key: h.Key, Value: h.Value})
			}
			out = append(out, r)
		case kafka.PartitionEOF:
			delete(pending, ev.Partition)
		case kafka.Error:
			if ev.IsFatal() {
				return nil, ev
			}
		}
	}
	return out, nil
}

// CountValues counts each distinct record value.
func CountValues(recs []kafkatx.Record) map[string]int {
	n := make(map[string]int, len(recs))
	for _, r := range recs {
		n[string(r.Value)]++
	}
	return n
}

// ExactlyOnce fails the test unless every value in want appears exactly once
// in recs and nothing else does.
func ExactlyOnce(t testing.TB, recs []kafkatx.Record, want []string) {
	t.Helper()
	got := CountValues(recs)
	var lost, dup, extra []string
	for _, w := range want {
		switch got[w] {
		case 0:
			lost = append(lost, w)
		case 1:
		default:
			dup = append(dup, fmt.Sprintf("%s×%d", w, got[w]))
		}
		delete(got, w)
	}
	for v := range got {
		extra = append(extra, v)
	}
	if len(lost)+len(dup)+len(extra) > 0 {
		t.Fatalf("exactly-once violated over %d records: %d lost %s, %d duplicated %s, %d unexpected %s",
			len(want), len(lost), head(lost), len(dup), head(dup), len(extra), head(extra))
	}
}

func head(s []string) string {
	if len(s) > 10 {
		s = append(s[:10:10], "…")
	}
	return "[" + strings.Join(s, " ") + "]"
}

// WaitFor polls cond until it is true or the timeout passes, then fails the
// test with what. Polling with a deadline, never a bare sleep.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// CommittedOffsets returns the group's committed offsets for every partition
// of topic (-1 where none), read with require-stable semantics.
func CommittedOffsets(t testing.TB, brokers, group, topic string, partitions int) []int64 {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": group,
		"isolation.level": ReadCommitted, "enable.auto.commit": false})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer c.Close()
	var parts []kafka.TopicPartition
	for p := range partitions {
		parts = append(parts, kafka.TopicPartition{Topic: &topic, Partition: int32(p)})
	}
	got, err := c.Committed(parts, 30_000)
	if err != nil {
		t.Fatalf("committed offsets of %s: %v", group, err)
	}
	out := make([]int64, partitions)
	for _, p := range got {
		out[p.Partition] = int64(p.Offset)
	}
	return out
}

// HighWatermarks returns the end offset of every partition of topic.
func HighWatermarks(t testing.TB, brokers, topic string, partitions int) []int64 {
	t.Helper()
	c, err := kafka.NewConsumer(&kafka.ConfigMap{"bootstrap.servers": brokers, "group.id": "kafkatest-hw"})
	if err != nil {
		t.Fatalf("consumer: %v", err)
	}
	defer c.Close()
	out := make([]int64, partitions)
	for p := range partitions {
		_, hi, err := c.QueryWatermarkOffsets(topic, int32(p), 10_000)
		if err != nil {
			t.Fatalf("watermarks of %s[%d]: %v", topic, p, err)
		}
		out[p] = hi
	}
	return out
}
