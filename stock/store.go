package stock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/hashset"
)

// Limits on what a command may ask for. They keep every number far below
// 2^53, where Lua, whose numbers are doubles, stops counting exactly.
const (
	// MaxQuantity bounds one line of an order (after merging lines for the
	// same product). Anything larger is a bug upstream, not an order.
	MaxQuantity = 1_000_000
	// MaxLines bounds the lines of one order: each one is a key of the
	// reserve script.
	MaxLines = 100
	// MaxStock bounds a product's stock and price: 2^53-1, the largest
	// integer Lua represents exactly.
	MaxStock = 1<<53 - 1
)

// Step names of the order saga (docs/messages.md). They are part of the
// dedup keys, so they never change.
const (
	StepReserve = "reserve-stock"
	StepConfirm = "confirm-order"
)

// Sentinel errors. Handle turns ErrInvalidOrder and ErrUnknownProduct into
// poison; Product returns ErrUnknownProduct.
var (
	// ErrInvalidOrder: the order can never be reserved as written (no
	// lines, a quantity out of range, a malformed product id).
	ErrInvalidOrder = errors.New("stock: invalid order")
	// ErrUnknownProduct: a product id that is not in the catalogue.
	ErrUnknownProduct = errors.New("stock: unknown product")
	// ErrInvalidProduct: Seed was given a product it cannot store.
	ErrInvalidProduct = errors.New("stock: invalid product")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("stock: invalid config")
)

// idPattern is what product ids look like: safe in key names, URLs and logs.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Config configures a Store. The zero value is valid.
type Config struct {
	// Prefix starts every key (see the package doc). Default "stock". It
	// must not contain '{' or '}', which mark the saga id's hash tag.
	Prefix string
	// DedupTTL is how long the barrier and apply-once records live, and
	// the per-order reservation record with them. Zero means
	// idempotency.DefaultTTL; it must outlive Kafka's retention of the
	// commands (see there).
	DedupTTL time.Duration
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "stock"
	}
	if c.DedupTTL == 0 {
		c.DedupTTL = idempotency.DefaultTTL
	}
	return c
}

// Validate reports whether c can be used.
func (c Config) Validate() error {
	c = c.withDefaults()
	if strings.ContainsAny(c.Prefix, "{}") {
		return fmt.Errorf("%w: prefix %q contains '{' or '}'", ErrConfig, c.Prefix)
	}
	if c.DedupTTL < time.Second {
		return fmt.Errorf("%w: dedup TTL %v is below a second", ErrConfig, c.DedupTTL)
	}
	return nil
}

// Product is one catalogue entry with its quantities.
type Product struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
	// Available can be reserved now. For Seed it is the initial stock.
	Available int64 `json:"available"`
	Reserved  int64 `json:"reserved"`
	Sold      int64 `json:"sold"`
	// Stocked is what Seed put in: Available + Reserved + Sold always equals
	// it. Ignored by Seed.
	Stocked int64 `json:"stocked"`
}

// Line is a quantity of one product: one line of an order, or what a
// reserve, release or commit moved.
type Line struct {
	ProductID string `json:"product_id"`
	Quantity  int64  `json:"quantity"`
}

// Result is what a reserve, release or commit answered. It is decoded from
// the outcome recorded in Redis, so every delivery of one command gets the
// same Result (except Repeat).
type Result struct {
	// OK is false for a refusal: out of stock, a hanging reserve, a commit
	// with nothing reserved, a release after the commit.
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// Lines are the quantities moved: reserved, released or sold.
	Lines []Line `json:"lines,omitempty"`
	// Null is set on the release of a reserve that never ran.
	Null bool `json:"null,omitempty"`
	// Repeat is set when this call answered an earlier call's outcome.
	Repeat bool `json:"-"`
}

// Store keeps the catalogue and the quantities in Redis and runs the
// scripts that move them. It is safe for concurrent use, and any number of
// Stores (in any number of processes) may share one Redis.
type Store struct {
	cfg     Config
	rdb     redis.UniversalClient
	log     *zap.Logger
	barrier *idempotency.Barrier // reserve / release
	commit  *idempotency.Script
	catalog *hashset.Set // the products
}

