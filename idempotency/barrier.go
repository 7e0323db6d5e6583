package idempotency

import (
	"context"
	"fmt"
)

// Outcomes the barrier answers on its own, without running a domain body.
// They follow the {"ok":..., "reason":...} convention of Result.Outcome.
const (
	// HangingOutcome answers an action that arrived after the compensation
	// of its saga step: refused, nothing applied.
	HangingOutcome = `{"ok":false,"reason":"hanging: the compensation of this step already ran"}`
	// NullOutcome answers a compensation whose action never ran: success,
	// nothing to undo.
	NullOutcome = `{"ok":true,"null":true}`
)

// Barrier operation names, the op part of the barrier's keys.
const (
	OpAction       = "action"
	OpCompensation = "compensation"
)

// Ref names one step of one saga, the unit the barrier guards.
type Ref struct {
	SagaID string
	Step   string
}

// Barrier pairs an action with its compensation for the steps of many sagas
// and makes each call exactly-once and correctly ordered, in the style of
// DTM's branch barrier. For each Ref it keeps two records, the action's and
// the compensation's (Key(prefix:name, saga, step, OpAction|OpCompensation)),
// and every call checks them, runs the domain body and writes its record in
// one atomic script:
//
//   - a repeated action or compensation answers its recorded outcome
//     (Repeat) and runs nothing;
//   - a compensation whose action never ran succeeds as a no-op (Null,
//     NullOutcome): a timed-out action may simply never have arrived;
//   - an action that arrives after the compensation of its step is refused
//     (Hanging, HangingOutcome), whether or not it ran before: it arrived late
//     (the orchestrator timed it out and compensated), and applying it now
//     would leave an effect nobody will ever undo; answering its old outcome
//     would describe a state the compensation has since undone.
//
// The compensation body sees the action's recorded outcome in the Lua string
// variable ACTION, so it undoes exactly what the action did (the lines
// actually reserved, the amount actually charged), once. ACTION can be a
// refusal (`{"ok":false,...}`) when the action was declined: the body then
// has nothing to undo and should say so in its outcome.
//
// Domain KEYS and ARGV are shifted as in Script (the two barrier keys and the
// TTL are never visible to the body), and the same rules for bodies apply.
// Pass Compensate the keys its body needs; the command carries what is
// needed to name them (the order lines), the amounts come from ACTION.
type Barrier struct {
	store        *Store
	prefix       string
	action       *luaScript
	compensation *luaScript
}

// Barrier returns the barrier named name (for example "stock"), whose action
// and compensation run the given domain Lua bodies. name becomes part of the
// keys; keep it stable across releases. It does no I/O.
func (s *Store) Barrier(name, actionBody, compensationBody string) *Barrier {
	return &Barrier{
		store:        s,
		prefix:       s.cfg.Prefix + ":" + escape(name),
		action:       &luaScript{name: name + "." + OpAction, src: wrapAction(name, actionBody)},
		compensation: &luaScript{name: name + "." + OpCompensation, src: wrapCompensation(name, compensationBody)},
	}
}

// Keys returns the barrier's action and compensation record keys for ref,
// for inspection and tests.
func (b *Barrier) Keys(ref Ref) (action, compensation string) {
	return Key(b.prefix, ref.SagaID, ref.Step, OpAction), Key(b.prefix, ref.SagaID, ref.Step, OpCompensation)
}

// Load sends both scripts to Redis now, so a syntax error in a body shows at
// start-up. Calling it is optional.
func (b *Barrier) Load(ctx context.Context) error {
	if _, err := b.store.load(ctx, b.action, true); err != nil {
		return err
	}
	_, err := b.store.load(ctx, b.compensation, true)
	return err
}

// Action runs the action body for ref at most once, unless the step's
// compensation already ran (Hanging). Errors are as for Script.Apply.
func (b *Barrier) Action(ctx context.Context, ref Ref, keys []string, args ...any) (Result, error) {
	return b.call(ctx, b.action, ref, keys, args)
}

// Compensate runs the compensation body for ref at most once, or succeeds as
// a no-op when the action never ran (Null), blocking it from then on. Errors
// are as for Script.Apply.
func (b *Barrier) Compensate(ctx context.Context, ref Ref, keys []string, args ...any) (Result, error) {
	return b.call(ctx, b.compensation, ref, keys, args)
}

func (b *Barrier) call(ctx context.Context, sc *luaScript, ref Ref, keys []string, args []any) (Result, error) {
	if ref.SagaID == "" || ref.Step == "" {
		return Result{}, fmt.Errorf("%w: %s needs a saga id and a step, got %+v", ErrInvalidKey, sc.name, ref)
	}
	a, c := b.Keys(ref)
	allKeys := make([]string, 0, len(keys)+2)
	allKeys = append(allKeys, a, c)
	allKeys = append(allKeys, keys...)
	allArgs := make([]any, 0, len(args)+1)
	allArgs = append(allArgs, ttlArg(b.store.cfg.TTL))
	allArgs = append(allArgs, args...)

	v, err := b.store.eval(ctx, sc, allKeys, allArgs...)
	if err != nil {
		return Result{}, err
	}
	rep, err := parseReply(sc.name, v)
	if err != nil {
		return Result{}, err
	}
	return Result{
		Outcome: rep.outcome,
		Repeat:  rep.repeat,
		Hanging: rep.kind == "hanging",
		Null:    rep.kind == "null",
	}, nil
}

// The barrier's records are hashes {state, outcome}. Action states: "done"
// (the body ran), "refused" (it arrived after the compensation and was
// turned away; kept so a second late copy is a Repeat). Compensation states:
// "done" (the body ran) and "null" (the action had not run).
//
// KEYS[1] is the action record, KEYS[2] the compensation record, ARGV[1] the
// TTL in milliseconds.

func wrapAction(name, body string) string {
	return "-- sagaflow idempotency: barrier action " + name + "\n" +
		`local hanging = [==[` + HangingOutcome + `]==]
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    return {1, hanging, 'hanging'}
  end
  redis.call('HSET', KEYS[1], 'state', 'refused', 'outcome', hanging)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {0, hanging, 'hanging'}
end
local rec = redis.call('HGET', KEYS[1], 'outcome')
if rec then return {1, rec, ''} end
` + shiftLua(2) +
		"local function domain(KEYS, ARGV)\n" + body + "\nend\n" +
		"local out = domain(domainKeys, domainArgv)\n" +
		checkOutcomeLua +
		`redis.call('HSET', KEYS[1], 'state', 'done', 'outcome', out)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {0, out, ''}
`
}

func wrapCompensation(name, body string) string {
	return "-- sagaflow idempotency: barrier compensation " + name + "\n" +
		`local rec = redis.call('HMGET', KEYS[2], 'state', 'outcome')
if rec[2] then
  if rec[1] == 'null' then return {1, rec[2], 'null'} end
  return {1, rec[2], ''}
end
local action = redis.call('HMGET', KEYS[1], 'state', 'outcome')
if action[1] ~= 'done' then
  local null = [==[` + NullOutcome + `]==]
  redis.call('HSET', KEYS[2], 'state', 'null', 'outcome', null)
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  return {0, null, 'null'}
end
` + shiftLua(2) +
		"local function domain(KEYS, ARGV, ACTION)\n" + body + "\nend\n" +
		"local out = domain(domainKeys, domainArgv, action[2])\n" +
		checkOutcomeLua +
		`redis.call('HSET', KEYS[2], 'state', 'done', 'outcome', out)
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return {0, out, ''}
`
}
