package kafkatx_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// BenchmarkSagaShape is the order saga's Kafka traffic with nothing else:
// the same hops, topics, partitions and transactions as an order in
// docs/design.md, through the same Loop, but with handlers that only pass
// records on (no Redis, no snapshots to encode, no HTTP).
// Clients place "orders" in a closed loop, each waiting for its end event
// before the next, as `sagaflow bench -clients N` does. What it reaches is
// what Kafka's transactions allow on this broker and machine, so it bounds
// what the services reach on the same partitions: a target above it needs
// fewer partitions a transaction, fewer hops or more cores, not faster
// services (docs/performance-journal.md, sixteenth pass). `make bench` runs it last.
//
//	make up && go test -run '^$' -bench BenchmarkSagaShape -benchtime 20000x ./saga/kafkatx/
//
// b.N is the number of sagas of each sub-benchmark.
func BenchmarkSagaShape(b *testing.B) {
	brokers := kafkatest.Brokers(b)
	for _, c := range []struct{ parts, clients int }{{4, 32}, {1, 32}, {4, 1000}} {
		name := fmt.Sprintf("partitions=%d/clients=%d", c.parts, c.clients)
		b.Run(name, func(b *testing.B) { benchmarkSagaShape(b, brokers, c.parts, c.clients) })
	}
}

// shapeTopics are the saga's topics, named after their roles in
// docs/design.md.
type shapeTopics struct {
	events, state, stockCmd, payCmd, stockRep, payRep string
}

// newShapeTopics creates the saga's topics with their real settings
// (saga.state compacted, as its cleaner's work is part of the cost) under a
// prefix of their own, and deletes them when b ends.
func newShapeTopics(b *testing.B, brokers string, parts int) shapeTopics {
	prefix := "shape-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "."
	specs := kafkatx.SagaflowTopics(parts)
	names := make([]string, len(specs))
	for i := range specs {
		specs[i].Name = prefix + specs[i].Name
		names[i] = specs[i].Name
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := kafkatx.CreateTopics(ctx, brokers, specs); err != nil {
		b.Fatal(err)
	}
	// CreateTopics returns before every broker's metadata has the new
	// topics, and the follower looks its partitions up at once.
	kafkatest.WaitFor(b, 30*time.Second, "the shape's topics in the metadata", func() bool {
		counts, err := kafkatx.PartitionCounts(ctx, brokers, names)
		return err == nil && len(counts) == len(names)
	})
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = kafkatx.DeleteTopics(ctx, brokers, names)
	})
	return shapeTopics{
		events: prefix + kafkatx.TopicOrderEvents, state: prefix + kafkatx.TopicSagaState,
		stockCmd: prefix + kafkatx.TopicStockCommands, payCmd: prefix + kafkatx.TopicPaymentCommands,
		stockRep: prefix + kafkatx.TopicStockReplies, payRep: prefix + kafkatx.TopicPaymentReplies,
	}
}

// The records carry a kind (the first byte) and are padded to the sizes of
// the order saga's records, measured on bench-p1.* after a `make bench`:
// values of about 1,190 bytes for a snapshot, 180 for a command, 80 for a
// reply and 300 for an order event, each with about 260 bytes of headers
// (72 on a snapshot) and a 36-byte key.
const (
	kindStart, kindEnd, kindReserve, kindCharge, kindCommit, kindReply, kindState = 's', 'e', 'r', 'c', 'k', 'o', 'x'
)

func shapeValue(k byte, size int) []byte {
	v := make([]byte, size)
	v[0] = k
	return v
}

var (
	shapeHeaders      = []kafkatx.Header{{Key: "sagaflow-headers", Value: make([]byte, 240)}}
	shapeStateHeaders = []kafkatx.Header{{Key: "sagaflow-headers", Value: make([]byte, 56)}}
	shapeStart        = shapeValue(kindStart, 300)
	shapeEnd          = shapeValue(kindEnd, 300)
	shapeReserve      = shapeValue(kindReserve, 180)
	shapeCharge       = shapeValue(kindCharge, 180)
	shapeCommit       = shapeValue(kindCommit, 180)
	shapeReplied      = shapeValue(kindReply, 80)
	shapeSnapshot     = shapeValue(kindState, 1190)
)

// shapeKind is what a record of the shape is (its first byte).
func shapeKind(r kafkatx.Record) byte {
	if len(r.Value) == 0 {
		return 0
	}
	return r.Value[0]
}

