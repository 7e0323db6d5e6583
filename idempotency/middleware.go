package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// ReplayedHeader marks a response answered from the record of an earlier
// request with the same Idempotency-Key.
const ReplayedHeader = "Idempotent-Replayed"

// MiddlewareConfig configures Middleware. Zero fields mean the defaults.
type MiddlewareConfig struct {
	// Header carries the key. Default "Idempotency-Key"
	// (draft-ietf-httpapi-idempotency-key-header).
	Header string
	// Required makes a request without a key a 400. Without it such
	// requests pass through unguarded.
	Required bool
	// Methods are guarded; others pass through. Default the unsafe methods
	// of RFC 9110: POST, PUT, PATCH, DELETE.
	Methods []string
	// MaxKeyLength bounds the key. Default 255.
	MaxKeyLength int
	// MaxBodyBytes bounds the request body, which is read whole to
	// fingerprint it. Default 1 MiB; larger bodies are a 413.
	MaxBodyBytes int64
	// Lease bounds how long the first request may run while retries are
	// told 409. Set it above the server's write timeout: a handler still
	// running when its lease runs out lets a retry run the handler again.
	// Default 1 minute.
	Lease time.Duration
	// ReplayHeaders are stored and replayed besides Content-Type and
	// Location (for example "ETag", "Cache-Control").
	ReplayHeaders []string
	// Scope, when set, returns the namespace of a key, typically the
	// authenticated client, so two clients choosing the same key never see
	// each other's responses. It runs before the handler.
	Scope func(*http.Request) string
	// ProblemTypeBase starts the "type" URI of the problem documents.
	// Default "urn:sagaflow:problem:".
	ProblemTypeBase string
	// StoreTimeout bounds the Redis calls made after the handler returns.
	// They run detached from the request's context so a client that hangs up
	// does not leave its claim held until the lease ends. Default 5 seconds.
	StoreTimeout time.Duration
}

// Validate reports whether cfg can be used, after defaults are applied.
func (cfg MiddlewareConfig) Validate() error {
	cfg = cfg.withDefaults()
	switch {
	case cfg.MaxKeyLength < 1:
		return fmt.Errorf("%w: max key length %d", ErrConfig, cfg.MaxKeyLength)
	case cfg.MaxBodyBytes < 1:
		return fmt.Errorf("%w: max body bytes %d", ErrConfig, cfg.MaxBodyBytes)
	case cfg.Lease < time.Millisecond:
		return fmt.Errorf("%w: lease %v is below 1ms", ErrConfig, cfg.Lease)
	case cfg.StoreTimeout < 0:
		return fmt.Errorf("%w: store timeout %v", ErrConfig, cfg.StoreTimeout)
	case http.CanonicalHeaderKey(cfg.Header) == ReplayedHeader:
		return fmt.Errorf("%w: header %q", ErrConfig, cfg.Header)
	}
	return nil
}

func (cfg MiddlewareConfig) withDefaults() MiddlewareConfig {
	if cfg.Header == "" {
		cfg.Header = "Idempotency-Key"
	}
	if cfg.Methods == nil {
		cfg.Methods = []string{http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	}
	if cfg.MaxKeyLength == 0 {
		cfg.MaxKeyLength = 255
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	if cfg.Lease == 0 {
		cfg.Lease = time.Minute
	}
	if cfg.ProblemTypeBase == "" {
		cfg.ProblemTypeBase = "urn:sagaflow:problem:"
	}
	if cfg.StoreTimeout == 0 {
		cfg.StoreTimeout = 5 * time.Second
	}
	return cfg
}

// Middleware makes unsafe requests carrying an Idempotency-Key take effect
// once. For a guarded request with a valid key:
//
//   - the first one claims the key in Redis and runs the handler; its
//     response (status, Content-Type, Location, cfg.ReplayHeaders, body) is
//     stored with a SHA-256 fingerprint of method, path and query, and body,
//     then sent;
//   - a later one with the same key and fingerprint gets the stored response
//     again, with "Idempotent-Replayed: true", and the handler is not run;
//   - the same key with another fingerprint is a 422;
//   - the same key while the first still runs is a 409 with Retry-After;
//   - a response the client may retry (5xx, 408, 429) or a panicking handler
//     is not stored: the claim is released so a retry runs the handler again.
//
// A missing key is a 400 when cfg.Required; a malformed key (longer than
// cfg.MaxKeyLength, or outside A-Z a-z 0-9 and "-_.~:+/=") is a 400; a body
// over cfg.MaxBodyBytes is a 413; Redis unreachable is a 503, because
// without the record the request cannot be known to be a first. The key may
// be sent bare or as a structured-field string ("..."), as the IETF draft
// writes it. Errors are application/problem+json (RFC 9457).
//
// The response is buffered whole (a replay must equal the original), so
// streaming handlers do not belong behind it.
func Middleware(cfg MiddlewareConfig, store *Store) (func(http.Handler) http.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("%w: nil store", ErrConfig)
	}
	cfg = cfg.withDefaults()
	m := &middleware{cfg: cfg, store: store, log: store.log.Named("idempotency.http")}
	for _, meth := range cfg.Methods {
		m.methods = append(m.methods, strings.ToUpper(meth))
	}
	m.replay = []string{"Content-Type", "Location"}
	for _, h := range cfg.ReplayHeaders {
		m.replay = append(m.replay, http.CanonicalHeaderKey(h))
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { m.serve(w, r, next) })
	}, nil
}

