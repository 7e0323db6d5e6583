package orders

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// Config configures the orders HTTP API. Zero fields take the defaults.
type Config struct {
	// OperatorToken is the bearer token of the operator endpoints. Empty
	// disables them: they answer 401 to everyone, so forgetting to set it
	// never opens them.
	OperatorToken string
	// EventsTopic receives OrderPlaced (default orders.events); ControlTopic
	// the operator commands (default saga.control).
	EventsTopic, ControlTopic string
	// MaxBodyBytes bounds request bodies. Default 16 KiB, far above the
	// largest valid order.
	MaxBodyBytes int64
	// MaxLines and MaxQuantity bound an order: default 20 lines of 1 to 1000
	// each.
	MaxLines    int
	MaxQuantity int64
	// SendTimeout bounds the wait for Kafka's acknowledgement of a record the
	// API produces. Default 10s.
	SendTimeout time.Duration
	// KeepAlive is the interval of the comments that keep an idle event
	// stream open through proxies. Default 15s.
	KeepAlive time.Duration
	// ReadyTimeout bounds each readiness check. Default 2s.
	ReadyTimeout time.Duration
	// IdempotencyLease is how long a POST /orders may run while retries with
	// its key are told 409 (idempotency.MiddlewareConfig.Lease). Default 1
	// minute; keep it above the server's write timeout.
	IdempotencyLease time.Duration
	// MaxInFlight bounds the POST /orders being served at once. One more is
	// answered 503 with Retry-After at once, without touching Redis or
	// Kafka: when they are slow, waiting requests would only pile up, hold
	// connections and time out together. Default 512.
	MaxInFlight int
	// MaxBacklog is how long the orders already running may take to end, at
	// the pace orders ended over the last 10 s, before a new one is
	// refused 503 with Retry-After. Without it an API that accepts faster
	// than the participants work only lengthens their queues, until steps
	// time out on commands still queued and their retries load them more
	// (docs/chaos.md). The first 100 running orders are always accepted,
	// so a quiet or just-started system never refuses. Default 10s, near
	// the step timeout; negative: never refuse for the backlog.
	MaxBacklog time.Duration
	// LookupCache is how long a product and a customer that POST /orders
	// found are used again without reading the catalogue and the accounts:
	// an order may take a price up to this old. Default 1s; negative: read
	// them for every order.
	LookupCache time.Duration
}

func (c Config) withDefaults() Config {
	if c.EventsTopic == "" {
		c.EventsTopic = kafkatx.TopicOrderEvents
	}
	if c.ControlTopic == "" {
		c.ControlTopic = kafkatx.TopicSagaControl
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 16 << 10
	}
	if c.MaxLines == 0 {
		c.MaxLines = 20
	}
	if c.MaxQuantity == 0 {
		c.MaxQuantity = 1000
	}
	if c.SendTimeout == 0 {
		c.SendTimeout = 10 * time.Second
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = 15 * time.Second
	}
	if c.ReadyTimeout == 0 {
		c.ReadyTimeout = 2 * time.Second
	}
	if c.IdempotencyLease == 0 {
		c.IdempotencyLease = time.Minute
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = 512
	}
	if c.MaxBacklog == 0 {
		c.MaxBacklog = 10 * time.Second
	}
	if c.LookupCache == 0 {
		c.LookupCache = time.Second
	}
	return c
}

