package saga

import "errors"

// The sentinels below tell apart what a caller must do with an input or a
// record. Compare with errors.Is: every error this package returns wraps at
// most one of them, with a reason a person can read.
var (
	// ErrIgnored means the input was recognised and deliberately not applied:
	// a stale, duplicate or late reply, a second Start for an existing saga.
	// This is normal under at-least-once delivery and says nothing is wrong;
	// Transition still returns the instance with Ignored incremented, and the
	// caller persists it like any other snapshot.
	ErrIgnored = errors.New("saga: input ignored")

	// ErrIllegal means the input makes no sense for this saga in its current
	// state (an operator Retry of a Completed saga, an unknown input kind, a
	// definition that does not match the instance). Nothing was applied; the
	// returned instance has Ignored incremented. Unlike ErrIgnored it points at
	// a bug or an operator mistake, so callers should log it loudly.
	ErrIllegal = errors.New("saga: illegal input")

	// ErrPoison means a record cannot be decoded into an Envelope and never
	// will be: retrying cannot help, so the caller dead-letters it with the
	// error as the reason and moves on rather than stopping the partition.
	ErrPoison = errors.New("saga: poison record")

	// ErrInvalidDefinition is returned by Definition.Validate and NewRegistry.
	ErrInvalidDefinition = errors.New("saga: invalid definition")

	// ErrInvariant is returned by Instance.Check when a snapshot is in a state
	// the state machine can never produce: a bug in Transition, a corrupted
	// snapshot, or a snapshot written by an incompatible version.
	ErrInvariant = errors.New("saga: instance invariant violated")
)
