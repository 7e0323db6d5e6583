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

	"github.com/alicebob/miniredis/v2"
)

// Redis starts an embedded Redis on a random 127.0.0.1 port; its Addr is what
// a go-redis client dials. Unlike miniredis's default, TTLs run down with the
// wall clock, as on a real Redis: dedup records, barrier markers and HTTP
// leases expire when they should. Close it when done.
func Redis() (*miniredis.Miniredis, error) {
	m := miniredis.NewMiniRedis()
	m.ClockTTL(true)
	if err := m.Start(); err != nil {
		return nil, fmt.Errorf("embedded: redis: %w", err)
	}
	return m, nil
}
