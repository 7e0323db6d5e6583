// Package bench drives a running sagaflow system with orders and measures
// each saga from its request to its terminal state: `sagaflow bench`.
//
// It places orders through the HTTP API (POST /orders) or straight into Kafka
// (OrderPlaced on orders.events), in an open loop at a target rate or a closed
// loop of clients that each wait for their saga to end, and learns of each
// end from the end events on orders.events (read_committed), which commit in
// the same transaction as the saga's terminal snapshot. Before the load it
// measures the floor: one transactional hop on the same broker.
//
// It seeds products and customers of its own (ids starting "bench-"), large
// enough not to run dry, and never touches the demo's.
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Config says what to run. Exactly one of Rate (open loop) and Clients
// (closed loop) is set.
type Config struct {
	// Via is "http" (POST to URL) or "kafka" (OrderPlaced to Brokers).
	Via     string
	URL     string
	Brokers string
	// Rate is the open loop's target, in sagas per second.
	Rate float64
	// Clients is the closed loop's size: each waits for its saga to end.
	Clients int
	// Duration of the load; Drain is how long to wait after it for the
	// sagas still running to end.
	Duration, Drain time.Duration
	// Decline and OutOfStock are shares (0..1) of orders that should be
	// declined by payment or refused by stock.
	Decline, OutOfStock float64
	// FloorSamples is how many single hops the floor measurement times.
	FloorSamples int
	// MaxInFlight bounds the open loop's outstanding requests; past it the
	// generator falls behind, and the report says so.
	MaxInFlight int
	// Progress receives a status line every second (nil: none).
	Progress io.Writer
	// EventsTopic defaults to orders.events.
	EventsTopic string
	// Watch names the processes whose CPU a run counts, with its own
	// (LoadGen), per saga that ended: on a machine where every part shares
	// the cores, where the time goes. Linux only (it reads /proc).
	Watch []Proc `json:"-"`
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	switch c.Via {
	case "http":
		if c.URL == "" {
			errs = append(errs, errors.New("-via http needs -url"))
		}
	case "kafka":
	default:
		errs = append(errs, fmt.Errorf("-via %q: want http or kafka", c.Via))
	}
	if c.Brokers == "" {
		errs = append(errs, errors.New("-kafka is required: the end events are read from Kafka"))
	}
	if (c.Rate > 0) == (c.Clients > 0) {
		errs = append(errs, errors.New("set exactly one of -rate (open loop) and -clients (closed loop)"))
	}
	if c.Rate < 0 || c.Clients < 0 {
		errs = append(errs, errors.New("-rate and -clients must not be negative"))
	}
	if c.Duration <= 0 {
		errs = append(errs, errors.New("-duration must be positive"))
	}
	if c.Decline < 0 || c.OutOfStock < 0 || c.Decline+c.OutOfStock > 1 {
		errs = append(errs, errors.New("-decline and -out-of-stock are shares between 0 and 1 that add up to at most 1"))
	}
	return errors.Join(errs...)
}

// Outcome is how a saga ended, from its end event.
type Outcome string

// The outcomes, by end event.
const (
	Completed Outcome = "completed"
	Cancelled Outcome = "cancelled"
	Failed    Outcome = "failed"
)

// Result is what one run measured.
type Result struct {
	Config   Config        `json:"config"`
	Mode     string        `json:"mode"`
	Started  time.Time     `json:"started"`
	Measured time.Duration `json:"measured_ns"`
	// Elapsed is the load and the drain: the time CPU counts over.
	Elapsed time.Duration `json:"elapsed_ns"`
	// Sent counts the orders accepted (202 or acknowledged by Kafka);
	// Refused the ones the API or Kafka did not take.
	Sent, Refused, Ended, Unfinished int64
	Outcomes                         map[Outcome]int64 `json:"outcomes"`
	// SagasPerSec is Ended over the load's duration.
	SagasPerSec float64   `json:"sagas_per_sec"`
	Latency     Quantiles `json:"latency"`
	// Floor is one transactional hop on the same broker, before the load.
	Floor Quantiles `json:"floor"`
	// Behind is how far the open loop's generator fell behind its schedule
	// at the end (0 when it kept up).
	Behind   time.Duration `json:"behind_ns"`
	Timeline []Second      `json:"timeline"`
	// CPU is what each watched part spent, drain included (Config.Watch).
	CPU    []PartCPU `json:"cpu,omitempty"`
	Errors []string  `json:"errors,omitempty"`
}

