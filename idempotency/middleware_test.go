package idempotency

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// orderHandler creates an order per call, numbering them, so a second call
// shows as a second order.
type orderHandler struct {
	calls atomic.Int32
	// failFirst, when set, is the status of the first call's answer; later
	// calls answer 201.
	failFirst int
	block     chan struct{} // when set, each call waits on it
	entered   chan struct{} // when set, each call signals it first
	panics    atomic.Int32  // calls left that panic
}

func (h *orderHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := h.calls.Add(1)
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.block != nil {
		<-h.block
	}
	if h.panics.Add(-1) >= 0 {
		panic("handler exploded")
	}
	body, _ := io.ReadAll(r.Body)
	if h.failFirst != 0 && int(n) == 1 {
		http.Error(w, "try later", h.failFirst)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Location", "/orders/"+strconv.Itoa(int(n)))
	w.Header().Set("ETag", `"v`+strconv.Itoa(int(n))+`"`)
	w.Header().Set("X-Not-Replayed", "1")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"order":%d,"echo":%q}`, n, body)
}

type httpFixture struct {
	srv *httptest.Server
	h   *orderHandler
}

func newHTTP(t *testing.T, cfg MiddlewareConfig, h *orderHandler) *httpFixture {
	t.Helper()
	s, _ := newStore(t, Config{})
	return newHTTPOn(t, cfg, s, h)
}

func newHTTPOn(t *testing.T, cfg MiddlewareConfig, s *Store, h *orderHandler) *httpFixture {
	t.Helper()
	mw, err := Middleware(cfg, s)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mw(h))
	// The panic test makes net/http log the panic; keep test output clean.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.Start()
	t.Cleanup(srv.Close)
	return &httpFixture{srv: srv, h: h}
}

type response struct {
	status int
	header http.Header
	body   string
}

func (f *httpFixture) do(t *testing.T, method, path, key, body string) response {
	t.Helper()
	r, err := f.try(method, path, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *httpFixture) try(method, path, key, body string) (response, error) {
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, string(b)}, err
}

type problemDoc struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
}

func wantProblem(t *testing.T, r response, status int, typ string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var p problemDoc
	if err := json.Unmarshal([]byte(r.body), &p); err != nil {
		t.Fatalf("problem body %q: %v", r.body, err)
	}
	if p.Status != status || p.Type != "urn:sagaflow:problem:"+typ || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want status %d type %s with title and detail", p, status, typ)
	}
}

func TestMiddlewareReplaysDuplicatePost(t *testing.T) {
	t.Parallel()
	f := newHTTP(t, MiddlewareConfig{Required: true, ReplayHeaders: []string{"etag"}}, &orderHandler{})

	first := f.do(t, "POST", "/orders", "key-1", `{"sku":"a"}`)
	if first.status != http.StatusCreated || first.header.Get(ReplayedHeader) != "" {
		t.Fatalf("first: %d %v", first.status, first.header)
	}
	for range 3 {
		again := f.do(t, "POST", "/orders", "key-1", `{"sku":"a"}`)
		if again.status != first.status || again.body != first.body {
			t.Errorf("replay %d %q, want %d %q", again.status, again.body, first.status, first.body)
		}
		for _, h := range []string{"Content-Type", "Location", "ETag"} {
			if again.header.Get(h) != first.header.Get(h) {
				t.Errorf("replayed %s %q, want %q", h, again.header.Get(h), first.header.Get(h))
			}
		}
		if again.header.Get("X-Not-Replayed") != "" {
			t.Error("a header outside the replay list was replayed")
		}
		if again.header.Get(ReplayedHeader) != "true" {
			t.Errorf("%s = %q, want true", ReplayedHeader, again.header.Get(ReplayedHeader))
		}
	}
	if n := f.h.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
	// A quoted key (the IETF draft's sf-string form) is the same key.
	if r := f.do(t, "POST", "/orders", `"key-1"`, `{"sku":"a"}`); r.header.Get(ReplayedHeader) != "true" {
		t.Errorf("quoted key not replayed: %d", r.status)
	}
	// Another key is another request.
	if r := f.do(t, "POST", "/orders", "key-2", `{"sku":"a"}`); r.status != http.StatusCreated || f.h.calls.Load() != 2 {
		t.Errorf("second key: %d, calls %d", r.status, f.h.calls.Load())
	}
}

func TestMiddlewareKeyReusedForOtherRequestIs422(t *testing.T) {
	t.Parallel()
	f := newHTTP(t, MiddlewareConfig{}, &orderHandler{})
	f.do(t, "POST", "/orders", "k", `{"sku":"a"}`)
	wantProblem(t, f.do(t, "POST", "/orders", "k", `{"sku":"b"}`), http.StatusUnprocessableEntity, "idempotency-key-reused")
	wantProblem(t, f.do(t, "POST", "/orders?dry_run=1", "k", `{"sku":"a"}`), http.StatusUnprocessableEntity, "idempotency-key-reused")
	wantProblem(t, f.do(t, "PUT", "/orders", "k", `{"sku":"a"}`), http.StatusUnprocessableEntity, "idempotency-key-reused")
	if n := f.h.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestMiddlewareRetryInFlightIs409(t *testing.T) {
	t.Parallel()
	h := &orderHandler{block: make(chan struct{}), entered: make(chan struct{}, 1)}
	f := newHTTP(t, MiddlewareConfig{}, h)
	// Unblock the handler however the test ends, or a failed assertion would
	// leave srv.Close waiting for the blocked request forever. Registered
	// after the server, so it runs before srv.Close.
	var unblock sync.Once
	release := func() { unblock.Do(func() { close(h.block) }) }
	t.Cleanup(release)

	firstDone := make(chan response, 1)
	go func() {
		r, err := f.try("POST", "/orders", "k", `{"sku":"a"}`)
		if err != nil {
			t.Error(err)
		}
		firstDone <- r
	}()
	<-h.entered // the first request is inside the handler and holds the claim

	busy := f.do(t, "POST", "/orders", "k", `{"sku":"a"}`)
	wantProblem(t, busy, http.StatusConflict, "idempotency-key-in-use")
	if ra, err := strconv.Atoi(busy.header.Get("Retry-After")); err != nil || ra < 1 || ra > 60 {
		t.Errorf("Retry-After %q, want 1..60 seconds", busy.header.Get("Retry-After"))
	}
	// Same key, other body, while in flight: a misuse, not a retry.
	wantProblem(t, f.do(t, "POST", "/orders", "k", `{"sku":"b"}`), http.StatusUnprocessableEntity, "idempotency-key-reused")

	release()
	first := <-firstDone
	if first.status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	if r := f.do(t, "POST", "/orders", "k", `{"sku":"a"}`); r.body != first.body || r.header.Get(ReplayedHeader) != "true" {
		t.Errorf("after the first finished: %d %s", r.status, r.body)
	}
	if n := h.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestMiddlewareMissingAndInvalidKeys(t *testing.T) {
	t.Parallel()
	f := newHTTP(t, MiddlewareConfig{Required: true, MaxKeyLength: 16}, &orderHandler{})
	wantProblem(t, f.do(t, "POST", "/orders", "", `{}`), http.StatusBadRequest, "idempotency-key-missing")
	for _, k := range []string{"has space", "toolong-toolong-x", "ключ", `a"b`, "a{b}"} {
		wantProblem(t, f.do(t, "POST", "/orders", k, `{}`), http.StatusBadRequest, "idempotency-key-invalid")
	}
	// Two values of the header are ambiguous.
	req, _ := http.NewRequest("POST", f.srv.URL+"/orders", strings.NewReader(`{}`))
	req.Header.Add("Idempotency-Key", "a")
	req.Header.Add("Idempotency-Key", "b")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("two keys: %d, want 400", resp.StatusCode)
	}
	// Safe methods pass through unguarded, even when a key is required.
	if r := f.do(t, "GET", "/orders", "", ""); r.status != http.StatusCreated {
		t.Errorf("GET without key: %d", r.status)
	}
	if n := f.h.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1 (the GET)", n)
	}
}

