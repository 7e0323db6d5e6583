package saga

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// CommandHandler applies one command and returns the reply to send (build it
// with ReplyTo). It may be called again with a command it already applied (a
// redelivery after a crash or an aborted transaction), so its effect must be
// idempotent: the idempotency package's apply-once scripts make it so.
//
// Errors: one wrapping ErrPoison dead-letters the command (it can never be
// applied: undecodable, an unknown product, a negative amount); any other
// error is transient and the batch is handled again after a backoff. A
// business refusal is not an error: it is a reply with Outcome Failure. A
// zero Envelope sends no reply now (the step then times out unless the reply
// comes later some other way).
type CommandHandler func(ctx context.Context, cmd Envelope) (Envelope, error)

// ParticipantConfig configures a Participant.
type ParticipantConfig struct {
	Kafka
	// CommandTopic is read; ReplyTopic is written. Required.
	CommandTopic string
	ReplyTopic   string
	// Failpoints, when set, are called at the crash windows, by name:
	// "participant/after-apply" (effects applied, reply not produced) and
	// "participant/after-produce" (reply produced, transaction not
	// committed). The chaos suite arms them to kill the process there.
	Failpoint func(name string)
	// Concurrency bounds how many sagas' commands of one batch are applied
	// at once. Default 64.
	Concurrency int
	// Crew, when set, is called for each batch with the context the
	// handlers would get; they get the context it returns instead, and
	// every goroutine that applies commands is a member of the crew it
	// returns while it runs. idempotency.Pipeliner.Crew sends the Redis
	// calls that the members make at one time as one pipeline.
	Crew func(ctx context.Context) (context.Context, Crew)
}

// Crew counts the goroutines that apply one batch's commands (see
// ParticipantConfig.Crew).
type Crew interface {
	Join()
	Leave()
}

// noCrew is the crew of a participant without one.
type noCrew struct{}

func (noCrew) Join()  {}
func (noCrew) Leave() {}

// Participant consumes commands and produces replies, one Kafka transaction
// per batch (docs/design.md, point 2 of "Why every message takes effect exactly once").
type Participant struct {
	cfg  ParticipantConfig
	log  *zap.Logger
	h    CommandHandler
	loop *kafkatx.Lanes
}

// NewParticipant returns a participant that calls h for every command.
func NewParticipant(cfg ParticipantConfig, h CommandHandler, log *zap.Logger) (*Participant, error) {
	if err := cfg.Kafka.validate("participant"); err != nil {
		return nil, err
	}
	if cfg.CommandTopic == "" || cfg.ReplyTopic == "" {
		return nil, errors.New("saga: invalid participant config: CommandTopic and ReplyTopic are required")
	}
	if cfg.Group == "" {
		cfg.Group = "sagaflow-" + cfg.CommandTopic
	}
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Failpoint == nil {
		cfg.Failpoint = func(string) {}
	}
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 64
	}
	if cfg.DeadLetterTopic == "" {
		// Set here rather than only in the loop's config: a refused
		// command that takes no reply goes there too (unanswered).
		cfg.DeadLetterTopic = kafkatx.TopicSagaDeadLetter
	}
	p := &Participant{cfg: cfg, log: log.With(zap.String("topic", cfg.CommandTopic)), h: h}
	loop, err := kafkatx.NewLanes(cfg.loop([]string{cfg.CommandTopic}), cfg.Lanes, p.handle, p.log)
	if err != nil {
		return nil, err
	}
	p.loop = loop
	return p, nil
}

// Run runs until ctx is cancelled (nil) or a fatal error.
func (p *Participant) Run(ctx context.Context) error { return p.loop.Run(ctx) }

// Stats returns the transactional loop's counters.
func (p *Participant) Stats() kafkatx.Stats { return p.loop.Stats() }

