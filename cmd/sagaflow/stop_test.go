package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// childArgs, when set, makes the test binary run `sagaflow` with these
// arguments (separated by newlines) instead of the tests: a real process for
// the tests that signal one.
const childArgs = "SAGAFLOW_TEST_RUN_ARGS"

func TestMain(m *testing.M) {
	if a := os.Getenv(childArgs); a != "" {
		os.Exit(run(strings.Split(a, "\n"), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// sigtermBound is how soon a service must exit after SIGTERM. Each Kafka loop
// has a 10s stop timeout of its own; a healthy stop takes well under a second.
const sigtermBound = 8 * time.Second

// TestServicesExitPromptlyOnSIGTERMUnderLoad runs every service of the order
// saga (orders API, orchestrator, stock, payment: `sagaflow demo` on the real
// Kafka and Redis) as a real process, places orders over HTTP from 16
// clients, and sends SIGTERM in the middle of it: the process exits 0 within
// sigtermBound, every loop having stopped.
func TestServicesExitPromptlyOnSIGTERMUnderLoad(t *testing.T) {
	sys := startSystem(t, "sigterm")
	url, out, cmd, exited := sys.url, sys.out, sys.cmd, sys.exited

	var placed, stopLoad atomic.Int64
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 5 * time.Second}
	for c := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; stopLoad.Load() == 0; i++ {
				body := `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1}]}`
				req, _ := http.NewRequest(http.MethodPost, url+"orders", strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", fmt.Sprintf("sigterm-%d-%d-%d", time.Now().UnixNano(), c, i))
				res, err := client.Do(req)
				if err != nil {
					time.Sleep(50 * time.Millisecond) // the server is going away
					continue
				}
				res.Body.Close()
				if res.StatusCode == http.StatusAccepted {
					placed.Add(1)
				}
			}
		}()
	}
	defer func() { stopLoad.Store(1); wg.Wait() }()
	kafkatest.WaitFor(t, 60*time.Second, "orders to flow", func() bool { return placed.Load() >= 200 })

	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(sigtermBound):
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		time.Sleep(2 * time.Second)
		t.Fatalf("no exit within %s of SIGTERM (%d orders placed); output:\n%s", sigtermBound, placed.Load(), out.String())
	}
	took := time.Since(start)
	code := cmd.ProcessState.ExitCode()
	t.Logf("%d orders placed; exit %d %s after SIGTERM", placed.Load(), code, took.Round(time.Millisecond))
	if code != 0 {
		t.Fatalf("exit %d after SIGTERM; output:\n%s", code, out.String())
	}
	// Every loop of the process went through its graceful stop.
	if n := strings.Count(out.String(), "loop stopped"); n < 3 {
		t.Errorf("%d loops logged \"loop stopped\", want the orchestrator's, stock's and payment's; output:\n%s", n, out.String())
	}
	if strings.Contains(out.String(), "left behind") || strings.Contains(out.String(), "stop timeout") {
		t.Errorf("a stop was cut short by its deadline; output:\n%s", out.String())
	}
}

// system is `sagaflow demo` on the real Kafka and Redis, as a child process.
type system struct {
	url, brokers, redis string
	out                 *kafkatest.Buffer
	cmd                 *exec.Cmd
	exited              chan struct{}
}

// startSystem starts the whole system (orders API, orchestrator, stock,
// payment) as one real process on the real Kafka and Redis, logging at info
// into its out buffer, and waits until its API answers. The test's cleanup
// kills it if it still runs.
func startSystem(t *testing.T, name string, extra ...string) *system {
	t.Helper()
	s := &system{brokers: kafkatest.Brokers(t), redis: os.Getenv("SAGAFLOW_REDIS"), out: &kafkatest.Buffer{}, exited: make(chan struct{})}
	if s.redis == "" || s.redis == "embedded" {
		s.redis = "127.0.0.1:16379"
	}
	s.cmd = exec.Command(os.Args[0], "-test.run=^$")
	s.cmd.Env = append(os.Environ(), childArgs+"="+strings.Join(append([]string{"demo", "-kafka", s.brokers, "-redis", s.redis,
		"-addr", "127.0.0.1:0", "-log-level", "info", "-instance", fmt.Sprintf("%s-%d", name, time.Now().UnixNano())}, extra...), "\n"))
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(func() { _ = s.cmd.Process.Kill(); <-s.exited })
	urlRe := regexp.MustCompile(`open (http://\S+/)\n`)
	kafkatest.WaitFor(t, 90*time.Second, "the services to be ready", func() bool {
		if m := urlRe.FindStringSubmatch(s.out.String()); m != nil {
			s.url = m[1]
			return true
		}
		select {
		case <-s.exited:
			t.Fatalf("the process exited before it was ready:\n%s", s.out.String())
		default:
		}
		return false
	})
	return s
}
