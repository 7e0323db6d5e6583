package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

// exercise runs traffic and faults, heals, drains, checks and reports.
func (r *run) exercise(ctx context.Context) (*Report, error) {
	cfg := r.cfg
	r.traffic = newTraffic(r.ordersURL, cfg.Seed, r.id)
	inj, err := newInjector(r)
	if err != nil {
		return nil, err
	}
	defer inj.producer.Close()
	r.injector = inj

	fctx, stopFollow := context.WithCancel(ctx)
	var follow sync.WaitGroup
	defer func() { stopFollow(); follow.Wait() }()
	follow.Add(2)
	go func() {
		defer follow.Done()
		r.follow(fctx, "end events", []string{r.topics.Events}, r.traffic.onEvent)
	}()
	go func() {
		defer follow.Done()
		r.follow(fctx, "commands and replies", []string{r.topics.StockCommands, r.topics.PaymentCommands,
			r.topics.StockReplies, r.topics.PaymentReplies}, inj.keep)
	}()

	r.say("run %s, seed %d: logs in %s", r.ns, cfg.Seed, r.dir)
	if err := r.ready(ctx); err != nil {
		return nil, err
	}
	kinds := cfg.Kinds
	if cfg.Kafka.Count == 0 {
		kinds = without(kinds, KillBroker, PauseBroker)
	}
	if len(r.kafkaProxies) == 0 {
		kinds = without(kinds, KafkaLatency, KafkaStall, KafkaCut)
	}
	plan := Plan{Seed: cfg.Seed, Duration: cfg.Duration, Every: cfg.Every, Kinds: kinds,
		Processes: r.processNames(), KafkaNodes: cfg.Kafka.Count, SessionTimeout: sessionTimeout}
	schedule := Schedule(plan)
	if len(cfg.Faults) > 0 {
		schedule, kinds = slices.Clone(cfg.Faults), nil
		for _, f := range schedule {
			if !slices.Contains(kinds, f.Kind) {
				kinds = append(kinds, f.Kind)
			}
		}
	}
	r.say("%d faults scheduled over %s (seed %d):", len(schedule), cfg.Duration, cfg.Seed)
	for _, f := range schedule {
		r.say("  %s", f)
	}

	r.start = time.Now()
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var load sync.WaitGroup
	load.Add(2)
	played := make(chan struct{})
	go func() { defer load.Done(); r.traffic.run(lctx, cfg.Rate, cfg.Clients) }()
	go func() { defer load.Done(); inj.play(lctx, r.start, schedule); close(played) }()
	go r.endLoad(lctx, stopLoad, played)
	progress := make(chan struct{})
	go r.progress(progress)
	<-lctx.Done()
	r.say("load over; healing")
	load.Wait()
	// The report's phases count the seconds the load actually ran.
	r.cfg.Duration = time.Since(r.start)
	// Healed even when the run is interrupted: a killed broker must not stay down.
	r.healAll(context.WithoutCancel(ctx))
	healed := time.Now()
	// The API must take orders again by itself once its dependencies are
	// back: a fresh order, with a client's patience.
	var vs []Violation
	probe := r.traffic.next()
	probe.Customer, probe.Product = customerID(0), productID(0)
	r.traffic.place(ctx, probe)
	if probe.ID == "" {
		vs = append(vs, Violation{Kind: "api-not-recovered", Detail: fmt.Sprintf("no order accepted within a minute of the heal (key %s)", probe.Key)})
	}

	// Drain: every accepted order must end within cfg.Drain of the heal.
	for time.Since(healed) < cfg.Drain && ctx.Err() == nil && r.traffic.unfinished() > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	drained := time.Since(healed)
	close(progress)
	r.say("drained in %s; %d orders unfinished; checking", drained.Round(time.Millisecond), r.traffic.unfinished())

	// The checks hold saga.state against Redis, read one after the other.
	// A saga the orchestrators moved between the two reads would show as
	// money or stock out of place: a run whose drain ran out, beside CPU
	// hogs, read saga.state while the orchestrators worked off a backlog,
	// and reported charges of sagas it had not read as captured-mismatch
	// (the same topics and Redis read again after the stop agreed to the
	// cent). With the orchestrators stopped, saga.state is final; stock and
	// payment may still apply commands already on their topics, which the
	// checks bound by the sagas still running, and stock must run to
	// commit the Completed orders' reservations (waitCommitted).
	vs = append(vs, r.stopProcs(func(p *proc) bool { return p.service == "orchestrator" })...)
	f, err := r.gather(ctx, healed)
	if err != nil {
		return nil, err
	}
	f.ExitsAllowed = slices.ContainsFunc(kinds, func(k Kind) bool { return k == KillService || k == PauseService || k == Failpoint })
	f.Exits, f.LastWords = r.unstoppedExits()
	vs = append(vs, validate(f)...)
	vs = append(vs, r.traffic.violations...)
	vs = append(vs, r.stopProcs(func(p *proc) bool { return !p.stopped() })...)
	return r.report(f, schedule, inj.injected(), vs, healed, drained), nil
}