// Quantiles of a latency distribution.
type Quantiles struct {
	N                       int
	P50, P95, P99, Max, Avg time.Duration
}

// Second is one second of the run.
type Second struct {
	At       float64       `json:"at_s"`
	Sent     int64         `json:"sent"`
	Ended    int64         `json:"ended"`
	P50, P99 time.Duration `json:"-"`
	P50ms    float64       `json:"p50_ms"`
	P99ms    float64       `json:"p99_ms"`
}

func quantiles(ds []time.Duration) Quantiles {
	if len(ds) == 0 {
		return Quantiles{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Quantiles{N: len(ds), P50: at(0.50), P95: at(0.95), P99: at(0.99), Max: ds[len(ds)-1], Avg: sum / time.Duration(len(ds))}
}

// Placer places one order and returns its saga id.
type Placer interface {
	Place(ctx context.Context, o Order) (sagaID string, err error)
}

// Order is what the generator asks for.
type Order struct {
	Key        string // Idempotency-Key, unique per order
	CustomerID string
	ProductID  string
	Quantity   int64
}

// run is the state of one run.
type run struct {
	cfg    Config
	placer Placer
	start  time.Time

	mu      sync.Mutex
	pending map[string]time.Time // saga id -> request time
	early   map[string]ended     // end events seen before the request returned
	waiters map[string]chan struct{}
	lat     []time.Duration
	ends    []endAt
	sends   []time.Duration // offsets from start of accepted sends
	errs    map[string]int

	outcomes map[Outcome]int64

	sent, refused, ended atomic.Int64
	rng                  *rand.Rand
	rngMu                sync.Mutex
	seq                  atomic.Int64
	runID                string
}

type ended struct {
	at      time.Time
	outcome Outcome
}

type endAt struct {
	at  time.Duration
	lat time.Duration
}

// Run measures the floor, then drives the load and drains; placer places
// the orders (see NewHTTPPlacer and NewKafkaPlacer).
func Run(ctx context.Context, cfg Config, placer Placer) (*Result, error) {
	res, err := Sweep(ctx, cfg, []Step{{cfg.Rate, cfg.Clients}}, placer)
	if err != nil {
		return nil, err
	}
	return res[0], nil
}

// Step is one load of a sweep: an open loop at Rate or a closed loop of
// Clients.
type Step struct {
	Rate    float64
	Clients int
}

// Sweep runs cfg's load once for each step, one after another, with the
// step's Rate and Clients in place of cfg's: latency, throughput and CPU
// against the load offered, as a curve. The floor is measured once, before
// the first step; one reader of the end events serves every step; each
// step drains before the next one starts.
func Sweep(ctx context.Context, cfg Config, steps []Step, placer Placer) ([]*Result, error) {
	if err := cfg.ValidateSteps(steps); err != nil {
		return nil, err
	}
	if cfg.EventsTopic == "" {
		cfg.EventsTopic = kafkatx.TopicOrderEvents
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = 2000
	}
	if cfg.FloorSamples == 0 {
		cfg.FloorSamples = 100
	}
	if _, err := sampleCPU(cfg.Watch); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	floor, err := MeasureFloor(ctx, cfg.Brokers, cfg.FloorSamples)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}

	r := &run{placer: placer, early: map[string]ended{},
		rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1)), runID: strconv.FormatInt(time.Now().UnixNano(), 36)}
	tctx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	readyc := make(chan struct{})
	tailErr := make(chan error, 1)
	go func() {
		tailErr <- kafkatx.Tail(tctx, cfg.Brokers, []string{cfg.EventsTopic}, func() { close(readyc) }, r.onEvent)
	}()
	select {
	case <-readyc:
	case err := <-tailErr:
		return nil, fmt.Errorf("bench: follow %s: %w", cfg.EventsTopic, err)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var out []*Result
	for i, st := range steps {
		label := ""
		if len(steps) > 1 {
			label = fmt.Sprintf("step %d/%d  ", i+1, len(steps))
		}
		res, err := r.step(ctx, cfg.at(st), label)
		if err != nil {
			return nil, err
		}
		res.Floor = floor
		out = append(out, res)
	}
	return out, nil
}

