package kafkatx

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf16"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// Topic names from docs/design.md. Every topic has the same partition count and
// every record is keyed by the saga id, so one saga lives on one partition
// number everywhere.
const (
	TopicOrderEvents      = "orders.events"
	TopicStockCommands    = "stock.commands"
	TopicStockReplies     = "stock.replies"
	TopicPaymentCommands  = "payment.commands"
	TopicPaymentReplies   = "payment.replies"
	TopicSagaState        = "saga.state"
	TopicSagaDeadLetter   = "saga.deadletter"
	TopicSagaControl      = "saga.control"
	probeTopic            = "_sagaflow.probe"
	defaultAdminTimeoutMs = 30_000
)

// TopicSpec describes a topic to create.
type TopicSpec struct {
	Name       string
	Partitions int
	// Replication 0 means min(3, number of brokers).
	Replication int
	// Config holds topic-level settings, e.g. cleanup.policy=compact.
	Config map[string]string
}

// SagaflowTopics returns the topics of docs/design.md with the given partition
// count and the default retentions (DefaultCommandRetention,
// DefaultEventRetention).
func SagaflowTopics(partitions int) []TopicSpec {
	return SagaflowTopicsRetaining(partitions, DefaultCommandRetention, DefaultEventRetention)
}

// DefaultCommandRetention is how long the command topics keep a command. The
// participants' dedup records must outlive it (see docs/design.md, "Bounded
// state"): a replay from any retained offset is then deduplicated.
const DefaultCommandRetention = time.Hour

// DefaultEventRetention is how long the other topics that are not compacted
// (orders.events, the reply topics, saga.control and saga.deadletter) keep
// a record: a week, Kafka's own default, set on the topics so that the
// bound holds on a cluster whose default is longer or unlimited. An
// OrderPlaced the API acknowledged waits on orders.events this long for an
// orchestrator, and a dead letter this long for an operator.
const DefaultEventRetention = 7 * 24 * time.Hour

// SagaflowTopicsRetaining is SagaflowTopics with the command topics keeping
// their records for commandRetention and the other topics that are not
// compacted for eventRetention: every topic is bounded by a window of its
// own or by compaction.
//
// saga.state is compacted: only the newest snapshot of each saga matters for
// a restore, and an ended saga's tombstone removes it altogether. Segments
// roll every 10 minutes (the active segment is never compacted, so without
// that a quiet topic would keep its history for a week), the cleaner starts
// once 10% of the log is dirty, and tombstones stay an hour after
// compaction, long enough for every reader to have seen them.
func SagaflowTopicsRetaining(partitions int, commandRetention, eventRetention time.Duration) []TopicSpec {
	names := []string{TopicOrderEvents, TopicStockReplies, TopicPaymentReplies, TopicSagaDeadLetter, TopicSagaControl}
	specs := make([]TopicSpec, 0, len(names)+3)
	for _, n := range names {
		specs = append(specs, TopicSpec{Name: n, Partitions: partitions, Config: retaining(eventRetention)})
	}
	specs = append(specs,
		TopicSpec{Name: TopicStockCommands, Partitions: partitions, Config: retaining(commandRetention)},
		TopicSpec{Name: TopicPaymentCommands, Partitions: partitions, Config: retaining(commandRetention)})
	return append(specs, TopicSpec{Name: TopicSagaState, Partitions: partitions,
		Config: map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "60000",
			"segment.ms": "600000", "min.cleanable.dirty.ratio": "0.1", "delete.retention.ms": "3600000"}})
}

func retaining(d time.Duration) map[string]string {
	return map[string]string{"retention.ms": fmt.Sprint(d.Milliseconds())}
}

