package saga

import (
	"encoding/json"
	"strconv"
	"time"

	fastjson "github.com/goccy/go-json"
)

// appendSnapshot appends in as encoding/json's Marshal encodes it, field by
// field, and reports false for anything it does not write the same way
// (a string to escape, a timestamp Marshal refuses, raw JSON to compact or
// check): the caller then encodes with a general encoder. go-json spent
// two thirds of a snapshot's encoding deciding, by reflection for every
// time.Time field tagged omitzero, whether it has an IsZero method; there
// are two such fields a step and three a saga.
func appendSnapshot(b []byte, in *Instance) ([]byte, bool) {
	ok := true
	str := func(key, s string) {
		b = append(b, key...)
		if ok = ok && plainString(s); ok {
			b = append(b, '"')
			b = append(b, s...)
			b = append(b, '"')
		}
	}
	stamp := func(key string, t time.Time, omitZero bool) {
		if omitZero && t.IsZero() {
			return
		}
		b = append(b, key...)
		var good bool
		b, good = appendTime(b, t)
		ok = ok && good
	}
	raw := func(key string, r json.RawMessage) {
		if len(r) == 0 {
			return
		}
		b = append(b, key...)
		if ok = ok && plainRaw(r); ok {
			b = append(b, r...)
		}
	}

	str(`{"id":`, in.ID)
	str(`,"type":`, in.Type)
	str(`,"state":`, string(in.State))
	b = strconv.AppendInt(append(b, `,"step":`...), int64(in.Step), 10)
	b = append(b, `,"steps":`...)
	if in.Steps == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range in.Steps {
			s := &in.Steps[i]
			if i > 0 {
				b = append(b, ',')
			}
			str(`{"name":`, s.Name)
			b = strconv.AppendBool(append(b, `,"compensable":`...), s.Compensable)
			str(`,"status":`, string(s.Status))
			b = strconv.AppendInt(append(b, `,"attempt":`...), int64(s.Attempt), 10)
			b = strconv.AppendInt(append(b, `,"limit":`...), int64(s.Limit), 10)
			raw(`,"result":`, s.Result)
			if s.Parallel {
				b = append(b, `,"parallel":true`...)
			}
			if s.NoReply {
				b = append(b, `,"no_reply":true`...)
			}
			stamp(`,"deadline":`, s.Deadline, true)
			stamp(`,"retry_at":`, s.RetryAt, true)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	raw(`,"data":`, in.Data)
	if in.Traceparent != "" {
		str(`,"traceparent":`, in.Traceparent)
	}
	stamp(`,"step_deadline":`, in.OldStepDeadline, true)
	stamp(`,"retry_at":`, in.OldRetryAt, true)
	stamp(`,"deadline":`, in.Deadline, true)
	b = strconv.AppendUint(append(b, `,"version":`...), in.Version, 10)
	b = strconv.AppendUint(append(b, `,"ignored":`...), in.Ignored, 10)
	if in.Reason != "" {
		str(`,"reason":`, in.Reason)
	}
	b = append(b, `,"history":`...)
	if in.History == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, '[')
		for i := range in.History {
			c := &in.History[i]
			if i > 0 {
				b = append(b, ',')
			}
			stamp(`{"at":`, c.At, false)
			str(`,"from":`, string(c.From))
			str(`,"to":`, string(c.To))
			b = strconv.AppendInt(append(b, `,"step":`...), int64(c.Step), 10)
			str(`,"cause":`, c.Cause)
			if c.MessageID != "" {
				str(`,"message_id":`, c.MessageID)
			}
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	return append(b, '}'), ok
}

// plainString reports whether encoding/json writes s as it is between
// quotes: printable ASCII with nothing it escapes (it escapes <, > and &
// for HTML too).
func plainString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// plainRaw reports whether encoding/json writes r as it is: valid JSON with
// no byte it would remove (space between tokens) or escape (outside ASCII,
// and <, > and &, within strings or not, since they can only be in strings).
func plainRaw(r json.RawMessage) bool {
	for _, c := range r {
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return fastjson.Valid(r)
}

// appendTime appends t as time.Time's MarshalJSON does, or reports false
// for the times it refuses (a year outside 0 to 9999, a zone offset of a
// day or more).
func appendTime(b []byte, t time.Time) ([]byte, bool) {
	if y := t.Year(); y < 0 || y > 9999 {
		return b, false
	}
	if _, off := t.Zone(); off <= -24*3600 || off >= 24*3600 {
		return b, false
	}
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"'), true
}
