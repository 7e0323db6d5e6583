package saga

import (
	"errors"
	"fmt"

	fastjson "github.com/goccy/go-json"
)

// DecodeSnapshot decodes the value of a saga.state record (a JSON Instance,
// as the orchestrator writes it). An empty value is a tombstone, not a
// snapshot, and an error. A snapshot from before steps had timers of their
// own gets its timers moved to its current step.
//
// It decodes with goccy/go-json, not the standard library: a snapshot
// carries the saga's whole history, decoding snapshots took a third of the
// orders API's CPU at saturation (its read model follows saga.state), and
// the orchestrator decodes every one of them on a restore. go-json gives the
// same Go value about five times faster (BenchmarkSnapshotCodec).
// TestFastJSONAgreesWithEncodingJSON holds it to encoding/json's results on
// valid and damaged snapshots alike. (segmentio/encoding, as fast, failed
// that test: it accepts a timestamp with any separator for the T.) A panic
// in the decoder is an error here, so that a bug there costs one record, not
// the process.
func DecodeSnapshot(b []byte) (in Instance, err error) {
	if len(b) == 0 {
		return in, errors.New("saga: empty snapshot (a tombstone)")
	}
	if err = DecodeJSON(b, &in); err != nil {
		return Instance{}, err
	}
	in.migrate()
	return in, nil
}

// DecodeJSON decodes b into v, a pointer, as json.Unmarshal does, with the
// decoder of DecodeSnapshot. The services decode every record's body with
// it: a command's order in stock and payment, a reply's body and an
// OrderPlaced in the orchestrator, an end event in the read model. With
// encoding/json those decodes were a fifth to a third of the participants'
// CPU at saturation and a tenth of the orchestrator's. Each type decoded
// this way is held to encoding/json's results on valid and damaged bodies
// by a test (sagatest.DecodesLikeEncodingJSON). A panic in the decoder is an
// error, so that a bug there costs one record, not the process.
func DecodeJSON(b []byte, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("saga: JSON decoder panicked: %v", p)
		}
	}()
	return fastjson.Unmarshal(b, v)
}

// EncodeSnapshot encodes in as the value of its saga.state record: the bytes
// encoding/json's Marshal gives (TestFastJSONAgreesWithEncodingJSON, and
// every snapshot the transition tests take). The orchestrator's loop
// encodes one snapshot per saga it changed in a batch, and in a saturation
// run straight into Kafka that loop was in a transaction 85% of the time.
// A snapshot is written field by field (appendSnapshot), in a fifth of
// go-json's time and a tenth of encoding/json's (BenchmarkSnapshotCodec);
// one with a value that needs escaping or checking is left to go-json.
func EncodeSnapshot(in *Instance) (b []byte, err error) {
	defer func() {
		if p := recover(); p != nil {
			b, err = nil, fmt.Errorf("saga: snapshot encoder panicked: %v", p)
		}
	}()
	if b, ok := appendSnapshot(make([]byte, 0, snapshotSizeHint(in)), in); ok {
		return b, nil
	}
	return fastjson.Marshal(in)
}

// snapshotSizeHint is about what in's snapshot takes, so that it is
// written into one allocation.
func snapshotSizeHint(in *Instance) int {
	return 256 + len(in.Data) + 160*len(in.Steps) + 160*len(in.History)
}

// ValidJSON reports whether b is one JSON value, as json.Valid does, with
// the faster scanner of DecodeSnapshot: every record a service reads is
// checked. A panic counts as not valid.
func ValidJSON(b []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return fastjson.Valid(b)
}