// Validate reports what is wrong with the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes < 0 || c.MaxLines < 0 || c.MaxQuantity < 0 || c.MaxInFlight < 0 {
		errs = append(errs, errors.New("negative limit"))
	}
	if c.SendTimeout < 0 || c.KeepAlive < 0 || c.ReadyTimeout < 0 || c.IdempotencyLease < 0 {
		errs = append(errs, errors.New("negative duration"))
	}
	if len(errs) > 0 {
		return fmt.Errorf("orders: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

// Sender produces one record and returns once the broker acknowledged it
// (kafkatx.Producer). An error means the record may or may not have been
// written; sending it again is safe for everything the API sends: a second
// OrderPlaced for an order id is ignored by the orchestrator and the read
// model, and an operator command that no longer fits the saga is refused.
type Sender interface {
	Send(ctx context.Context, m kafkatx.Message) error
}

// Check reports whether a dependency is usable now; nil means it is. It
// must return within ctx's deadline.
type Check func(ctx context.Context) error

// Deps are what the service talks to.
type Deps struct {
	Producer    Sender             // required
	Idempotency *idempotency.Store // required: POST /orders' Idempotency-Key records
	Orders      *ReadModel         // required
	Catalog     Catalog            // required
	Accounts    Accounts           // required
	// Ready holds the checks of /readyz by name, e.g. "kafka", "redis".
	Ready map[string]Check
	// Web serves GET / and everything under it no API route takes: the demo
	// page. Nil serves a one-line placeholder.
	Web http.Handler
}

// Service is the orders HTTP API (docs/http-api.md, openapi.yaml). It is an
// http.Handler; Close ends the event streams, which http.Server.Shutdown
// would otherwise wait for.
type Service struct {
	cfg  Config
	deps Deps
	log  *zap.Logger
	mux  *http.ServeMux
	// routes are the patterns registered in mux, for the OpenAPI test.
	routes []string

	metrics *metrics
	ready   readiness
	// inFlight holds a token per POST /orders being served (MaxInFlight).
	inFlight chan struct{}
	// products and customers keep what lookup found (LookupCache).
	products  *lookupCache[Product]
	customers *lookupCache[Customer]

	done      chan struct{}
	closeOnce sync.Once
}

// New returns the service. A nil log means no logging.
func New(cfg Config, deps Deps, log *zap.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var missing []string
	if deps.Producer == nil {
		missing = append(missing, "Producer")
	}
	if deps.Idempotency == nil {
		missing = append(missing, "Idempotency")
	}
	if deps.Orders == nil {
		missing = append(missing, "Orders")
	}
	if deps.Catalog == nil {
		missing = append(missing, "Catalog")
	}
	if deps.Accounts == nil {
		missing = append(missing, "Accounts")
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("orders: missing dependencies: %s", strings.Join(missing, ", "))
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	s := &Service{cfg: cfg, deps: deps, log: log, mux: http.NewServeMux(), metrics: newMetrics(),
		done: make(chan struct{})}
	s.ready = readiness{checks: deps.Ready, timeout: cfg.ReadyTimeout}
	s.inFlight = make(chan struct{}, cfg.MaxInFlight)
	s.products, s.customers = newLookupCache[Product](cfg.LookupCache), newLookupCache[Customer](cfg.LookupCache)

	idem, err := idempotency.Middleware(idempotency.MiddlewareConfig{
		Required:     true,
		Methods:      []string{http.MethodPost},
		MaxBodyBytes: cfg.MaxBodyBytes,
		Lease:        cfg.IdempotencyLease,
	}, deps.Idempotency)
	if err != nil {
		return nil, err
	}
	web := deps.Web
	if web == nil {
		web = http.HandlerFunc(placeholder)
	}
	// The idempotency middleware reads the body whole (to fingerprint it)
	// with its own limit, so only an announced size is refused before it.
	s.handle("POST /orders", s.shed(s.backlogged(s.refuseLarge(requireKey(idem(http.HandlerFunc(s.placeOrder)))))))
	s.handle("GET /orders", http.HandlerFunc(s.listOrders))
	s.handle("GET /orders/{id}", http.HandlerFunc(s.getOrder))
	s.handle("GET /orders/{id}/events", http.HandlerFunc(s.orderEvents))
	s.handle("GET /events", http.HandlerFunc(s.allEvents))
	s.handle("POST /orders/{id}/retry", s.limitBody(s.operator(saga.OpRetry)))
	s.handle("POST /orders/{id}/compensate", s.limitBody(s.operator(saga.OpForceCompensate)))
	s.handle("GET /products", http.HandlerFunc(s.listProducts))
	s.handle("GET /customers", http.HandlerFunc(s.listCustomers))
	s.handle("GET /customers/{id}", http.HandlerFunc(s.getCustomer))
	s.handle("GET /healthz", http.HandlerFunc(healthz))
	s.handle("GET /readyz", http.HandlerFunc(s.readyz))
	s.handle("GET /metrics", http.HandlerFunc(s.serveMetrics))
	s.handle("GET /openapi.yaml", http.HandlerFunc(serveOpenAPI))
	s.handle("GET /", web)
	return s, nil
}

func (s *Service) handle(pattern string, h http.Handler) {
	s.mux.Handle(pattern, h)
	s.routes = append(s.routes, pattern)
}

// Close ends every open event stream and makes new ones end at once. Call it
// when the server shuts down. It may be called more than once.
func (s *Service) Close() { s.closeOnce.Do(func() { close(s.done) }) }

// ServeHTTP routes the request, counts it for /metrics, and turns the
// router's own 404 and 405 into problem documents.
func (s *Service) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		// Only registered patterns become labels: the mux also reports the
		// cleaned path of a redirect as its pattern, and a label per path a
		// client makes up would grow the metrics without bound.
		route := r.Pattern
		if !slices.Contains(s.routes, route) {
			route = "unmatched"
		}
		s.metrics.request(route, sw.code(), time.Since(start))
	}()
	defer s.recoverPanic(sw, r)
	if h, pattern := s.mux.Handler(r); pattern == "" {
		s.unrouted(sw, r, h)
		return
	}
	s.mux.ServeHTTP(sw, r)
}

// recoverPanic answers a panicking handler with a 500 problem instead of a cut
// connection, and logs it: a panic is a bug, never the client's mistake.
func (s *Service) recoverPanic(w *statusWriter, r *http.Request) {
	p := recover()
	if p == nil {
		return
	}
	if p == http.ErrAbortHandler {
		panic(p)
	}
	s.log.Error("handler panicked", zap.String("method", r.Method), zap.String("path", r.URL.Path),
		zap.Any("panic", p), zap.Stack("stack"))
	if !w.wrote {
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error",
			"The server failed; this is a bug. Retrying may help.")
	}
}

