package kafkatx

import (
	"context"
	"fmt"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
)

// ReadPartitions calls fn for every committed record of the given partitions
// of topic, from the beginning up to the end each partition had when the call
// started. It reads read_committed and does not return before it has passed
// that end, so a transaction still open below it is waited for, never read
// around. The orchestrator restores its snapshots with it.
//
// The end is the high watermark, not the last stable offset that a
// read_committed client's ListOffsets answers: a transaction whose commit
// was decided but whose marker is not yet on this partition sits above the
// last stable offset. Kafka writes a transaction's markers to each of its
// partitions separately, so on a cluster the marker on the group's offsets
// can land first: the input offsets of a restore then already count that
// transaction while its snapshots were not yet readable, and a restore that
// stopped at the stable offset lost them (the 3-node failover test found
// this: state went back, commands went out twice).
func ReadPartitions(ctx context.Context, brokers, topic string, partitions []int32, fn func(Record) error) error {
	from := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		from[p] = -1
	}
	_, err := ReadPartitionsFrom(ctx, brokers, topic, from, fn)
	return err
}

// ReadPartitionsFrom is ReadPartitions from the given offset of each
// partition (-1: the beginning). It returns the end it read up to on each
// partition: every committed record below it was passed to fn, or lay below
// the start. A start below the log start offset, or past the end, is an
// error wrapping ErrOffsetOutOfRange: what the caller knew of the partition
// is older than the log, or from another log.
func ReadPartitionsFrom(ctx context.Context, brokers, topic string, from map[int32]int64, fn func(Record) error) (map[int32]int64, error) {
	if len(from) == 0 {
		return nil, nil
	}
	partitions := make([]int32, 0, len(from))
	for p := range from {
		partitions = append(partitions, p)
	}
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":    brokers,
		"group.id":             "_sagaflow.reader", // never joins: partitions are assigned by hand
		"isolation.level":      "read_committed",
		"enable.auto.commit":   false,
		"enable.partition.eof": true,
	})
	if err != nil {
		return nil, fmt.Errorf("kafkatx: reader: %w", err)
	}
	defer func() { _ = closeWithin(c, readerCloseTimeout) }()
	marks, err := highWatermarks(ctx, brokers, topic, partitions)
	if err != nil {
		return nil, err
	}
	ends, read := map[int32]int64{}, map[int32]int64{}
	var assign []kafka.TopicPartition
	for _, p := range partitions {
		m, start := marks[p], kafka.OffsetBeginning
		read[p] = m.hi
		if off := from[p]; off >= 0 {
			if off < m.lo || off > m.hi {
				return nil, fmt.Errorf("kafkatx: read %s[%d] from %d: %w (the log holds %d to %d)", topic, p, off, ErrOffsetOutOfRange, m.lo, m.hi)
			}
			start = kafka.Offset(off)
			m.lo = off
		}
		if m.hi > m.lo {
			ends[p] = m.hi
			assign = append(assign, kafka.TopicPartition{Topic: &topic, Partition: p, Offset: start})
		}
	}
	if len(assign) == 0 {
		return read, nil
	}
	if err := c.Assign(assign); err != nil {
		return nil, fmt.Errorf("kafkatx: assign %s: %w", topic, err)
	}
	for len(ends) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("kafkatx: read %s: %w", topic, err)
		}
		switch ev := c.Poll(100).(type) {
		case *kafka.Message:
			p, off := ev.TopicPartition.Partition, int64(ev.TopicPartition.Offset)
			end, open := ends[p]
			if !open {
				continue
			}
			if off < end {
				if err := fn(toRecord(ev)); err != nil {
					return nil, err
				}
			}
			if off+1 >= end {
				delete(ends, p)
			}
		case kafka.PartitionEOF:
			// A read_committed fetch ends at the last stable offset; past
			// the recorded end means nothing below it is pending.
			if end, open := ends[ev.Partition]; open && int64(ev.Offset) >= end {
				delete(ends, ev.Partition)
			}
		case kafka.Error:
			if ev.IsFatal() {
				return nil, fmt.Errorf("kafkatx: read %s: %w", topic, ev)
			}
		case nil:
			// The last records may be transaction markers, which are never
			// delivered; the position tells when they are passed.
			for p, end := range ends {
				pos, err := c.Position([]kafka.TopicPartition{{Topic: &topic, Partition: p}})
				if err == nil && len(pos) == 1 && int64(pos[0].Offset) >= end {
					delete(ends, p)
				}
			}
		}
	}
	return read, nil
}

