package saga

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// SchemaVersion is the envelope and message shape this code writes, and the
// newest it reads. Readers ignore unknown JSON fields, so adding a field does
// not change it; renaming, removing or changing the meaning of one does.
const SchemaVersion = 1

// Kafka header names. The value of every record is JSON; everything needed to
// route, deduplicate and trace it travels here, so a consumer can decide what
// to do without parsing the body.
const (
	HeaderMessageID     = "message-id"     // UUIDv7, unique per message
	HeaderSagaID        = "saga-id"        // also the record key
	HeaderType          = "type"           // e.g. ReserveStock, StockReserved
	HeaderCausationID   = "causation-id"   // the message this one answers
	HeaderSchemaVersion = "schema-version" // decimal
	HeaderTraceparent   = "traceparent"    // W3C Trace Context
	HeaderStep          = "step"           // commands and replies: step index, decimal
	HeaderAttempt       = "attempt"        // commands and replies: attempt, decimal from 1
	HeaderPhase         = "phase"          // commands and replies: action or compensation
	HeaderState         = "state"          // saga.state snapshots: the saga's State
	HeaderReply         = "reply"          // commands: "none" when the saga waits for no reply (Step.NoReply)
)

// ReplyNone is the value of HeaderReply on a command that takes no reply.
const ReplyNone = "none"

// maxHeaderLen bounds id-like header values: anything longer is a bug
// upstream, not an id.
const maxHeaderLen = 256

// Envelope is one message with its metadata, as it travels on every topic.
type Envelope struct {
	MessageID   string
	SagaID      string
	Type        string
	CausationID string
	// SchemaVersion is the shape of Payload; 0 means SchemaVersion when
	// writing.
	SchemaVersion int
	Traceparent   string
	// Step, Attempt and Phase identify the command of a command or reply;
	// Phase is empty on other messages (starts, end events), and then Step
	// and Attempt are 0 and not sent.
	Step    int
	Attempt int
	Phase   Phase
	// NoReply marks a command the saga waits for no reply to
	// (Step.NoReply): its participant answers nothing, and dead-letters it
	// if it refuses.
	NoReply bool
	Payload json.RawMessage
}

// Message returns e as a record for topic, keyed by the saga id so that every
// record of one saga lands on the same partition number of every topic.
func (e Envelope) Message(topic string) kafkatx.Message {
	v := e.SchemaVersion
	if v == 0 {
		v = SchemaVersion
	}
	hs := make([]kafkatx.Header, 0, 10)
	add := func(k, v string) { hs = append(hs, kafkatx.Header{Key: k, Value: []byte(v)}) }
	add(HeaderMessageID, e.MessageID)
	add(HeaderSagaID, e.SagaID)
	add(HeaderType, e.Type)
	add(HeaderSchemaVersion, strconv.Itoa(v))
	if e.CausationID != "" {
		add(HeaderCausationID, e.CausationID)
	}
	if e.Traceparent != "" {
		add(HeaderTraceparent, e.Traceparent)
	}
	if e.Phase != "" {
		add(HeaderStep, strconv.Itoa(e.Step))
		add(HeaderAttempt, strconv.Itoa(e.Attempt))
		add(HeaderPhase, string(e.Phase))
		if e.NoReply {
			add(HeaderReply, ReplyNone)
		}
	}
	return kafkatx.NewMessage(topic, []byte(e.SagaID), e.Payload, hs...)
}

// Decode reads an envelope from a consumed record. An error wraps ErrPoison
// and says what is wrong in words: a missing or malformed required header, a
// schema version newer than this reader, a key that is not the saga id (the
// record may be on the wrong partition), a value that is not JSON. A malformed
// traceparent is dropped rather than refused: tracing is best effort, as the
// W3C spec asks.
func Decode(rec kafkatx.Record) (Envelope, error) {
	poison := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrPoison, fmt.Sprintf(format, args...))
	}
	var e Envelope
	var err error
	text := func(key string, required bool) string {
		if err != nil {
			return ""
		}
		v := rec.Header(key)
		switch {
		case v == nil && required:
			err = poison("missing header %q", key)
		case v == nil:
		case len(v) == 0 || len(v) > maxHeaderLen || !utf8.Valid(v) || bytes.ContainsFunc(v, isControl):
			err = poison("header %q is empty, too long or not printable text", key)
		}
		return string(v)
	}
	number := func(key string, lo int) int {
		s := text(key, true)
		if err != nil {
			return 0
		}
		n, perr := strconv.Atoi(s)
		if perr != nil || n < lo || n > math.MaxInt32 {
			err = poison("header %q is %q, want a decimal number from %d", key, s, lo)
		}
		return n
	}

	e.MessageID = text(HeaderMessageID, true)
	e.SagaID = text(HeaderSagaID, true)
	e.Type = text(HeaderType, true)
	e.CausationID = text(HeaderCausationID, false)
	e.SchemaVersion = number(HeaderSchemaVersion, 1)
	if err != nil {
		return Envelope{}, err
	}
	if e.SchemaVersion > SchemaVersion {
		return Envelope{}, poison("schema-version %d is newer than this reader (%d)", e.SchemaVersion, SchemaVersion)
	}
	if string(rec.Key) != e.SagaID {
		return Envelope{}, poison("record key %q is not the saga id %q", rec.Key, e.SagaID)
	}
	if tp := rec.Header(HeaderTraceparent); validTraceparent(string(tp)) {
		e.Traceparent = string(tp)
	}
	if rec.Header(HeaderPhase) != nil {
		switch p := Phase(text(HeaderPhase, true)); {
		case err != nil:
		case p.valid():
			e.Phase = p
		default:
			err = poison("header %q is %q, want %q or %q", HeaderPhase, p, PhaseAction, PhaseCompensation)
		}
		e.Step = number(HeaderStep, 0)
		e.Attempt = number(HeaderAttempt, 1)
		switch r := rec.Header(HeaderReply); {
		case r == nil:
		case string(r) == ReplyNone:
			e.NoReply = true
		default:
			err = poison("header %q is %q, want %q or none", HeaderReply, r, ReplyNone)
		}
	} else if rec.Header(HeaderStep) != nil || rec.Header(HeaderAttempt) != nil || rec.Header(HeaderReply) != nil {
		err = poison("step, attempt or reply header without a phase header")
	}
	if err != nil {
		return Envelope{}, err
	}
	if !ValidJSON(rec.Value) {
		return Envelope{}, poison("%s value is not JSON", e.Type)
	}
	e.Payload = rec.Value
	return e, nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Envelope returns o as an envelope with a new message id, continuing the
