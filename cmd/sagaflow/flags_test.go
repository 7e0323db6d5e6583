package main

import (
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// parseInfra parses args as a service's shared flags.
func parseInfra(args ...string) (*infra, error) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	in := infraFlags(fs)
	_, err := in.parse(fs, args, "test")
	return in, err
}

// -linger 0, -slow-txn 0 and -batch-wait 0 must reach the loops as "none",
// not as saga.Kafka's zero, which is the default; a negative value is
// refused.
func TestZeroMeansNoneFlagsReachTheLoops(t *testing.T) {
	for _, f := range []struct {
		flag string
		def  int64
		of   func(saga.Kafka) time.Duration
	}{
		{"-linger", int64(kafkatx.DefaultLinger), func(k saga.Kafka) time.Duration { return k.Linger }},
		{"-slow-txn", int64(kafkatx.DefaultSlowTxn), func(k saga.Kafka) time.Duration { return k.SlowTxn }},
		{"-batch-wait", int64(kafkatx.DefaultBatchWait), func(k saga.Kafka) time.Duration { return k.BatchWait }},
	} {
		for _, c := range []struct {
			args []string
			want int64
		}{
			{nil, f.def},
			{[]string{f.flag, "0"}, -1},
			{[]string{f.flag, "7ms"}, 7e6},
		} {
			in, err := parseInfra(c.args...)
			if err != nil {
				t.Fatalf("%v: %v", c.args, err)
			}
			if got := int64(f.of(in.wire().Kafka)); got != c.want {
				t.Errorf("%v: saga.Kafka's %s is %d ns, want %d", c.args, f.flag, got, c.want)
			}
		}
		if _, err := parseInfra(f.flag, "-1ms"); err == nil {
			t.Errorf("%s -1ms was accepted", f.flag)
		}
	}
}

// A -batch-wait past -max-interval is refused (the batch would close
// before its wait ended), but a short -max-interval alone is not: the
// default wait shortens to it.
func TestBatchWaitPastMaxIntervalIsRefused(t *testing.T) {
	if _, err := parseInfra("-batch-wait", "60ms", "-max-interval", "50ms"); err == nil {
		t.Error("-batch-wait 60ms -max-interval 50ms was accepted")
	}
	if _, err := parseInfra("-max-interval", "1ms"); err != nil {
		t.Errorf("-max-interval 1ms, under the default -batch-wait: %v", err)
	}
}

// sagaflow bench takes -pprof from the shared flags, and serves it: an
// address it cannot listen on stops it before it places any order.
func TestBenchServesPprof(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = runBench(context.Background(), []string{"-clients", "1", "-pprof", ln.Addr().String(),
		"-redis", "127.0.0.1:1", "-kafka", "127.0.0.1:1"}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "-pprof") {
		t.Fatalf("bench with -pprof on a taken address: %v, want a -pprof error", err)
	}
}

// A bench stopped by a signal says so, instead of blaming -drain for the
// sagas it did not wait for; a run that waited out its drain blames it.
func TestBenchUnfinishedVerdict(t *testing.T) {
	live := context.Background()
	stopped, cancel := context.WithCancel(live)
	cancel()
	for _, c := range []struct {
		ctx        context.Context
		unfinished int64
		want       string
	}{
		{live, 0, ""},
		{stopped, 0, ""},
		{live, 3, "3 sagas did not end within -drain 1m0s"},
		{stopped, 3, "stopped before the end: 3 sagas had not ended yet"},
	} {
		err := unfinishedErr(c.ctx, c.unfinished, time.Minute)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != c.want {
			t.Errorf("%d unfinished, stopped %v: %q, want %q", c.unfinished, c.ctx.Err() != nil, got, c.want)
		}
	}
}

func TestRedisCoalesceFlag(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	hf := ordersFlags(fs, "127.0.0.1:0", "")
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if *hf.coalesce != 1 {
		t.Errorf("-redis-coalesce defaults to %d, want 1", *hf.coalesce)
	}
	for _, n := range []int{-1, 1025} {
		err := serveOrders(context.Background(), ordersServer{coalesce: n, log: zap.NewNop()})
		if err == nil || !strings.Contains(err.Error(), "-redis-coalesce") {
			t.Errorf("-redis-coalesce %d: %v, want it refused", n, err)
		}
	}
}

// The handlers' Redis calls go through the Coalescer; a call outside a
// request does not.
func TestOrdersRequestsRedisCallsAreCoalesced(t *testing.T) {
	rdb := redistest.Client(t)
	key := redistest.Prefix(t) + ":n"
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := rdb.Incr(r.Context(), key).Err(); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})}
	co := coalesceRequests(srv, rdb, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	for range 2 {
		res, err := http.Get("http://" + ln.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("handler: %s", res.Status)
		}
	}
	if err := rdb.Incr(context.Background(), key).Err(); err != nil {
		t.Fatal(err)
	}
	if st := co.Stats(); st.Alone != 2 || st.Joined != 0 {
		t.Fatalf("coalescer saw %+v, want the two requests' calls (alone) and not the third", st)
	}
	if n := rdb.Get(context.Background(), key).Val(); n != "3" {
		t.Fatalf("%s = %q, want 3", key, n)
	}
	if coalesceRequests(&http.Server{}, rdb, 0) != nil {
		t.Error("-redis-coalesce 0 made a Coalescer")
	}
}

// TestBenchLoadLists: -rate and -clients take one load or a list of them
// (a sweep), in their order, and refuse anything but positive numbers, or
// both at once.
func TestBenchLoadLists(t *testing.T) {
	var rates floatList
	if err := rates.Set("200, 400,1e3"); err != nil || rates.String() != "200,400,1000" {
		t.Fatalf("rates %v, %v", rates, err)
	}
	var clients intList
	if err := clients.Set("32"); err != nil || clients.String() != "32" {
		t.Fatalf("clients %v, %v", clients, err)
	}
	for _, bad := range []string{"", "0", "-5", "5,,6", "x", "Inf", "NaN"} {
		var l floatList
		if l.Set(bad) == nil {
			t.Errorf("-rate %q taken", bad)
		}
	}
	for _, bad := range []string{"", "0", "1.5", "3,-1"} {
		var l intList
		if l.Set(bad) == nil {
			t.Errorf("-clients %q taken", bad)
		}
	}
	steps, err := sweepSteps(rates, nil)
	if err != nil || len(steps) != 3 || steps[2].Rate != 1000 || steps[0].Clients != 0 {
		t.Errorf("steps %+v, %v", steps, err)
	}
	if _, err := sweepSteps(rates, clients); err == nil {
		t.Error("-rate and -clients both taken")
	}
	if _, err := sweepSteps(nil, nil); err == nil {
		t.Error("neither -rate nor -clients taken")
	}
}
