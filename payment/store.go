package payment

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/hashset"
)

// MaxCents bounds every amount, balance and limit: 2^53-1, the largest
// integer Lua (doubles) represents exactly. See the package doc.
const MaxCents = 1<<53 - 1

// Limits on the lines of an order, which payment checks against its total.
const (
	MaxQuantity = 1_000_000
	MaxLines    = 100
)

// StepCharge is the saga step of charge and refund (docs/messages.md); part
// of the dedup keys, so it never changes.
const StepCharge = "charge-payment"

// Sentinel errors. Handle turns ErrInvalidOrder and ErrUnknownCustomer into
// poison; Customer returns ErrUnknownCustomer.
var (
	// ErrInvalidOrder: the order can never be charged as written (an amount
	// out of range, a total that is not the sum of its lines, a malformed
	// customer id).
	ErrInvalidOrder = errors.New("payment: invalid order")
	// ErrUnknownCustomer: a customer id with no account.
	ErrUnknownCustomer = errors.New("payment: unknown customer")
	// ErrInvalidCustomer: Seed was given an account it cannot store.
	ErrInvalidCustomer = errors.New("payment: invalid customer")
	// ErrConfig: an invalid Config.
	ErrConfig = errors.New("payment: invalid config")
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Config configures a Store. The zero value is valid.
type Config struct {
	// Prefix starts every key (see the package doc). Default "payment". It
	// must not contain '{' or '}'.
	Prefix string
	// DedupTTL is how long the barrier records live, and the per-order
	// payment record with them. Zero means idempotency.DefaultTTL; it must
	// outlive Kafka's retention of the commands.
	DedupTTL time.Duration
	// UnsafeForgetCharges is for the chaos suite's own test and nothing
	// else: every charge first deletes its barrier record, so a command
	// delivered twice charges twice. It plants the bug the suite must find.
	UnsafeForgetCharges bool
}

func (c Config) withDefaults() Config {
	if c.Prefix == "" {
		c.Prefix = "payment"
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

// Customer is one account.
type Customer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// BalanceCents can be charged now. For Seed it is the initial deposit.
	BalanceCents int64 `json:"balance_cents"`
	// LimitCents caps one order; 0 means no limit.
	LimitCents int64 `json:"limit_cents"`
	// CapturedCents is charged and not refunded. Ignored by Seed.
	CapturedCents int64 `json:"captured_cents"`
	// DepositedCents is what Seed put in: BalanceCents + CapturedCents
	// always equals it. Ignored by Seed.
	DepositedCents int64 `json:"deposited_cents"`
}

// Result is what a charge or refund answered, decoded from the outcome
// recorded in Redis: every delivery of one command gets the same (except
// Repeat).
type Result struct {
	// OK is false for a decline and for a hanging charge.
	OK     bool   `json:"ok"`
	Reason string `json:"reason,omitempty"`
	// CustomerID and AmountCents say what was charged or refunded; empty
	// and 0 when nothing was.
	CustomerID  string `json:"customer_id,omitempty"`
	AmountCents int64  `json:"amount_cents,string,omitempty"`
	// Null is set on the refund of a charge that never ran.
	Null bool `json:"null,omitempty"`
	// Repeat is set when this call answered an earlier call's outcome.
	Repeat bool `json:"-"`
}

// Store keeps the accounts in Redis and runs the scripts that move money.
// It is safe for concurrent use, and any number of Stores may share one
// Redis.
type Store struct {
	cfg      Config
	rdb      redis.UniversalClient
	log      *zap.Logger
	barrier  *idempotency.Barrier
	accounts *hashset.Set
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
	s := &Store{cfg: cfg, rdb: rdb, log: log, barrier: idem.Barrier("idem", chargeLua, refundLua)}
	s.accounts = hashset.New(rdb, s.customersKey(), s.customerKey)
	return s, nil
}

// Load sends the scripts to Redis, so a broken script or an unreachable
// Redis shows at start-up rather than on the first command.
func (s *Store) Load(ctx context.Context) error {
	if err := s.barrier.Load(ctx); err != nil {
		return err
	}
	return s.accounts.Load(ctx)
}

func (s *Store) customerKey(id string) string { return s.cfg.Prefix + ":customer:" + id }
func (s *Store) customersKey() string         { return s.cfg.Prefix + ":customers" }
func (s *Store) orderKey(orderID string) string {
	return s.cfg.Prefix + ":order:{" + keyEscaper.Replace(orderID) + "}"
}

var keyEscaper = strings.NewReplacer("%", "%25", "{", "%7B", "}", "%7D")

// Seed opens the accounts that do not exist yet, with BalanceCents as their
// deposit, and reports how many it opened. An account that exists is left
// as it is: seeding again must never reset balances that sagas are moving.
func (s *Store) Seed(ctx context.Context, customers []Customer) (added int, err error) {
	seen := map[string]bool{}
	for _, c := range customers {
		switch {
		case !idPattern.MatchString(c.ID):
			return 0, fmt.Errorf("%w: id %q: want 1 to 64 letters, digits, '.', '_' or '-'", ErrInvalidCustomer, c.ID)
		case seen[c.ID]:
			return 0, fmt.Errorf("%w: %q given twice", ErrInvalidCustomer, c.ID)
		case strings.TrimSpace(c.Name) == "":
			return 0, fmt.Errorf("%w: %q has no name", ErrInvalidCustomer, c.ID)
		case c.BalanceCents < 0 || c.BalanceCents > MaxCents:
			return 0, fmt.Errorf("%w: %q balance %d cents out of range", ErrInvalidCustomer, c.ID, c.BalanceCents)
		case c.LimitCents < 0 || c.LimitCents > MaxCents:
			return 0, fmt.Errorf("%w: %q limit %d cents out of range", ErrInvalidCustomer, c.ID, c.LimitCents)
		}
		seen[c.ID] = true
	}
	for _, c := range customers {
		ok, err := s.accounts.Add(ctx, c.ID, "name", c.Name, "balance", c.BalanceCents, "captured", 0,
			"limit", c.LimitCents, "deposited", c.BalanceCents)
		if err != nil {
			return added, fmt.Errorf("payment: seed %s: %w", c.ID, err)
		}
		if ok {
			added++
		}
	}
	return added, nil
}

// Customers returns every account, sorted by id.
func (s *Store) Customers(ctx context.Context) ([]Customer, error) {
	ids, hs, err := s.accounts.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("payment: customers: %w", err)
	}
	out := make([]Customer, 0, len(ids))
	for i, id := range ids {
		c, err := parseCustomer(id, hs[i])
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Customer returns one account, or ErrUnknownCustomer.
func (s *Store) Customer(ctx context.Context, id string) (Customer, error) {
	if !idPattern.MatchString(id) {
		return Customer{}, fmt.Errorf("%w %q", ErrUnknownCustomer, id)
	}
	h, err := s.accounts.Get(ctx, id)
	if err != nil {
		return Customer{}, fmt.Errorf("payment: customer %s: %w", id, err)
	}
	return parseCustomer(id, h)
}

func parseCustomer(id string, h map[string]string) (Customer, error) {
	if len(h) == 0 {
		return Customer{}, fmt.Errorf("%w %q", ErrUnknownCustomer, id)
	}
	c := Customer{ID: id, Name: h["name"]}
	if err := hashset.ParseInt64s(h, hashset.Int64{Field: "balance", Dst: &c.BalanceCents},
		hashset.Int64{Field: "limit", Dst: &c.LimitCents}, hashset.Int64{Field: "captured", Dst: &c.CapturedCents},
		hashset.Int64{Field: "deposited", Dst: &c.DepositedCents}); err != nil {
		return Customer{}, fmt.Errorf("payment: customer %s: %w", id, err)
	}
	return c, nil
}

// Totals sums every account, for conservation checks and dashboards:
// Deposited = Balance + Captured when no money is lost or made.
type Totals struct {
	Customers                    int
	Deposited, Balance, Captured int64
}

// Conserved reports whether no cent appeared or vanished.
func (t Totals) Conserved() bool { return t.Deposited == t.Balance+t.Captured }

// Totals reads every account and sums them. It is not one atomic read: run
// it when no command is in flight for an exact check.
func (s *Store) Totals(ctx context.Context) (Totals, error) {
	cs, err := s.Customers(ctx)
	if err != nil {
		return Totals{}, err
	}
	t := Totals{Customers: len(cs)}
	for _, c := range cs {
		t.Deposited += c.DepositedCents
		t.Balance += c.BalanceCents
		t.Captured += c.CapturedCents
	}
	return t, nil
}

// Payment is what payment holds for one order.
type Payment struct {
	// State is "" (never charged), "captured" or "refunded".
	State       string
	CustomerID  string
	AmountCents int64
}

// Payment returns what was charged for an order, for inspection.
func (s *Store) Payment(ctx context.Context, orderID string) (Payment, error) {
	h, err := s.rdb.HGetAll(ctx, s.orderKey(orderID)).Result()
	if err != nil {
		return Payment{}, fmt.Errorf("payment: order %s: %w", orderID, err)
	}
	p := Payment{State: h["state"], CustomerID: h["customer"]}
	if h["amount"] != "" {
		if p.AmountCents, err = strconv.ParseInt(h["amount"], 10, 64); err != nil {
			return Payment{}, fmt.Errorf("payment: order %s: amount %q", orderID, h["amount"])
		}
	}
	return p, nil
}

// Charge debits amountCents from the customer for the order, once per order
// (the barrier of step charge-payment), or declines it (over the per-order
// limit, insufficient funds). Errors: ErrInvalidOrder and ErrUnknownCustomer
// (never applicable), idempotency.ErrUnavailable (transient),
// idempotency.ErrScript (a bug).
func (s *Store) Charge(ctx context.Context, orderID, customerID string, amountCents int64) (Result, error) {
	if !idPattern.MatchString(customerID) {
		return Result{}, fmt.Errorf("%w: customer id %q", ErrInvalidOrder, customerID)
	}
	if amountCents < 1 || amountCents > MaxCents {
		return Result{}, fmt.Errorf("%w: amount %d cents: want 1 to %d", ErrInvalidOrder, amountCents, int64(MaxCents))
	}
	ref := idempotency.Ref{SagaID: orderID, Step: StepCharge}
	if s.cfg.UnsafeForgetCharges {
		action, _ := s.barrier.Keys(ref)
		if err := s.rdb.Del(ctx, action).Err(); err != nil {
			return Result{}, fmt.Errorf("%w: %w", idempotency.ErrUnavailable, err)
		}
	}
	r, err := s.barrier.Action(ctx, ref,
		[]string{s.customerKey(customerID), s.orderKey(orderID)},
		strconv.FormatInt(amountCents, 10), customerID, s.cfg.DedupTTL.Milliseconds())
	if err != nil {
		return Result{}, scriptErr(err)
	}
	return decodeResult(r)
}

// Refund gives back what Charge charged for the order, once; the amount
// comes from the charge's recorded outcome. A refund whose charge never ran
// succeeds with Null set, and blocks that charge from then on.
func (s *Store) Refund(ctx context.Context, orderID, customerID string) (Result, error) {
	// A malformed id has no account and no charge can have been made to
	// it, but the refund must still run (a null compensation blocks a late
	// charge): name a key that never exists rather than build a key from
	// it. The script compares the id itself with the charge's and refuses
	// a mismatch before touching the key.
	key := s.customerKey(customerID)
	if !idPattern.MatchString(customerID) {
		key = s.customerKey("")
		if len(customerID) > 64 {
			customerID = customerID[:64]
		}
	}
	r, err := s.barrier.Compensate(ctx, idempotency.Ref{SagaID: orderID, Step: StepCharge},
		[]string{key, s.orderKey(orderID)}, customerID)
	if err != nil {
		return Result{}, scriptErr(err)
	}
	return decodeResult(r)
}

var unknownCustomer = regexp.MustCompile(`payment: unknown customer \[([^\]]*)\]`)

// scriptErr turns the scripts' own refusals to run into this package's
// sentinels.
func scriptErr(err error) error {
	if !errors.Is(err, idempotency.ErrScript) {
		return err
	}
	if m := unknownCustomer.FindStringSubmatch(err.Error()); m != nil {
		return fmt.Errorf("%w %q", ErrUnknownCustomer, m[1])
	}
	return err
}

func decodeResult(r idempotency.Result) (Result, error) {
	var res Result
	if err := r.Decode(&res); err != nil {
		return Result{}, fmt.Errorf("%w: %w", idempotency.ErrScript, err)
	}
	res.Repeat = r.Repeat
	return res, nil
}