// loadTail is how long the load of a schedule given as such goes on after
// its last fault healed.
const loadTail = 15 * time.Second

// endLoad ends the load after cfg.Duration, or once cfg.Orders orders were
// accepted. A schedule given as such (cfg.Faults) is played whole, under
// load: on a slow machine a broker's restart can take most of a minute and
// push the later faults back, so the load then goes on until the last fault
// healed and loadTail after it, for at most three times cfg.Duration.
func (r *run) endLoad(ctx context.Context, stop context.CancelFunc, played <-chan struct{}) {
	defer stop()
	if !r.loadFor(ctx, r.cfg.Duration) || len(r.cfg.Faults) == 0 {
		return
	}
	select {
	case <-played:
		return // all played within the duration
	default:
	}
	r.say("the load goes on until the last faults are played, then %s more", loadTail)
	select {
	case <-played:
		r.loadFor(ctx, loadTail)
	case <-time.After(2 * r.cfg.Duration):
	case <-ctx.Done():
	}
}

// loadFor waits d, or until cfg.Orders orders were accepted, and says
// whether the load may go on after d (false: cancelled, or enough orders).
func (r *run) loadFor(ctx context.Context, d time.Duration) bool {
	deadline := time.After(d)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-deadline:
			return true
		case <-tick.C:
			if n := r.traffic.taken.Load(); r.cfg.Orders > 0 && n >= int64(r.cfg.Orders) {
				r.say("%d orders accepted (-orders %d): the load ends", n, r.cfg.Orders)
				return false
			}
		}
	}
}

// unstoppedExits returns every process's exits so far that were not the
// run's final stop, by "process: how", and the last line each such process
// wrote before its latest one, by process.
func (r *run) unstoppedExits() (exits map[string]int, lastWords map[string]string) {
	exits, lastWords = map[string]int{}, map[string]string{}
	for name, p := range r.procs {
		p.mu.Lock()
		for how, n := range p.unstopped {
			exits[name+": "+how] += n
		}
		if p.lastWords != "" {
			lastWords[name] = p.lastWords
		}
		p.mu.Unlock()
	}
	return exits, lastWords
}

// followQuiet is how long a follower may deliver nothing before it is
// started again.
const followQuiet = 30 * time.Second

// follow follows topics with fn until ctx ends, and starts the follower
// again, from the beginning, when it stops or goes quiet for followQuiet:
// in a long run a follower of ours once stopped delivering after a broker
// restart while the system went on, and every order after that looked
// unfinished. fn must be idempotent (it sees records again).
func (r *run) follow(ctx context.Context, what string, topics []string, fn func(kafkatx.Record)) {
	var last atomic.Int64
	for ctx.Err() == nil {
		last.Store(time.Now().UnixNano())
		fctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- kafkatx.Follow(fctx, r.cfg.Brokers, topics, func(rec kafkatx.Record) {
				last.Store(time.Now().UnixNano())
				fn(rec)
			})
		}()
		t := time.NewTicker(time.Second)
	watch:
		for {
			select {
			case err := <-done:
				if ctx.Err() == nil {
					r.say("follower of %s stopped (%v); reading again from the start", what, err)
					time.Sleep(time.Second)
				}
				break watch
			case <-t.C:
				if time.Since(time.Unix(0, last.Load())) > followQuiet {
					cancel()
					<-done
					break watch
				}
			}
		}
		t.Stop()
		cancel()
	}
}

func without(ks []Kind, drop ...Kind) []Kind {
	var out []Kind
	for _, k := range ks {
		keep := true
		for _, d := range drop {
			keep = keep && k != d
		}
		if keep {
			out = append(out, k)
		}
	}
	return out
}

func (r *run) processNames() map[string][]string {
	m := map[string][]string{}
	for name, p := range r.procs {
		m[p.service] = append(m[p.service], name)
	}
	for _, ns := range m {
		sort.Strings(ns)
	}
	return m
}

// healAll makes sure nothing is left broken: every process running (not
// stopped), the proxies clear, Redis up, every Kafka node started.
func (r *run) healAll(ctx context.Context) {
	r.proxy.Heal()
	r.kafkaProxies.Heal()
	for _, p := range r.procs {
		p.signal(syscall.SIGCONT, 0)
	}
	for n := 1; n <= r.cfg.Kafka.Count; n++ {
		_ = r.cfg.Kafka.Do(ctx, kafkactl.Resume, n)
		if err := r.cfg.Kafka.Do(ctx, kafkactl.Start, n); err != nil {
			r.say("heal: %v", err)
		}
	}
	select {
	case <-r.redis.exited:
		if err := r.redis.start(ctx); err != nil {
			r.say("heal: %v", err)
		}
	default:
	}
}

// stopProcs SIGTERMs every process which selects; one that does not exit
// within 15s is a violation (every process stops cleanly and promptly).
func (r *run) stopProcs(which func(*proc) bool) []Violation {
	var mu sync.Mutex
	var vs []Violation
	var wg sync.WaitGroup
	for name, p := range r.procs {
		if !which(p) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if !p.stop(15 * time.Second) {
				mu.Lock()
				vs = append(vs, Violation{Kind: "stop-not-prompt", Detail: fmt.Sprintf("%s did not exit within 15s of SIGTERM", name)})
				mu.Unlock()
			} else {
				r.say("%s stopped in %s", name, time.Since(start).Round(time.Millisecond))
			}
		}()
	}
	wg.Wait()
	return vs
}