type middleware struct {
	cfg     MiddlewareConfig
	store   *Store
	log     *zap.Logger
	methods []string
	replay  []string
}

// storedResponse is the JSON kept as the claim's outcome.
type storedResponse struct {
	Fingerprint string      `json:"fp"`
	Status      int         `json:"status"`
	Header      http.Header `json:"header,omitempty"`
	Body        []byte      `json:"body,omitempty"`
}

func (m *middleware) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	if !slices.Contains(m.methods, r.Method) {
		next.ServeHTTP(w, r)
		return
	}
	raw, present := r.Header[http.CanonicalHeaderKey(m.cfg.Header)]
	if !present {
		if m.cfg.Required {
			m.problem(w, http.StatusBadRequest, "idempotency-key-missing", "Idempotency-Key missing",
				"This request needs an "+m.cfg.Header+" header.")
			return
		}
		next.ServeHTTP(w, r)
		return
	}
	key, ok := parseKey(raw, m.cfg.MaxKeyLength)
	if !ok {
		m.problem(w, http.StatusBadRequest, "idempotency-key-invalid", "Idempotency-Key invalid",
			fmt.Sprintf("%s must be one value of 1 to %d characters from A-Z a-z 0-9 and -_.~:+/=.", m.cfg.Header, m.cfg.MaxKeyLength))
		return
	}

	body, err := readBody(r, m.cfg.MaxBodyBytes)
	if errors.Is(err, errBodyTooLarge) {
		m.problem(w, http.StatusRequestEntityTooLarge, "body-too-large", "Request body too large",
			fmt.Sprintf("The body exceeds %d bytes.", m.cfg.MaxBodyBytes))
		return
	}
	if err != nil {
		m.problem(w, http.StatusBadRequest, "body-unreadable", "Request body unreadable", err.Error())
		return
	}
	fp := fingerprint(r.Method, requestTarget(r), body)

	scope := ""
	if m.cfg.Scope != nil {
		scope = m.cfg.Scope(r)
	}
	rkey := httpKey(m.store.cfg.Prefix, scope, key)
	// WithLazy: the key is encoded only if a line is written, which few
	// requests do (With encoded it for every POST).
	log := m.log.WithLazy(zap.String("idempotency_key", key))

	c, err := m.store.claimTagged(r.Context(), rkey, m.cfg.Lease, fp)
	if err != nil {
		log.Warn("cannot claim idempotency key", zap.Error(err))
		w.Header().Set("Retry-After", "1")
		m.problem(w, http.StatusServiceUnavailable, "idempotency-unavailable", "Idempotency store unavailable",
			"The request cannot be checked against earlier ones right now; retry with the same key.")
		return
	}
	switch c.State {
	case Done:
		var sr storedResponse
		if err := json.Unmarshal([]byte(c.Outcome), &sr); err != nil {
			log.Error("stored response unreadable", zap.Error(err))
			m.problem(w, http.StatusInternalServerError, "idempotency-record-corrupt", "Stored response unreadable",
				"The response recorded for this key cannot be read.")
			return
		}
		if sr.Fingerprint != fp {
			m.mismatch(w)
			return
		}
		writeStored(w, sr)
		return
	case Busy:
		if c.tag != fp {
			m.mismatch(w)
			return
		}
		secs := int(math.Ceil(c.RetryAfter.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
		m.problem(w, http.StatusConflict, "idempotency-key-in-use", "Request in progress",
			"A request with this key is still being processed; retry later with the same key.")
		return
	}

	// Acquired: run the handler on a fresh copy of the body.
	r.Body = io.NopCloser(bytes.NewReader(body))
	rec := &recorder{header: make(http.Header)}
	finished := false
	defer func() {
		if finished {
			return
		}
		// The handler panicked (or called runtime.Goexit): nothing is
		// stored, the key is free again, and the panic continues to whoever
		// recovers panics upstream (net/http, a recovery middleware).
		p := recover()
		m.finish(r, c, nil, log)
		if p != nil {
			panic(p)
		}
	}()
	next.ServeHTTP(rec, r)
	finished = true

	status := rec.statusCode()
	if retryable(status) {
		m.finish(r, c, nil, log)
	} else {
		sr := storedResponse{Fingerprint: fp, Status: status, Header: make(http.Header), Body: rec.body.Bytes()}
		for _, h := range m.replay {
			if v := rec.header.Values(h); len(v) > 0 {
				sr.Header[h] = v
			}
		}
		m.finish(r, c, &sr, log)
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(status)
	_, _ = w.Write(rec.body.Bytes())
}

// finish completes the claim with sr, or releases it when sr is nil.
//
// When Complete fails the claim is deliberately not released: the handler's
// effect happened, and releasing would let a retry apply it again. The key
// answers 409 until the lease runs out, then runs the handler again;
// handlers that create things should derive their ids from the key so that
// a second run finds the first's result.
func (m *middleware) finish(r *http.Request, c Claim, sr *storedResponse, log *zap.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), m.cfg.StoreTimeout)
	defer cancel()
	if sr == nil {
		if err := m.store.Release(ctx, c); err != nil {
			log.Warn("cannot release idempotency key; it frees when the lease ends", zap.Error(err))
		}
		return
	}
	b, err := json.Marshal(sr)
	if err == nil {
		err = m.store.Complete(ctx, c, string(b))
	}
	if err != nil {
		log.Error("cannot record response for idempotency key", zap.Int("status", sr.Status), zap.Error(err))
	}
}

