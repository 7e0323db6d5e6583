package idempotency

import (
	"context"
	"fmt"

	fastjson "github.com/goccy/go-json"
)

// Result is what one apply-once or barrier call answers.
//
// Outcome is the string the domain body returned when the effect ran, kept
// verbatim under the dedup key; every later call with the same key answers
// the same string. By convention it is a small JSON object with an "ok"
// boolean and, when ok is false, a "reason" (`{"ok":true,"reserved":[...]}`,
// `{"ok":false,"reason":"insufficient stock"}`); the barrier's own outcomes
// (HangingOutcome, NullOutcome) follow that convention so a domain decoder
// reads them too.
type Result struct {
	Outcome string
	// Repeat is true when this call did not run the effect and answered an
	// outcome recorded by an earlier call with the same key. Of any number of
	// calls with one key, sequential or concurrent, exactly one has Repeat
	// false.
	Repeat bool
	// Hanging is true when a barrier refused an action because the
	// compensation of the same saga step already ran. Outcome is then
	// HangingOutcome and nothing was applied.
	Hanging bool
	// Null is true when a barrier answered a compensation whose action never
	// ran: nothing was undone, the compensation succeeded, and the action is
	// blocked from now on. Outcome is then NullOutcome.
	Null bool
}

// Err returns ErrHanging for a hanging action and nil otherwise. Domain
// refusals inside Outcome are not errors: they are outcomes like any other.
func (r Result) Err() error {
	if r.Hanging {
		return ErrHanging
	}
	return nil
}

// Decode unmarshals the JSON Outcome into v, as json.Unmarshal does but
// with goccy/go-json, about five times faster: a participant decodes one
// outcome for every command, and with encoding/json that was 6% of stock's
// CPU at saturation. TestResultDecodesLikeEncodingJSON holds it to
// encoding/json's results. A panic in the decoder is an error.
func (r Result) Decode(v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("idempotency: decode outcome %q: decoder panicked: %v", r.Outcome, p)
		}
	}()
	if err := fastjson.Unmarshal([]byte(r.Outcome), v); err != nil {
		return fmt.Errorf("idempotency: decode outcome %q: %w", r.Outcome, err)
	}
	return nil
}

// Script is a domain Lua body wrapped so that it runs at most once per dedup
// key. Make one with Store.Script, once per process, and share it.
//
// The wrapped script runs atomically in Redis (one script, one thread):
//
//  1. GET the dedup key; when it exists, answer its value as a repeat;
//  2. otherwise run the domain body;
//  3. SET the dedup key to the body's return value with the Store's TTL and
//     answer it.
//
// On the wire the dedup key is KEYS[1] and the TTL in milliseconds is
// ARGV[1]. The domain body never sees them: it runs as a Lua function whose
// KEYS and ARGV are the caller's domain keys and arguments, starting at index
// 1. So a body written for `EVAL body 2 k1 k2 a1` works unchanged.
//
// Rules for domain bodies:
//   - name every key you touch in KEYS, never build key names in Lua
//     (Redis Cluster, and the server's own key checks, rely on it);
//   - be deterministic: no TIME, no random, no reads outside KEYS;
//   - do every check before the first write and answer refusals with a
//     returned outcome, not redis.error_reply: Redis does not roll a script
//     back, so writes made before an error stay and are not recorded;
//   - return a string (use cjson.encode for JSON). A refusal is an outcome
//     and is recorded like a success, so a redelivered command gets the same
//     refusal instead of a second chance that would differ from the first
//     reply.
type Script struct {
	store *Store
	lua   *luaScript
}

// Script wraps the domain Lua body under name (used in logs and errors). It
// does no I/O.
func (s *Store) Script(name, body string) *Script {
	return &Script{store: s, lua: &luaScript{name: name, src: wrapApplyOnce(name, body)}}
}

// Load sends the script to Redis now, so a syntax error in the body shows at
// start-up rather than on the first message. Calling it is optional.
func (sc *Script) Load(ctx context.Context) error {
	_, err := sc.store.load(ctx, sc.lua, true)
	return err
}

// Apply runs the effect at most once for dedupKey (build it with Key) on the
// domain keys and args, and answers the recorded outcome. The error is
// ErrUnavailable (transient: retry), ErrScript (poison) or ErrInvalidKey.
func (sc *Script) Apply(ctx context.Context, dedupKey string, keys []string, args ...any) (Result, error) {
	if dedupKey == "" {
		return Result{}, fmt.Errorf("%w: empty dedup key for %s", ErrInvalidKey, sc.lua.name)
	}
	allKeys := make([]string, 0, len(keys)+1)
	allKeys = append(allKeys, dedupKey)
	allKeys = append(allKeys, keys...)
	allArgs := make([]any, 0, len(args)+1)
	allArgs = append(allArgs, ttlArg(sc.store.cfg.TTL))
	allArgs = append(allArgs, args...)

	v, err := sc.store.eval(ctx, sc.lua, allKeys, allArgs...)
	if err != nil {
		return Result{}, err
	}
	rep, err := parseReply(sc.lua.name, v)
	if err != nil {
		return Result{}, err
	}
	return Result{Outcome: rep.outcome, Repeat: rep.repeat}, nil
}

// shiftLua gives the domain body its own KEYS and ARGV: everything after the
// first `skipKeys` keys and the first argument (the TTL).
func shiftLua(skipKeys int) string {
	return fmt.Sprintf(`local domainKeys, domainArgv = {}, {}
for i = %d, #KEYS do domainKeys[#domainKeys + 1] = KEYS[i] end
for i = 2, #ARGV do domainArgv[#domainArgv + 1] = ARGV[i] end
`, skipKeys+1)
}

// checkOutcomeLua rejects a body that returned something other than a string.
// It cannot undo the body's writes (nothing can), but it makes the bug loud
// (ErrScript) instead of recording a value nobody can decode.
const checkOutcomeLua = `if type(out) ~= 'string' then
  return redis.error_reply('idempotency: domain body returned ' .. type(out) .. ', want a string outcome')
end
`

func wrapApplyOnce(name, body string) string {
	return "-- sagaflow idempotency: apply-once " + name + "\n" +
		`local rec = redis.call('GET', KEYS[1])
if rec then return {1, rec} end
` + shiftLua(1) +
		"local function domain(KEYS, ARGV)\n" + body + "\nend\n" +
		"local out = domain(domainKeys, domainArgv)\n" +
		checkOutcomeLua +
		`redis.call('SET', KEYS[1], out, 'PX', ARGV[1])
return {0, out}
`
}