// CreateTopics creates the topics that do not exist yet. An existing topic is
// left as it is, even with another partition count: changing the count would
// move saga ids to other partitions under running instances.
func CreateTopics(ctx context.Context, brokers string, topics []TopicSpec) error {
	if len(topics) == 0 {
		return nil // confluent-kafka-go panics on an empty list
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	md, err := ac.GetMetadata(nil, false, timeoutMs(ctx, defaultAdminTimeoutMs))
	if err != nil {
		return fmt.Errorf("kafkatx: metadata from %s: %w", brokers, err)
	}
	specs := make([]kafka.TopicSpecification, 0, len(topics))
	for _, t := range topics {
		rf := t.Replication
		if rf == 0 {
			rf = min(3, len(md.Brokers))
		}
		specs = append(specs, kafka.TopicSpecification{Topic: t.Name, NumPartitions: t.Partitions,
			ReplicationFactor: rf, Config: t.Config})
	}
	res, err := ac.CreateTopics(ctx, specs, kafka.SetAdminOperationTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("kafkatx: create topics: %w", err)
	}
	var errs []error
	var existing []kafka.ConfigResource
	for i, r := range res {
		switch c := r.Error.Code(); {
		case c == kafka.ErrTopicAlreadyExists && len(topics[i].Config) > 0:
			// Settings are ours to keep true (retention, compaction); the
			// partition count is not, see above.
			cr := kafka.ConfigResource{Type: kafka.ResourceTopic, Name: r.Topic}
			for k, v := range topics[i].Config {
				cr.Config = append(cr.Config, kafka.ConfigEntry{Name: k, Value: v, IncrementalOperation: kafka.AlterConfigOpTypeSet})
			}
			existing = append(existing, cr)
		case c != kafka.ErrNoError && c != kafka.ErrTopicAlreadyExists:
			errs = append(errs, fmt.Errorf("%s: %w", r.Topic, r.Error))
		}
	}
	if len(existing) > 0 {
		ares, err := ac.IncrementalAlterConfigs(ctx, existing)
		if err != nil {
			errs = append(errs, fmt.Errorf("alter topic settings: %w", err))
		}
		for _, r := range ares {
			if r.Error.Code() != kafka.ErrNoError {
				errs = append(errs, fmt.Errorf("%s settings: %w", r.Name, r.Error))
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("kafkatx: create topics: %w", errors.Join(errs...))
	}
	return nil
}

// PartitionCounts returns the partition count of each of the named topics
// that exists. CreateTopics keeps an existing topic's count, so this is how
// a caller learns what it got.
func PartitionCounts(ctx context.Context, brokers string, names []string) (map[string]int, error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return nil, fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	md, err := ac.GetMetadata(nil, true, timeoutMs(ctx, defaultAdminTimeoutMs))
	if err != nil {
		return nil, fmt.Errorf("kafkatx: metadata from %s: %w", brokers, err)
	}
	counts := make(map[string]int, len(names))
	for _, n := range names {
		if t, ok := md.Topics[n]; ok && t.Error.Code() == kafka.ErrNoError {
			counts[n] = len(t.Partitions)
		}
	}
	return counts, nil
}

// Ping checks that the cluster at brokers answers a metadata request: cheap
// enough for a readiness endpoint, unlike Probe.
func Ping(ctx context.Context, brokers string) error {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	md, err := ac.GetMetadata(nil, false, timeoutMs(ctx, 5_000))
	if err != nil {
		return fmt.Errorf("kafkatx: metadata from %s: %w", brokers, err)
	}
	if len(md.Brokers) == 0 {
		return fmt.Errorf("kafkatx: %s answered without brokers", brokers)
	}
	return nil
}

// Probe checks that the cluster at brokers is usable for this project, not
// merely listening: it reads metadata, commits one transactional record and
// reads it back with read_committed. Each call uses a fresh transactional id,
// so probes never fence each other.
func Probe(ctx context.Context, brokers string) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
	}
	if err := CreateTopics(ctx, brokers, []TopicSpec{{Name: probeTopic, Partitions: 1}}); err != nil {
		return err
	}
	nonce := randomHex(8)
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers": brokers,
		"transactional.id":  "_sagaflow.probe-" + nonce,
		// The broker's minimum; a probe that dies must not hold the
		// partition's stable offset back for long.
		"transaction.timeout.ms": 10_000,
	})
	if err != nil {
		return fmt.Errorf("kafkatx: probe producer: %w", err)
	}
	defer p.Close()
	go func() {
		for range p.Events() {
		}
	}()
	if err := p.InitTransactions(ctx); err != nil {
		return fmt.Errorf("kafkatx: probe init transactions: %w", err)
	}
	if err := p.BeginTransaction(); err != nil {
		return fmt.Errorf("kafkatx: probe begin: %w", err)
	}
	topic := probeTopic
	delivered := make(chan kafka.Event, 1)
	if err := p.Produce(&kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &topic, Partition: 0},
		Value: []byte(nonce)}, delivered); err != nil {
		return fmt.Errorf("kafkatx: probe produce: %w", err)
	}
	if err := p.CommitTransaction(ctx); err != nil {
		return fmt.Errorf("kafkatx: probe commit: %w", err)
	}
	var offset kafka.Offset
	select {
	case ev := <-delivered:
		m := ev.(*kafka.Message)
		if m.TopicPartition.Error != nil {
			return fmt.Errorf("kafkatx: probe delivery: %w", m.TopicPartition.Error)
		}
		offset = m.TopicPartition.Offset
	case <-ctx.Done():
		return fmt.Errorf("kafkatx: probe delivery: %w", ctx.Err())
	}
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           "_sagaflow.probe",
		"isolation.level":    "read_committed",
		"enable.auto.commit": false,
	})
	if err != nil {
		return fmt.Errorf("kafkatx: probe consumer: %w", err)
	}
	defer func() { _ = closeWithin(c, readerCloseTimeout) }()
	if err := c.Assign([]kafka.TopicPartition{{Topic: &topic, Partition: 0, Offset: offset}}); err != nil {
		return fmt.Errorf("kafkatx: probe assign: %w", err)
	}
	for ctx.Err() == nil {
		m, err := c.ReadMessage(200 * time.Millisecond)
		if err != nil {
			if ke, ok := kafkaErr(err); ok && ke.IsTimeout() {
				continue
			}
			return fmt.Errorf("kafkatx: probe read: %w", err)
		}
		if string(m.Value) == nonce {
			return nil
		}
	}
	return fmt.Errorf("kafkatx: probe read back: %w", ctx.Err())
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// timeoutMs converts ctx's deadline to the milliseconds librdkafka calls take,
// with def when ctx has none.
func timeoutMs(ctx context.Context, def int) int {
	if d, ok := ctx.Deadline(); ok {
		return max(1, int(time.Until(d).Milliseconds()))
	}
	return def
}

