package bench

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestStatCPU reads utime and stime, and the children's cutime and cstime,
// from /proc/pid/stat lines, counting the fields from the command name's
// last ')': a name may hold both spaces and parentheses.
func TestStatCPU(t *testing.T) {
	rest := " S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 1 0"
	forked := " S 1 2 3 4 5 6 7 8 9 10 250 75 400 25 20 0 1 0"
	for _, c := range []struct {
		line string
		want time.Duration
		ok   bool
	}{
		{"42 (java)" + rest, 3250 * time.Millisecond, true},
		{"42 (a b) (c))" + rest, 3250 * time.Millisecond, true},
		{"42 (redis-server 127.0.0.1:16379)" + forked, 7500 * time.Millisecond, true},
		{"42 (java) S 1 2", 0, false},
		{"42 (java) S 1 2 3 4 5 6 7 8 9 10 250 75 0", 0, false},
		{"no parenthesis here", 0, false},
		{"42 (java) S 1 2 3 4 5 6 7 8 9 10 x 75", 0, false},
	} {
		got, err := statCPU(c.line)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("statCPU(%q) = %v, %v; want %v, ok %v", c.line, got, err, c.want, c.ok)
		}
	}
}

// TestParseProcs: the -cpu flag's NAME=PID list, and what it refuses.
func TestParseProcs(t *testing.T) {
	ps, err := ParseProcs("kafka=10, kafka=11,redis=12")
	if err != nil || len(ps) != 3 || ps[1] != (Proc{"kafka", 11}) || ps[2] != (Proc{"redis", 12}) {
		t.Fatalf("ParseProcs = %+v, %v", ps, err)
	}
	for _, bad := range []string{"", "kafka", "kafka=", "=12", "kafka=x", "kafka=-3", "loadgen=12"} {
		if _, err := ParseProcs(bad); err == nil {
			t.Errorf("ParseProcs(%q) took it", bad)
		}
	}
}

// TestSampleCPU sums the processes of one name, counts the bench itself
// last, and refuses a process that is gone.
func TestSampleCPU(t *testing.T) {
	self := os.Getpid()
	procs := []Proc{{"a", self}, {"b", self}, {"a", self}}
	if got := strings.Join(partNames(procs), " "); got != "a b loadgen" {
		t.Fatalf("partNames = %s", got)
	}
	// Burn some CPU so that the counts move.
	deadline := time.Now().Add(50 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	s, err := sampleCPU(procs)
	if err != nil {
		t.Fatal(err)
	}
	// The three reads of this process are moments apart, and /proc counts
	// in 10 ms ticks: a is twice b give or take what ran between them.
	if len(s) != 3 || s[1] <= 0 || (s[0]-2*s[1]).Abs() > 100*time.Millisecond || s[2] <= 0 {
		t.Errorf("sample %v: want a counted twice, b once, the bench above zero", s)
	}
	if s, err := sampleCPU(nil); s != nil || err != nil {
		t.Errorf("nothing watched sampled %v, %v", s, err)
	}
	if _, err := sampleCPU([]Proc{{"gone", 1 << 30}}); err == nil {
		t.Error("a process that does not exist was sampled")
	}
	parts := spent([]string{"a", "loadgen"}, cpuSample{time.Second, 0}, cpuSample{3 * time.Second, time.Second}, 1000)
	if parts[0].PerSaga != 2 || parts[1].PerSaga != 1 || parts[0].Spent != 2*time.Second {
		t.Errorf("spent = %+v: want 2 and 1 ms a saga", parts)
	}
}
