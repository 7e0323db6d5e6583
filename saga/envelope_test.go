package saga_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

var (
	uuidv7Re      = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	traceparentRe = regexp.MustCompile(`^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`)
)

// record returns a consumed record as Message would produce it, with the
// headers given as key, value pairs (a nil value drops the header).
func record(key, value string, kv ...string) kafkatx.Record {
	rec := kafkatx.Record{Topic: "payment.replies", Key: []byte(key), Value: []byte(value)}
	for i := 0; i < len(kv); i += 2 {
		rec.Headers = append(rec.Headers, kafkatx.Header{Key: kv[i], Value: []byte(kv[i+1])})
	}
	return rec
}

func commandHeaders(except string, kv ...string) []string {
	hs := map[string]string{
		"message-id": "0194e4c8-7a3b-7cde-8f00-000000000001", "saga-id": "order-1", "type": "ChargePayment",
		"causation-id": "m-0", "schema-version": "1", "traceparent": tp, "step": "1", "attempt": "2", "phase": "action",
	}
	for i := 0; i < len(kv); i += 2 {
		hs[kv[i]] = kv[i+1]
	}
	var out []string
	for _, k := range []string{"message-id", "saga-id", "type", "causation-id", "schema-version", "traceparent", "step", "attempt", "phase"} {
		if k != except {
			out = append(out, k, hs[k])
		}
	}
	return out
}

func TestDecode(t *testing.T) {
	good := saga.Envelope{
		MessageID: "0194e4c8-7a3b-7cde-8f00-000000000001", SagaID: "order-1", Type: "ChargePayment", CausationID: "m-0",
		SchemaVersion: 1, Traceparent: tp, Step: 1, Attempt: 2, Phase: saga.PhaseAction, Payload: json.RawMessage(`{"amount":1250}`),
	}
	tests := []struct {
		name string
		rec  kafkatx.Record
		want string // in the poison reason; "" for valid
	}{
		{"command", record("order-1", `{"amount":1250}`, commandHeaders("")...), ""},
		{"missing message id", record("order-1", `{}`, commandHeaders("message-id")...), `missing header "message-id"`},
		{"missing saga id", record("order-1", `{}`, commandHeaders("saga-id")...), `missing header "saga-id"`},
		{"missing type", record("order-1", `{}`, commandHeaders("type")...), `missing header "type"`},
		{"missing schema version", record("order-1", `{}`, commandHeaders("schema-version")...), `missing header "schema-version"`},
		{"schema version from the future", record("order-1", `{}`, commandHeaders("", "schema-version", "2")...), "schema-version 2 is newer than this reader (1)"},
		{"schema version not a number", record("order-1", `{}`, commandHeaders("", "schema-version", "v1")...), `header "schema-version" is "v1"`},
		{"schema version zero", record("order-1", `{}`, commandHeaders("", "schema-version", "0")...), `header "schema-version" is "0"`},
		{"key is not the saga id", record("order-2", `{}`, commandHeaders("")...), `record key "order-2" is not the saga id "order-1"`},
		{"value is not JSON", record("order-1", `amount=1250`, commandHeaders("")...), "ChargePayment value is not JSON"},
		{"empty value", record("order-1", ``, commandHeaders("")...), "not JSON"},
		{"unknown phase", record("order-1", `{}`, commandHeaders("", "phase", "undo")...), `header "phase" is "undo"`},
		{"attempt zero", record("order-1", `{}`, commandHeaders("", "attempt", "0")...), `header "attempt" is "0"`},
		{"negative step", record("order-1", `{}`, commandHeaders("", "step", "-1")...), `header "step" is "-1"`},
		{"step too large", record("order-1", `{}`, commandHeaders("", "step", "99999999999")...), `header "step"`},
		{"phase without attempt", record("order-1", `{}`, commandHeaders("attempt")...), `missing header "attempt"`},
		{"attempt without phase", record("order-1", `{}`, commandHeaders("phase")...), "without a phase header"},
		{"control characters", record("order-1", `{}`, commandHeaders("", "type", "Charge\nPayment")...), `header "type" is empty, too long or not printable`},
		{"empty header", record("order-1", `{}`, commandHeaders("", "type", "")...), `header "type" is empty`},
		{"huge header", record("order-1", `{}`, commandHeaders("", "causation-id", strings.Repeat("x", 300))...), `header "causation-id"`},
		{"unknown reply header", record("order-1", `{}`, append(commandHeaders(""), "reply", "later")...), `header "reply" is "later"`},
		{"reply header on an event", record("order-1", `{}`, "message-id", "m-1", "saga-id", "order-1", "type", "OrderPlaced",
			"schema-version", "1", "reply", "none"), "without a phase header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := saga.Decode(tc.rec)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, good) {
					t.Fatalf("got %+v\nwant %+v", got, good)
				}
				return
			}
			if !errors.Is(err, saga.ErrPoison) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want poison with %q", err, tc.want)
			}
		})
	}
}

