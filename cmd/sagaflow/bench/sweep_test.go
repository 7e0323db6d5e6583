package bench

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func stepResult(rate float64, ended int64, p50 time.Duration, cpu ...float64) *Result {
	r := &Result{Config: Config{Via: "http", Rate: rate, Duration: 20 * time.Second}, Ended: ended, Sent: ended,
		SagasPerSec: rate, Elapsed: 25 * time.Second, Latency: Quantiles{N: int(ended), P50: p50, P95: 2 * p50, P99: 3 * p50, Max: 4 * p50},
		Floor: Quantiles{N: 100, P50: 4 * time.Millisecond, P99: 20 * time.Millisecond}}
	for i, v := range cpu {
		r.CPU = append(r.CPU, PartCPU{Name: []string{"kafka", LoadGen}[i], PerSaga: v,
			Spent: time.Duration(v * float64(ended) * float64(time.Millisecond))})
	}
	return r
}

// TestCurveTable: a line a step with its figures, then the CPU table, a
// column a part and its total.
func TestCurveTable(t *testing.T) {
	c := Curve{stepResult(200, 4000, 30*time.Millisecond, 2.5, 0.5), stepResult(800, 16000, 150*time.Millisecond, 1, 0.25)}
	c[1].Refused, c[1].Unfinished = 7, 2
	var b strings.Builder
	c.WriteTable(&b)
	out := b.String()
	for _, want := range []string{
		"a sweep of 2 open-loop steps via http, 20s of load each",
		`(?m)^  200/s +200\.0 +30\.0 +60\.0 +90\.0 +120\.0 +0 +0$`,
		`(?m)^  800/s +800\.0 +150\.0 +300\.0 +450\.0 +600\.0 +7 +2$`,
		`(?m)^  load +kafka loadgen +total +cores$`,
		// 4,000 sagas at 3 ms over 25 s: 0.48 of a core.
		`(?m)^  200/s +2\.50 +0\.50 +3\.00 +0\.48$`,
		`(?m)^  800/s +1\.00 +0\.25 +1\.25 +0\.80$`,
		"floor        p50 4.0 ms  p99 20.0 ms",
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}

// TestCurveHTML: the page holds the table and three charts, latency,
// throughput and CPU against the load, labelled by the steps' loads.
func TestCurveHTML(t *testing.T) {
	c := Curve{stepResult(200, 4000, 30*time.Millisecond, 2.5, 0.5), stepResult(800, 16000, 150*time.Millisecond, 1, 0.25)}
	var b strings.Builder
	if err := c.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 3 {
		t.Errorf("%d charts, want 3", n)
	}
	for _, want := range []string{"latency against the load", "CPU a saga by part", ">200/s<", ">800/s<", ">kafka<", ">offered<", "a sweep of 2"} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// A closed-loop sweep has no offered rate to draw, nor CPU unwatched.
	c = Curve{stepResult(0, 10, time.Millisecond), stepResult(0, 10, time.Millisecond)}
	c[0].Config.Clients, c[1].Config.Clients = 1, 32
	b.Reset()
	if err := c.WriteHTML(&b); err != nil {
		t.Fatal(err)
	}
	if page := b.String(); strings.Count(page, "<svg") != 2 || strings.Contains(page, ">offered<") || !strings.Contains(page, ">32 clients<") {
		t.Errorf("closed-loop page: want 2 charts, no offered line, steps by clients:\n%s", page)
	}
}

// TestResultCPULine: a single run's table says what each part spent a
// saga and what the cores carry at that total.
func TestResultCPULine(t *testing.T) {
	var b strings.Builder
	stepResult(200, 4000, 30*time.Millisecond, 1.5, 0.5).WriteTable(&b)
	if !regexp.MustCompile(`(?m)^  cpu          ms per saga: kafka 1\.50, loadgen 0\.50; total 2\.00 \(\d+ cores carry about \d+ sagas/s at that cost\)$`).MatchString(b.String()) {
		t.Errorf("no cpu line in:\n%s", b.String())
	}
}