func benchmarkSagaShape(b *testing.B, brokers string, parts, clients int) {
	t := newShapeTopics(b, brokers, parts)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	group := "shape-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	// owns is how many partitions each loop owns once it joined its group.
	owns := map[*kafkatx.Loop]int64{}
	loop := func(name string, topics []string, assignor string, h kafkatx.Handler) *kafkatx.Loop {
		l, err := kafkatx.New(kafkatx.Config{Brokers: brokers, Group: group + "-" + name, Topics: topics,
			TransactionalID: group + "-" + name, Assignor: assignor}, h, nil)
		if err != nil {
			b.Fatal(err)
		}
		owns[l] = int64(len(topics) * parts)
		return l
	}
	orch := loop("orchestrator", []string{t.events, t.stockRep, t.payRep}, "range", shapeOrchestrator(t))
	loops := []*kafkatx.Loop{
		orch,
		loop("stock", []string{t.stockCmd}, "", shapeParticipant(t.stockRep, kindReserve)),
		loop("payment", []string{t.payCmd}, "", shapeParticipant(t.payRep, kindCharge)),
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(loops)+1)
	for _, l := range loops {
		wg.Go(func() {
			if err := l.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
				errs <- err
			}
		})
	}
	defer wg.Wait()
	defer cancel()

	// The end events, handed to the client waiting for each. Read with the
	// snapshots, as the orders API's read model reads both topics (what the
	// broker serves it is part of the cost).
	var mu sync.Mutex
	waiting := map[string]chan struct{}{}
	ready := make(chan struct{})
	wg.Go(func() {
		err := kafkatx.Tail(ctx, brokers, []string{t.events, t.state}, func() { close(ready) }, func(r kafkatx.Record) {
			if shapeKind(r) != kindEnd {
				return
			}
			mu.Lock()
			ch := waiting[string(r.Key)]
			delete(waiting, string(r.Key))
			mu.Unlock()
			if ch != nil {
				close(ch)
			}
		})
		if err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	select {
	case <-ready:
	case err := <-errs:
		b.Fatal(err)
	}
	p, err := kafkatx.NewProducer(brokers, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()

	var seq atomic.Int64
	place := func() (time.Duration, error) {
		// 36 bytes, as an order id.
		key := fmt.Sprintf("00000000-0000-7000-8000-%012d", seq.Add(1))
		ch := make(chan struct{})
		mu.Lock()
		waiting[key] = ch
		mu.Unlock()
		start := time.Now()
		if err := p.Send(ctx, kafkatx.NewMessage(t.events, []byte(key), shapeStart, shapeHeaders...)); err != nil {
			return 0, err
		}
		select {
		case <-ch:
			return time.Since(start), nil
		case err := <-errs:
			return 0, err
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Minute):
			return 0, errors.New("saga " + key + " did not end within a minute")
		}
	}
	// Every loop in its group and one saga through first, so that neither
	// the joins nor the first metadata lookups are counted.
	for l, n := range owns {
		for l.Stats().Assigned != n {
			select {
			case err := <-errs:
				b.Fatal(err)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	if _, err := place(); err != nil {
		b.Fatal(err)
	}
	before := orch.Stats().Committed

	var left atomic.Int64
	left.Store(int64(b.N))
	lat := make([][]time.Duration, clients)
	fail := make(chan error, clients)
	var cw sync.WaitGroup
	b.ResetTimer()
	began := time.Now()
	for c := range clients {
		cw.Go(func() {
			for left.Add(-1) >= 0 {
				d, err := place()
				if err != nil {
					fail <- err
					cancel() // the other clients stop too
					return
				}
				lat[c] = append(lat[c], d)
			}
		})
	}
	cw.Wait()
	elapsed := time.Since(began)
	b.StopTimer()
	select {
	case err := <-fail:
		b.Fatal(err)
	default:
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	q := func(f float64) float64 { return float64(all[int(f*float64(len(all)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "sagas/s")
	b.ReportMetric(q(0.50), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(float64(orch.Stats().Committed-before)/float64(len(all)), "orch-txns/saga")
	b.ReportMetric(0, "ns/op") // sagas/s is the figure; ns/op would count the set-up
}

// shapeOrchestrator starts a saga on its start event (a snapshot and both
// commands), records each reply (a snapshot), and on the second one ends
// it: a snapshot, the end event and stock's commit, in one transaction, as
// the order saga does in its default parallel mode with the commit taking
// no reply. One snapshot a changed saga a batch, as the orchestrator
// writes. Its count of replies moves on only when the transaction commits.
func shapeOrchestrator(t shapeTopics) kafkatx.Handler {
	replies := map[string]int{}
	return func(ctx context.Context, recs []kafkatx.Record, out *kafkatx.Sink) error {
		changed := map[string]bool{}
		seen := map[string]int{}
		for _, r := range recs {
			key := string(r.Key)
			switch {
			case r.Topic == t.events && shapeKind(r) == kindStart:
				changed[key] = true
				out.Produce(ctx, kafkatx.NewMessage(t.stockCmd, r.Key, shapeReserve, shapeHeaders...))
				out.Produce(ctx, kafkatx.NewMessage(t.payCmd, r.Key, shapeCharge, shapeHeaders...))
			case r.Topic == t.events: // our own end events
			default:
				changed[key] = true
				seen[key]++
				if replies[key]+seen[key] == 2 {
					out.Produce(ctx, kafkatx.NewMessage(t.events, r.Key, shapeEnd, shapeHeaders...))
					out.Produce(ctx, kafkatx.NewMessage(t.stockCmd, r.Key, shapeCommit, shapeHeaders...))
				}
			}
		}
		for key := range changed {
			out.Produce(ctx, kafkatx.NewMessage(t.state, []byte(key), shapeSnapshot, shapeStateHeaders...))
		}
		out.OnCommit(func() {
			for key, n := range seen {
				if replies[key]+n >= 2 {
					delete(replies, key)
				} else {
					replies[key] += n
				}
			}
		})
		return nil
	}
}

// shapeParticipant answers each action on its reply topic and applies
// anything else (stock's commit) without a reply.
func shapeParticipant(replies string, action byte) kafkatx.Handler {
	return func(ctx context.Context, recs []kafkatx.Record, out *kafkatx.Sink) error {
		for _, r := range recs {
			if shapeKind(r) == action {
				out.Produce(ctx, kafkatx.NewMessage(replies, r.Key, shapeReplied, shapeHeaders...))
			}
		}
		return nil
	}
}