// unrouted runs the mux's own answer h (404, 405 with Allow, or a redirect
// to the clean path) and sends the same status as a problem document.
func (s *Service) unrouted(w http.ResponseWriter, r *http.Request, h http.Handler) {
	rec := &headerRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	switch rec.status {
	case http.StatusNotFound:
		writeProblem(w, http.StatusNotFound, "not-found", "Not found",
			fmt.Sprintf("No resource at %s.", r.URL.Path))
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", rec.header.Get("Allow"))
		writeProblem(w, http.StatusMethodNotAllowed, "method-not-allowed", "Method not allowed",
			fmt.Sprintf("%s does not accept %s; it accepts %s.", r.URL.Path, r.Method, rec.header.Get("Allow")))
	default:
		for k, v := range rec.header {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.status)
	}
}

// refuseLarge refuses a body announced as too large before anything reads
// it.
func (s *Service) refuseLarge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			tooLarge(w, s.cfg.MaxBodyBytes)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// limitBody is refuseLarge that also caps what a handler can read of a body
// that did not announce its size.
func (s *Service) limitBody(next http.Handler) http.Handler {
	return s.refuseLarge(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	}))
}

// requireKey answers a POST without an Idempotency-Key itself, as the other
// validation problems are answered, with the field named in errors. The
// middleware would refuse it too (it is Required), and still judges the
// key's form.
func requireKey(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.Header.Values("Idempotency-Key")) == 0 {
			writeProblem(w, http.StatusBadRequest, "idempotency-key-missing", "Idempotency-Key missing",
				"Placing an order needs an Idempotency-Key header (a UUID is a good choice); a retry with the same key never places a second order.",
				FieldError{Field: "Idempotency-Key", Detail: "is required"})
			return
		}
		next.ServeHTTP(w, r)
	})
}

func tooLarge(w http.ResponseWriter, limit int64) {
	writeProblem(w, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
		fmt.Sprintf("The body exceeds %d bytes.", limit),
		FieldError{Field: "body", Detail: fmt.Sprintf("must be at most %d bytes", limit)})
}

func placeholder(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		writeProblem(w, http.StatusNotFound, "not-found", "Not found", fmt.Sprintf("No resource at %s.", r.URL.Path))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "sagaflow orders API: the demo page is not built into this binary; see /openapi.yaml.")
}