// ValidateSteps reports what is wrong with cfg for any of the steps.
func (c Config) ValidateSteps(steps []Step) error {
	if len(steps) == 0 {
		return errors.New("no load to run: set -rate or -clients")
	}
	for i, st := range steps {
		if err := c.at(st).Validate(); err != nil {
			if len(steps) > 1 {
				return fmt.Errorf("step %d: %w", i+1, err)
			}
			return err
		}
	}
	return nil
}

// at is the configuration of one step.
func (c Config) at(st Step) Config {
	c.Rate, c.Clients = st.Rate, st.Clients
	return c
}

// step drives one load and drains it.
func (r *run) step(ctx context.Context, cfg Config, label string) (*Result, error) {
	res := &Result{Config: cfg, Outcomes: map[Outcome]int64{}}
	r.mu.Lock()
	// What the step before left running was counted as unfinished there;
	// if it ends now, it goes to early and is never asked for.
	r.cfg = cfg
	r.pending, r.waiters, r.errs, r.outcomes = map[string]time.Time{}, map[string]chan struct{}{}, map[string]int{}, map[Outcome]int64{}
	r.lat, r.ends, r.sends = nil, nil, nil
	r.sent.Store(0)
	r.refused.Store(0)
	r.ended.Store(0)
	r.start = time.Now()
	r.mu.Unlock()
	cpuBefore, err := sampleCPU(cfg.Watch)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}

	res.Started = r.start
	lctx, stopLoad := context.WithTimeout(ctx, cfg.Duration)
	defer stopLoad()
	progressDone, progressExited := make(chan struct{}), make(chan struct{})
	go r.progress(ctx, progressDone, progressExited, cfg.Progress, label, res.Started)
	if cfg.Rate > 0 {
		res.Mode = fmt.Sprintf("open loop, %s sagas/s", strconv.FormatFloat(cfg.Rate, 'g', 4, 64))
		res.Behind = r.openLoop(lctx)
	} else {
		res.Mode = fmt.Sprintf("closed loop, %d clients", cfg.Clients)
		r.closedLoop(lctx)
	}
	loadEnd := time.Since(r.start)
	// Drain: wait for the sagas still running.
	deadline := time.Now().Add(cfg.Drain)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		r.mu.Lock()
		n := len(r.pending)
		r.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(progressDone)
	<-progressExited
	res.Elapsed = time.Since(r.start)
	cpuAfter, err := sampleCPU(cfg.Watch)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	res.Measured = loadEnd
	res.Sent, res.Refused, res.Ended = r.sent.Load(), r.refused.Load(), r.ended.Load()
	res.Unfinished = int64(len(r.pending))
	maps.Copy(res.Outcomes, r.outcomes)
	// Throughput counts the sagas that ended within the load window, so a
	// long drain does not flatter it.
	var inWindow int64
	for _, e := range r.ends {
		if e.at <= loadEnd {
			inWindow++
		}
	}
	res.SagasPerSec = float64(inWindow) / loadEnd.Seconds()
	res.Latency = quantiles(append([]time.Duration(nil), r.lat...))
	res.Timeline = r.timeline()
	// The CPU counts the drain too, as the sagas do.
	if len(cfg.Watch) > 0 {
		res.CPU = spent(partNames(cfg.Watch), cpuBefore, cpuAfter, res.Ended)
	}
	for msg, n := range r.errs {
		res.Errors = append(res.Errors, fmt.Sprintf("%d x %s", n, msg))
	}
	sort.Strings(res.Errors)
	return res, nil
}

