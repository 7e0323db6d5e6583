package idempotency

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Pure tests: no Redis needed.

func TestKey(t *testing.T) {
	tests := []struct {
		prefix, saga, step, op string
		want                   string
	}{
		{"idem", "order-1", "reserve", "action", "idem:{order-1}:reserve:action"},
		{"idem:stock", "0192b5", "0", "compensation", "idem:stock:{0192b5}:0:compensation"},
		{"p", "a:b", "c", "d", "p:{a%3Ab}:c:d"},
		{"p", "a", "b:c", "d", "p:{a}:b%3Ac:d"},
		{"p", "x}y{z", "s", "o", "p:{x%7Dy%7Bz}:s:o"},
		{"p", "100%", "s", "o", "p:{100%25}:s:o"},
		{"p", "", "", "", "p:{}::"},
	}
	for _, tt := range tests {
		if got := Key(tt.prefix, tt.saga, tt.step, tt.op); got != tt.want {
			t.Errorf("Key(%q, %q, %q, %q) = %q, want %q", tt.prefix, tt.saga, tt.step, tt.op, got, tt.want)
		}
	}
}

// TestKeyHashTag checks that the saga id is the key's cluster hash tag
// whatever it contains, so all of one saga's keys share a slot.
func TestKeyHashTag(t *testing.T) {
	for _, saga := range []string{"order-1", "a{b}c", "}{", "{x}", "%7D"} {
		k := Key("idem", saga, "step", "op")
		open := strings.IndexByte(k, '{')
		end := strings.IndexByte(k[open+1:], '}')
		if open < 0 || end < 0 {
			t.Fatalf("Key(%q) = %q has no hash tag", saga, k)
		}
		if tag := k[open+1 : open+1+end]; tag != escape(saga) {
			t.Errorf("Key(%q) hash tag = %q, want %q", saga, tag, escape(saga))
		}
	}
}

func FuzzKeyInjective(f *testing.F) {
	f.Add("a:b", "c", "d", "a", "b:c", "d")
	f.Add("a", "b", "c", "a", "b", "c%")
	f.Add("%3A", "", "", ":", "", "")
	f.Add("{", "}", "", "%7B", "%7D", "")
	f.Fuzz(func(t *testing.T, s1, st1, o1, s2, st2, o2 string) {
		same := s1 == s2 && st1 == st2 && o1 == o2
		k1, k2 := Key("p", s1, st1, o1), Key("p", s2, st2, o2)
		if same != (k1 == k2) {
			t.Fatalf("(%q,%q,%q) -> %q, (%q,%q,%q) -> %q", s1, st1, o1, k1, s2, st2, o2, k2)
		}
		if strings.Count(k1, "{") != 1 || strings.Count(k1, "}") != 1 {
			t.Fatalf("key %q must hold exactly one hash tag", k1)
		}
	})
}

func TestHTTPKey(t *testing.T) {
	if got, want := httpKey("idem", "client:7", "k:1"), "idem:http:{client%3A7}:k%3A1"; got != want {
		t.Errorf("httpKey = %q, want %q", got, want)
	}
	if httpKey("idem", "a:b", "c") == httpKey("idem", "a", "b:c") {
		t.Error("scope and key are ambiguous")
	}
}

func TestFingerprint(t *testing.T) {
	base := fingerprint("POST", "/orders", []byte(`{"sku":"a"}`))
	if len(base) != 64 {
		t.Fatalf("fingerprint %q is not hex SHA-256", base)
	}
	if again := fingerprint("POST", "/orders", []byte(`{"sku":"a"}`)); again != base {
		t.Errorf("fingerprint is not stable: %q vs %q", again, base)
	}
	differ := []struct {
		name         string
		method, path string
		body         string
	}{
		{"method", "PUT", "/orders", `{"sku":"a"}`},
		{"path", "POST", "/orders/", `{"sku":"a"}`},
		{"query", "POST", "/orders?dry_run=1", `{"sku":"a"}`},
		{"body", "POST", "/orders", `{"sku":"b"}`},
		{"empty body", "POST", "/orders", ``},
		{"boundary shift", "POST/", "orders", `{"sku":"a"}`},
		{"path into body", "POST", "/order", `s{"sku":"a"}`},
	}
	for _, d := range differ {
		if fingerprint(d.method, d.path, []byte(d.body)) == base {
			t.Errorf("%s: fingerprint collides with the base request", d.name)
		}
	}
	// nil and empty bodies are the same request.
	if fingerprint("POST", "/x", nil) != fingerprint("POST", "/x", []byte{}) {
		t.Error("nil and empty bodies differ")
	}
}

func FuzzFingerprint(f *testing.F) {
	f.Add("POST", "/a", []byte("b"), "POST", "/ab", []byte(""))
	f.Add("POST", "", []byte("x"), "POS", "T", []byte("x"))
	f.Fuzz(func(t *testing.T, m1, p1 string, b1 []byte, m2, p2 string, b2 []byte) {
		same := m1 == m2 && p1 == p2 && string(b1) == string(b2)
		if same != (fingerprint(m1, p1, b1) == fingerprint(m2, p2, b2)) {
			t.Fatalf("(%q,%q,%q) vs (%q,%q,%q)", m1, p1, b1, m2, p2, b2)
		}
	})
}

