package bench

import (
	"fmt"
	"html/template"
	"io"
	"strconv"
	"strings"
	"time"
)

// Curve is what a sweep measured, one result a step, in the order they ran.
type Curve []*Result

// load names a step's load: "500/s" or "32 clients".
func (r *Result) load() string {
	if r.Config.Rate > 0 {
		return strconv.FormatFloat(r.Config.Rate, 'g', 4, 64) + "/s"
	}
	return strconv.Itoa(r.Config.Clients) + " clients"
}

// WriteTable writes the curve for a person to read: a line a step, then
// the CPU a saga each part spent at each step, when it was watched.
func (c Curve) WriteTable(w io.Writer) {
	if len(c) == 0 {
		return
	}
	kind := "closed-loop"
	if c[0].Config.Rate > 0 {
		kind = "open-loop"
	}
	fmt.Fprintf(w, "sagaflow bench: a sweep of %d %s steps via %s, %s of load each\n",
		len(c), kind, c[0].Config.Via, c[0].Config.Duration)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	fmt.Fprintf(w, "  %-12s %9s %9s %9s %9s %9s %8s %10s\n", "load", "ended/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "refused", "unfinished")
	for _, r := range c {
		fmt.Fprintf(w, "  %-12s %9.1f %9s %9s %9s %9s %8d %10d\n", r.load(), r.SagasPerSec,
			ms(r.Latency.P50), ms(r.Latency.P95), ms(r.Latency.P99), ms(r.Latency.Max), r.Refused, r.Unfinished)
	}
	if len(c[0].CPU) > 0 {
		fmt.Fprintln(w, "  cpu, ms per saga that ended (drain included), and the cores all of it kept busy:")
		fmt.Fprintf(w, "  %-12s", "load")
		for _, p := range c[0].CPU {
			fmt.Fprintf(w, " %*s", max(len(p.Name), 6), p.Name)
		}
		fmt.Fprintf(w, " %6s %6s\n", "total", "cores")
		for _, r := range c {
			fmt.Fprintf(w, "  %-12s", r.load())
			total, busy := 0.0, time.Duration(0)
			for i, p := range r.CPU {
				fmt.Fprintf(w, " %*.2f", max(len(c[0].CPU[i].Name), 6), p.PerSaga)
				total += p.PerSaga
				busy += p.Spent
			}
			fmt.Fprintf(w, " %6.2f %6.2f\n", total, busy.Seconds()/max(r.Elapsed.Seconds(), 1e-9))
		}
	}
	f := c[0].Floor
	fmt.Fprintf(w, "  floor        p50 %s ms  p99 %s ms  (one transactional hop, n=%d, before the first step)\n", ms(f.P50), ms(f.P99), f.N)
	for _, r := range c {
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  error        %s: %s\n", r.load(), e)
		}
		if r.Behind > 0 {
			fmt.Fprintf(w, "  generator    %s: fell %s behind its schedule: the load was not offered in full\n", r.load(), r.Behind.Round(time.Millisecond))
		}
	}
}

// partColors are the CPU chart's lines, one a part in the order watched.
var partColors = []string{"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"}

// WriteHTML writes a self-contained page: the table, and latency,
// throughput and CPU a saga against the load, as inline SVG.
func (c Curve) WriteHTML(w io.Writer) error {
	var table strings.Builder
	c.WriteTable(&table)
	xs := make([]string, len(c))
	col := func(f func(*Result) float64) []float64 {
		ys := make([]float64, len(c))
		for i, r := range c {
			ys[i] = f(r)
		}
		return ys
	}
	for i, r := range c {
		xs[i] = r.load()
	}
	through := []series{{"ended", "#1f77b4", col(func(r *Result) float64 { return r.SagasPerSec })}}
	if len(c) > 0 && c[0].Config.Rate > 0 {
		through = append(through, series{"offered", "#aaaaaa", col(func(r *Result) float64 { return r.Config.Rate })})
	}
	charts := []template.HTML{
		chart("latency against the load (ms, request to terminal state)", xs, []series{
			{"p50", "#2ca02c", col(func(r *Result) float64 { return ms(r.Latency.P50) })},
			{"p95", "#ff7f0e", col(func(r *Result) float64 { return ms(r.Latency.P95) })},
			{"p99", "#d62728", col(func(r *Result) float64 { return ms(r.Latency.P99) })}}),
		chart("sagas per second ended against the load", xs, through),
	}
	if len(c) > 0 && len(c[0].CPU) > 0 {
		var ss []series
		for i, p := range c[0].CPU {
			ss = append(ss, series{p.Name, partColors[i%len(partColors)], col(func(r *Result) float64 { return r.CPU[i].PerSaga })})
		}
		charts = append(charts, chart("CPU a saga by part against the load (ms)", xs, ss))
	}
	return page.Execute(w, map[string]any{
		"Title":  "sagaflow bench: a sweep",
		"Table":  table.String(),
		"Charts": charts,
	})
}