// getOrder serves GET /orders/{id}.
func (s *Service) getOrder(w http.ResponseWriter, r *http.Request) {
	o, ok, err := s.deps.Orders.Lookup(r.Context(), r.PathValue("id"))
	if err != nil {
		s.unavailable(w, "order archive", err)
		return
	}
	if !ok {
		orderNotFound(w, r.PathValue("id"))
		return
	}
	writeJSON(w, http.StatusOK, o)
}

func orderNotFound(w http.ResponseWriter, id string) {
	writeProblem(w, http.StatusNotFound, "order-not-found", "Order not found",
		fmt.Sprintf("There is no order %q (an order just placed on another instance may take a moment to appear).", id),
		FieldError{Field: "id", Detail: "no such order"})
}

// listOrders serves GET /orders?status=&limit=.
func (s *Service) listOrders(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var errs []FieldError
	status := Status(q.Get("status"))
	if status != "" && !validStatus(status) {
		errs = append(errs, FieldError{Field: "status", Detail: "must be one of " + statusList()})
	}
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 200 {
			errs = append(errs, FieldError{Field: "limit", Detail: "must be a whole number from 1 to 200"})
		}
		limit = n
	}
	after, err := parseCursor(q.Get("cursor"))
	if err != nil {
		errs = append(errs, FieldError{Field: "cursor", Detail: "must be the next_cursor of an earlier page"})
	}
	if len(errs) > 0 {
		invalid(w, http.StatusBadRequest, errs)
		return
	}
	list, next := s.deps.Orders.List(status, limit, after)
	out := struct {
		Orders     []Summary `json:"orders"`
		NextCursor string    `json:"next_cursor,omitempty"`
	}{Orders: make([]Summary, len(list))}
	for i, o := range list {
		out.Orders[i] = o.Summary()
	}
	if next != (Cursor{}) {
		out.NextCursor = formatCursor(next)
	}
	writeJSON(w, http.StatusOK, out)
}

// A cursor travels as base64url of "unix-nanos,order-id": opaque to
// clients, and checked when it comes back.
func formatCursor(c Cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(c.PlacedAt.UnixNano(), 10) + "," + c.OrderID))
}

func parseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, err
	}
	ns, id, ok := strings.Cut(string(b), ",")
	n, err := strconv.ParseInt(ns, 10, 64)
	if !ok || err != nil || id == "" {
		return Cursor{}, errors.New("orders: malformed cursor")
	}
	return Cursor{PlacedAt: time.Unix(0, n).UTC(), OrderID: id}, nil
}

func validStatus(s Status) bool {
	for _, v := range statuses {
		if v == s {
			return true
		}
	}
	return false
}

func statusList() string {
	names := make([]string, len(statuses))
	for i, v := range statuses {
		names[i] = string(v)
	}
	return strings.Join(names, ", ")
}

// listProducts serves GET /products.
func (s *Service) listProducts(w http.ResponseWriter, r *http.Request) {
	ps, err := s.deps.Catalog.Products(r.Context())
	if err != nil {
		s.unavailable(w, "catalogue", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Products []Product `json:"products"`
	}{nonNil(ps)})
}

// listCustomers serves GET /customers.
func (s *Service) listCustomers(w http.ResponseWriter, r *http.Request) {
	cs, err := s.deps.Accounts.Customers(r.Context())
	if err != nil {
		s.unavailable(w, "accounts", err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Customers []Customer `json:"customers"`
	}{nonNil(cs)})
}

// getCustomer serves GET /customers/{id}.
func (s *Service) getCustomer(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	c, err := s.deps.Accounts.Customer(r.Context(), id)
	switch {
	case errors.Is(err, ErrNotFound):
		writeProblem(w, http.StatusNotFound, "customer-not-found", "Customer not found",
			fmt.Sprintf("There is no customer %q.", id), FieldError{Field: "id", Detail: "no such customer"})
	case err != nil:
		s.unavailable(w, "accounts", err)
	default:
		writeJSON(w, http.StatusOK, c)
	}
}

