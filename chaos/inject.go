package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Header names on the records the suite writes itself: the checks leave its
// re-published duplicates out of the command counts, and look for its
// poison records on the dead-letter topic.
const (
	HeaderDuplicate = "chaos-duplicate"
	HeaderPoison    = "chaos-poison"
)

// Injected is one fault as it happened.
type Injected struct {
	Fault
	Started, Healed time.Time
	// Skipped says why the fault was not injected (its target was already
	// under another fault).
	Skipped string `json:",omitempty"`
	Err     string `json:",omitempty"`
}

// injector applies faults and heals them.
type injector struct {
	r        *run
	producer *kafkatx.Producer

	// One fault at a time per domain: Kafka, Redis, and each process.
	domains sync.Map // string -> *sync.Mutex

	mu       sync.Mutex
	done     []Injected
	recent   map[string][]kafkatx.Record // last commands and replies, by topic
	poisoned []string
	wg       sync.WaitGroup
}

func newInjector(r *run) (*injector, error) {
	p, err := kafkatx.NewProducer(r.cfg.Brokers, nil)
	if err != nil {
		return nil, err
	}
	return &injector{r: r, producer: p, recent: map[string][]kafkatx.Record{}}, nil
}

// keep is the follower's callback on the command and reply topics: the last
// 200 of each, for Duplicate.
func (in *injector) keep(rec kafkatx.Record) {
	if rec.Header(HeaderDuplicate) != nil || rec.Header(HeaderPoison) != nil {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	rs := append(in.recent[rec.Topic], rec)
	if len(rs) > 200 {
		rs = rs[len(rs)-200:]
	}
	in.recent[rec.Topic] = rs
}

// play injects the schedule's faults at their times from start until ctx
// ends, each in its own goroutine, and returns once every fault is healed.
func (in *injector) play(ctx context.Context, start time.Time, faults []Fault) {
	for _, f := range faults {
		select {
		case <-ctx.Done():
			in.wg.Wait()
			return
		case <-time.After(time.Until(start.Add(f.At))):
		}
		in.wg.Add(1)
		go func() { defer in.wg.Done(); in.inject(ctx, f) }()
	}
	in.wg.Wait()
}

func (in *injector) domain(f Fault) string {
	switch f.Kind {
	case KillBroker, PauseBroker:
		return "kafka"
	case KillRedis, RedisLatency, RedisStall, RedisCut:
		return "redis"
	case KafkaLatency, KafkaStall, KafkaCut:
		return "kafka-network"
	case Duplicate, Poison:
		return string(f.Kind)
	}
	return f.Target
}

func (in *injector) inject(ctx context.Context, f Fault) {
	rec := Injected{Fault: f, Started: time.Now()}
	defer func() {
		rec.Healed = time.Now()
		in.mu.Lock()
		in.done = append(in.done, rec)
		in.mu.Unlock()
		in.r.say("%s%s", f, map[bool]string{true: "  (" + rec.Skipped + rec.Err + ")", false: ""}[rec.Skipped+rec.Err != ""])
	}()
	m, _ := in.domains.LoadOrStore(in.domain(f), &sync.Mutex{})
	mu := m.(*sync.Mutex)
	switch {
	case len(in.r.cfg.Faults) > 0:
		// A schedule given as such is played whole: a fault waits for
		// the one before it on the same target (a broker still
		// restarting) instead of being dropped.
		mu.Lock()
		rec.Started = time.Now()
		if ctx.Err() != nil {
			mu.Unlock()
			rec.Skipped = "the load ended before its turn"
			return
		}
	case !mu.TryLock():
		rec.Skipped = "target busy with another fault"
		return
	}
	defer mu.Unlock()
	// The hold ends early when the run heals everything.
	hold := func() {
		select {
		case <-ctx.Done():
		case <-time.After(f.Hold):
		}
	}
	heal := context.WithoutCancel(ctx)
	var err error
	switch f.Kind {
	case KillService:
		p := in.r.procs[f.Target]
		p.signal(syscall.SIGKILL, f.Hold)
		hold()
	case PauseService:
		p := in.r.procs[f.Target]
		p.signal(syscall.SIGSTOP, 0)
		hold()
		p.signal(syscall.SIGCONT, 0)
	case Failpoint:
		in.r.procs[f.Target].armNext("SAGAFLOW_FAILPOINTS=" + f.Arg + "=1*exit")
	case KillBroker, PauseBroker:
		node, lerr := in.node(ctx, f.Target)
		if lerr != nil {
			err = lerr
			break
		}
		verb, undo := kafkactl.Kill, kafkactl.Start
		if f.Kind == PauseBroker {
			verb, undo = kafkactl.Pause, kafkactl.Resume
		}
		if err = in.r.cfg.Kafka.Do(heal, verb, node); err != nil {
			break
		}
		hold()
		err = in.r.cfg.Kafka.Do(heal, undo, node)
	case KillRedis:
		in.r.redis.kill()
		hold()
		err = in.r.redis.start(heal)
	case RedisLatency, RedisStall, RedisCut, KafkaLatency, KafkaStall, KafkaCut:
		side := proxies{in.r.proxy}
		if in.domain(f) == "kafka-network" {
			side = in.r.kafkaProxies
		}
		switch f.Kind {
		case RedisLatency, KafkaLatency:
			d, _ := time.ParseDuration(f.Arg)
			side.Latency(d)
		case RedisStall, KafkaStall:
			side.Stall()
		default:
			side.Cut()
		}
		hold()
		side.Heal()
	case Duplicate:
		err = in.duplicate(heal)
	case Poison:
		err = in.poison(heal)
	}
	if err != nil {
		rec.Err = err.Error()
	}
}

// node resolves a broker target to a node number.
func (in *injector) node(ctx context.Context, target string) (int, error) {
	if target == "leader" {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id, err := kafkatx.Leader(ctx, in.r.cfg.Brokers, in.r.topics.State, 0)
		if err != nil {
			return 0, err
		}
		return int(id), nil
	}
	return strconv.Atoi(strings.TrimPrefix(target, "node "))
}

// duplicate re-publishes up to 20 recent records of each command and reply
// topic, headers and all, with HeaderDuplicate added.
func (in *injector) duplicate(ctx context.Context) error {
	in.mu.Lock()
	var pick []kafkatx.Record
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 3))
	for _, rs := range in.recent {
		for range min(20, len(rs)) {
			pick = append(pick, rs[rng.IntN(len(rs))])
		}
	}
	in.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for _, rec := range pick {
		hs := append(append([]kafkatx.Header(nil), rec.Headers...), kafkatx.Header{Key: HeaderDuplicate, Value: []byte("1")})
		if err := in.send(ctx, kafkatx.NewMessage(rec.Topic, rec.Key, rec.Value, hs...)); err != nil {
			return fmt.Errorf("re-publish: %w", err)
		}
	}
	return nil
}

