package idempotency

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// DefaultTTL is how long dedup records, barrier markers and guard records
// live.
//
// A record must outlive every copy of the message it guards. Kafka keeps a
// command for log.retention.hours, 168 hours (7 days) by default, and a
// command can come back for as long as it is retained: a consumer group reset
// to an earliest offset, a restored offset after a crash, an operator replay.
// If the record had already expired the effect would be applied a second
// time. Eight days is that week plus a day of margin for consumer lag and
// clock skew between the broker and Redis. Raise it together with the topic
// retention, never lower it below.
//
// The barrier has one more lower bound: a compensation that arrives after the
// action's record expired is taken for a null compensation and undoes
// nothing. Sagas parked in Failed for longer than TTL and then
// force-compensated by an operator would leak their reservations, so TTL
// must also outlive the longest time a saga may wait for an operator.
const DefaultTTL = 8 * 24 * time.Hour

// DefaultPrefix starts every key this package writes unless Config.Prefix
// says otherwise.
const DefaultPrefix = "idem"

// Sentinel errors. Callers compare them with errors.Is; every returned error
// wraps one of them together with the underlying cause.
var (
	// ErrConfig reports an invalid Config or MiddlewareConfig. Fix the
	// configuration; nothing was sent to Redis.
	ErrConfig = errors.New("idempotency: invalid config")

	// ErrInvalidKey reports an empty dedup key, saga id or step. It is a
	// programming error or a malformed message: poison, retrying cannot help.
	ErrInvalidKey = errors.New("idempotency: invalid key")

	// ErrUnavailable is a transient failure: Redis could not be reached, timed
	// out, is loading, failing over or out of memory. The effect may or may
	// not have been applied; retrying with backoff is always safe because the
	// retry finds the dedup record if the first attempt got through.
	ErrUnavailable = errors.New("idempotency: redis unavailable")

	// ErrScript is a failing Lua script: a syntax or runtime error in a domain
	// body, a key of the wrong type, a body that did not return a string.
	// Retrying gives the same error, so the message is poison. Redis does not
	// roll a script back, so writes the body made before the error stay,
	// without a dedup record: domain bodies check everything before they
	// write.
	ErrScript = errors.New("idempotency: script failed")

	// ErrHanging is the business refusal of an action whose compensation has
	// already run for the same saga step (see Barrier). It is a negative
	// outcome, not a failure: reply with it, do not retry.
	ErrHanging = errors.New("idempotency: action refused: its compensation already ran (hanging)")

	// ErrStaleClaim reports a Complete or Release from a holder whose lease
	// was taken over by a newer claim (see Store.Claim). Its outcome was not
	// recorded; the newer holder's will be.
	ErrStaleClaim = errors.New("idempotency: claim was taken over by a newer holder")
)

// Config configures a Store. The zero value is valid and means the defaults.
type Config struct {
	// Prefix starts every key the Store builds (barrier markers, HTTP
	// records). Empty means DefaultPrefix. It may contain ':' but not '{' or
	// '}', which are reserved for the hash tag that keeps one saga's keys in
	// one cluster slot.
	Prefix string
	// TTL is the lifetime of dedup records. Zero means DefaultTTL; see there
	// for why it must outlive Kafka's retention.
	TTL time.Duration
}

// Validate reports whether cfg can be used, after defaults are applied.
func (cfg Config) Validate() error {
	cfg = cfg.withDefaults()
	if strings.ContainsAny(cfg.Prefix, "{}") {
		return fmt.Errorf("%w: prefix %q contains '{' or '}'", ErrConfig, cfg.Prefix)
	}
	if cfg.TTL < time.Millisecond {
		return fmt.Errorf("%w: ttl %v is below 1ms", ErrConfig, cfg.TTL)
	}
	return nil
}

func (cfg Config) withDefaults() Config {
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultTTL
	}
	return cfg
}

// Store is the Redis side of the package: it runs apply-once scripts,
// barriers and claims. It is safe for concurrent use.
type Store struct {
	cfg Config
	rdb redis.Scripter
	log *zap.Logger

	claim, complete, release *luaScript
}

// New returns a Store on rdb (a *redis.Client, *redis.ClusterClient or
// *redis.Ring). It does no I/O: scripts are loaded on first use, or by Load.
// A nil log means zap.NewNop().
func New(cfg Config, rdb redis.Scripter, log *zap.Logger) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrConfig)
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Store{cfg: cfg.withDefaults(), rdb: rdb, log: log}
	s.claim = &luaScript{name: "guard.claim", src: claimLua}
	s.complete = &luaScript{name: "guard.complete", src: completeLua}
	s.release = &luaScript{name: "guard.release", src: releaseLua}
	return s, nil
}