// onEvent is the tail's callback: an end event ends its saga.
func (r *run) onEvent(rec kafkatx.Record) {
	var oc Outcome
	switch string(rec.Header(saga.HeaderType)) {
	case orders.TypeOrderConfirmed:
		oc = Completed
	case orders.TypeOrderCancelled:
		oc = Cancelled
	case orders.TypeOrderFailed:
		oc = Failed
	default:
		return
	}
	now := time.Now()
	id := string(rec.Key)
	r.mu.Lock()
	defer r.mu.Unlock()
	if t0, ok := r.pending[id]; ok {
		r.finish(id, t0, ended{now, oc})
		return
	}
	r.early[id] = ended{now, oc}
}

// finish records a saga's end; r.mu is held.
func (r *run) finish(id string, t0 time.Time, e ended) {
	delete(r.pending, id)
	lat := e.at.Sub(t0)
	r.lat = append(r.lat, lat)
	r.ends = append(r.ends, endAt{at: e.at.Sub(r.start), lat: lat})
	r.ended.Add(1)
	r.outcomes[e.outcome]++
	if w, ok := r.waiters[id]; ok {
		close(w)
		delete(r.waiters, id)
	}
}

// place sends one order that was due at t0 and registers it; the returned
// channel is closed when its saga ends. When the order was refused the
// channel is nil and retry is how long the API asked to wait before the
// next (zero when it did not say).
func (r *run) place(ctx context.Context, t0 time.Time, wait bool) (ended <-chan struct{}, retry time.Duration) {
	o := r.nextOrder()
	id, err := r.placer.Place(ctx, o)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			r.refused.Add(1)
			r.errs[err.Error()]++
		}
		var ref *Refused
		if errors.As(err, &ref) {
			retry = ref.RetryAfter
		}
		return nil, retry
	}
	r.sent.Add(1)
	r.sends = append(r.sends, time.Since(r.start))
	var w chan struct{}
	if wait {
		w = make(chan struct{})
	}
	if e, ok := r.early[id]; ok {
		delete(r.early, id)
		r.pending[id] = t0
		r.finish(id, t0, e)
		if w != nil {
			close(w)
		}
		return w, 0
	}
	if _, dup := r.pending[id]; dup {
		r.errs["two orders got one saga id"]++
	}
	r.pending[id] = t0
	if w != nil {
		r.waiters[id] = w
	}
	return w, 0
}

// nextOrder draws an order from the mix.
func (r *run) nextOrder() Order {
	n := r.seq.Add(1)
	r.rngMu.Lock()
	x := r.rng.Float64()
	c := r.rng.IntN(benchCustomers)
	p := r.rng.IntN(benchProducts)
	r.rngMu.Unlock()
	o := Order{Key: "bench-" + r.runID + "-" + strconv.FormatInt(n, 10), CustomerID: CustomerID(c),
		ProductID: ProductID(p), Quantity: 1}
	switch {
	case x < r.cfg.Decline:
		o.CustomerID = PoorCustomer
	case x < r.cfg.Decline+r.cfg.OutOfStock:
		o.ProductID = EmptyProduct
	}
	return o
}