// saga's trace.
func (o Outgoing) Envelope() Envelope {
	return Envelope{
		MessageID:     NewMessageID(),
		SagaID:        o.SagaID,
		Type:          o.Type,
		CausationID:   o.CausationID,
		SchemaVersion: SchemaVersion,
		Traceparent:   ChildTraceparent(o.Traceparent),
		Step:          o.Step,
		Attempt:       o.Attempt,
		Phase:         o.Phase,
		NoReply:       o.NoReply,
		Payload:       o.Payload,
	}
}

// ReplyBody is the value of every reply a participant sends. The step,
// attempt and phase travel in headers, copied from the command.
type ReplyBody struct {
	Outcome Outcome `json:"outcome"`
	// Reason is for people: it lands in the saga's history.
	Reason string          `json:"reason,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// ReplyTo makes the reply to the command cmd: type replyType (e.g.
// "PaymentDeclined"), the outcome, a reason for people and an optional result
// (any value json.Marshal accepts; nil for none). It copies the step, attempt
// and phase, answers cmd's message id and continues its trace. An error means
// the arguments are wrong (cmd is not a command, unknown outcome, result not
// marshalable): a bug in the participant, not in the message.
func ReplyTo(cmd Envelope, replyType string, outcome Outcome, reason string, result any) (Envelope, error) {
	if cmd.Phase == "" {
		return Envelope{}, fmt.Errorf("saga: reply to %s %q: not a command (no phase)", cmd.Type, cmd.MessageID)
	}
	if replyType == "" {
		return Envelope{}, fmt.Errorf("saga: reply to %s: empty reply type", cmd.Type)
	}
	if !outcome.valid() {
		return Envelope{}, fmt.Errorf("saga: reply to %s: unknown outcome %q", cmd.Type, outcome)
	}
	body := ReplyBody{Outcome: outcome, Reason: reason}
	if result != nil {
		raw, err := json.Marshal(result)
		if err != nil {
			return Envelope{}, fmt.Errorf("saga: reply to %s: result: %w", cmd.Type, err)
		}
		body.Result = raw
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return Envelope{}, fmt.Errorf("saga: reply to %s: %w", cmd.Type, err)
	}
	return Envelope{
		MessageID:     NewMessageID(),
		SagaID:        cmd.SagaID,
		Type:          replyType,
		CausationID:   cmd.MessageID,
		SchemaVersion: SchemaVersion,
		Traceparent:   ChildTraceparent(cmd.Traceparent),
		Step:          cmd.Step,
		Attempt:       cmd.Attempt,
		Phase:         cmd.Phase,
		Payload:       payload,
	}, nil
}

// Reply reads e as a participant's reply, for Input.Reply. An error wraps
// ErrPoison: e has no phase, its body is not a ReplyBody, or the outcome is
// unknown.
func (e Envelope) Reply() (Reply, error) {
	if e.Phase == "" {
		return Reply{}, fmt.Errorf("%w: %s is not a reply: no phase header", ErrPoison, e.Type)
	}
	var b ReplyBody
	if err := DecodeJSON(e.Payload, &b); err != nil {
		return Reply{}, fmt.Errorf("%w: %s is not a reply body: %v", ErrPoison, e.Type, err)
	}
	if !b.Outcome.valid() {
		return Reply{}, fmt.Errorf("%w: %s has unknown outcome %q", ErrPoison, e.Type, b.Outcome)
	}
	return Reply{
		Step:    e.Step,
		Attempt: e.Attempt,
		Phase:   e.Phase,
		Outcome: b.Outcome,
		Reason:  b.Reason,
		Result:  b.Result,
	}, nil
}
