// Package saga is the orchestrator as a library: a team describes its saga as
// a Definition (steps, each with an action and a compensation sent as commands
// to a participant's topic), and this package decides, for each thing that
// happens to one saga, what the saga becomes and which messages to send.
//
// The decision is Transition: a pure function from (definition, instance,
// input) to (new instance, outgoing messages). It does no I/O and reads no
// clock, so the runtime can run it inside a Kafka transaction (consume the
// reply, produce the commands and the new snapshot, commit the offset) and a
// replay gives the same answer. Everything the runtime needs to persist is the
// Instance, a JSON value; everything it needs to schedule is
// Instance.NextTimer.
//
// The envelope (Envelope, Decode, ReplyTo) is the wire format shared with
// participants: a JSON value, with ids, step, attempt and trace context in
// Kafka headers.
//
// # State machine
//
// A saga goes through these states (Instance.State; Running and Compensating
// carry the current step, Instance.Step). n is the number of steps and p the
// pivot: the first step without a compensation, after which the saga can only
// go forward. Numbers label the edges; the rules follow.
//
//	     Start
//	       |
//	       v
//	    Started ------------------(1)----------------------+
//	       |                                               |
//	      (2)                                              |
//	       v                                               |
//	  +-> Running(k) ---(4)---> Completed                  |
//	  |    |   |   |                                       |
//	  +(3)-+   |   +---(6)---> Failed(k) ---(9)---+        |
//	           |                 ^   |            |        |
//	          (5)               (7) (10)          v        |
//	           v                 |   v        Running(k)   |
//	    Compensating(j) ---------+  Compensating(j)        |
//	       |   ^  |                                        |
//	       +(8)+  +---(8)---> Cancelled <------------------+
//	                               ^
//	  Running(k) --(5), nothing to compensate--+
//
//	(1)  the action of step 0 cannot be built, or an operator force-compensates:
//	     nothing ran.
//	(2)  Start sends the action of step 0.
//	(3)  step k succeeded: send the action of step k+1.
//	(4)  step n-1 succeeded.
//
// A step marked Step.Parallel runs together with the one before it: the
// steps so joined form a group, every action of which (2) and (3) send at
// once. Running(k) then names the group by its first step k, and the saga
// stays there until each step of the group succeeded; (3) and (4) then
// leave from the group's last step. Each step of a group keeps its own
// attempts and timers. Turning back (5) from a group compensates its steps
// that succeeded or are still in flight, from the last one down, then the
// steps before the group, one at a time as always; a step of the group that
// failed for a business reason is not compensated.
//
//	(5)  turn back. A business failure of step k <= p compensates from k-1 (k
//	     did not take effect). A timeout or transient budget spent, the saga
//	     deadline, or an operator force-compensate at k < p compensate from k
//	     itself (it may have taken effect late). Steps that never ran are
//	     Skipped; with nothing to compensate the saga goes straight to
//	     Cancelled.
//	(6)  cannot turn back: a business failure after the pivot, or a budget
//	     spent at or after the pivot (the pivot's outcome is then unknown, and
//	     undoing the steps under it could leave, say, a confirmed order without
//	     its payment). Also to Failed(k+1) when step k succeeded and step k+1,
//	     after the pivot, cannot be built.
//	(7)  a compensation spent its budget (Failure, Transient and timeouts all
//	     count) or cannot be built.
//	(8)  compensation of step j succeeded: compensate the next compensable step
//	     below j, or end Cancelled.
//	(9)  operator retry of (6): the same step's action, with a fresh budget.
//	(10) operator retry of (7): the same compensation, with a fresh budget; or
//	     operator force-compensate of a saga Failed at the pivot: compensate
//	     from p-1 (the operator vouches the pivot did not take effect).
//
// Within one state a step retries: a Transient reply or a timeout sends the
// next attempt, after RetryPolicy.Delay, while the budget lasts.
//
// A step that takes no reply (Step.NoReply; only an uncompensable one can)
// is done in the transition that sends its action: (3) and (4) follow at
// once, so Running(k) may go straight on to Running(k+2) or Completed, and
// a reply that comes anyway is ignored. The command carries "reply: none";
// its participant answers nothing, and dead-letters it if it refuses, since
// no saga is waiting to hear it. Instance.Check reads which steps take no
// reply from the snapshot (StepState.NoReply), as a saga keeps the shape it
// started with.
//
// Terminal: Completed, Cancelled, Failed (only an operator moves a Failed
// saga). Instance.Check verifies that a snapshot is one of these states with
// consistent step statuses and timers, and that its History is a legal path
// from Started.
//
// # Exactly once
//
// Each command is identified by (saga, step, phase, attempt) and Transition
// emits each at most once. Only a reply to the command in flight is applied;
// duplicates, stale attempts and late replies after a timeout are counted in
// Instance.Ignored and returned as ErrIgnored. Participants deduplicate by
// (saga, step, phase), so every attempt of one command gets the same recorded
// outcome, and keep the barrier rules: a compensation of an action that never
// ran succeeds as a no-op, and an action arriving after its compensation is
// refused. That is why a step that timed out can safely be compensated.
package saga
