package chaos

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/sagaflow/sagaflow/cmd/sagaflow/wire"
	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

// Config says what to run.
type Config struct {
	// Seed draws the fault schedule and the traffic; 0 takes the time.
	Seed uint64
	// Duration of the traffic and the faults; Drain bounds how long after
	// the faults healed every accepted order may take to end.
	Duration, Drain time.Duration
	// Orders, when positive, ends the load as soon as that many orders were
	// accepted, even before Duration: a long run sized in sagas rather
	// than in minutes whose pace is not known beforehand.
	Orders int
	// Rate is the orders per second offered, with at most Clients in flight.
	Rate    float64
	Clients int
	// Every is the mean time between faults; Kinds the kinds drawn.
	Every time.Duration
	Kinds []Kind
	// Faults, when set, is the schedule itself, played as given instead of
	// one drawn from the seed (Every and Kinds are then unused): a test
	// that must kill each broker in turn says so.
	Faults []Fault
	// Brokers is the Kafka bootstrap list; Kafka kills and pauses its nodes
	// (no script: broker faults are left out of the schedule).
	Brokers string
	Kafka   kafkactl.Nodes
	// RedisServer is the redis-server binary; empty: found on PATH.
	RedisServer string
	// Launch starts a sagaflow process. Required.
	Launch Launcher
	// Dir receives a folder per run with the processes' logs, Redis's data
	// and the report.
	Dir string
	// Partitions of each topic of the run's namespace.
	Partitions int
	// Plant runs the payment participants with a bug on purpose:
	// "forget-charges" (see payment.Config.UnsafeForgetCharges). For the
	// suite's own test: it must then report violations.
	Plant string
	// Progress receives a line every few seconds (nil: none).
	Progress io.Writer
}

// sessionTimeout is the services' group session timeout (kafkatx's default).
const sessionTimeout = 10 * time.Second

// Validate reports what is wrong with c.
func (c Config) Validate() error {
	var errs []error
	if c.Duration < 10*time.Second || c.Drain <= 0 {
		errs = append(errs, errors.New("chaos: -duration must be at least 10s and -drain positive"))
	}
	if c.Orders < 0 {
		errs = append(errs, errors.New("chaos: -orders must not be negative"))
	}
	if c.Rate <= 0 || c.Clients < 1 {
		errs = append(errs, errors.New("chaos: -rate must be positive and -clients at least 1"))
	}
	if c.Every <= 0 && len(c.Faults) == 0 {
		errs = append(errs, errors.New("chaos: -every must be positive"))
	}
	for _, f := range c.Faults {
		if !slices.Contains(AllKinds, f.Kind) || f.At < 0 || f.At >= c.Duration {
			errs = append(errs, fmt.Errorf("chaos: fault %q: unknown kind, or not within the run's duration", f))
		}
	}
	if c.Brokers == "" || c.Launch == nil || c.Dir == "" {
		errs = append(errs, errors.New("chaos: Brokers, Launch and Dir are required"))
	}
	if c.Plant != "" && c.Plant != "forget-charges" {
		errs = append(errs, fmt.Errorf("chaos: -plant %q: the only planted bug is forget-charges", c.Plant))
	}
	return errors.Join(errs...)
}

// injectsInto says whether the run's faults include any of kinds: the
// schedule given as such, else the kinds drawn.
func (c Config) injectsInto(kinds ...Kind) bool {
	if len(c.Faults) > 0 {
		return slices.ContainsFunc(c.Faults, func(f Fault) bool { return slices.Contains(kinds, f.Kind) })
	}
	return slices.ContainsFunc(c.Kinds, func(k Kind) bool { return slices.Contains(kinds, k) })
}

// instances is how many processes of each service run.
var instances = map[string]int{"orders": 1, "orchestrator": 2, "stock": 2, "payment": 2}

// run is one chaos run in progress.
type run struct {
	cfg    Config
	id, ns string
	dir    string
	topics wire.Topics
	redis  *redisServer
	proxy  *Proxy
	// kafkaProxies stand between the services and each broker (none
	// without a control script); serviceBrokers is the services' bootstrap
	// list: the proxies' addresses, or cfg.Brokers.
	kafkaProxies   proxies
	serviceBrokers string
	procs          map[string]*proc
	traffic        *traffic
	start          time.Time
	injector       *injector
	ordersURL      string
}

