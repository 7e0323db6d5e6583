package wire

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/orders/web"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/stock"
)

// Topics names the topics the parts talk on. An empty name is the default of docs/design.md.
type Topics struct {
	Events, State, Control                                       string
	StockCommands, StockReplies, PaymentCommands, PaymentReplies string
	DeadLetter                                                   string
}

// Namespaced is the default topics with ns and a dot in front of each name,
// so several systems can share one Kafka without meeting (the chaos suite
// runs its own system this way). An empty ns is the defaults.
func Namespaced(ns string) Topics {
	t := Topics{}.withDefaults()
	if ns == "" {
		return t
	}
	for _, s := range t.names() {
		*s = ns + "." + *s
	}
	return t
}

func (t *Topics) names() []*string {
	return []*string{&t.Events, &t.State, &t.Control, &t.StockCommands, &t.StockReplies,
		&t.PaymentCommands, &t.PaymentReplies, &t.DeadLetter}
}

// Specs is what CreateTopics needs for t: the settings of docs/design.md
// (kafkatx.SagaflowTopicsRetaining) under t's names.
func (t Topics) Specs(partitions int, w Windows) []kafkatx.TopicSpec {
	t = t.withDefaults()
	rename := map[string]string{}
	def := Topics{}.withDefaults()
	for i, s := range def.names() {
		rename[*s] = *t.names()[i]
	}
	specs := w.Topics(partitions)
	for i := range specs {
		specs[i].Name = rename[specs[i].Name]
	}
	return specs
}

func (t Topics) withDefaults() Topics {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&t.Events, kafkatx.TopicOrderEvents)
	def(&t.State, kafkatx.TopicSagaState)
	def(&t.Control, kafkatx.TopicSagaControl)
	def(&t.StockCommands, kafkatx.TopicStockCommands)
	def(&t.StockReplies, kafkatx.TopicStockReplies)
	def(&t.PaymentCommands, kafkatx.TopicPaymentCommands)
	def(&t.PaymentReplies, kafkatx.TopicPaymentReplies)
	def(&t.DeadLetter, kafkatx.TopicSagaDeadLetter)
	return t
}

// Config is one system of the order saga.
type Config struct {
	// Kafka is every part's Kafka settings. An empty Group gives each part
	// its own default group; a set one is the prefix of each part's group,
	// so two systems on one Kafka (tests) do not share groups.
	Kafka  saga.Kafka
	Topics Topics
	// Saga holds the saga's timings; its topics come from Topics.
	Saga orders.SagaConfig
	// TickInterval is the orchestrator's (zero: its default).
	TickInterval time.Duration
	// APILinger is the orders API producer's linger (kafkatx.WithLinger);
	// zero sends each order at once, as a POST's answer waits for its ack.
	APILinger time.Duration
	// RedisPrefix prefixes the orders service's idempotency keys.
	RedisPrefix string
	// Windows are the retention windows; zero takes DefaultWindows.
	Windows Windows
	// CheckpointDir and CheckpointEvery are the orchestrator's restore
	// checkpoints (saga.OrchestratorConfig); an empty dir writes none.
	CheckpointDir   string
	CheckpointEvery time.Duration
}

func (c Config) windows() Windows {
	if c.Windows == (Windows{}) {
		return DefaultWindows()
	}
	return c.Windows
}

func (c Config) kafka(part, defaultGroup string) saga.Kafka {
	k := c.Kafka
	if k.DeadLetterTopic == "" {
		k.DeadLetterTopic = c.Topics.withDefaults().DeadLetter
	}
	if k.Group == "" {
		k.Group = defaultGroup
	} else {
		k.Group += "-" + part
	}
	return k
}

// ErrTimings is returned for saga timings the orchestrator cannot run.
var ErrTimings = errors.New("wire: saga timings: step timeout and attempts must be positive, backoffs and deadline not negative")

