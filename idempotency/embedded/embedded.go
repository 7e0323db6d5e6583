// Package embedded runs a Redis inside this process, so that `sagaflow demo`
// needs nothing installed. It is for trying sagaflow, not for keeping
// anything: the data lives in memory, nothing is written to disk (the AOF
// that docs/design.md relies on for durability does not exist here), and all of it
// is gone at Close or when the process exits.
//
// It is miniredis, a Redis written in Go. It runs the Lua scripts of package
// idempotency (redis.call, cjson, SCRIPT LOAD and EVALSHA, NOSCRIPT for an
// unknown digest), one at a time, like Redis; embedded_test.go checks each
// feature those scripts use.
package embedded

import (
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// Server is an embedded Redis. Its Addr is what a go-redis client dials.
type Server struct {
	m    *miniredis.Miniredis
	stop chan struct{}
	done chan struct{}
}

// Redis starts an embedded Redis on a random 127.0.0.1 port. Close it when
// done.
//
// Unlike miniredis's default, TTLs run down with the wall clock, as on a
// real Redis: dedup records, barrier markers and HTTP leases expire when
// they should, give or take a tick (below). Not with miniredis's own
// ClockTTL: that walks and sorts every key on every command, so each
// command cost more the longer the demo ran (8.4 ms with 100,000 keys
// held, and the demo's order took 70 to 85 ms instead of 22 to 30; see
// BenchmarkCommandWithManyKeys). Here a goroutine moves
// the clock forward instead, every 100 ms, or less often when a sweep is
// slow (so that sweeps take at most 2% of the time).
func Redis() (*Server, error) {
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("embedded: redis: %w", err)
	}
	s := &Server{m: m, stop: make(chan struct{}), done: make(chan struct{})}
	go s.tick()
	return s, nil
}

// minTick is the shortest step in which TTLs run down.
const minTick = 100 * time.Millisecond

func (s *Server) tick() {
	defer close(s.done)
	last := time.Now()
	t := time.NewTimer(minTick)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := time.Now()
		s.m.FastForward(now.Sub(last))
		last = now
		t.Reset(max(minTick, 50*time.Since(now)))
	}
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string { return s.m.Addr() }

// Close stops the server; its data is gone.
func (s *Server) Close() {
	close(s.stop)
	<-s.done
	s.m.Close()
}
