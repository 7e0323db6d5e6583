package kafkatx

import (
	"testing"
	"time"
)

// The loops' producers hold records by default (the commit sends them), and
// a negative Linger is how a caller asks for none at all: zero cannot say
// it, because it is the default.
func TestLingerDefaults(t *testing.T) {
	for _, c := range []struct{ set, want time.Duration }{
		{0, DefaultLinger},
		{-1, 0},
		{7 * time.Millisecond, 7 * time.Millisecond}, // not the default: kept as given
	} {
		if got := (Config{Linger: c.set}).withDefaults().Linger; got != c.want {
			t.Errorf("Linger %v: withDefaults gives %v, want %v", c.set, got, c.want)
		}
	}
}

// BatchWait follows Linger's rule (zero the default, negative none), and
// never outlasts MaxInterval, which closes a batch whatever it waits for.
func TestBatchWaitDefaults(t *testing.T) {
	for _, c := range []struct{ set, maxInterval, want time.Duration }{
		{0, 0, DefaultBatchWait},
		{-1, 0, 0},
		{7 * time.Millisecond, 0, 7 * time.Millisecond},
		{0, time.Millisecond, time.Millisecond},
	} {
		if got := (Config{BatchWait: c.set, MaxInterval: c.maxInterval}).withDefaults().BatchWait; got != c.want {
			t.Errorf("BatchWait %v, MaxInterval %v: withDefaults gives %v, want %v", c.set, c.maxInterval, got, c.want)
		}
	}
}

// A batch waits for more only while the loop is busy: a lone record after
// an idle poll is committed at once, which is what keeps a quiet system's
// hop as short as before.
func TestPollWaitsForMoreOnlyWhileBusy(t *testing.T) {
	const bw = 3 * time.Millisecond
	for _, c := range []struct {
		name        string
		batch, busy int
		open, wait  time.Duration
		want        int
	}{
		{"no batch: the loop's tick", 0, 9, 0, bw, 100},
		{"idle since the last commit", 1, 0, 0, bw, 0},
		{"the last batch was one record", 1, 1, 0, bw, 0},
		{"busy, batch just opened", 1, 5, 0, bw, 3},
		{"busy, rounded up to whole ms", 2, 5, 1500 * time.Microsecond, bw, 2},
		{"busy, the wait is over", 7, 5, bw, bw, 0},
		{"busy, waiting turned off", 1, 5, 0, 0, 0},
	} {
		if got := pollWait(c.batch, c.busy, c.open, c.wait); got != c.want {
			t.Errorf("%s: pollWait(%d, %d, %v, %v) = %d ms, want %d", c.name, c.batch, c.busy, c.open, c.wait, got, c.want)
		}
	}
}