// handle applies a batch's commands and produces their replies. Commands of
// different sagas are applied concurrently, and with a Crew their Redis
// calls leave together, so a batch costs about one Redis round trip (and,
// with appendfsync always, one fsync shared by all of them) instead of one
// per command; the commands of one saga are applied one after
// the other, in their order on the partition, because the barrier rules
// depend on it (an action after its compensation is refused).
//
// Errors: a poison command is named to the loop (which dead-letters it and
// handles the rest again; the effects applied meanwhile are deduplicated on
// that second pass), and any other error makes the batch transient. Which of
// several failing commands is reported does not matter: each pass removes or
// retries one.
func (p *Participant) handle(ctx context.Context, recs []kafkatx.Record, out *kafkatx.Sink) error {
	replies := make([]kafkatx.Message, len(recs))
	errs := make([]error, len(recs))
	bySaga := map[string][]int{}
	var order []string
	for i, r := range recs {
		id := string(r.Key)
		if _, ok := bySaga[id]; !ok {
			order = append(order, id)
		}
		bySaga[id] = append(bySaga[id], i)
	}
	var crew Crew = noCrew{}
	if p.cfg.Crew != nil {
		ctx, crew = p.cfg.Crew(ctx)
	}
	apply := func(i int) bool {
		replies[i], errs[i] = p.apply(ctx, recs[i])
		return errs[i] == nil
	}
	if len(order) == 1 {
		crew.Join()
		for _, i := range bySaga[order[0]] {
			if !apply(i) {
				break
			}
		}
		crew.Leave()
	} else {
		// This loop is a member too while it starts goroutines, so the
		// first of them does not go to Redis alone before the others
		// started; it steps out while it waits for a free slot, or the
		// running ones would wait for it.
		crew.Join()
		sem := make(chan struct{}, p.cfg.Concurrency)
		var wg sync.WaitGroup
		for _, id := range order {
			select {
			case sem <- struct{}{}:
			default:
				crew.Leave()
				sem <- struct{}{}
				crew.Join()
			}
			crew.Join()
			wg.Add(1)
			go func(idx []int) {
				defer func() { crew.Leave(); <-sem; wg.Done() }()
				for _, i := range idx {
					if !apply(i) {
						return // the saga's later commands wait for this one
					}
				}
			}(bySaga[id])
		}
		crew.Leave()
		wg.Wait()
	}
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	p.cfg.Failpoint("participant/after-apply")
	for _, m := range replies {
		if m.Topic != "" {
			out.Produce(ctx, m)
		}
	}
	p.cfg.Failpoint("participant/after-produce")
	return nil
}

// apply decodes and applies one command and returns its reply (none: a zero
// Message), or a poison or transient error as handle describes.
func (p *Participant) apply(ctx context.Context, r kafkatx.Record) (kafkatx.Message, error) {
	cmd, err := Decode(r)
	if err == nil && cmd.Phase == "" {
		err = fmt.Errorf("%w: %s has no step, attempt and phase headers: not a command", ErrPoison, cmd.Type)
	}
	if err != nil {
		return kafkatx.Message{}, kafkatx.Poison(r, err)
	}
	reply, err := p.h(ctx, cmd)
	switch {
	case errors.Is(err, ErrPoison):
		return kafkatx.Message{}, kafkatx.Poison(r, err)
	case err != nil:
		return kafkatx.Message{}, fmt.Errorf("saga: %s %s for saga %s: %w", p.cfg.CommandTopic, cmd.Type, cmd.SagaID, err)
	}
	if cmd.NoReply {
		return p.unanswered(r, cmd, reply)
	}
	if reply.Type == "" {
		return kafkatx.Message{}, nil
	}
	return reply.Message(p.cfg.ReplyTopic), nil
}

// unanswered handles the handler's answer to a command that takes no reply
// (Envelope.NoReply). A success sends nothing. A refusal is dead-lettered
// with its reason, in the transaction that records it: no saga will hear
// of it, so an operator must. A transient answer makes the batch transient,
// as an error does, because nobody else would try the command again.
func (p *Participant) unanswered(r kafkatx.Record, cmd, reply Envelope) (kafkatx.Message, error) {
	if reply.Type == "" {
		return kafkatx.Message{}, nil
	}
	rep, err := reply.Reply()
	if err != nil {
		// ReplyTo makes valid replies; this is a handler's bug, and its
		// command is kept for an operator rather than retried forever.
		return kafkatx.DeadLetter(p.cfg.DeadLetterTopic, r, fmt.Errorf("its handler answered with a bad reply: %w", err)), nil
	}
	switch rep.Outcome {
	case Success:
		return kafkatx.Message{}, nil
	case Transient:
		return kafkatx.Message{}, fmt.Errorf("saga: %s %s for saga %s failed transiently and takes no reply: %s",
			p.cfg.CommandTopic, cmd.Type, cmd.SagaID, rep.Reason)
	}
	p.log.Warn("command refused; it takes no reply, so it is dead-lettered for an operator",
		zap.String("saga_id", cmd.SagaID), zap.String("type", cmd.Type), zap.String("reason", rep.Reason))
	return kafkatx.DeadLetter(p.cfg.DeadLetterTopic, r, fmt.Errorf("%s refused, and its saga waits for no reply: %s", cmd.Type, rep.Reason)), nil
}

// DecodeCommand checks that cmd is one of the command types a participant
// handles, with the phase that type must travel in, and decodes its value
// into body, which what names for the error ("an order"). Every error wraps ErrPoison and names the participant: a
// command of the wrong type or phase, or a value that is not body, can never
// be applied, however often it comes.
func DecodeCommand(participant string, cmd Envelope, phases map[string]Phase, what string, body any) error {
	want, ok := phases[cmd.Type]
	if !ok {
		return fmt.Errorf("%w: %s does not handle %q", ErrPoison, participant, cmd.Type)
	}
	if cmd.Phase != want {
		return fmt.Errorf("%w: %s: %s with phase %q, want %q", ErrPoison, participant, cmd.Type, cmd.Phase, want)
	}
	if err := DecodeJSON(cmd.Payload, body); err != nil {
		return fmt.Errorf("%w: %s: %s is not %s: %v", ErrPoison, participant, cmd.Type, what, err)
	}
	return nil
}
