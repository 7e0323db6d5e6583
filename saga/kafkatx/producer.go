package kafkatx

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/confluentinc/confluent-kafka-go/v2/kafka"
	"go.uber.org/zap"
)

// Producer sends records outside any transaction, idempotently (no
// duplicates from its own retries). For records whose duplicates are
// harmless or deduplicated downstream: timer ticks, an HTTP API whose
// requests carry an Idempotency-Key.
//
// It heals itself. The chaos suite found librdkafka's idempotent producer
// wedged after a broker was paused under load: records stayed queued, not one
// delivery report came for minutes, and every request of the orders API
// timed out until the process was restarted. So a producer that holds
// records and has had no delivery report for StallTimeout is replaced by a
// new one (a new producer id); the records of the old one are purged, and
// their senders told, so that a client retries. A duplicate that this may
// let through is what the downstream deduplication is for.
type Producer struct {
	brokers string
	log     *zap.Logger
	stall   time.Duration // StallTimeout; shorter in tests
	linger  time.Duration

	mu  sync.RWMutex
	cur generation

	lastReport atomic.Int64 // unix nanos of the last delivery report, or of the last replacement
	replaced   atomic.Int64
	stop       chan struct{}
	watching   chan struct{}  // closed when watch returns
	done       sync.WaitGroup // the events goroutines
}

// generation is one underlying producer; gone is closed when it is replaced,
// so that a sender waiting on one of its records stops waiting even if the
// purge's report never comes.
type generation struct {
	p    *kafka.Producer
	gone chan struct{}
}

// ErrReplaced is returned for a record whose producer was replaced before
// Kafka acknowledged it: it may or may not have been written.
var ErrReplaced = errors.New("kafkatx: the producer stalled and was replaced before the record was acknowledged")

// StallTimeout is how long a producer may hold records without any delivery
// report before it is replaced. A broker that is merely slow acknowledges
// something within it; a dead one gets a new producer every StallTimeout,
// which costs nothing.
const StallTimeout = 15 * time.Second

// ProducerOption tunes NewProducer.
type ProducerOption func(*Producer)

// WithLinger sets how long a record waits for more to join its request
// (librdkafka's linger.ms). Default 0: Send waits for one round trip to the
// broker and no more; concurrent sends still share requests while earlier
// ones are in flight. At 2ms an idle send took 3.0ms instead of 0.8ms here.
func WithLinger(d time.Duration) ProducerOption { return func(p *Producer) { p.linger = d } }

// NewProducer connects an idempotent producer to brokers.
func NewProducer(brokers string, log *zap.Logger, opts ...ProducerOption) (*Producer, error) {
	if log == nil {
		log = zap.NewNop()
	}
	pr := &Producer{brokers: brokers, log: log, stall: StallTimeout,
		stop: make(chan struct{}), watching: make(chan struct{})}
	for _, o := range opts {
		o(pr)
	}
	p, err := pr.connect()
	if err != nil {
		return nil, err
	}
	pr.cur = generation{p: p, gone: make(chan struct{})}
	pr.lastReport.Store(time.Now().UnixNano())
	go pr.watch()
	return pr, nil
}

func (pr *Producer) connect() (*kafka.Producer, error) {
	p, err := kafka.NewProducer(&kafka.ConfigMap{
		"bootstrap.servers":  pr.brokers,
		"enable.idempotence": true,
		"partitioner":        "murmur2_random",
		"linger.ms":          int(pr.linger.Milliseconds()),
		// Senders read a delivery report's error only; see the loop's
		// producer.
		"go.delivery.report.fields": "none",
		// A record nobody acknowledged within a minute is of no use to the
		// sender, which has long given up; the default (5 minutes) only
		// keeps a wedged producer's queue alive.
		"message.timeout.ms": 60_000,
	})
	if err != nil {
		return nil, fmt.Errorf("kafkatx: producer: %w", err)
	}
	pr.done.Add(1)
	go pr.events(p)
	return p, nil
}

// events hands each delivery report to its sender and logs client errors,
// until p is closed.
func (pr *Producer) events(p *kafka.Producer) {
	defer pr.done.Done()
	for ev := range p.Events() {
		switch e := ev.(type) {
		case *kafka.Message:
			pr.lastReport.Store(time.Now().UnixNano())
			if ack, ok := e.Opaque.(chan error); ok {
				ack <- e.TopicPartition.Error // buffered: never blocks
			}
		case kafka.Error:
			pr.log.Warn("producer error", zap.Error(e))
		}
	}
}