func TestMiddlewareOptionalKeyPassesThrough(t *testing.T) {
	t.Parallel()
	f := newHTTP(t, MiddlewareConfig{}, &orderHandler{})
	f.do(t, "POST", "/orders", "", `{}`)
	f.do(t, "POST", "/orders", "", `{}`)
	if n := f.h.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2: no key, no dedup", n)
	}
}

func TestMiddlewareBodyTooLarge(t *testing.T) {
	t.Parallel()
	f := newHTTP(t, MiddlewareConfig{MaxBodyBytes: 16}, &orderHandler{})
	wantProblem(t, f.do(t, "POST", "/orders", "k", strings.Repeat("x", 17)), http.StatusRequestEntityTooLarge, "body-too-large")

	// Without Content-Length (chunked), the limit is found while reading.
	req, _ := http.NewRequest("POST", f.srv.URL+"/orders", io.MultiReader(strings.NewReader(strings.Repeat("x", 40))))
	req.ContentLength = -1
	req.Header.Set("Idempotency-Key", "k2")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked oversize body: %d, want 413", resp.StatusCode)
	}
	if r := f.do(t, "POST", "/orders", "k3", strings.Repeat("x", 16)); r.status != http.StatusCreated {
		t.Errorf("body at the limit: %d", r.status)
	}
	if n := f.h.calls.Load(); n != 1 {
		t.Errorf("handler ran %d times, want 1", n)
	}
}