// Run runs the system under the faults and returns the report; the report
// lists the violations (an error is returned only when the run itself could
// not be carried out).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano())
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 4
	}
	if cfg.Kafka.Count == 0 {
		cfg.Kafka.Count = len(strings.Split(cfg.Brokers, ","))
	}
	if cfg.Kafka.Script == "" {
		cfg.Kafka.Count = 0
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, id: strconv.FormatUint(cfg.Seed, 36) + "-" + strconv.FormatInt(time.Now().Unix()%1e6, 36), procs: map[string]*proc{}}
	r.ns = "chaos-" + r.id
	r.topics = wire.Namespaced(r.ns)
	// Absolute: redis-server changes into its --dir before it opens its
	// log, so a relative path (the default .cache/chaos) would point nowhere.
	base, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	r.dir = filepath.Join(base, r.ns)
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	defer r.teardown()
	if err := r.setUp(ctx); err != nil {
		return nil, err
	}
	rep, err := r.exercise(ctx)
	if err == nil && rep.OK() {
		// A passed run leaves nothing on the broker; a failed one keeps its
		// topics for inspection (sagaflow inspect -namespace).
		if derr := DeleteTopics(context.WithoutCancel(ctx), r.cfg.Brokers, r.ns); derr != nil {
			r.say("could not delete the run's topics: %v", derr)
		}
	}
	return rep, err
}

// DeleteTopics deletes the topics of the run with namespace ns (a report's
// Namespace).
func DeleteTopics(ctx context.Context, brokers, ns string) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	specs := wire.Namespaced(ns).Specs(1, windows())
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return kafkatx.DeleteTopics(ctx, brokers, names)
}

func (r *run) say(format string, args ...any) {
	if r.cfg.Progress != nil {
		fmt.Fprintf(r.cfg.Progress, "chaos: "+format+"\n", args...)
	}
}

// windows of the run: the saga retention outlives the run, so saga.state
// still holds every saga's path when the checks read it.
func windows() wire.Windows {
	w := wire.DefaultWindows()
	w.SagaRetention, w.IdempotencyTTL = 6*time.Hour, time.Hour
	return w
}

// setUp starts Redis, the proxies, the topics and the processes.
func (r *run) setUp(ctx context.Context) error {
	var err error
	if r.redis, err = startRedis(ctx, r.cfg.RedisServer, r.dir); err != nil {
		return err
	}
	if r.proxy, err = NewProxy("127.0.0.1:0", r.redis.addr()); err != nil {
		return err
	}
	if err := r.proxyKafka(ctx); err != nil {
		return err
	}
	if err := r.seed(ctx); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := kafkatx.CreateTopics(cctx, r.cfg.Brokers, r.topics.Specs(r.cfg.Partitions, windows())); err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	r.ordersURL = fmt.Sprintf("http://127.0.0.1:%d/", port)
	w := windows()
	common := []string{"-kafka", r.serviceBrokers, "-redis", r.proxy.Addr(), "-namespace", r.ns,
		"-partitions", strconv.Itoa(r.cfg.Partitions), "-log-level", "info",
		"-saga-retention", w.SagaRetention.String(), "-idempotency-ttl", w.IdempotencyTTL.String()}
	for _, svc := range []string{"orders", "orchestrator", "stock", "payment"} {
		for i := 1; i <= instances[svc]; i++ {
			name := fmt.Sprintf("%s-%d", svc, i)
			args := append([]string{svc}, common...)
			args = append(args, "-instance", r.ns+"-"+name)
			switch svc {
			case "orders":
				args = append(args, "-addr", strings.TrimSuffix(strings.TrimPrefix(r.ordersURL, "http://"), "/"))
			case "orchestrator":
				// Attempts enough to ride out a broker restart or a paused
				// participant: a saga that exhausts them ends Failed and
				// waits for an operator, which the checks count as hanging.
				args = append(args, "-step-timeout", "10s", "-attempts", "10", "-max-backoff", "5s", "-deadline", "3m")
			case "payment":
				if r.cfg.Plant == "forget-charges" {
					args = append(args, "-unsafe-forget-charges")
				}
			}
			p := newProc(name, svc, args, r.cfg.Launch, r.dir)
			if err := p.start(); err != nil {
				return fmt.Errorf("chaos: start %s: %w", name, err)
			}
			r.procs[name] = p
			go p.supervise(ctx)
		}
	}
	return nil
}