// readerCloseTimeout bounds the close of every consumer here that reads by
// hand (assigned partitions, no group membership, no committed offsets):
// nothing is lost by leaving a hung close behind. librdkafka's close can
// wait for good on a broker that was killed; a chaos suite's follower sat
// 17 minutes in it beside CPU hogs, and the orchestrator's restore and the
// chaos checks read through the same kind of client.
const readerCloseTimeout = 10 * time.Second

type watermarks struct{ lo, hi int64 }

// highWatermarks returns the log start and the high watermark of each
// partition. It asks as a read_uncommitted client: librdkafka's watermark
// query uses the client's isolation level, and a read_committed one is
// answered the last stable offset.
func highWatermarks(ctx context.Context, brokers, topic string, partitions []int32) (map[int32]watermarks, error) {
	newClient := func() (*kafka.Consumer, error) {
		c, err := kafka.NewConsumer(&kafka.ConfigMap{
			"bootstrap.servers": brokers,
			"group.id":          "_sagaflow.reader",
			"isolation.level":   "read_uncommitted",
		})
		if err != nil {
			return nil, fmt.Errorf("kafkatx: reader: %w", err)
		}
		return c, nil
	}
	c, err := newClient()
	if err != nil {
		return nil, err
	}
	defer func() {
		if c != nil {
			_ = closeWithin(c, readerCloseTimeout)
		}
	}()
	// While a broker restarts, the client's metadata can miss the partition
	// or its leader for a moment ("Local: Unknown partition"): a restore
	// that gave up on that exited the process in a long chaos run. Such
	// answers are asked again until the context's deadline, or 30 s, each
	// time by a new client. The same client could answer the same for
	// good: librdkafka takes a cached leader whose broker it has dropped
	// (it left the metadata while down) for a permanent error and asks for
	// no new metadata, and its cache lives for metadata.max.age.ms, 15
	// minutes. A chaos run's orchestrator exited on that after a broker
	// kill, 30 s of asking again notwithstanding.
	end := time.Now().Add(30 * time.Second)
	if d, ok := ctx.Deadline(); ok {
		end = d
	}
	out := make(map[int32]watermarks, len(partitions))
	for _, p := range partitions {
		for {
			wait := min(time.Until(end), 10*time.Second)
			lo, hi, err := c.QueryWatermarkOffsets(topic, p, max(1, int(wait.Milliseconds())))
			if err == nil {
				out[p] = watermarks{lo, hi}
				break
			}
			if !metadataLags(err) || ctx.Err() != nil || time.Now().After(end) {
				return nil, fmt.Errorf("kafkatx: watermarks of %s[%d]: %w", topic, p, err)
			}
			sleep(ctx, 200*time.Millisecond)
			// The old client closes on the side: a hung close (see
			// readerCloseTimeout) would otherwise eat the time left for
			// asking again, and this one has nothing to lose.
			go func(old *kafka.Consumer) { _ = old.Close() }(c)
			if c, err = newClient(); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// stableEnd asks c, a read_committed client, for the end of a partition (its
// last stable offset), again while the partition's leader is being elected,
// for at most 30 s or until ctx ends. A CI run beside CPU hogs had sagaflow
// bench's floor, whose topic had just been made, fail on "Not leader for
// partition". The follower's own client asks, not a new one: the query
// connects it to the partition's leader, and its first fetch after Assign
// then goes out at once (with a new client, in 2 of 46 short bench runs the
// first order was seen about 340 ms late; see Tail).
func stableEnd(ctx context.Context, c *kafka.Consumer, topic string, p int32) (int64, error) {
	end := time.Now().Add(30 * time.Second)
	for {
		_, high, err := c.QueryWatermarkOffsets(topic, p, timeoutMs(ctx, 10_000))
		if err == nil {
			return high, nil
		}
		if !metadataLags(err) || ctx.Err() != nil || time.Now().After(end) {
			return 0, fmt.Errorf("kafkatx: end of %s[%d]: %w", topic, p, err)
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

func toRecord(m *kafka.Message) Record {
	r := Record{Topic: *m.TopicPartition.Topic, Partition: m.TopicPartition.Partition,
		Offset: int64(m.TopicPartition.Offset), Key: m.Key, Value: m.Value, Timestamp: m.Timestamp}
	if len(m.Headers) > 0 {
		r.Headers = make([]Header, len(m.Headers))
		for i, h := range m.Headers {
			r.Headers[i] = Header{Key: h.Key, Value: h.Value}
		}
	}
	return r
}

// Follow calls fn for every committed record of topics, from the beginning
// and then as records arrive, until ctx is done. It joins no group: every
// reader sees every partition, which is what a read model that rebuilds its
// view from the log wants. fn runs on one goroutine, in order per partition.
func Follow(ctx context.Context, brokers string, topics []string, fn func(Record)) error {
	return follow(ctx, brokers, topics, false, nil, nil, nil, fn)
}

// FollowSince is Follow, except that a topic named in since is read from
// the first record at or after its time (Kafka's offsets for times) instead
// of from the beginning, and that caughtUp (when not nil) is called once,
// when every partition has been read to its end at least once: what the
// topics held when the follow began has all been passed to fn.
func FollowSince(ctx context.Context, brokers string, topics []string, since map[string]time.Time, caughtUp func(), fn func(Record)) error {
	return follow(ctx, brokers, topics, false, since, nil, caughtUp, fn)
}

// Tail is Follow from the end: it skips what the topics hold already, calls
// ready once it is positioned and its first fetch has had time to return
// (about 0.6 s after it starts; a record produced after that is seen
// without waiting out a fetch), then calls fn for every committed record
// that arrives, until ctx is done. For watchers such as `sagaflow bench`,
// which care about what they caused.
func Tail(ctx context.Context, brokers string, topics []string, ready func(), fn func(Record)) error {
	return follow(ctx, brokers, topics, true, nil, ready, nil, fn)
}

// followFetchWait is how long a follower's fetch waits at the broker for
// records (librdkafka's default, stated because ready depends on it).
const followFetchWait = 500 * time.Millisecond

// followMetadataRefresh is how often a follower asks for its topics'
// metadata (librdkafka's topic.metadata.refresh.interval.ms, 5 minutes by
// default): one small request, against a follower that stays stuck on a
// leader it dropped.
const followMetadataRefresh = 10 * time.Second

func follow(ctx context.Context, brokers string, topics []string, fromEnd bool, since map[string]time.Time, ready, caughtUp func(), fn func(Record)) error {
	c, err := kafka.NewConsumer(&kafka.ConfigMap{
		"bootstrap.servers":  brokers,
		"group.id":           "_sagaflow.follower", // never joins: partitions are assigned by hand
		"isolation.level":    "read_committed",
		"enable.auto.commit": false,
		// The end of a partition as read_committed sees it (its last
		// stable offset, past any transaction markers) is reported, so
		// caughtUp needs no offset arithmetic of its own.
		"enable.partition.eof": caughtUp != nil,
		"fetch.wait.max.ms":    int(followFetchWait.Milliseconds()),
		// A follower has no group to rejoin after a broker kill, and
		// librdkafka can keep a leader whose broker it dropped (see
		// highWatermarks) until this refresh asks again. In a failover
		// test beside CPU hogs, the orders read model's follower read
		// nothing for the three minutes after a broker kill (no saga
		// end reached the API, which refused every order as backlogged);
		// the default refresh is every 5 minutes. (librdkafka's issue
		// 5153 reports assigned consumers that stop after a broker
		// restart until they are made anew; if this refresh proves not
		// enough, that is the next step.)
		"topic.metadata.refresh.interval.ms": int(followMetadataRefresh.Milliseconds()),
	})
	if err != nil {
		return fmt.Errorf("kafkatx: follower: %w", err)
	}
	// Bounded: a follower is stopped and started again by its callers (the
	// chaos suite's, each time it is quiet), and one Close that hung after
	// a broker kill held a whole test run until its timeout.
	defer func() { _ = closeWithin(c, readerCloseTimeout) }()
	var assign []kafka.TopicPartition
	for _, t := range topics {
		parts, err := Partitions(ctx, brokers, t)
		if err != nil {
			return err
		}
		for _, p := range parts {
			off := kafka.OffsetBeginning
			if fromEnd {
				// The end now, not OffsetEnd, which is looked up later
				// and could skip records produced in between.
				high, err := stableEnd(ctx, c, t, p)
				if err != nil {
					return err
				}
				off = kafka.Offset(high)
			}
			assign = append(assign, kafka.TopicPartition{Topic: &t, Partition: p, Offset: off})
		}
	}
	if len(since) > 0 {
		var ask []kafka.TopicPartition
		for _, tp := range assign {
			if at, ok := since[*tp.Topic]; ok {
				ask = append(ask, kafka.TopicPartition{Topic: tp.Topic, Partition: tp.Partition, Offset: kafka.Offset(at.UnixMilli())})
			}
		}
		found, err := c.OffsetsForTimes(ask, timeoutMs(ctx, 10_000))
		if err != nil {
			return fmt.Errorf("kafkatx: offsets for times: %w", err)
		}
		for _, f := range found {
			for i := range assign {
				if *assign[i].Topic == *f.Topic && assign[i].Partition == f.Partition && f.Error == nil {
					assign[i].Offset = f.Offset
					if f.Offset < 0 {
						// Nothing that recent: start at the end as it is
						// now (not OffsetEnd, looked up later, which
						// could skip what comes in between).
						_, high, err := c.QueryWatermarkOffsets(*f.Topic, f.Partition, timeoutMs(ctx, 10_000))
						if err != nil {
							return fmt.Errorf("kafkatx: end of %s[%d]: %w", *f.Topic, f.Partition, err)
						}
						assign[i].Offset = kafka.Offset(high)
					}
				}
			}
		}
	}
	if err := c.Assign(assign); err != nil {
		return fmt.Errorf("kafkatx: assign: %w", err)
	}
	// librdkafka keeps one fetch in flight per broker, and a partition
	// that becomes fetchable while one is out joins the next: the first
	// fetch after Assign may leave some partitions out, and a record on
	// them then waits for that fetch to come back, up to
	// fetch.wait.max.ms. So ready, which tells a watcher that what it
	// causes next is seen at once, waits out one such fetch. (sagaflow
	// bench's first order of a run took 501 ms in some runs, its others
	// tens of milliseconds.) A timer calls it, not the poll loop: fn may
	// block until ready has been called (bench's floor hands records to a
	// reader that starts then).
	if ready != nil {
		t := time.AfterFunc(followFetchWait+100*time.Millisecond, ready)
		defer t.Stop()
	}
	behind := map[TopicPartition]bool{}
	for _, tp := range assign {
		behind[TopicPartition{*tp.Topic, tp.Partition}] = true
	}
	if caughtUp != nil && len(behind) == 0 {
		caughtUp()
	}
	for ctx.Err() == nil {
		switch ev := c.Poll(100).(type) {
		case *kafka.Message:
			fn(toRecord(ev))
		case kafka.PartitionEOF:
			if len(behind) == 0 {
				break // caught up already; EOF comes again at every new end
			}
			delete(behind, TopicPartition{*ev.Topic, ev.Partition})
			if len(behind) == 0 {
				caughtUp()
			}
		case kafka.Error:
			if ev.IsFatal() {
				return fmt.Errorf("kafkatx: follow: %w", ev)
			}
		}
	}
	return nil
}
