package saga_test

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/sagatest"
)

// fastJSONSnapshots are snapshots of the order saga as the orchestrator
// writes them: started, compensating after a decline with a step result and
// a reason that needs escaping, and completed.
func fastJSONSnapshots(t testing.TB) [][]byte {
	t.Helper()
	def := orderSaga()
	var out [][]byte
	keep := func(i *saga.Instance) {
		b, err := json.Marshal(i)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	step := func(i *saga.Instance, in saga.Input) *saga.Instance {
		t.Helper()
		next, _, err := saga.Transition(def, i, in)
		if err != nil {
			t.Fatal(err)
		}
		keep(next)
		return next
	}
	reply := func(k int, ph saga.Phase, o saga.Outcome, d time.Duration, result string) saga.Input {
		return saga.Input{Kind: saga.KindReply, At: at(d), MessageID: fmt.Sprintf("reply-%d", d),
			Reply: saga.Reply{Step: k, Attempt: 1, Phase: ph, Outcome: o, Reason: "card \"declined\" <b>&</b> \u00e9\u2028\n", Result: json.RawMessage(result)}}
	}
	start := func(id string) *saga.Instance {
		return step(nil, saga.Input{Kind: saga.KindStart, At: at(0), MessageID: "m-" + id,
			Start: saga.Start{SagaID: id, Data: json.RawMessage(`{"customer":"c<1>&","lines":[{"product":"p1","qty":2}],"total":12.5}`),
				Traceparent: "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"}})
	}
	i := start("declined")
	i = step(i, reply(0, saga.PhaseAction, saga.Success, time.Second, `{"reserved":[1,2,3]}`))
	i = step(i, reply(1, saga.PhaseAction, saga.Failure, 2*time.Second, ""))
	step(i, reply(0, saga.PhaseCompensation, saga.Success, 3*time.Second, ""))
	i = start("completed")
	for k := range 3 {
		i = step(i, reply(k, saga.PhaseAction, saga.Success, time.Duration(k+1)*time.Second, `{"ok":true}`))
	}
	return out
}

// TestFastJSONAgreesWithEncodingJSON holds DecodeSnapshot, EncodeSnapshot
// and the faster validity check to what encoding/json says of the same
// bytes: the same instance from every snapshot, and, for every truncation
// and every byte replaced by a character that matters to JSON, the same
// verdict (and, when both accept it, the same instance, which both encode
// to the same bytes). The services rely on encoding/json's
// semantics; the other decoder is only allowed to be faster.
func TestFastJSONAgreesWithEncodingJSON(t *testing.T) {
	snaps := fastJSONSnapshots(t)
	if len(snaps) < 7 {
		t.Fatalf("only %d snapshots", len(snaps))
	}
	agree := func(b []byte) {
		t.Helper()
		var want saga.Instance
		stdErr := json.Unmarshal(b, &want)
		got, err := saga.DecodeSnapshot(b)
		switch {
		case (err == nil) != (stdErr == nil):
			t.Fatalf("encoding/json says %v, DecodeSnapshot says %v, of %q", stdErr, err, b)
		case err == nil && !reflect.DeepEqual(got, want):
			t.Fatalf("decoded differently from encoding/json:\n got %+v\nwant %+v\n of %q", got, want, b)
		}
		if err == nil {
			again, err := saga.EncodeSnapshot(&got)
			std, _ := json.Marshal(&want)
			if err != nil || string(again) != string(std) {
				t.Fatalf("EncodeSnapshot gives %q (%v), encoding/json %q", again, err, std)
			}
		}
		if saga.ValidJSON(b) != json.Valid(b) {
			t.Fatalf("validity: encoding/json says %v of %q", json.Valid(b), b)
		}
	}
	checked := 0
	for _, b := range sagatest.JSONVariants(snaps...) {
		agree(b)
		checked++
	}
	if _, err := saga.DecodeSnapshot(nil); err == nil {
		t.Fatal("a tombstone decoded as a snapshot")
	}
	t.Logf("%d snapshots, whole and damaged, decoded alike", checked)
}

// BenchmarkSnapshotCodec decodes and encodes a completed order saga's
// snapshot (the largest kind the read model and a restore see) with
// encoding/json and with DecodeSnapshot and EncodeSnapshot, side by side.
func BenchmarkSnapshotCodec(b *testing.B) {
	snaps := fastJSONSnapshots(b)
	last := snaps[len(snaps)-1]
	var in saga.Instance
	if err := json.Unmarshal(last, &in); err != nil {
		b.Fatal(err)
	}
	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(last)))
			for b.Loop() {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	run("decode/encoding-json", func() error { var in saga.Instance; return json.Unmarshal(last, &in) })
	run("decode/DecodeSnapshot", func() error { _, err := saga.DecodeSnapshot(last); return err })
	run("encode/encoding-json", func() error { _, err := json.Marshal(&in); return err })
	run("encode/EncodeSnapshot", func() error { _, err := saga.EncodeSnapshot(&in); return err })
}