// proxyKafka puts a proxy in front of each broker's proxied listener, when
// the control script names them and the run injects faults between the
// services and Kafka: the services then reach Kafka only through the
// proxies, while the suite's own clients (the checks, the injector) go
// straight to cfg.Brokers. The proxies listen on the addresses the brokers
// advertise, so a second such run on the same Kafka at the same time fails
// here, saying so.
//
// A run without those faults (the failover tests) leaves the proxies out:
// the first 3-node failover test with every service behind them stalled
// after broker restarts where it had not without them. Outside the race
// detector's test binary a 3-node run with every service behind them and
// broker kills did not stall (5 minutes, then a 100,000-saga run), but
// until the test's stall is understood a broker-kill test measures Kafka,
// not the proxies.
func (r *run) proxyKafka(ctx context.Context) error {
	r.serviceBrokers = r.cfg.Brokers
	if r.cfg.Kafka.Count == 0 || !r.cfg.injectsInto(KafkaLatency, KafkaStall, KafkaCut) {
		return nil
	}
	routes, err := r.cfg.Kafka.Routes(ctx)
	if err != nil {
		return err
	}
	addrs := make([]string, len(routes))
	for i, rt := range routes {
		p, err := NewProxy(rt.Advertised, rt.Listen)
		if err != nil {
			return fmt.Errorf("%w (is another chaos run using this Kafka?)", err)
		}
		r.kafkaProxies = append(r.kafkaProxies, p)
		addrs[i] = rt.Advertised
	}
	r.serviceBrokers = strings.Join(addrs, ",")
	return nil
}

// seed opens the run's catalogue and accounts in its Redis.
func (r *run) seed(ctx context.Context) error {
	rdb := redis.NewClient(&redis.Options{Addr: r.redis.addr()})
	defer rdb.Close()
	stores, err := wire.OpenStores(rdb, "", nil)
	if err != nil {
		return err
	}
	st, pay := stores.Stock, stores.Payment
	ps := []stock.Product{{ID: emptyProduct, Name: "never in stock", PriceCents: unitPrice},
		{ID: scarceProduct, Name: "runs out", PriceCents: unitPrice, Available: scarceStock}}
	for i := range products {
		ps = append(ps, stock.Product{ID: productID(i), Name: "product " + strconv.Itoa(i), PriceCents: unitPrice, Available: plenty})
	}
	cs := []payment.Customer{{ID: poorCustomer, Name: "no money"}}
	for i := range customers {
		cs = append(cs, payment.Customer{ID: customerID(i), Name: "customer " + strconv.Itoa(i), BalanceCents: plenty * unitPrice})
	}
	if _, err := st.Seed(ctx, ps); err != nil {
		return err
	}
	_, err = pay.Seed(ctx, cs)
	return err
}

// teardown stops what setUp started, whatever happened.
func (r *run) teardown() {
	var wg sync.WaitGroup
	for _, p := range r.procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.stop(20 * time.Second) }()
	}
	wg.Wait()
	if r.proxy != nil {
		r.proxy.Close()
	}
	r.kafkaProxies.Close()
	if r.redis != nil {
		r.redis.stop()
	}
}

// ready waits until the orders API answers /readyz and one order went all
// the way through, so the loops have joined their groups.
func (r *run) ready(ctx context.Context) error {
	deadline := time.Now().Add(3 * time.Minute)
	for {
		res, err := http.Get(r.ordersURL + "readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: the orders API at %s was not ready within 3m; logs in %s", r.ordersURL, r.dir)
		}
		time.Sleep(200 * time.Millisecond)
	}
	o := r.traffic.next()
	o.Customer, o.Product = customerID(0), productID(0)
	r.traffic.place(ctx, o)
	for r.traffic.unfinished() > 0 || o.Key == "" {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: the first order did not end within 3m; logs in %s", r.dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}
