package kafkatx

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestSlowTxns(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	log := zap.New(core)
	s := newSlowTxns(100 * time.Millisecond)
	t0 := time.Date(2026, 12, 5, 3, 0, 0, 0, time.UTC)
	timing := txnTiming{begin: time.Millisecond, handler: 20 * time.Millisecond, offsets: 15 * time.Millisecond,
		commit: 430500 * time.Microsecond, after: 250 * time.Microsecond}

	if s.note(log, t0, 99*time.Millisecond, timing, 10, 5) {
		t.Fatal("a transaction under the threshold was logged")
	}
	if f := s.progress(); f != nil {
		t.Fatalf("progress with no slow transaction = %v, want nothing", f)
	}
	if !s.note(log, t0, 452*time.Millisecond, timing, 153, 80) {
		t.Fatal("the first slow transaction was not logged")
	}
	// Within the second after a line: counted, not logged.
	for i, took := range []time.Duration{300 * time.Millisecond, 700 * time.Millisecond} {
		if s.note(log, t0.Add(time.Duration(i+1)*400*time.Millisecond), took, timing, 1, 1) {
			t.Fatalf("slow transaction %d, within a second of a line, was logged", i+2)
		}
	}
	if !s.note(log, t0.Add(time.Second), 250*time.Millisecond, timing, 7, 3) {
		t.Fatal("a slow transaction a second after the last line was not logged")
	}

	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d lines logged, want 2", len(entries))
	}
	first := entries[0].ContextMap()
	want := map[string]any{"took_ms": 452.0, "records": int64(153), "produced": int64(80), "begin_ms": 1.0,
		"handler_ms": 20.0, "offsets_ms": 15.0, "offsets_wait_ms": 0.0, "commit_ms": 430.5, "after_commit_ms": 0.25,
		"not_logged_before": int64(0)}
	if entries[0].Message != "slow transaction" || entries[0].Level != zapcore.WarnLevel {
		t.Errorf("line = %s %q, want a warning \"slow transaction\"", entries[0].Level, entries[0].Message)
	}
	for k, v := range want {
		if first[k] != v {
			t.Errorf("first line's %s = %v (%T), want %v", k, first[k], first[k], v)
		}
	}
	if got := entries[1].ContextMap()["not_logged_before"]; got != int64(2) {
		t.Errorf("second line's not_logged_before = %v, want 2 (the two left out)", got)
	}

	// The progress line counts all four, and the slowest; then starts over.
	core2, lines := observer.New(zapcore.DebugLevel)
	zap.New(core2).Info("p", s.progress()...)
	if got := lines.All()[0].ContextMap(); got["slow_txns"] != int64(4) || got["slowest_ms"] != 700.0 {
		t.Errorf("progress = %v, want slow_txns 4 and slowest_ms 700", got)
	}
	if f := s.progress(); f != nil {
		t.Errorf("progress after it was read = %v, want nothing", f)
	}

	off := newSlowTxns(-1)
	if off.note(log, t0, time.Hour, timing, 1, 1) || off.progress() != nil {
		t.Error("a watch that is off logged or counted")
	}
}