// TopicIdentity returns the id of the cluster and of topic: a topic deleted
// and created again under its name gets a new id, so what was learnt of the
// old one (a restore checkpoint) is told apart from the new.
func TopicIdentity(ctx context.Context, brokers, topic string) (cluster, topicID string, err error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return "", "", fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, defaultAdminTimeoutMs*time.Millisecond)
		defer cancel()
	}
	if cluster, err = ac.ClusterID(ctx); err != nil {
		return "", "", fmt.Errorf("kafkatx: cluster id: %w", err)
	}
	res, err := ac.DescribeTopics(ctx, kafka.NewTopicCollectionOfTopicNames([]string{topic}))
	if err != nil {
		return "", "", fmt.Errorf("kafkatx: describe %s: %w", topic, err)
	}
	if len(res.TopicDescriptions) != 1 || res.TopicDescriptions[0].Error.Code() != kafka.ErrNoError {
		return "", "", fmt.Errorf("kafkatx: describe %s: %v", topic, res.TopicDescriptions)
	}
	return cluster, res.TopicDescriptions[0].TopicID.String(), nil
}

// Partitions returns the partition numbers of topic.
func Partitions(ctx context.Context, brokers, topic string) ([]int32, error) {
	tm, err := topicMetadata(ctx, brokers, topic)
	if err != nil {
		return nil, err
	}
	out := make([]int32, 0, len(tm.Partitions))
	for _, p := range tm.Partitions {
		out = append(out, p.ID)
	}
	return out, nil
}