// unavailable answers 503 for a dependency that failed: the request was
// fine, and may succeed when retried.
// shed serves h while fewer than MaxInFlight requests are in it, and answers
// the rest 503 at once: the fast refusal a client can retry (with the same
// Idempotency-Key) is better than a slow one that times out.
func (s *Service) shed(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case s.inFlight <- struct{}{}:
			defer func() { <-s.inFlight }()
			h.ServeHTTP(w, r)
		default:
			s.metrics.shed.Add(1)
			w.Header().Set("Retry-After", "1")
			writeProblem(w, http.StatusServiceUnavailable, "overloaded", "Too many orders at once",
				fmt.Sprintf("This instance is serving %d orders already; retry in a moment with the same Idempotency-Key.", cap(s.inFlight)))
		}
	})
}

// backlogFloor is how many running orders are accepted whatever the pace:
// at start the pace is not known yet, and a handful of orders is no backlog.
const backlogFloor = 100

// backlogged serves h unless the orders already running would take longer
// than MaxBacklog to end at the pace they end now (MaxBacklog). It runs
// before the idempotency middleware: a refusal costs no Redis round trip,
// and a 503 is never recorded, so the client's retry with the same key is
// a first attempt again.
func (s *Service) backlogged(h http.Handler) http.Handler {
	if s.cfg.MaxBacklog < 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		running, pace := s.deps.Orders.Backlog()
		if running <= backlogFloor || float64(running) <= pace*s.cfg.MaxBacklog.Seconds() {
			h.ServeHTTP(w, r)
			return
		}
		s.metrics.backlogged.Add(1)
		wait := "none ended in the last 10 s"
		if pace > 0 {
			wait = fmt.Sprintf("they end at %.1f per second, so a new one would wait about %s", pace,
				time.Duration(float64(running)/pace*float64(time.Second)).Round(time.Second))
		}
		w.Header().Set("Retry-After", "2")
		writeProblem(w, http.StatusServiceUnavailable, "backlogged", "Too many orders still running",
			fmt.Sprintf("%d orders are still running and %s; retry in a moment with the same Idempotency-Key.", running, wait))
	})
}

func (s *Service) unavailable(w http.ResponseWriter, what string, err error) {
	s.log.Warn("dependency failed", zap.String("dependency", what), zap.Error(err))
	w.Header().Set("Retry-After", "1")
	writeProblem(w, http.StatusServiceUnavailable, "unavailable", "Service unavailable",
		fmt.Sprintf("The %s cannot be reached right now; retry in a moment.", what))
}

// operator serves POST /orders/{id}/retry and /compensate: it checks the
// bearer token, that the order exists and that the command fits its status,
// then sends the command to the orchestrator, which applies it exactly once
// in its own transaction (or refuses it if the saga moved on meanwhile).
func (s *Service) operator(op saga.Op) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sagaflow operator"`)
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "Operator token required",
				"Operator commands need the header Authorization: Bearer <token>, with the token this service was configured with.")
			return
		}
		var body struct {
			Reason string `json:"reason"`
		}
		if errs := decodeOptional(r, &body); len(errs) > 0 {
			if errs[0].Field == "body" && errs[0].Detail == errTooLarge {
				tooLarge(w, s.cfg.MaxBodyBytes)
				return
			}
			invalid(w, http.StatusBadRequest, errs)
			return
		}
		if len(body.Reason) > 500 {
			invalid(w, http.StatusUnprocessableEntity, []FieldError{{Field: "reason", Detail: "must be at most 500 bytes"}})
			return
		}
		id := r.PathValue("id")
		o, ok := s.deps.Orders.Get(id)
		if !ok {
			orderNotFound(w, id)
			return
		}
		if detail := opConflict(op, o.Status); detail != "" {
			writeProblem(w, http.StatusConflict, "operator-command-conflict", "Command does not fit the order's state", detail)
			return
		}
		reason := body.Reason
		if reason == "" {
			reason = "requested over the API"
		}
		msg, err := saga.OperatorMessage(s.cfg.ControlTopic, id, op, reason)
		if err != nil {
			s.log.Error("cannot build operator command", zap.String("saga_id", id), zap.Error(err))
			writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "The command could not be built.")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.SendTimeout)
		defer cancel()
		if err := s.deps.Producer.Send(ctx, msg); err != nil {
			s.unavailable(w, "message broker", err)
			return
		}
		s.log.Info("operator command sent", zap.String("saga_id", id), zap.String("op", string(op)),
			zap.String("message_id", string(msg.Header(saga.HeaderMessageID))))
		writeJSON(w, http.StatusAccepted, struct {
			OrderID   string  `json:"order_id"`
			Command   saga.Op `json:"command"`
			MessageID string  `json:"message_id"`
		}{id, op, string(msg.Header(saga.HeaderMessageID))})
	})
}

