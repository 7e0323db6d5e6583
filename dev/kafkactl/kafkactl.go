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
	// N` and `routes` commands.
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
	// Above dev/kafka.sh's own wait for a start (KAFKA_WAIT, 300 s), so
	// that the script, not this, reports a node that did not come up.
	ctx, cancel := context.WithTimeout(ctx, 6*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", n.Script, verb, strconv.Itoa(node)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kafkactl: %s %s %d: %w: %s", n.Script, verb, node, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Route is one broker's proxied listener: the broker listens on Listen and
// advertises Advertised, where nothing listens until a proxy forwards it to
// Listen. A client that bootstraps at the advertised addresses reaches
// every broker through the proxy, which can then slow, stall or cut it.
type Route struct {
	Node               int
	Advertised, Listen string
}

// Routes asks the script for every broker's proxied listener (its
// `routes` command, one "NODE ADVERTISED LISTEN" line per broker).
func (n Nodes) Routes(ctx context.Context) ([]Route, error) {
	if n.Script == "" {
		return nil, errors.New("kafkactl: no control script (dev/kafka.sh)")
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "bash", n.Script, "routes").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(ee.Stderr)))
		}
		return nil, fmt.Errorf("kafkactl: %s routes: %w", n.Script, err)
	}
	return parseRoutes(string(out), n.Count)
}

func parseRoutes(out string, count int) ([]Route, error) {
	var rs []Route
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		node, err := strconv.Atoi(f[0])
		if len(f) != 3 || err != nil || node != len(rs)+1 {
			return nil, fmt.Errorf("kafkactl: routes: %q is not \"NODE ADVERTISED LISTEN\" for node %d", strings.TrimSpace(line), len(rs)+1)
		}
		rs = append(rs, Route{Node: node, Advertised: f[1], Listen: f[2]})
	}
	if len(rs) != count {
		return nil, fmt.Errorf("kafkactl: routes: %d broker(s), the cluster has %d", len(rs), count)
	}
	return rs, nil
}
