package main

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/chaos"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// testLauncher runs this test binary as sagaflow (see TestMain).
func testLauncher(args []string, extra []string) *exec.Cmd {
	c := exec.Command(os.Args[0], "-test.run=^$")
	c.Env = append(append(os.Environ(), childArgs+"="+strings.Join(args, "\n")), extra...)
	return c
}

// needRedisServer skips (fails under CI) without redis-server: a chaos run
// starts a Redis of its own.
func needRedisServer(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("redis-server is not on PATH (dev/redis.sh up installs it)")
		}
		t.Skip("redis-server is not on PATH; make up installs it")
	}
}

// keptOnFailure returns a folder for a chaos run's logs and data that is
// removed after the test unless it failed, when it is kept and named: a
// process's whole log is what explains a violation.
func keptOnFailure(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "sagaflow-"+t.Name()+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the run's logs are kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	return dir
}

// TestChaosFindsAPlantedDoubleCharge shows that the chaos suite can fail:
// the payment participants run with the planted bug (a redelivered charge
// charges again), the suite re-publishes commands as a producer retry
// would, and its money check must name the customers charged twice, and
// nothing else.
func TestChaosFindsAPlantedDoubleCharge(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	needRedisServer(t)
	var progress kafkatest.Buffer
	rep, err := chaos.Run(context.Background(), chaos.Config{Seed: 7, Duration: 30 * time.Second, Drain: 90 * time.Second,
		Rate: 10, Clients: 16, Every: 3 * time.Second, Kinds: []chaos.Kind{chaos.Duplicate},
		Brokers: brokers, Launch: testLauncher, Dir: keptOnFailure(t), Plant: "forget-charges", Progress: &progress})
	if err != nil {
		t.Fatalf("%v\n%s", err, progress.String())
	}
	// The suite keeps a failed run's topics for inspection; this failure
	// is the expected one.
	defer func() {
		if err := chaos.DeleteTopics(context.Background(), brokers, rep.Namespace); err != nil {
			t.Errorf("delete the run's topics: %v", err)
		}
	}()
	var text strings.Builder
	rep.WriteText(&text)
	t.Log(text.String())
	if rep.ByKind["captured-mismatch"] == 0 {
		t.Errorf("the planted double charge went unreported; progress:\n%s", progress.String())
	}
	for kind := range rep.ByKind {
		if kind != "captured-mismatch" {
			t.Errorf("violations of kind %s: only the money check should fire", kind)
		}
	}
	if rep.FaultKinds[chaos.Duplicate] == 0 || rep.Accepted < 100 {
		t.Errorf("%d duplicate faults, %d orders accepted: too little happened to mean anything", rep.FaultKinds[chaos.Duplicate], rep.Accepted)
	}
}