// Leader returns the broker id of the leader of one partition of topic.
func Leader(ctx context.Context, brokers, topic string, partition int32) (int32, error) {
	tm, err := topicMetadata(ctx, brokers, topic)
	if err != nil {
		return 0, err
	}
	for _, p := range tm.Partitions {
		if p.ID == partition {
			return p.Leader, nil
		}
	}
	return 0, fmt.Errorf("kafkatx: topic %s has no partition %d", topic, partition)
}

// TransactionCoordinator returns the id of the broker that coordinates the
// transactions of transactionalID, and GroupCoordinator the one that
// coordinates a consumer group (and takes its transactional offset
// commits). Kafka places each by the key's Java hashCode over the
// partitions of its internal topic, and that partition's leader
// coordinates. They answer once the topic exists. The failover tests kill
// these brokers mid-transaction.
func TransactionCoordinator(ctx context.Context, brokers, transactionalID string) (int32, error) {
	return coordinator(ctx, brokers, "__transaction_state", transactionalID)
}

// GroupCoordinator: see TransactionCoordinator.
func GroupCoordinator(ctx context.Context, brokers, group string) (int32, error) {
	return coordinator(ctx, brokers, "__consumer_offsets", group)
}

func coordinator(ctx context.Context, brokers, topic, key string) (int32, error) {
	tm, err := topicMetadata(ctx, brokers, topic)
	if err != nil {
		return 0, err
	}
	if len(tm.Partitions) == 0 {
		return 0, fmt.Errorf("kafkatx: %s has no partitions", topic)
	}
	want := int32(javaAbs(javaHashCode(key)) % int32(len(tm.Partitions)))
	for _, p := range tm.Partitions {
		if p.ID == want {
			return p.Leader, nil
		}
	}
	return 0, fmt.Errorf("kafkatx: %s has no partition %d", topic, want)
}

// javaHashCode is Java's String.hashCode: s[0]*31^(n-1) + ... + s[n-1] over
// UTF-16 code units, in int32 arithmetic.
func javaHashCode(s string) int32 {
	var h int32
	for _, u := range utf16.Encode([]rune(s)) {
		h = 31*h + int32(u)
	}
	return h
}

// javaAbs is Kafka's Utils.abs: the minimum int maps to 0, not to itself.
func javaAbs(n int32) int32 {
	if n == math.MinInt32 {
		return 0
	}
	if n < 0 {
		return -n
	}
	return n
}

func topicMetadata(ctx context.Context, brokers, topic string) (kafka.TopicMetadata, error) {
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return kafka.TopicMetadata{}, fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	md, err := ac.GetMetadata(&topic, false, timeoutMs(ctx, defaultAdminTimeoutMs))
	if err != nil {
		return kafka.TopicMetadata{}, fmt.Errorf("kafkatx: metadata of %s: %w", topic, err)
	}
	tm, ok := md.Topics[topic]
	if !ok || tm.Error.Code() != kafka.ErrNoError {
		return kafka.TopicMetadata{}, fmt.Errorf("kafkatx: topic %s: %v (create the topics first: sagaflow topics)", topic, tm.Error)
	}
	return tm, nil
}

// DeleteTopics deletes topics (the chaos suite removes a passed run's own).
func DeleteTopics(ctx context.Context, brokers string, topics []string) error {
	if len(topics) == 0 {
		return nil
	}
	ac, err := kafka.NewAdminClient(&kafka.ConfigMap{"bootstrap.servers": brokers})
	if err != nil {
		return fmt.Errorf("kafkatx: admin client: %w", err)
	}
	defer ac.Close()
	res, err := ac.DeleteTopics(ctx, topics, kafka.SetAdminOperationTimeout(30*time.Second))
	if err != nil {
		return fmt.Errorf("kafkatx: delete topics: %w", err)
	}
	var errs []error
	for _, r := range res {
		if r.Error.Code() != kafka.ErrNoError && r.Error.Code() != kafka.ErrUnknownTopicOrPart {
			errs = append(errs, fmt.Errorf("kafkatx: delete %s: %w", r.Topic, r.Error))
		}
	}
	return errors.Join(errs...)
}
