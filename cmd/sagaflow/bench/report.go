package bench

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// WriteTable writes the result for a person to read.
func (r *Result) WriteTable(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	fmt.Fprintf(w, "sagaflow bench: %s via %s, %s of load\n", r.Mode, r.Config.Via, r.Measured.Round(time.Millisecond))
	fmt.Fprintf(w, "  sagas        sent %d, ended %d, unfinished %d, refused %d\n", r.Sent, r.Ended, r.Unfinished, r.Refused)
	fmt.Fprintf(w, "  outcomes     completed %d, cancelled %d, failed %d\n", r.Outcomes[Completed], r.Outcomes[Cancelled], r.Outcomes[Failed])
	fmt.Fprintf(w, "  throughput   %.1f sagas/s ended during the load\n", r.SagasPerSec)
	fmt.Fprintf(w, "  latency      p50 %s  p95 %s  p99 %s  max %s  (request to terminal state, n=%d)\n",
		ms(r.Latency.P50), ms(r.Latency.P95), ms(r.Latency.P99), ms(r.Latency.Max), r.Latency.N)
	// An order crosses four hops on its way to Confirmed with the
	// orchestrator's defaults (reserve and charge at once, the
	// confirmation sent without waiting for its reply), eight with
	// -parallel=false -await-confirm.
	fmt.Fprintf(w, "  floor        p50 %s  p99 %s  (one transactional hop, n=%d; x4 hops = %s, x8 = %s)\n",
		ms(r.Floor.P50), ms(r.Floor.P99), r.Floor.N, ms(4*r.Floor.P50), ms(8*r.Floor.P50))
	if len(r.CPU) > 0 {
		fmt.Fprintf(w, "  cpu          %s\n", cpuLine(r.CPU))
	}
	if r.Behind > 0 {
		fmt.Fprintf(w, "  generator    fell %s behind its schedule: the target rate was not offered in full\n", r.Behind.Round(time.Millisecond))
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "  error        %s\n", e)
	}
}

// cpuLine says what each part spent per saga, and what the machine's cores
// would carry at that cost.
func cpuLine(parts []PartCPU) string {
	var b strings.Builder
	total := 0.0
	for i, p := range parts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %.2f", p.Name, p.PerSaga)
		total += p.PerSaga
	}
	cores := runtime.NumCPU()
	carry := 0.0
	if total > 0 {
		carry = float64(cores) * 1000 / total
	}
	return fmt.Sprintf("ms per saga: %s; total %.2f (%d cores carry about %.0f sagas/s at that cost)", b.String(), total, cores, carry)
}

// WriteHTML writes a self-contained page: the figures, and throughput and
// latency over time as inline SVG (no script, nothing fetched).
func (r *Result) WriteHTML(w io.Writer) error {
	var table strings.Builder
	r.WriteTable(&table)
	ended := make([]float64, len(r.Timeline))
	sent := make([]float64, len(r.Timeline))
	p50 := make([]float64, len(r.Timeline))
	p99 := make([]float64, len(r.Timeline))
	for i, s := range r.Timeline {
		ended[i], sent[i], p50[i], p99[i] = float64(s.Ended), float64(s.Sent), s.P50ms, s.P99ms
	}
	data := map[string]any{
		"Title": "sagaflow bench: " + r.Mode,
		"Table": table.String(),
		"Charts": []template.HTML{
			chart("sagas per second", secondsAxis(len(r.Timeline)), []series{
				{"ended", "#1f77b4", ended}, {"sent", "#aaaaaa", sent}}),
			chart("latency of the sagas that ended in each second (ms)", secondsAxis(len(r.Timeline)), []series{
				{"p50", "#2ca02c", p50}, {"p99", "#d62728", p99}}),
		},
	}
	return page.Execute(w, data)
}

type series struct {
	name, color string
	ys          []float64
}

// secondsAxis labels n points a second apart.
func secondsAxis(n int) []string {
	xs := make([]string, n)
	for i := range xs {
		xs[i] = strconv.Itoa(i) + "s"
	}
	return xs
}

// chart draws line series as an SVG, point i of each at xs[i].
func chart(title string, xs []string, ss []series) template.HTML {
	// Width, height, and the margins left (the values), right (half an x
	// label) and below (the x labels).
	const W, H, L, R, B = 760.0, 240.0, 60.0, 40.0, 30.0
	n, top := 0, 0.0
	for _, s := range ss {
		n = max(n, len(s.ys))
		for _, y := range s.ys {
			top = math.Max(top, y)
		}
	}
	if top == 0 {
		top = 1
	}
	top = niceCeil(top)
	x := func(i int) float64 { return L + float64(i)*(W-L-R)/math.Max(1, float64(n-1)) }
	// The title and the legend take the top 36 pixels.
	y := func(v float64) float64 { return H - B - v*(H-B-36)/top }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`, W, H)
	fmt.Fprintf(&b, `<text x="%.0f" y="12" font-size="13">%s</text>`, L, template.HTMLEscapeString(title))
	for k := 0; k <= 4; k++ {
		v := top * float64(k) / 4
		fmt.Fprintf(&b, `<line x1="%.0f" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#eee"/>`, L, W-R, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%g</text>`, L-4, y(v)+4, v)
	}
	for k := 0; k < min(n, len(xs)); k += max(1, n/10) {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%s</text>`, x(k), H-B+16, template.HTMLEscapeString(xs[k]))
	}
	legend := L
	for _, s := range ss {
		var pts strings.Builder
		for i, v := range s.ys {
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(i), y(v))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, s.color, pts.String())
		// A few points (a sweep's steps) are marked: a line alone hides
		// which of its bends were measured.
		if n <= 12 {
			for i, v := range s.ys {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(i), y(v), s.color)
			}
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="28" fill="%s">%s</text>`, legend, s.color, template.HTMLEscapeString(s.name))
		legend += 7*float64(len(s.name)) + 16
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

var page = template.Must(template.New("bench").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:800px}pre{background:#f6f6f6;padding:1em;overflow-x:auto}</style>
</head><body>
<h1>{{.Title}}</h1>
<pre>{{.Table}}</pre>
{{range .Charts}}<p>{{.}}</p>
{{end}}
</body></html>
`))