// NewOrchestrator is the orchestrator of the order saga.
func NewOrchestrator(cfg Config, log *zap.Logger) (*saga.Orchestrator, error) {
	s, t := cfg.Saga, cfg.Topics.withDefaults()
	if s.StepTimeout <= 0 || s.Attempts < 1 || s.Backoff < 0 || s.MaxBackoff < 0 || s.Deadline < 0 {
		return nil, ErrTimings
	}
	s.StockTopic, s.PaymentTopic, s.EventsTopic = t.StockCommands, t.PaymentCommands, t.Events
	reg, err := saga.NewRegistry(orders.Definition(s))
	if err != nil {
		return nil, err
	}
	return saga.NewOrchestrator(saga.OrchestratorConfig{
		Kafka:       cfg.kafka("orchestrator", ""),
		Registry:    reg,
		Starts:      orders.Starts(),
		StartTopics: []string{t.Events}, ReplyTopics: []string{t.StockReplies, t.PaymentReplies},
		ControlTopic: t.Control, StateTopic: t.State, TickInterval: cfg.TickInterval,
		Retention:     cfg.windows().SagaRetention,
		CheckpointDir: cfg.CheckpointDir, CheckpointEvery: cfg.CheckpointEvery,
	}, log)
}

// Participant names one participant: its scope ("stock", "payment") and its
// handler.
type Participant struct {
	Scope   string
	Handler saga.CommandHandler
	// Failpoint, when set, is called at the participant's crash windows.
	Failpoint func(name string)
	// Pipeline, when set, sends the Redis calls of a batch's sagas that
	// are made at one time as one pipeline; it must be on the client the
	// handler's store uses.
	Pipeline *idempotency.Pipeliner
}

// NewParticipant runs p on its command and reply topics.
func NewParticipant(cfg Config, p Participant, log *zap.Logger) (*saga.Participant, error) {
	t := cfg.Topics.withDefaults()
	cmd, rep := t.StockCommands, t.StockReplies
	if p.Scope == "payment" {
		cmd, rep = t.PaymentCommands, t.PaymentReplies
	}
	pc := saga.ParticipantConfig{Kafka: cfg.kafka(p.Scope, ""), CommandTopic: cmd, ReplyTopic: rep, Failpoint: p.Failpoint}
	if p.Pipeline != nil {
		pc.Crew = func(ctx context.Context) (context.Context, saga.Crew) { return p.Pipeline.Crew(ctx) }
	}
	return saga.NewParticipant(pc, p.Handler, log)
}

// Stores is the state of the participants, in Redis.
type Stores struct {
	Stock   *stock.Store
	Payment *payment.Store
	// DemoScenarios lets an order ask the payment participant to withhold
	// its reply (see payment.ServiceConfig).
	DemoScenarios bool
	// rdb is the stores' client: Saga's participants pipeline their
	// batches' calls on it (nil: they do not).
	rdb redis.UniversalClient
}

// OpenStores opens the stock and payment stores on rdb. With an empty
// prefix their keys are under the stores' defaults; else under prefix:stock
// and prefix:payment (the two must never share one: their per-order keys
// would collide).
func OpenStores(rdb *redis.Client, prefix string, log *zap.Logger) (Stores, error) {
	return OpenStoresFor(rdb, prefix, DefaultWindows().DedupTTL, log)
}

// OpenStoresFor is OpenStores with the dedup records living dedupTTL.
func OpenStoresFor(rdb *redis.Client, prefix string, dedupTTL time.Duration, log *zap.Logger) (Stores, error) {
	sc := stock.Config{DedupTTL: dedupTTL}
	pc := payment.Config{DedupTTL: dedupTTL}
	if prefix != "" {
		sc.Prefix, pc.Prefix = prefix+":stock", prefix+":payment"
	}
	stocks, err := stock.NewStore(sc, rdb, log)
	if err != nil {
		return Stores{}, err
	}
	accounts, err := payment.NewStore(pc, rdb, log)
	if err != nil {
		return Stores{}, err
	}
	return Stores{Stock: stocks, Payment: accounts, rdb: rdb}, nil
}