// progress prints a line every 5 seconds until done.
func (r *run) progress(done <-chan struct{}) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		os := r.traffic.snapshot()
		var acc, ended int
		for _, o := range os {
			if o.ID != "" {
				acc++
			}
			if o.Outcome != "" {
				ended++
			}
		}
		r.say("%5.0fs  orders %d accepted %d ended %d running %d  faults done %d",
			time.Since(r.start).Seconds(), len(os), acc, ended, acc-ended, len(r.injector.injected()))
	}
}

// gather reads the facts for the checks from outside the system.
func (r *run) gather(ctx context.Context, healed time.Time) (facts, error) {
	f := facts{Orders: r.traffic.snapshot(), Snapshots: map[string][]*saga.Instance{}, DeadLettered: map[string]bool{},
		HealedAt: healed, DrainBound: r.cfg.Drain}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	read := func(topic string, fn func(kafkatx.Record)) error {
		parts, err := kafkatx.Partitions(ctx, r.cfg.Brokers, topic)
		if err != nil {
			return err
		}
		return kafkatx.ReadPartitions(ctx, r.cfg.Brokers, topic, parts, func(rec kafkatx.Record) error { fn(rec); return nil })
	}
	err := read(r.topics.State, func(rec kafkatx.Record) {
		var s saga.Instance
		if len(rec.Value) > 0 && json.Unmarshal(rec.Value, &s) == nil && s.ID != "" {
			f.Snapshots[s.ID] = append(f.Snapshots[s.ID], &s)
		}
	})
	if err != nil {
		return f, fmt.Errorf("chaos: read %s: %w", r.topics.State, err)
	}
	for _, t := range []string{r.topics.StockCommands, r.topics.PaymentCommands} {
		err := read(t, func(rec kafkatx.Record) {
			if rec.Header(HeaderDuplicate) != nil || rec.Header(HeaderPoison) != nil {
				return
			}
			env, derr := saga.Decode(rec)
			if derr != nil {
				return
			}
			f.Commands = append(f.Commands, command{Saga: env.SagaID, Step: env.Step, Phase: env.Phase, Attempt: env.Attempt})
		})
		if err != nil {
			return f, fmt.Errorf("chaos: read %s: %w", t, err)
		}
	}
	if err := read(r.topics.DeadLetter, func(rec kafkatx.Record) {
		if id := rec.Header(HeaderPoison); id != nil {
			f.DeadLettered[string(id)] = true
		}
	}); err != nil {
		return f, fmt.Errorf("chaos: read %s: %w", r.topics.DeadLetter, err)
	}
	r.injector.mu.Lock()
	f.Poisoned = append([]string(nil), r.injector.poisoned...)
	r.injector.mu.Unlock()

	rdb := redis.NewClient(&redis.Options{Addr: r.redis.addr()})
	defer rdb.Close()
	stores, err := wire.OpenStores(rdb, "", nil)
	if err != nil {
		return f, err
	}
	st, pay := stores.Stock, stores.Payment
	began := time.Now()
	if f.Uncommitted, err = waitCommitted(ctx, st, f.Snapshots, r.cfg.Drain); err != nil {
		return f, err
	}
	r.say("stock's commits: %d Completed orders not committed after waiting %s", len(f.Uncommitted), time.Since(began).Round(time.Millisecond))
	if f.Products, err = st.Products(ctx); err != nil {
		return f, fmt.Errorf("chaos: read stock: %w", err)
	}
	if f.Customers, err = pay.Customers(ctx); err != nil {
		return f, fmt.Errorf("chaos: read accounts: %w", err)
	}
	return f, nil
}

// waitCommitted waits, for at most bound, until stock has committed the
// reservation of every Completed order, and returns the ones it has not,
// with the state each is in. The order saga's pivot takes no reply
// (orders.SagaConfig.AwaitConfirm): an order is Confirmed once its
// CommitStock is on stock's topic, and stock applies it a moment later, or
// once it is back after a fault. Stock's counts are read after that.
func waitCommitted(ctx context.Context, st *stock.Store, snaps map[string][]*saga.Instance, bound time.Duration) (map[string]string, error) {
	pending := map[string]string{}
	for id, ss := range snaps {
		if s := ss[len(ss)-1]; s.State == saga.Completed {
			pending[id] = ""
		}
	}
	deadline := time.Now().Add(bound)
	for {
		for id := range pending {
			res, err := st.Reservation(ctx, id)
			if err != nil {
				return nil, fmt.Errorf("chaos: read the reservation of %s: %w", id, err)
			}
			if res.State == "committed" {
				delete(pending, id)
				continue
			}
			pending[id] = res.State
		}
		if len(pending) == 0 || time.Now().After(deadline) {
			return pending, nil
		}
		select {
		case <-ctx.Done():
			return pending, nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}
