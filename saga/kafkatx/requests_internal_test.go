package kafkatx

import (
	"maps"
	"strconv"
	"testing"
)

// Reports add what grew since the same producer's previous report, over
// its broker handles; a handle that starts again from 0 counts from 0, and
// a second producer (a fence or a wedge replaced the first) adds its own.
func TestRequestCountsAddWhatGrew(t *testing.T) {
	var c requestCounts
	doc := func(a, b int) string {
		return `{"name":"p#producer-1","brokers":{"127.0.0.1:19092/1":{"req":{"Produce":` + strconv.Itoa(a) +
			`,"EndTxn":2,"Fetch":0}},"TxnCoordinator":{"req":{"EndTxn":` + strconv.Itoa(b) + `}}}}`
	}
	prev := c.add(doc(10, 3), nil, 5)
	prev = c.add(doc(14, 4), prev, 7)
	got, txns := c.snapshot()
	if want := map[string]int64{"Produce": 14, "EndTxn": 6}; !maps.Equal(got, want) || txns != 7 {
		t.Fatalf("after two reports: %v at %d transactions, want %v at 7", got, txns, want)
	}
	prev = c.add(doc(1, 4), prev, 8) // the broker handle came back: its Produce counts from 0
	c.add(`not json`, prev, 9)       // changes nothing
	c.add(doc(5, 1), nil, 10)        // a new producer
	got, txns = c.snapshot()
	if want := map[string]int64{"Produce": 20, "EndTxn": 9}; !maps.Equal(got, want) || txns != 10 {
		t.Fatalf("after a handle's restart and a new producer: %v at %d transactions, want %v at 10", got, txns, want)
	}
}

// Lanes add up their loops' counters, the request counts among them.
func TestStatsAddSumsEveryCounter(t *testing.T) {
	var s Stats
	s.add(Stats{Committed: 2, Records: 10, Assigned: 1, ProducerRequests: map[string]int64{"Produce": 3, "EndTxn": 2}})
	s.add(Stats{Committed: 1, Records: 4, Assigned: 2, ProducerRequests: map[string]int64{"Produce": 1, "AddOffsetsToTxn": 1}})
	s.add(Stats{Committed: 1}) // a lane with no statistics report yet
	if s.Committed != 4 || s.Records != 14 || s.Assigned != 3 {
		t.Errorf("sums: committed %d records %d assigned %d, want 4 14 3", s.Committed, s.Records, s.Assigned)
	}
	if want := map[string]int64{"Produce": 4, "EndTxn": 2, "AddOffsetsToTxn": 1}; !maps.Equal(s.ProducerRequests, want) {
		t.Errorf("requests %v, want %v", s.ProducerRequests, want)
	}
}