// opConflict says why op cannot apply to an order in status st, or "". The
// orchestrator decides in the end (the read model may be a moment behind);
// this catches the evident mistakes with an answer a person can act on.
func opConflict(op saga.Op, st Status) string {
	switch op {
	case saga.OpRetry:
		if st != StatusFailed {
			return fmt.Sprintf("Only a Failed order can be retried; this one is %s.", st)
		}
	case saga.OpForceCompensate:
		switch st {
		case StatusRunning, StatusFailed:
		case StatusPlaced:
			return "The saga of this order has not started yet; try again in a moment."
		case StatusCompensating:
			return "The order is already being compensated."
		default:
			return fmt.Sprintf("The order is %s: there is nothing left to compensate.", st)
		}
	}
	return ""
}

// authorized compares the bearer token in constant time. Both sides are
// hashed first, so the comparison takes as long whatever the lengths.
func (s *Service) authorized(r *http.Request) bool {
	if s.cfg.OperatorToken == "" {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(token)))
	want := sha256.Sum256([]byte(s.cfg.OperatorToken))
	return subtle.ConstantTimeCompare(got[:], want[:]) == 1
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz serves GET /readyz: 200 when every check passes, else 503 with each
// check's result.
func (s *Service) readyz(w http.ResponseWriter, r *http.Request) {
	results, ok := s.ready.run(r.Context())
	if ok {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "checks": results})
		return
	}
	w.Header().Set("Retry-After", "1")
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": problemBase + "not-ready", "title": "Not ready", "status": http.StatusServiceUnavailable,
		"detail": "A check failed (a dependency is unreachable, or the read model is still catching up); checks says which.", "checks": results,
	})
}

// readiness runs the checks, at most once a second: /readyz may be polled
// hard (by load balancers, or anyone), and each check costs a round trip.
type readiness struct {
	checks  map[string]Check
	timeout time.Duration

	mu      sync.Mutex
	at      time.Time
	results map[string]string
	ok      bool
}

func (rd *readiness) run(ctx context.Context) (map[string]string, bool) {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if time.Since(rd.at) < time.Second && rd.results != nil {
		return rd.results, rd.ok
	}
	ctx, cancel := context.WithTimeout(ctx, rd.timeout)
	defer cancel()
	type res struct {
		name string
		err  error
	}
	ch := make(chan res, len(rd.checks))
	for name, c := range rd.checks {
		go func() { ch <- res{name, c(ctx)} }()
	}
	results, ok := make(map[string]string, len(rd.checks)), true
	for range rd.checks {
		r := <-ch
		results[r.name] = "ok"
		if r.err != nil {
			results[r.name], ok = r.err.Error(), false
		}
	}
	rd.at, rd.results, rd.ok = time.Now(), results, ok
	return results, ok
}

//go:embed openapi.yaml
var openAPI []byte

// OpenAPI returns the OpenAPI 3.1 document of the API.
func OpenAPI() []byte { return openAPI }

func serveOpenAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(openAPI)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "internal", "Internal error", "The response could not be encoded.")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// statusWriter remembers the status for /metrics. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines, which
// the event streams need.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote && code >= 200 {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = http.StatusOK, true
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) code() int {
	if !w.wrote {
		return http.StatusOK
	}
	return w.status
}

// headerRecorder catches what the mux's own error handlers write.
type headerRecorder struct {
	header http.Header
	status int
}

func (h *headerRecorder) Header() http.Header { return h.header }
func (h *headerRecorder) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}
func (h *headerRecorder) Write(b []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return len(b), nil
}