func TestDecodeEventAndLenientFields(t *testing.T) {
	// An event has no step headers, may lack causation and trace, and a
	// malformed traceparent is dropped rather than refused.
	rec := record("order-1", `{"order":"order-1","new_field":[1,2]}`,
		"message-id", "m-1", "saga-id", "order-1", "type", "OrderPlaced", "schema-version", "1", "traceparent", "00-XYZ")
	e, err := saga.Decode(rec)
	if err != nil {
		t.Fatal(err)
	}
	if e.Phase != "" || e.Step != 0 || e.Attempt != 0 || e.Traceparent != "" || e.CausationID != "" {
		t.Fatalf("%+v", e)
	}
	// Version 00 must be exactly 55 characters; later versions may append.
	for s, valid := range map[string]bool{
		tp:                       true,
		tp + "-extra":            false,
		"01" + tp[2:] + "-extra": true,
		"ff" + tp[2:]:            false,
		strings.ToUpper(tp):      false,
		"00-" + strings.Repeat("0", 32) + tp[35:]: false,
	} {
		rec := record("order-1", `{}`, "message-id", "m-1", "saga-id", "order-1", "type", "T", "schema-version", "1", "traceparent", s)
		e, err := saga.Decode(rec)
		if err != nil || (e.Traceparent != "") != valid {
			t.Errorf("traceparent %q: kept %q, want valid=%v (%v)", s, e.Traceparent, valid, err)
		}
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	for _, e := range []saga.Envelope{
		{MessageID: "m-1", SagaID: "order-1", Type: "ReserveStock", CausationID: "m-0", Traceparent: tp,
			Step: 0, Attempt: 3, Phase: saga.PhaseCompensation, Payload: json.RawMessage(`{"sku":"a"}`)},
		{MessageID: "m-2", SagaID: "order-1", Type: "OrderPlaced", Payload: json.RawMessage(`{}`)},
		{MessageID: "m-3", SagaID: "order-1", Type: "CommitStock", Step: 2, Attempt: 1, Phase: saga.PhaseAction,
			NoReply: true, Payload: json.RawMessage(`{}`)},
	} {
		m := e.Message("stock.commands")
		if m.Topic != "stock.commands" || string(m.Key) != "order-1" {
			t.Fatalf("%+v", m)
		}
		got, err := saga.Decode(kafkatx.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers})
		if err != nil {
			t.Fatal(err)
		}
		e.SchemaVersion = saga.SchemaVersion // 0 is written as the current version
		if !reflect.DeepEqual(got, e) {
			t.Fatalf("got %+v\nwant %+v", got, e)
		}
		if e.Phase == "" && (m.Header("step") != nil || m.Header("attempt") != nil || m.Header("phase") != nil) {
			t.Fatalf("event with command headers: %+v", m.Headers)
		}
		if (m.Header(saga.HeaderReply) != nil) != e.NoReply {
			t.Fatalf("reply header %q on a command with NoReply %v", m.Header(saga.HeaderReply), e.NoReply)
		}
	}
}