// poison writes one undecodable record to a command, a reply and the start
// topic.
func (in *injector) poison(ctx context.Context) error {
	t := in.r.topics
	ctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	for _, topic := range []string{t.StockCommands, t.PaymentReplies, t.Events} {
		id := fmt.Sprintf("poison-%d", time.Now().UnixNano())
		m := kafkatx.NewMessage(topic, []byte(id), []byte("\x00 not an envelope {"),
			kafkatx.Header{Key: HeaderPoison, Value: []byte(id)}, kafkatx.Header{Key: saga.HeaderType, Value: []byte("Garbage")})
		if err := in.send(ctx, m); err != nil {
			return fmt.Errorf("poison: %w", err)
		}
		in.mu.Lock()
		in.poisoned = append(in.poisoned, id)
		in.mu.Unlock()
	}
	return nil
}

// publishTimeout bounds a duplicate or poison fault's publishing: long
// enough for the suite's producer to be replaced once (it gives up on a
// stall after 15 s) and to send again.
const publishTimeout = time.Minute

// send publishes m, again when the suite's producer replaced itself before
// m was acknowledged: a broker fault stalls the suite's producer as it does
// the services', and a fault that fails to inject tests nothing. If the
// first copy did land, the system gets one more duplicate, or one more
// poison record on the dead-letter topic than the check looks for; it must
// take both.
func (in *injector) send(ctx context.Context, m kafkatx.Message) error {
	for {
		err := in.producer.Send(ctx, m)
		if !errors.Is(err, kafkatx.ErrReplaced) || ctx.Err() != nil {
			return err
		}
	}
}

func (in *injector) injected() []Injected {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]Injected(nil), in.done...)
}