// TestEncodeSnapshotEdgeValues holds EncodeSnapshot to encoding/json's
// bytes, or to its refusal, on the values its field-by-field writer leaves
// to the general encoder, and on the shapes it writes itself.
func TestEncodeSnapshotEdgeValues(t *testing.T) {
	zone := time.FixedZone("x", -(5*3600 + 30*60))
	base := func() saga.Instance {
		return saga.Instance{ID: "s-1", Type: "order", State: saga.Running, Step: 1, Version: 2, Ignored: 1,
			Steps: []saga.StepState{
				{Name: "a", Compensable: true, Status: saga.StepDone, Attempt: 1, Limit: 3, Result: json.RawMessage(`{"n":[1,2]}`)},
				{Name: "b", Status: saga.StepRunning, Attempt: 2, Limit: 3, Parallel: true, Deadline: at(time.Second)},
			},
			History: []saga.Change{{At: at(0), From: saga.Started, To: saga.Running, Cause: "started", MessageID: "m-1"}}}
	}
	cases := map[string]func(in *saga.Instance){
		"as is":                  func(*saga.Instance) {},
		"nil slices":             func(in *saga.Instance) { in.Steps, in.History = nil, nil },
		"empty slices":           func(in *saga.Instance) { in.Steps, in.History = []saga.StepState{}, []saga.Change{} },
		"html in a reason":       func(in *saga.Instance) { in.Reason = "a <b> & c" },
		"quote and backslash":    func(in *saga.Instance) { in.History[0].Cause = `say "hi" \ bye` },
		"control characters":     func(in *saga.Instance) { in.Steps[0].Name = "a\x00\b\f\n\r\t\x1f" },
		"non-ASCII":              func(in *saga.Instance) { in.ID = "\u00e9\u2028\u2029\U0001F600" },
		"invalid UTF-8":          func(in *saga.Instance) { in.Type = "a\xffb" },
		"DEL":                    func(in *saga.Instance) { in.Traceparent = "a\x7fb" },
		"a zone":                 func(in *saga.Instance) { in.Deadline = at(time.Hour).In(zone) },
		"nanoseconds":            func(in *saga.Instance) { in.Steps[1].RetryAt = at(time.Nanosecond) },
		"old timers":             func(in *saga.Instance) { in.OldStepDeadline, in.OldRetryAt = at(time.Minute), at(2*time.Minute) },
		"year 10000":             func(in *saga.Instance) { in.History[0].At = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) },
		"negative year":          func(in *saga.Instance) { in.Deadline = time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC) },
		"zone of a day":          func(in *saga.Instance) { in.Deadline = at(0).In(time.FixedZone("y", 24*3600)) },
		"zero time in history":   func(in *saga.Instance) { in.History[0].At = time.Time{} },
		"raw with spaces":        func(in *saga.Instance) { in.Data = json.RawMessage(` { "a" : 1 } `) },
		"raw with html":          func(in *saga.Instance) { in.Steps[0].Result = json.RawMessage(`{"a":"<&>"}`) },
		"raw with unicode":       func(in *saga.Instance) { in.Data = json.RawMessage("{\"a\":\"\u2028\u00e9\"}") },
		"invalid raw":            func(in *saga.Instance) { in.Data = json.RawMessage(`{"a":`) },
		"negative step":          func(in *saga.Instance) { in.Step, in.History[0].Step = -1, -7 },
		"largest counters":       func(in *saga.Instance) { in.Version, in.Ignored = ^uint64(0), 1<<63 },
		"empty message id":       func(in *saga.Instance) { in.History[0].MessageID = "" },
		"compensating, a reason": func(in *saga.Instance) { in.State, in.Reason = saga.Compensating, "declined" },
	}
	for name, edit := range cases {
		in := base()
		edit(&in)
		want, wantErr := json.Marshal(&in)
		got, err := saga.EncodeSnapshot(&in)
		if (err != nil) != (wantErr != nil) || string(got) != string(want) {
			t.Errorf("%s: EncodeSnapshot gives %s (%v), encoding/json %s (%v)", name, got, err, want, wantErr)
		}
	}
}