// watch replaces the producer when it stalls.
func (pr *Producer) watch() {
	defer close(pr.watching)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var busy busySince
	for {
		select {
		case <-pr.stop:
			return
		case <-t.C:
		}
		pr.mu.RLock()
		held := pr.cur.p.Len()
		pr.mu.RUnlock()
		quiet := busy.quiet(held, time.Unix(0, pr.lastReport.Load()), time.Now())
		if held == 0 || quiet < pr.stall {
			continue
		}
		p, err := pr.connect()
		if err != nil {
			pr.log.Warn("stalled producer not replaced", zap.Error(err))
			continue
		}
		pr.mu.Lock()
		old := pr.cur
		pr.cur = generation{p: p, gone: make(chan struct{})}
		pr.mu.Unlock()
		close(old.gone) // its senders answer now
		pr.lastReport.Store(time.Now().UnixNano())
		pr.replaced.Add(1)
		pr.log.Warn("producer stalled: no delivery report while holding records; replaced by a new one",
			zap.Int("records_held", held), zap.Duration("quiet", quiet))
		go retire(old.p)
	}
}

// busySince tells how long a producer has held records without a delivery
// report. The quiet time counts from the last report or from when the
// records were first seen, whichever is later: after an hour without traffic
// the last report is an hour old, and the first record sent then is not a
// stall (measured from the report alone, it was: the first order after a
// long idle spell got a 503).
type busySince struct{ at time.Time }

func (b *busySince) quiet(held int, lastReport, now time.Time) time.Duration {
	if held == 0 {
		b.at = time.Time{}
		return 0
	}
	if b.at.IsZero() {
		b.at = now
	}
	if lastReport.After(b.at) {
		return now.Sub(lastReport)
	}
	return now.Sub(b.at)
}

// retire purges a replaced producer's records and closes it once their
// reports are out (or after 10s).
func retire(p *kafka.Producer) {
	_ = p.Purge(kafka.PurgeQueue | kafka.PurgeInFlight | kafka.PurgeNonBlocking)
	for end := time.Now().Add(10 * time.Second); p.Len() > 0 && time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
	}
	p.Close()
}

// Replaced counts the stalled producers replaced so far.
func (pr *Producer) Replaced() int64 { return pr.replaced.Load() }

// Send produces m and waits until the broker acknowledged it.
func (pr *Producer) Send(ctx context.Context, m Message) error {
	km := &kafka.Message{TopicPartition: kafka.TopicPartition{Topic: &m.Topic, Partition: kafka.PartitionAny},
		Key: m.Key, Value: m.Value}
	if m.pinned {
		km.TopicPartition.Partition = m.partition
	}
	for _, h := range m.Headers {
		km.Headers = append(km.Headers, kafka.Header{Key: h.Key, Value: h.Value})
	}
	ack := make(chan error, 1)
	km.Opaque = ack
	var gen generation
	for {
		pr.mu.RLock()
		gen = pr.cur
		err := gen.p.Produce(km, nil)
		pr.mu.RUnlock()
		if ke, ok := kafkaErr(err); ok && ke.Code() == kafka.ErrQueueFull && ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err != nil {
			return fmt.Errorf("kafkatx: produce to %s: %w", m.Topic, err)
		}
		break
	}
	select {
	case err := <-ack:
		if ke, ok := kafkaErr(err); ok && (ke.Code() == kafka.ErrPurgeQueue || ke.Code() == kafka.ErrPurgeInflight) {
			return fmt.Errorf("kafkatx: produce to %s: %w: %w", m.Topic, ErrReplaced, err)
		}
		if err != nil {
			return fmt.Errorf("kafkatx: produce to %s: %w", m.Topic, err)
		}
		return nil
	case <-gen.gone:
		select {
		case err := <-ack: // acknowledged just before the replacement
			if err == nil {
				return nil
			}
		default:
		}
		return fmt.Errorf("kafkatx: produce to %s: %w", m.Topic, ErrReplaced)
	case <-ctx.Done():
		return fmt.Errorf("kafkatx: produce to %s: %w", m.Topic, ctx.Err())
	}
}

// Close waits up to 10s for records in flight, then closes.
func (pr *Producer) Close() {
	close(pr.stop)
	<-pr.watching // no replacement races the close
	pr.mu.Lock()
	p := pr.cur.p
	pr.mu.Unlock()
	p.Flush(10_000)
	p.Close()
	pr.done.Wait()
}