// NewStore returns a Store on rdb. It does no I/O (see Load). A nil log
// means zap.NewNop().
func NewStore(cfg Config, rdb redis.UniversalClient, log *zap.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrConfig)
	}
	if log == nil {
		log = zap.NewNop()
	}
	cfg = cfg.withDefaults()
	idem, err := idempotency.New(idempotency.Config{Prefix: cfg.Prefix, TTL: cfg.DedupTTL}, rdb, log)
	if err != nil {
		return nil, err
	}
	s := &Store{
		cfg:     cfg,
		rdb:     rdb,
		log:     log,
		barrier: idem.Barrier("idem", reserveLua, releaseLua),
		commit:  idem.Script("stock.commit", commitLua),
	}
	s.catalog = hashset.New(rdb, s.catalogueKey(), s.productKey)
	return s, nil
}

// Load sends the scripts to Redis, so a broken script or an unreachable
// Redis shows at start-up rather than on the first command.
func (s *Store) Load(ctx context.Context) error {
	if err := s.barrier.Load(ctx); err != nil {
		return err
	}
	if err := s.commit.Load(ctx); err != nil {
		return err
	}
	return s.catalog.Load(ctx)
}

func (s *Store) productKey(id string) string { return s.cfg.Prefix + ":product:" + id }
func (s *Store) catalogueKey() string        { return s.cfg.Prefix + ":products" }
func (s *Store) orderKey(orderID string) string {
	return s.cfg.Prefix + ":order:{" + keyEscaper.Replace(orderID) + "}"
}
func (s *Store) commitKey(orderID string) string {
	return idempotency.Key(s.cfg.Prefix+":idem", orderID, StepConfirm, "commit")
}

// keyEscaper keeps an order id from breaking the hash tag it sits in, as
// idempotency.Key does.
var keyEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// Seed adds the products that are not in the catalogue yet, with Available
// as their initial stock, and reports how many it added. A product that
// exists is left exactly as it is: seeding again (a restart with --seed, a
// second instance) must never reset quantities that sagas are moving.
func (s *Store) Seed(ctx context.Context, products []Product) (added int, err error) {
	seen := map[string]bool{}
	for _, p := range products {
		switch {
		case !idPattern.MatchString(p.ID):
			return 0, fmt.Errorf("%w: id %q: want 1 to 64 letters, digits, '.', '_' or '-'", ErrInvalidProduct, p.ID)
		case seen[p.ID]:
			return 0, fmt.Errorf("%w: %q given twice", ErrInvalidProduct, p.ID)
		case strings.TrimSpace(p.Name) == "":
			return 0, fmt.Errorf("%w: %q has no name", ErrInvalidProduct, p.ID)
		case p.PriceCents < 0 || p.PriceCents > MaxStock:
			return 0, fmt.Errorf("%w: %q price %d cents out of range", ErrInvalidProduct, p.ID, p.PriceCents)
		case p.Available < 0 || p.Available > MaxStock:
			return 0, fmt.Errorf("%w: %q stock %d out of range", ErrInvalidProduct, p.ID, p.Available)
		}
		seen[p.ID] = true
	}
	for _, p := range products {
		ok, err := s.catalog.Add(ctx, p.ID, "name", p.Name, "price_cents", p.PriceCents,
			"available", p.Available, "reserved", 0, "sold", 0, "stocked", p.Available)
		if err != nil {
			return added, fmt.Errorf("stock: seed %s: %w", p.ID, err)
		}
		if ok {
			added++
		}
	}
	return added, nil
}

