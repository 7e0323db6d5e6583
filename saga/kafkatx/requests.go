package kafkatx

import (
	"encoding/json"
	"maps"
	"sync"
)

// requestCounts sums what the loop's transactional producers asked of Kafka,
// by request type (Produce, AddOffsetsToTxn, EndTxn, ...), from librdkafka's
// statistics. The broker's CPU follows requests, and a transaction is a
// dozen of them: Produce once for each partition it writes, AddOffsetsToTxn
// and AddPartitionsToTxn again each time the previous transaction's markers
// are still being written (CONCURRENT_TRANSACTIONS). Those counts are what
// the CPU a transaction costs is made of (docs/performance.md).
//
// Each producer reports its own cumulative counts, and a loop may have had
// several (after a fence or a wedge), so every report adds what grew since
// the same producer's previous one.
type requestCounts struct {
	mu  sync.Mutex
	sum map[string]int64
	// committed is the loop's committed transactions when the newest report
	// came, so that requests per transaction divides counts of one moment.
	committed int64
}

// producerReport is one producer's previous report: the count of each
// request type sent through each of its broker handles.
type producerReport map[string]int64

// add takes a statistics JSON document of the producer whose previous
// report was prev and returns this one, to pass next time. A document that
// does not parse changes nothing.
func (c *requestCounts) add(doc string, prev producerReport, committed int64) producerReport {
	var st struct {
		Brokers map[string]struct {
			Req map[string]int64 `json:"req"`
		} `json:"brokers"`
	}
	if err := json.Unmarshal([]byte(doc), &st); err != nil {
		return prev
	}
	cur := producerReport{}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sum == nil {
		c.sum = map[string]int64{}
	}
	for broker, b := range st.Brokers {
		for req, n := range b.Req {
			if n == 0 {
				continue
			}
			key := broker + "\x00" + req
			cur[key] = n
			d := n - prev[key]
			if d < 0 {
				d = n // a broker handle that went away and came back counts from 0
			}
			c.sum[req] += d
		}
	}
	c.committed = committed
	return cur
}

// snapshot returns a copy of the sums and the committed transactions they
// go with.
func (c *requestCounts) snapshot() (map[string]int64, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.sum), c.committed
}