// TTL returns the lifetime of the records this Store writes.
func (s *Store) TTL() time.Duration { return s.cfg.TTL }

// Key returns the dedup key for one operation of one saga step:
//
//	<prefix>:{<sagaID>}:<step>:<op>
//
// The saga id is the cluster hash tag, so every dedup and barrier key of one
// saga lands in the same slot. sagaID, step and op are escaped ('%', ':', '{'
// and '}' become %25, %3A, %7B, %7D), so for a fixed prefix two different
// triples never build the same key and a saga id cannot break the hash tag.
func Key(prefix, sagaID, step, op string) string {
	return prefix + ":{" + escape(sagaID) + "}:" + escape(step) + ":" + escape(op)
}

var keyEscaper = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D")

func escape(s string) string { return keyEscaper.Replace(s) }

// luaScript is one script loaded with SCRIPT LOAD and called with EVALSHA,
// so the source crosses the wire once per Redis process, not once per call.
type luaScript struct {
	name string
	src  string

	// sha is read on every call, without a lock, so that parallel callers
	// do not queue on each other; mu only serialises loading.
	sha atomic.Pointer[string]
	mu  sync.Mutex
}

// load returns the digest of sc, loading it first when force is set or when it
// was never loaded.
func (s *Store) load(ctx context.Context, sc *luaScript, force bool) (string, error) {
	if p := sc.sha.Load(); p != nil && !force {
		return *p, nil
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if p := sc.sha.Load(); p != nil && !force {
		return *p, nil
	}
	// Alone: the members of a crew (Pipeliner) that need this script wait
	// on mu, so this call must not wait for them in a round.
	sha, err := s.rdb.ScriptLoad(alone(ctx), sc.src).Result()
	if err != nil {
		return "", classify("load "+sc.name, err)
	}
	sc.sha.Store(&sha)
	return sha, nil
}

// eval runs sc. A NOSCRIPT reply means Redis lost its script cache (a
// restart, SCRIPT FLUSH, a failover to a replica that never saw the load):
// the script is loaded again and the call retried once. Retrying is safe
// because NOSCRIPT means nothing ran.
func (s *Store) eval(ctx context.Context, sc *luaScript, keys []string, args ...any) (any, error) {
	sha, err := s.load(ctx, sc, false)
	if err != nil {
		return nil, err
	}
	res, err := s.rdb.EvalSha(ctx, sha, keys, args...).Result()
	if isNoScript(err) {
		s.log.Info("redis lost its script cache, loading again", zap.String("script", sc.name))
		if sha, err = s.load(ctx, sc, true); err != nil {
			return nil, err
		}
		res, err = s.rdb.EvalSha(ctx, sha, keys, args...).Result()
	}
	if err != nil {
		return nil, classify(sc.name, err)
	}
	return res, nil
}

func isNoScript(err error) bool {
	return err != nil && (errors.Is(err, redis.ErrNoScript) || redis.HasErrorPrefix(err, "NOSCRIPT"))
}

// transientPrefixes are Redis error replies that say "not now" rather than
// "never": the server is loading its dataset, running a long script, failing
// over, read-only during a switch, out of memory, or (cluster) resharding.
var transientPrefixes = []string{
	"LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN",
	"OOM", "NOREPLICAS", "NOSCRIPT", "MOVED", "ASK",
}

// classify sorts err into ErrUnavailable (transient) or ErrScript (poison).
// Every error that is not a reply from Redis (network, timeout, closed pool,
// cancelled context) is transient: the server may never have seen the call.
func classify(op string, err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
	}
	for _, p := range transientPrefixes {
		if redis.HasErrorPrefix(err, p) {
			return fmt.Errorf("%w: %s: %w", ErrUnavailable, op, err)
		}
	}
	return fmt.Errorf("%w: %s: %w", ErrScript, op, err)
}

// reply is the decoded form of the tables the wrapper scripts return:
// {repeat (0 or 1), outcome, kind}.
type reply struct {
	repeat  bool
	outcome string
	kind    string
}

func parseReply(op string, v any) (reply, error) {
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return reply{}, fmt.Errorf("%w: %s: unexpected reply %T %v", ErrScript, op, v, v)
	}
	rep, ok1 := arr[0].(int64)
	out, ok2 := arr[1].(string)
	if !ok1 || !ok2 {
		return reply{}, fmt.Errorf("%w: %s: unexpected reply %v", ErrScript, op, v)
	}
	r := reply{repeat: rep == 1, outcome: out}
	if len(arr) > 2 {
		r.kind, _ = arr[2].(string)
	}
	return r, nil
}

func ttlArg(d time.Duration) int64 { return d.Milliseconds() }