func TestOutgoingEnvelope(t *testing.T) {
	def := orderSaga()
	in := start()
	in.Start.Traceparent = tp
	_, out, err := saga.Transition(def, nil, in)
	if err != nil {
		t.Fatal(err)
	}
	e := out[0].Envelope()
	if !uuidv7Re.MatchString(e.MessageID) || e.SagaID != "order-1" || e.Type != "ReserveStock" || e.CausationID != "m-start" ||
		e.Step != 0 || e.Attempt != 1 || e.Phase != saga.PhaseAction || e.SchemaVersion != saga.SchemaVersion {
		t.Fatalf("%+v", e)
	}
	if saga.TraceID(e.Traceparent) != saga.TraceID(tp) || e.Traceparent == tp {
		t.Fatalf("traceparent %s should continue %s with a new parent id", e.Traceparent, tp)
	}
}

func TestReplyTo(t *testing.T) {
	cmd, err := saga.Decode(record("order-1", `{"amount":1250}`, commandHeaders("")...))
	if err != nil {
		t.Fatal(err)
	}
	r, err := saga.ReplyTo(cmd, "PaymentDeclined", saga.Failure, "insufficient funds", map[string]int{"balance": 3})
	if err != nil {
		t.Fatal(err)
	}
	if r.SagaID != "order-1" || r.Type != "PaymentDeclined" || r.CausationID != cmd.MessageID || r.Step != 1 || r.Attempt != 2 ||
		r.Phase != saga.PhaseAction || !uuidv7Re.MatchString(r.MessageID) || saga.TraceID(r.Traceparent) != saga.TraceID(tp) {
		t.Fatalf("%+v", r)
	}
	if got := string(r.Payload); got != `{"outcome":"failure","reason":"insufficient funds","result":{"balance":3}}` {
		t.Fatalf("payload %s", got)
	}
	// Through Kafka and back into a Transition input.
	m := r.Message("payment.replies")
	back, err := saga.Decode(kafkatx.Record{Key: m.Key, Value: m.Value, Headers: m.Headers})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := back.Reply()
	if err != nil {
		t.Fatal(err)
	}
	want := saga.Reply{Step: 1, Attempt: 2, Phase: saga.PhaseAction, Outcome: saga.Failure, Reason: "insufficient funds", Result: json.RawMessage(`{"balance":3}`)}
	if !reflect.DeepEqual(rep, want) {
		t.Fatalf("got %+v\nwant %+v", rep, want)
	}

	if r, err := saga.ReplyTo(cmd, "PaymentCharged", saga.Success, "", nil); err != nil || string(r.Payload) != `{"outcome":"success"}` {
		t.Fatalf("%s %v", r.Payload, err)
	}
	event := cmd
	event.Phase = ""
	for name, f := range map[string]func() (saga.Envelope, error){
		"not a command":   func() (saga.Envelope, error) { return saga.ReplyTo(event, "X", saga.Success, "", nil) },
		"no type":         func() (saga.Envelope, error) { return saga.ReplyTo(cmd, "", saga.Success, "", nil) },
		"unknown outcome": func() (saga.Envelope, error) { return saga.ReplyTo(cmd, "X", "ok", "", nil) },
		"bad result":      func() (saga.Envelope, error) { return saga.ReplyTo(cmd, "X", saga.Success, "", func() {}) },
		"raw not JSON":    func() (saga.Envelope, error) { return saga.ReplyTo(cmd, "X", saga.Success, "", json.RawMessage("{")) },
	} {
		if _, err := f(); err == nil || !strings.HasPrefix(err.Error(), "saga: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestEnvelopeReplyPoison(t *testing.T) {
	for name, e := range map[string]saga.Envelope{
		"no phase":        {Type: "StockReserved", Payload: json.RawMessage(`{"outcome":"success"}`)},
		"not an object":   {Type: "StockReserved", Phase: saga.PhaseAction, Payload: json.RawMessage(`[1]`)},
		"unknown outcome": {Type: "StockReserved", Phase: saga.PhaseAction, Payload: json.RawMessage(`{"outcome":"meh"}`)},
		"no outcome":      {Type: "StockReserved", Phase: saga.PhaseAction, Payload: json.RawMessage(`{"reason":"x"}`)},
	} {
		if _, err := e.Reply(); !errors.Is(err, saga.ErrPoison) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// Unknown fields are ignored.
	e := saga.Envelope{Phase: saga.PhaseAction, Payload: json.RawMessage(`{"outcome":"transient","retry_hint":"1s"}`)}
	if r, err := e.Reply(); err != nil || r.Outcome != saga.Transient {
		t.Errorf("%+v %v", r, err)
	}
}

func TestUUIDv7(t *testing.T) {
	ts := time.UnixMilli(0x0194e4c87a3b)
	id, err := saga.UUIDv7(ts, bytes.NewReader(bytes.Repeat([]byte{0xff}, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if id != "0194e4c8-7a3b-7fff-bfff-ffffffffffff" {
		t.Fatalf("got %s", id)
	}
	id, _ = saga.UUIDv7(ts, bytes.NewReader(make([]byte, 10)))
	if id != "0194e4c8-7a3b-7000-8000-000000000000" {
		t.Fatalf("got %s", id)
	}
	if _, err := saga.UUIDv7(ts, iotest.ErrReader(errors.New("no entropy"))); err == nil {
		t.Fatal("no error from a failing reader")
	}
	// Ids from later milliseconds sort later, and none repeat.
	seen := map[string]bool{}
	prev := ""
	for range 1000 {
		id := saga.NewMessageID()
		if !uuidv7Re.MatchString(id) || seen[id] {
			t.Fatalf("bad or repeated id %s", id)
		}
		if id[:13] < prev {
			t.Fatalf("%s sorts before %s", id, prev)
		}
		seen[id], prev = true, id[:13]
	}
}

func TestTraceparent(t *testing.T) {
	root := saga.NewTraceparent()
	if !traceparentRe.MatchString(root) || !strings.HasSuffix(root, "-01") {
		t.Fatalf("root %s", root)
	}
	child := saga.ChildTraceparent(root)
	if saga.TraceID(child) != saga.TraceID(root) || child[36:52] == root[36:52] {
		t.Fatalf("child %s of %s", child, root)
	}
	if got := saga.ChildTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"); !strings.HasSuffix(got, "-00") {
		t.Fatalf("flags not kept: %s", got)
	}
	if got := saga.ChildTraceparent("garbage"); !traceparentRe.MatchString(got) {
		t.Fatalf("no new trace for garbage: %s", got)
	}
	if saga.TraceID("garbage") != "" {
		t.Fatal("trace id of garbage")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte("order-1"), []byte(`{"amount":1}`), []byte("message-id=m\x00saga-id=order-1\x00type=T\x00schema-version=1\x00step=1\x00attempt=1\x00phase=action"))
	f.Add([]byte("order-1"), []byte(`{}`), []byte("message-id=m\x00saga-id=order-1\x00type=T\x00schema-version=1\x00traceparent="+tp))
	f.Add([]byte("k"), []byte(`[`), []byte("saga-id=k\x00phase=compensation\x00attempt=-1"))
	f.Fuzz(func(t *testing.T, key, value, headers []byte) {
		rec := kafkatx.Record{Key: key, Value: value}
		for _, h := range bytes.Split(headers, []byte{0}) {
			k, v, _ := bytes.Cut(h, []byte("="))
			rec.Headers = append(rec.Headers, kafkatx.Header{Key: string(k), Value: v})
		}
		e, err := saga.Decode(rec)
		if err != nil {
			if !errors.Is(err, saga.ErrPoison) {
				t.Fatalf("error is not poison: %v", err)
			}
			return
		}
		// What decodes, encodes and decodes to the same envelope.
		m := e.Message("t")
		again, err := saga.Decode(kafkatx.Record{Key: m.Key, Value: m.Value, Headers: m.Headers})
		if err != nil {
			t.Fatalf("re-decoding %+v: %v", e, err)
		}
		if !reflect.DeepEqual(again, e) {
			t.Fatalf("round trip changed the envelope:\n%+v\n%+v", e, again)
		}
		if e.Phase != "" {
			if _, err := e.Reply(); err != nil && !errors.Is(err, saga.ErrPoison) {
				t.Fatalf("reply error is not poison: %v", err)
			}
		}
	})
}
