package kafkatest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/sagaflow/sagaflow/dev/kafkactl"
)

// ControlEnv names the script that kills, starts, pauses and resumes the
// test Kafka's nodes (dev/kafka.sh, by absolute path). `make failover` sets
// it, with SAGAFLOW_KAFKA pointing at the 3-node cluster.
const ControlEnv = "SAGAFLOW_KAFKA_CONTROL"

// Cluster returns the bootstrap list and the node control of a real Kafka
// of at least min nodes, for a test that kills or pauses brokers. Such tests
// are named TestFailover...: `make test` runs them on their own, on the
// 3-node cluster, after every other test and one package at a time, so that
// no other test shares a broker they take away. Like Brokers, it skips outside CI and fails under
// CI=true when there is no such cluster.
//
// Whatever the test does, every node is resumed and started again when it
// ends.
func Cluster(t testing.TB, min int) (string, kafkactl.Nodes) {
	t.Helper()
	script := os.Getenv(ControlEnv)
	brokers := os.Getenv("SAGAFLOW_KAFKA")
	count := len(strings.Split(brokers, ","))
	var why string
	switch {
	case brokers == EmbeddedEnv || brokers == "":
		why = "SAGAFLOW_KAFKA names no real cluster"
	case script == "":
		why = ControlEnv + " is not set"
	case count < min:
		why = fmt.Sprintf("SAGAFLOW_KAFKA=%s has %d node(s)", brokers, count)
	}
	if why != "" {
		msg := fmt.Sprintf("this test kills Kafka nodes and needs the %d-node cluster: %s (run `make failover`)", min, why)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	Brokers(t) // the probe: the cluster answers transactions
	nodes := kafkactl.Nodes{Script: script, Count: count}
	t.Cleanup(func() {
		for n := 1; n <= count; n++ {
			_ = nodes.Do(context.Background(), kafkactl.Resume, n)
			if err := nodes.Do(context.Background(), kafkactl.Start, n); err != nil {
				t.Logf("restoring node %d: %v", n, err)
			}
		}
	})
	return brokers, nodes
}

// Node runs verb on one node and fails the test if it cannot.
func Node(t testing.TB, nodes kafkactl.Nodes, verb string, node int) {
	t.Helper()
	if err := nodes.Do(context.Background(), verb, node); err != nil {
		t.Fatal(err)
	}
	t.Logf("kafka node %d: %s", node, verb)
}