// retryable statuses say "this did not take effect, try again": they are not
// recorded, or the retry would be answered the same failure forever.
func retryable(status int) bool {
	return status >= 500 || status == http.StatusRequestTimeout || status == http.StatusTooManyRequests
}

func (m *middleware) mismatch(w http.ResponseWriter) {
	m.problem(w, http.StatusUnprocessableEntity, "idempotency-key-reused", "Idempotency-Key reused",
		"This key was already used for a different request (method, path or body differ).")
}

// problem writes an RFC 9457 problem document.
func (m *middleware) problem(w http.ResponseWriter, status int, typ, title, detail string) {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Title  string `json:"title"`
		Status int    `json:"status"`
		Detail string `json:"detail"`
	}{m.cfg.ProblemTypeBase + typ, title, status, detail})
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func writeStored(w http.ResponseWriter, sr storedResponse) {
	for k, v := range sr.Header {
		w.Header()[k] = v
	}
	w.Header().Set(ReplayedHeader, "true")
	w.WriteHeader(sr.Status)
	_, _ = w.Write(sr.Body)
}

// parseKey accepts exactly one header value, bare or as a structured-field
// string, and checks its length and charset. The charset covers UUIDs, ULIDs
// and base64 (standard and URL-safe); keeping out spaces, quotes and control
// characters keeps keys safe to log and to put in Redis key names.
func parseKey(values []string, maxLen int) (string, bool) {
	if len(values) != 1 {
		return "", false
	}
	k := strings.TrimSpace(values[0])
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	if k == "" || len(k) > maxLen {
		return "", false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.~:+/=", c) >= 0:
		default:
			return "", false
		}
	}
	return k, true
}

var errBodyTooLarge = errors.New("idempotency: request body too large")

func readBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, errBodyTooLarge
	}
	if r.Body == nil || r.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, errBodyTooLarge
	}
	return b, nil
}

// requestTarget is the path and query the fingerprint covers: the query is
// part of what a request asks for (POST /orders?dry_run=1 is another
// request), the fragment never reaches the server.
func requestTarget(r *http.Request) string {
	t := r.URL.EscapedPath()
	if r.URL.RawQuery != "" {
		t += "?" + r.URL.RawQuery
	}
	return t
}

// fingerprint is the hex SHA-256 of method, target and body, each written
// with its length first so that no two different requests can produce the
// same byte stream ("POST" + "/ab" vs "POST/" + "ab").
func fingerprint(method, target string, body []byte) string {
	h := sha256.New()
	var n [8]byte
	for _, part := range [][]byte{[]byte(method), []byte(target), body} {
		binary.BigEndian.PutUint64(n[:], uint64(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// httpKey is the Redis key of an HTTP idempotency record:
// <prefix>:http:{<scope>}:<key>, escaped like Key.
func httpKey(prefix, scope, key string) string {
	return prefix + ":http:{" + escape(scope) + "}:" + escape(key)
}

// recorder buffers the handler's response so it can be stored before it is
// sent, and replayed byte for byte.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(status int) {
	// 1xx are interim responses, not the one to store.
	if rec.status == 0 && status >= 200 {
		rec.status = status
	}
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	return rec.body.Write(p)
}

func (rec *recorder) statusCode() int {
	if rec.status == 0 {
		return http.StatusOK
	}
	return rec.status
}