// Products returns the catalogue, sorted by id.
func (s *Store) Products(ctx context.Context) ([]Product, error) {
	ids, hs, err := s.catalog.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("stock: products: %w", err)
	}
	out := make([]Product, 0, len(ids))
	for i, id := range ids {
		p, err := parseProduct(id, hs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// Product returns one product, or ErrUnknownProduct.
func (s *Store) Product(ctx context.Context, id string) (Product, error) {
	if !idPattern.MatchString(id) {
		return Product{}, fmt.Errorf("%w %q", ErrUnknownProduct, id)
	}
	h, err := s.catalog.Get(ctx, id)
	if err != nil {
		return Product{}, fmt.Errorf("stock: product %s: %w", id, err)
	}
	return parseProduct(id, h)
}

func parseProduct(id string, h map[string]string) (Product, error) {
	if len(h) == 0 {
		return Product{}, fmt.Errorf("%w %q", ErrUnknownProduct, id)
	}
	p := Product{ID: id, Name: h["name"]}
	if err := hashset.ParseInt64s(h, hashset.Int64{Field: "price_cents", Dst: &p.PriceCents},
		hashset.Int64{Field: "available", Dst: &p.Available}, hashset.Int64{Field: "reserved", Dst: &p.Reserved},
		hashset.Int64{Field: "sold", Dst: &p.Sold}, hashset.Int64{Field: "stocked", Dst: &p.Stocked}); err != nil {
		return Product{}, fmt.Errorf("stock: product %s: %w", id, err)
	}
	return p, nil
}

// Totals sums the quantities of every product, for conservation checks and
// dashboards: Stocked = Available + Reserved + Sold when nothing is lost.
type Totals struct {
	Products                           int
	Stocked, Available, Reserved, Sold int64
}

// Conserved reports whether no unit appeared or vanished.
func (t Totals) Conserved() bool { return t.Stocked == t.Available+t.Reserved+t.Sold }

// Totals reads every product and sums them. It is not one atomic read: run
// it when no command is in flight for an exact check.
func (s *Store) Totals(ctx context.Context) (Totals, error) {
	ps, err := s.Products(ctx)
	if err != nil {
		return Totals{}, err
	}
	t := Totals{Products: len(ps)}
	for _, p := range ps {
		t.Stocked += p.Stocked
		t.Available += p.Available
		t.Reserved += p.Reserved
		t.Sold += p.Sold
	}
	return t, nil
}

// Reservation is what stock holds for one order.
type Reservation struct {
	// State is "" (nothing was ever reserved), "reserved", "released" or
	// "committed".
	State string
	Lines []Line
}

// Reservation returns what is held for an order, for inspection.
func (s *Store) Reservation(ctx context.Context, orderID string) (Reservation, error) {
	h, err := s.rdb.HGetAll(ctx, s.orderKey(orderID)).Result()
	if err != nil {
		return Reservation{}, fmt.Errorf("stock: reservation %s: %w", orderID, err)
	}
	r := Reservation{State: h["state"]}
	if h["lines"] != "" {
		if err := json.Unmarshal([]byte(h["lines"]), &r.Lines); err != nil {
			return Reservation{}, fmt.Errorf("stock: reservation %s: %w", orderID, err)
		}
	}
	return r, nil
}

// Reserve reserves every line of the order or none, once per order (the
// barrier of step reserve-stock). Lines for the same product are merged.
// Errors: ErrInvalidOrder and ErrUnknownProduct (never applicable),
// idempotency.ErrUnavailable (transient), idempotency.ErrScript (a bug).
func (s *Store) Reserve(ctx context.Context, orderID string, lines []Line) (Result, error) {
	merged, err := mergeLines(lines)
	if err != nil {
		return Result{}, err
	}
	keys := make([]string, 0, len(merged)+1)
	keys = append(keys, s.orderKey(orderID))
	args := make([]any, 0, 2*len(merged)+1)
	args = append(args, s.cfg.DedupTTL.Milliseconds())
	for _, l := range merged {
		keys = append(keys, s.productKey(l.ProductID))
		args = append(args, l.ProductID, l.Quantity)
	}
	r, err := s.barrier.Action(ctx, idempotency.Ref{SagaID: orderID, Step: StepReserve}, keys, args...)
	if err != nil {
		return Result{}, scriptErr(err)
	}
	return decodeResult(r)
}

// Release gives back what Reserve reserved for the order, once; the
// quantities come from the reserve's recorded outcome. productIDs must name
// every product the reservation holds (the order's lines; extra ones are
// harmless). A release whose reserve never ran succeeds with Null set, and
// blocks that reserve from then on. A release after Commit is refused.
func (s *Store) Release(ctx context.Context, orderID string, productIDs []string) (Result, error) {
	keys, args, err := s.productKeys(orderID, productIDs)
	if err != nil {
		return Result{}, err
	}
	r, err := s.barrier.Compensate(ctx, idempotency.Ref{SagaID: orderID, Step: StepReserve}, keys, args...)
	if err != nil {
		return Result{}, scriptErr(err)
	}
	return decodeResult(r)
}

// Commit turns what is reserved for the order into sold, once. It is refused
// when nothing is reserved (the reserve was refused or released).
func (s *Store) Commit(ctx context.Context, orderID string, productIDs []string) (Result, error) {
	keys, args, err := s.productKeys(orderID, productIDs)
	if err != nil {
		return Result{}, err
	}
	r, err := s.commit.Apply(ctx, s.commitKey(orderID), keys, args...)
	if err != nil {
		return Result{}, scriptErr(err)
	}
	return decodeResult(r)
}

// productKeys returns the order record and the product keys, and the
// product ids in the same order, for release and commit. More ids than an
// order may have lines is ErrInvalidOrder: each is a key of one script.
func (s *Store) productKeys(orderID string, productIDs []string) ([]string, []any, error) {
	if len(productIDs) > MaxLines {
		return nil, nil, fmt.Errorf("%w: %d lines, at most %d", ErrInvalidOrder, len(productIDs), MaxLines)
	}
	keys := []string{s.orderKey(orderID)}
	var args []any
	seen := map[string]bool{}
	for _, id := range productIDs {
		// A malformed id cannot be in the catalogue, so no reservation
		// holds it: leave it out rather than refuse the compensation.
		if !idPattern.MatchString(id) || seen[id] {
			continue
		}
		seen[id] = true
		keys = append(keys, s.productKey(id))
		args = append(args, id)
	}
	return keys, args, nil
}

// mergeLines checks the lines and merges those for the same product, keeping
// the order of first appearance. Merging rather than refusing: "2 tea and 3
// tea" is a clumsy way to ask for 5 tea, not a wrong one.
func mergeLines(lines []Line) ([]Line, error) {
	if len(lines) == 0 {
		return nil, fmt.Errorf("%w: no lines", ErrInvalidOrder)
	}
	if len(lines) > MaxLines {
		return nil, fmt.Errorf("%w: %d lines, at most %d", ErrInvalidOrder, len(lines), MaxLines)
	}
	out := make([]Line, 0, len(lines))
	at := make(map[string]int, len(lines))
	for _, l := range lines {
		if !idPattern.MatchString(l.ProductID) {
			return nil, fmt.Errorf("%w: product id %q", ErrInvalidOrder, l.ProductID)
		}
		if l.Quantity <= 0 || l.Quantity > MaxQuantity {
			return nil, fmt.Errorf("%w: quantity %d of %s: want 1 to %d", ErrInvalidOrder, l.Quantity, l.ProductID, MaxQuantity)
		}
		if i, ok := at[l.ProductID]; ok {
			out[i].Quantity += l.Quantity
			if out[i].Quantity > MaxQuantity {
				return nil, fmt.Errorf("%w: quantity %d of %s over its lines: want at most %d", ErrInvalidOrder, out[i].Quantity, l.ProductID, MaxQuantity)
			}
			continue
		}
		at[l.ProductID] = len(out)
		out = append(out, l)
	}
	return out, nil
}

// unknownProduct finds the id in the reserve script's error.
var unknownProduct = regexp.MustCompile(`stock: unknown product \[([^\]]*)\]`)

// scriptErr turns the scripts' own refusals to run (raised in Lua before
// any write) into this package's sentinels.
func scriptErr(err error) error {
	if !errors.Is(err, idempotency.ErrScript) {
		return err
	}
	if m := unknownProduct.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%w %q", ErrUnknownProduct, m[1])
	}
	return err
}

func decodeResult(r idempotency.Result) (Result, error) {
	var res Result
	if err := r.Decode(&res); err != nil {
		// A record nobody can read is as permanent as a script error.
		return Result{}, fmt.Errorf("%w: %w", idempotency.ErrScript, err)
	}
	res.Repeat = r.Repeat
	return res, nil
}
