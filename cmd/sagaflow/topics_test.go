package main

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/chaos"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// `sagaflow topics` says how many partitions each topic has, and says so
// plainly when a topic existed with another count than the one asked for:
// CreateTopics keeps it, and a bench or a deployment that meant another
// count must not learn that from its figures.
func TestTopicsReportsThePartitionsEachTopicHas(t *testing.T) {
	brokers := kafkatest.Brokers(t)
	ns := fmt.Sprintf("test-topics-%d", time.Now().UnixNano())
	t.Cleanup(func() { _ = chaos.DeleteTopics(context.Background(), brokers, ns) })
	topics := func(partitions int) string {
		var out bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := runTopics(ctx, []string{"-kafka", brokers, "-namespace", ns, "-partitions", fmt.Sprint(partitions)}, &out); err != nil {
			t.Fatalf("sagaflow topics -partitions %d: %v", partitions, err)
		}
		return out.String()
	}
	first := topics(2)
	lines := strings.Split(strings.TrimSpace(first), "\n")
	if len(lines) != 8 {
		t.Fatalf("want a line for each of the 8 topics, got:\n%s", first)
	}
	for _, l := range lines {
		// A topic created a moment ago may not be in the metadata yet.
		if !strings.HasPrefix(l, "topic "+ns+".") ||
			!(strings.HasSuffix(l, ": 2 partitions") || strings.HasSuffix(l, ": 2 partitions requested")) {
			t.Errorf("first run: %q", l)
		}
	}
	var again string
	kafkatest.WaitFor(t, 30*time.Second, "the existing count reported for every topic", func() bool {
		again = topics(3)
		return strings.Count(again, ": 2 partitions (it existed; 3 requested") == 8
	})
	if !strings.Contains(again, "topic "+ns+".saga.state ready: 2 partitions (it existed; 3 requested") {
		t.Errorf("second run:\n%s", again)
	}
}
