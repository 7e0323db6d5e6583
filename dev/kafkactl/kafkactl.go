// Package kafkactl kills, starts, pauses and resumes the nodes of the Kafka
// that dev/kafka.sh runs, through that script's command line, for the tests
// and the chaos suite that take a broker away on purpose.
package kafkactl

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// The verbs of dev/kafka.sh that act on one node.
const (
	Kill   = "kill"   // SIGKILL, as a crash would
	Start  = "start"  // start again and wait until it listens
	Pause  = "pause"  // SIGSTOP: a hung node, a long GC pause
	Resume = "resume" // SIGCONT
)

// Nodes drives Kafka nodes 1..Count (node n is broker id n).
type Nodes struct {
	// Script is dev/kafka.sh, or anything with its `kill|start|pause|resume
	// N` commands.
	Script string
	Count  int
}

// Do runs the script's verb for one node. A start waits until the node
// listens, so Do is bounded by a few minutes whatever ctx says.
func (n Nodes) Do(ctx context.Context, verb string, node int) error {
	if n.Script == "" {
		return errors.New("kafkactl: no control script (dev/kafka.sh)")
	}
	if node < 1 || node > n.Count {
		return fmt.Errorf("kafkactl: node %d: the cluster has nodes 1..%d", node, n.Count)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", n.Script, verb, strconv.Itoa(node)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafkactl: %s %s %d: %w: %s", n.Script, verb, node, err, strings.TrimSpace(string(out)))
	}
	return nil
}