// TestRecordBodiesDecodeLikeEncodingJSON holds DecodeJSON to encoding/json
// on the bodies the orchestrator decodes from every reply (ReplyBody) and
// the read model from every end event (EndEvent), valid and damaged.
func TestRecordBodiesDecodeLikeEncodingJSON(t *testing.T) {
	n := sagatest.DecodesLikeEncodingJSON[saga.ReplyBody](t, saga.DecodeJSON,
		[]byte(`{"outcome":"success","result":{"lines":[{"product_id":"p-1","quantity":2}]}}`),
		[]byte(`{"outcome":"failure","reason":"card \"declined\" <b>\u00e9\u2028\n"}`),
		[]byte(`{"Outcome":"transient","reason":"","result":null,"extra":[1,2.5e3,true]}`))
	n += sagatest.DecodesLikeEncodingJSON[saga.EndEvent](t, saga.DecodeJSON,
		[]byte(`{"saga_id":"o-1","saga_type":"order","state":"Completed","version":4,`+
			`"data":{"order_id":"o-1","lines":[{"product_id":"p","quantity":1}]},"results":{"reserve-stock":{"lines":[]}}}`),
		[]byte(`{"saga_id":"o-2","saga_type":"order","state":"Cancelled","reason":"out of stock: p","version":18446744073709551615}`))
	t.Logf("%d bodies decoded alike", n)
}

// BenchmarkRecordBodyDecode decodes a reply's body and an end event, the
// bodies the orchestrator and the read model decode from every record,
// with encoding/json and with DecodeJSON side by side.
func BenchmarkRecordBodyDecode(b *testing.B) {
	reply := []byte(`{"outcome":"success","result":{"lines":[{"product_id":"bench-p17","quantity":1}]}}`)
	end := []byte(`{"saga_id":"0190a8f2-7c1e-7b3a-9f00-3c2d1e0f4a5b","saga_type":"order","state":"Completed","version":3,` +
		`"data":{"order_id":"0190a8f2-7c1e-7b3a-9f00-3c2d1e0f4a5b","customer_id":"bench-c3","lines":[{"product_id":"bench-p17","quantity":1,"unit_price_cents":100}],"total_cents":100,"scenario":""},` +
		`"results":{"charge-payment":{"charged_cents":100},"reserve-stock":{"lines":[{"product_id":"bench-p17","quantity":1}]}}}`)
	for _, c := range []struct {
		name string
		body []byte
		v    func() any
	}{{"reply", reply, func() any { return new(saga.ReplyBody) }}, {"end", end, func() any { return new(saga.EndEvent) }}} {
		for _, d := range []struct {
			name   string
			decode func([]byte, any) error
		}{{"encoding-json", json.Unmarshal}, {"DecodeJSON", saga.DecodeJSON}} {
			b.Run(c.name+"/"+d.name, func(b *testing.B) {
				b.SetBytes(int64(len(c.body)))
				for b.Loop() {
					if err := d.decode(c.body, c.v()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