// Saga returns the orchestrator and the stock and payment participants on
// st, by name, ready to run.
func Saga(cfg Config, st Stores, log *zap.Logger) (map[string]func(context.Context) error, error) {
	orch, err := NewOrchestrator(cfg, log.Named("orchestrator"))
	if err != nil {
		return nil, err
	}
	parts := map[string]func(context.Context) error{"orchestrator": orch.Run}
	var pl *idempotency.Pipeliner
	if st.rdb != nil {
		pl = idempotency.NewPipeliner(st.rdb, 0)
	}
	for _, p := range []Participant{
		{Scope: "stock", Handler: stock.NewService(st.Stock, log.Named("stock")).Handle, Pipeline: pl},
		{Scope: "payment", Handler: payment.NewService(st.Payment, payment.ServiceConfig{DemoScenarios: st.DemoScenarios}, log.Named("payment")).Handle, Pipeline: pl},
	} {
		pp, err := NewParticipant(cfg, p, log.Named(p.Scope))
		if err != nil {
			return nil, err
		}
		parts[p.Scope] = pp.Run
	}
	return parts, nil
}

// Orders is the orders service with the demo page, its read model and its
// producer.
type Orders struct {
	Service   *orders.Service
	ReadModel *orders.ReadModel
	producer  *kafkatx.Producer
}

// Close closes the producer; call it after the service is shut down and the
// read model stopped.
func (o *Orders) Close() { o.producer.Close() }

// NewOrders is the orders service on cfg's topics, reading the catalogue and
// the accounts from st (the orders service only reads them). oc's topics are
// overwritten from cfg.Topics; ready checks of Kafka and Redis are added.
func NewOrders(cfg Config, oc orders.Config, rdb *redis.Client, st Stores, log *zap.Logger) (*Orders, error) {
	t := cfg.Topics.withDefaults()
	brokers := cfg.Kafka.Brokers
	w := cfg.windows()
	idem, err := idempotency.New(idempotency.Config{Prefix: cfg.RedisPrefix, TTL: w.IdempotencyTTL}, rdb, log)
	if err != nil {
		return nil, err
	}
	prefix := "sagaflow:"
	if cfg.RedisPrefix != "" {
		prefix = cfg.RedisPrefix + ":"
	}
	rm, err := orders.NewReadModel(orders.ReadModelConfig{Brokers: brokers, StateTopic: t.State, EventsTopic: t.Events,
		Memory: w.OrderMemory, Archive: orderArchive{rdb: rdb, prefix: prefix, ttl: w.OrderTTL}}, log)
	if err != nil {
		return nil, err
	}
	producer, err := kafkatx.NewProducer(brokers, log, kafkatx.WithLinger(cfg.APILinger))
	if err != nil {
		return nil, err
	}
	oc.EventsTopic, oc.ControlTopic = t.Events, t.Control
	svc, err := orders.New(oc, orders.Deps{
		Producer: producer, Idempotency: idem, Orders: rm,
		Catalog: Catalog{st.Stock}, Accounts: Accounts{st.Payment},
		Ready: map[string]orders.Check{
			"kafka": func(ctx context.Context) error { return kafkatx.Ping(ctx, brokers) },
			"redis": func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
			// A restarted instance reads saga.state again before its
			// answers about orders are current; a load balancer should
			// not send it users meanwhile.
			"read-model": func(context.Context) error {
				if !rm.CaughtUp() {
					return errors.New("still reading saga.state and orders.events from Kafka")
				}
				return nil
			},
		},
		Web: web.Handler(),
	}, log)
	if err != nil {
		producer.Close()
		return nil, err
	}
	return &Orders{Service: svc, ReadModel: rm, producer: producer}, nil
}

// Prepare loads a store's scripts and, with seed, adds what seed holds that
// the store lacks (what exists keeps its stock or balance). It returns how
// many it added.
func Prepare[T any](ctx context.Context, s interface {
	Load(context.Context) error
	Seed(context.Context, []T) (int, error)
}, seed []T) (int, error) {
	if err := s.Load(ctx); err != nil {
		return 0, err
	}
	if seed == nil {
		return 0, nil
	}
	return s.Seed(ctx, seed)
}