func TestMiddlewareServerErrorIsNotStored(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusTooManyRequests} {
		f := newHTTP(t, MiddlewareConfig{}, &orderHandler{failFirst: status})
		if r := f.do(t, "POST", "/orders", "k", `{}`); r.status != status {
			t.Fatalf("first: %d, want %d", r.status, status)
		}
		second := f.do(t, "POST", "/orders", "k", `{}`)
		if second.status != http.StatusCreated || second.header.Get(ReplayedHeader) != "" {
			t.Errorf("after a %d the retry got %d, replayed %q; want a fresh 201", status, second.status, second.header.Get(ReplayedHeader))
		}
		if third := f.do(t, "POST", "/orders", "k", `{}`); third.body != second.body || third.header.Get(ReplayedHeader) != "true" {
			t.Errorf("third: %d %s", third.status, third.body)
		}
		if n := f.h.calls.Load(); n != 2 {
			t.Errorf("handler ran %d times, want 2", n)
		}
	}
}

func TestMiddlewarePanicReleasesClaim(t *testing.T) {
	t.Parallel()
	h := &orderHandler{}
	h.panics.Store(1)
	f := newHTTP(t, MiddlewareConfig{}, h)
	if _, err := f.try("POST", "/orders", "k", `{}`); err == nil {
		t.Fatal("the panicking request got a response; want the connection dropped")
	}
	// The claim was released, not left to its one-minute lease.
	if r := f.do(t, "POST", "/orders", "k", `{}`); r.status != http.StatusCreated {
		t.Fatalf("retry after panic: %d %s", r.status, r.body)
	}
	if n := h.calls.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2", n)
	}
}

func TestMiddlewareScopesSeparateClients(t *testing.T) {
	t.Parallel()
	cfg := MiddlewareConfig{Scope: func(r *http.Request) string { return r.URL.Query().Get("client") }}
	f := newHTTP(t, cfg, &orderHandler{})
	a := f.do(t, "POST", "/orders?client=a", "same", `{}`)
	b := f.do(t, "POST", "/orders?client=b", "same", `{}`)
	if a.status != http.StatusCreated || b.status != http.StatusCreated || a.body == b.body {
		t.Errorf("two clients with one key: %d %s / %d %s", a.status, a.body, b.status, b.body)
	}
}

func TestMiddlewareRedisDownIs503(t *testing.T) {
	t.Parallel()
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := New(Config{}, rdb, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newHTTPOn(t, MiddlewareConfig{}, s, &orderHandler{})
	r := f.do(t, "POST", "/orders", "k", `{}`)
	wantProblem(t, r, http.StatusServiceUnavailable, "idempotency-unavailable")
	if r.header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if n := f.h.calls.Load(); n != 0 {
		t.Errorf("handler ran %d times without a claim", n)
	}
}

// TestMiddlewareStoresRecordWithTTL looks at the record itself.
func TestMiddlewareStoresRecordWithTTL(t *testing.T) {
	t.Parallel()
	s, rdb := newStore(t, Config{TTL: time.Hour})
	f := newHTTPOn(t, MiddlewareConfig{}, s, &orderHandler{})
	f.do(t, "POST", "/orders", "k", `{"sku":"a"}`)
	ctx := ctxFor(t)
	key := httpKey(s.cfg.Prefix, "", "k")
	rec, err := rdb.HGetAll(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	var sr storedResponse
	if err := json.Unmarshal([]byte(rec["outcome"]), &sr); err != nil {
		t.Fatalf("record %v: %v", rec, err)
	}
	if rec["state"] != "done" || sr.Status != http.StatusCreated || sr.Fingerprint != fingerprint("POST", "/orders", []byte(`{"sku":"a"}`)) {
		t.Errorf("record %v", rec)
	}
	if ttl := rdb.PTTL(ctx, key).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("record PTTL %v, want about 1h", ttl)
	}
	if n := rdb.Exists(ctx, key+":lease").Val(); n != 0 {
		t.Error("lease left behind")
	}
	if !errors.Is(MiddlewareConfig{Lease: -1}.Validate(), ErrConfig) {
		t.Error("negative lease accepted")
	}
}