func TestParseKey(t *testing.T) {
	long := strings.Repeat("a", 255)
	tests := []struct {
		in   []string
		want string
		ok   bool
	}{
		{[]string{"8e03978e-40d5-43e8-bc93-6894a57f9324"}, "8e03978e-40d5-43e8-bc93-6894a57f9324", true},
		{[]string{`"8e03978e-40d5"`}, "8e03978e-40d5", true},
		{[]string{" abc "}, "abc", true},
		{[]string{"AZaz09-_.~:+/="}, "AZaz09-_.~:+/=", true},
		{[]string{long}, long, true},
		{[]string{long + "a"}, "", false},
		{[]string{""}, "", false},
		{[]string{`""`}, "", false},
		{[]string{"a b"}, "", false},
		{[]string{"a\"b"}, "", false},
		{[]string{"ключ"}, "", false},
		{[]string{"a\x00"}, "", false},
		{[]string{"a{b}"}, "", false},
		{[]string{"a", "b"}, "", false},
		{nil, "", false},
	}
	for _, tt := range tests {
		got, ok := parseKey(tt.in, 255)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseKey(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Prefix: "stock:idem", TTL: time.Hour}, true},
		{Config{Prefix: "a{b"}, false},
		{Config{TTL: -time.Second}, false},
		{Config{TTL: time.Microsecond}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
	if got := (Config{}).withDefaults(); got.TTL != DefaultTTL || got.Prefix != DefaultPrefix {
		t.Errorf("defaults = %+v", got)
	}
}

// TestDefaultTTLOutlivesKafkaRetention keeps the reason for DefaultTTL: it
// must exceed Kafka's default log.retention.hours (168).
func TestDefaultTTLOutlivesKafkaRetention(t *testing.T) {
	if kafkaDefaultRetention := 168 * time.Hour; DefaultTTL <= kafkaDefaultRetention {
		t.Fatalf("DefaultTTL %v must exceed Kafka's default retention %v", DefaultTTL, kafkaDefaultRetention)
	}
}

func TestMiddlewareConfigValidate(t *testing.T) {
	tests := []struct {
		cfg MiddlewareConfig
		ok  bool
	}{
		{MiddlewareConfig{}, true},
		{MiddlewareConfig{Required: true, MaxBodyBytes: 16, Lease: time.Second}, true},
		{MiddlewareConfig{MaxKeyLength: -1}, false},
		{MiddlewareConfig{MaxBodyBytes: -1}, false},
		{MiddlewareConfig{Lease: -time.Second}, false},
		{MiddlewareConfig{StoreTimeout: -time.Second}, false},
		{MiddlewareConfig{Header: "idempotent-replayed"}, false},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrConfig)) {
			t.Errorf("%+v.Validate() = %v, want ok=%v", tt.cfg, err, tt.ok)
		}
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Config{}, nil, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("New with nil client: %v, want ErrConfig", err)
	}
	if _, err := Middleware(MiddlewareConfig{}, nil); !errors.Is(err, ErrConfig) {
		t.Errorf("Middleware with nil store: %v, want ErrConfig", err)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{errors.New("dial tcp: connection refused"), ErrUnavailable},
		{redis.ErrClosed, ErrUnavailable},
		{proto("LOADING Redis is loading the dataset in memory"), ErrUnavailable},
		{proto("BUSY Redis is busy running a script"), ErrUnavailable},
		{proto("READONLY You can't write against a read only replica."), ErrUnavailable},
		{proto("OOM command not allowed when used memory > 'maxmemory'."), ErrUnavailable},
		{proto("ERR user_script:3: attempt to compare nil with number"), ErrScript},
		{proto("WRONGTYPE Operation against a key holding the wrong kind of value"), ErrScript},
	}
	for _, tt := range tests {
		got := classify("op", tt.err)
		if !errors.Is(got, tt.want) || !errors.Is(got, tt.err) {
			t.Errorf("classify(%v) = %v, want %v wrapping the cause", tt.err, got, tt.want)
		}
	}
}

type protoErr string

func (e protoErr) Error() string { return string(e) }
func (protoErr) RedisError()     {}

func proto(msg string) error { return protoErr(msg) }

func TestResultErr(t *testing.T) {
	if err := (Result{Hanging: true}).Err(); !errors.Is(err, ErrHanging) {
		t.Errorf("hanging Err() = %v", err)
	}
	if err := (Result{Outcome: `{"ok":false}`}).Err(); err != nil {
		t.Errorf("refusal Err() = %v, want nil: refusals are outcomes", err)
	}
	var v struct{ OK bool }
	if err := (Result{Outcome: NullOutcome}).Decode(&v); err != nil || !v.OK {
		t.Errorf("Decode(NullOutcome) = %+v, %v", v, err)
	}
}

func TestProblemDocument(t *testing.T) {
	m := &middleware{cfg: MiddlewareConfig{}.withDefaults()}
	rec := &recorder{header: make(http.Header)}
	m.problem(rec, http.StatusConflict, "x", "Title", "Detail")
	if ct := rec.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type = %q", ct)
	}
	want := fmt.Sprintf(`{"type":"urn:sagaflow:problem:x","title":"Title","status":%d,"detail":"Detail"}`, http.StatusConflict)
	if got := rec.body.String(); got != want {
		t.Errorf("body = %s, want %s", got, want)
	}
}