// openLoop sends at the target rate whatever the system does, and returns
// how far it fell behind its schedule. Latency counts from the scheduled
// time, so a generator or API that falls behind shows up in the figures
// instead of hiding (coordinated omission).
func (r *run) openLoop(ctx context.Context) time.Duration {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	sem := make(chan struct{}, r.cfg.MaxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	next := time.Now()
	// Less than an interval late is a timer's lateness at the end of the
	// load, not an order left out.
	behind := func() time.Duration {
		if d := time.Since(next); d >= interval {
			return d
		}
		return 0
	}
	for {
		if d := time.Until(next); d > 0 {
			select {
			case <-ctx.Done():
				return 0
			case <-time.After(d):
			}
		}
		if ctx.Err() != nil {
			return behind()
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return behind()
		}
		due := next
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			_, _ = r.place(ctx, due, false)
		}()
		next = next.Add(interval)
	}
}

// closedLoop runs the clients: each places an order, waits for its saga to
// end, and places the next.
func (r *run) closedLoop(ctx context.Context) {
	var wg sync.WaitGroup
	for range r.cfg.Clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				w, retry := r.place(ctx, time.Now(), true)
				if w == nil {
					// Refused: wait as the API asked, as a well-behaved
					// client does, with jitter so that the clients
					// refused together do not come back together. A
					// client that came back every few milliseconds would
					// measure how fast the API says no: in a run with
					// 20 ms retries the refusals took the CPU the read
					// model needed to see orders end, and the API went
					// on refusing with nothing running.
					select {
					case <-time.After(jitter(max(retry, 20*time.Millisecond))):
					case <-ctx.Done():
					}
					continue
				}
				select {
				case <-w:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	wg.Wait()
}

// progress prints a status line of the step that began at start to w every
// second until done, then closes exited. It takes what it prints from its
// arguments, not from r, which the next step overwrites.
func (r *run) progress(ctx context.Context, done <-chan struct{}, exited chan<- struct{}, w io.Writer, label string, start time.Time) {
	defer close(exited)
	if w == nil {
		return
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var lastEnded int64
	for {
		select {
		case <-done:
			fmt.Fprintln(w)
			return
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.mu.Lock()
		inflight := len(r.pending)
		recent := r.lat[max(0, len(r.lat)-2000):]
		q := quantiles(append([]time.Duration(nil), recent...))
		r.mu.Unlock()
		e := r.ended.Load()
		fmt.Fprintf(w, "\r%s%5.0fs  sent %-8d ended %-8d (%5d/s)  running %-6d refused %-5d  p50 %-7s p99 %-7s ",
			label, time.Since(start).Seconds(), r.sent.Load(), e, e-lastEnded, inflight, r.refused.Load(),
			q.P50.Round(time.Millisecond), q.P99.Round(time.Millisecond))
		lastEnded = e
	}
}

// timeline buckets the run by second; r.mu is held.
func (r *run) timeline() []Second {
	var secs []Second
	grow := func(i int) {
		for len(secs) <= i {
			secs = append(secs, Second{At: float64(len(secs))})
		}
	}
	lats := map[int][]time.Duration{}
	for _, s := range r.sends {
		i := int(s / time.Second)
		grow(i)
		secs[i].Sent++
	}
	for _, e := range r.ends {
		i := int(e.at / time.Second)
		grow(i)
		secs[i].Ended++
		lats[i] = append(lats[i], e.lat)
	}
	for i := range secs {
		q := quantiles(lats[i])
		secs[i].P50, secs[i].P99 = q.P50, q.P99
		secs[i].P50ms, secs[i].P99ms = ms(q.P50), ms(q.P99)
	}
	return secs
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// MarshalJSON writes durations in milliseconds, for people and plots.
func (q Quantiles) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"n": q.N, "p50_ms": ms(q.P50), "p95_ms": ms(q.P95), "p99_ms": ms(q.P99),
		"max_ms": ms(q.Max), "avg_ms": ms(q.Avg)})
}

// jitter returns a wait between d and 1.5 d: at least what was asked.
func jitter(d time.Duration) time.Duration {
	return d + rand.N(d/2+1)
}
