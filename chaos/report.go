package chaos

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is what a run saw and found.
type Report struct {
	Seed      uint64    `json:"seed"`
	Namespace string    `json:"namespace"`
	Dir       string    `json:"dir"`
	Started   time.Time `json:"started"`
	Duration  string    `json:"duration"`
	Rate      float64   `json:"rate"`
	Plant     string    `json:"plant,omitempty"`

	// Orders: offered (keys), accepted (a 2xx), given up by their client,
	// and how the accepted ones ended.
	Offered, Accepted, GaveUp, Unfinished int
	Outcomes                              map[string]int
	Posts, DuplicatePosts                 int64
	// Answers counts the POST answers that were not the order's first 2xx.
	Answers map[string]int
	// Sagas on saga.state, commands checked, poison records written.
	Sagas, Commands, Poisoned int

	Schedule   []Fault        `json:"schedule"`
	Injected   []Injected     `json:"injected"`
	FaultKinds map[Kind]int   `json:"fault_kinds"`
	Exits      map[string]int `json:"process_exits"` // by process and how
	Drain      time.Duration  `json:"drain_ns"`

	Calm, Faulty Phase
	Timeline     []Second `json:"timeline"`

	Violations []Violation    `json:"violations"`
	ByKind     map[string]int `json:"violations_by_kind"`
}

// Phase is throughput and latency over the seconds with or without a fault
// in force.
type Phase struct {
	Seconds     int
	SagasPerSec float64
	P50, P99    time.Duration
	// Refused counts the POST answers other than a 2xx (503s, 409s, no
	// answer) in these seconds, the drain included.
	Refused int
}

// Second is one second of the run.
type Second struct {
	At       int
	Accepted int
	Ended    int
	Refused  int // POST answers other than a 2xx
	Faults   []Kind
}

// OK reports a run without violations.
func (rep *Report) OK() bool { return len(rep.Violations) == 0 }

func (r *run) report(f facts, schedule []Fault, injected []Injected, vs []Violation, healed time.Time, drain time.Duration) *Report {
	rep := &Report{Seed: r.cfg.Seed, Namespace: r.ns, Dir: r.dir, Started: r.start, Duration: r.cfg.Duration.String(),
		Rate: r.cfg.Rate, Plant: r.cfg.Plant, Outcomes: map[string]int{}, Answers: map[string]int{},
		Posts: r.traffic.posts.Load(), DuplicatePosts: r.traffic.duplicates.Load(),
		Sagas: len(f.Snapshots), Commands: len(f.Commands), Poisoned: len(f.Poisoned),
		Schedule: schedule, Injected: injected, FaultKinds: map[Kind]int{}, Exits: map[string]int{},
		Drain: drain, Violations: vs, ByKind: map[string]int{}}
	r.traffic.mu.Lock()
	for k, n := range r.traffic.statuses {
		rep.Answers[k] = n
	}
	refusedAt := slices.Clone(r.traffic.refusedAt)
	r.traffic.mu.Unlock()
	for _, in := range injected {
		if in.Skipped == "" && in.Err == "" {
			rep.FaultKinds[in.Kind]++
		}
	}
	for name, p := range r.procs {
		p.mu.Lock()
		for how, n := range p.exits {
			rep.Exits[name+": "+how] += n
		}
		p.mu.Unlock()
	}
	for _, v := range vs {
		rep.ByKind[v.Kind]++
	}
	// The timeline, by second from the start of the load.
	end := int(healed.Sub(r.start).Seconds()+drain.Seconds()) + 1
	rep.Timeline = make([]Second, max(end, 1))
	for i := range rep.Timeline {
		rep.Timeline[i].At = i
	}
	at := func(t time.Time) int { return min(max(0, int(t.Sub(r.start).Seconds())), len(rep.Timeline)-1) }
	for _, in := range injected {
		if in.Skipped != "" || in.Err != "" {
			continue
		}
		for s := at(in.Started); s <= at(in.Healed); s++ {
			rep.Timeline[s].Faults = append(rep.Timeline[s].Faults, in.Kind)
		}
	}
	for _, t := range refusedAt {
		rep.Timeline[at(t)].Refused++
	}
	var calm, faulty []time.Duration
	var calmEnds, faultyEnds int
	for _, o := range f.Orders {
		rep.Offered++
		if o.GaveUp {
			rep.GaveUp++
		}
		if o.ID == "" {
			continue
		}
		rep.Accepted++
		rep.Timeline[at(o.Accepted)].Accepted++
		if o.Outcome == "" {
			rep.Unfinished++
			continue
		}
		rep.Outcomes[o.Outcome]++
		s := at(o.Ended)
		rep.Timeline[s].Ended++
		if len(rep.Timeline[at(o.Placed)].Faults) > 0 {
			faulty = append(faulty, o.Ended.Sub(o.Placed))
		} else {
			calm = append(calm, o.Ended.Sub(o.Placed))
		}
		if s < int(r.cfg.Duration.Seconds()) {
			if len(rep.Timeline[s].Faults) > 0 {
				faultyEnds++
			} else {
				calmEnds++
			}
		}
	}
	var calmSecs, faultySecs int
	for _, s := range rep.Timeline[:min(len(rep.Timeline), int(r.cfg.Duration.Seconds()))] {
		if len(s.Faults) > 0 {
			faultySecs++
		} else {
			calmSecs++
		}
	}
	rep.Calm, rep.Faulty = phase(calm, calmEnds, calmSecs), phase(faulty, faultyEnds, faultySecs)
	for _, s := range rep.Timeline {
		if len(s.Faults) > 0 {
			rep.Faulty.Refused += s.Refused
		} else {
			rep.Calm.Refused += s.Refused
		}
	}
	return rep
}

func phase(lat []time.Duration, ends, secs int) Phase {
	p := Phase{Seconds: secs}
	if secs > 0 {
		p.SagasPerSec = float64(ends) / float64(secs)
	}
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		p.P50, p.P99 = lat[len(lat)/2], lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return p
}

// WriteText writes the report for a terminal.
func (rep *Report) WriteText(w io.Writer) {
	verdict := "PASS: 0 violations"
	if !rep.OK() {
		verdict = fmt.Sprintf("FAIL: %d violations", len(rep.Violations))
	}
	fmt.Fprintf(w, "\nsagaflow chaos  seed %d  namespace %s  %s at %.0f orders/s%s\n", rep.Seed, rep.Namespace, rep.Duration, rep.Rate,
		map[bool]string{true: "  PLANTED BUG: " + rep.Plant, false: ""}[rep.Plant != ""])
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "orders\toffered %d, accepted %d, given up by the client %d, unfinished %d\n", rep.Offered, rep.Accepted, rep.GaveUp, rep.Unfinished)
	fmt.Fprintf(tw, "outcomes\tcompleted %d, cancelled %d, failed %d\n", rep.Outcomes["completed"], rep.Outcomes["cancelled"], rep.Outcomes["failed"])
	fmt.Fprintf(tw, "requests\t%d POSTs, %d deliberate duplicates; other answers: %s\n", rep.Posts, rep.DuplicatePosts, countList(rep.Answers))
	fmt.Fprintf(tw, "checked\t%d sagas on saga.state, %d commands, %d poison records\n", rep.Sagas, rep.Commands, rep.Poisoned)
	fk := map[string]int{}
	for k, n := range rep.FaultKinds {
		fk[string(k)] = n
	}
	fmt.Fprintf(tw, "faults\t%d kinds: %s\n", len(rep.FaultKinds), countList(fk))
	fmt.Fprintf(tw, "process exits\t%s\n", countList(rep.Exits))
	fmt.Fprintf(tw, "drain\t%s after healing\n", rep.Drain.Round(time.Millisecond))
	for _, p := range []struct {
		name string
		ph   Phase
	}{{"calm", rep.Calm}, {"under faults", rep.Faulty}} {
		fmt.Fprintf(tw, "%s\t%d s, %.1f sagas/s, p50 %s, p99 %s; %d POST answers refused\n", p.name, p.ph.Seconds, p.ph.SagasPerSec,
			p.ph.P50.Round(time.Millisecond), p.ph.P99.Round(time.Millisecond), p.ph.Refused)
	}
	if rep.Posts > 0 {
		fmt.Fprintf(tw, "refused\t%.2f%% of %d POSTs: %.2f%% while a fault was in force, %.2f%% in calm seconds\n",
			pct(rep.Calm.Refused+rep.Faulty.Refused, rep.Posts), rep.Posts, pct(rep.Faulty.Refused, rep.Posts), pct(rep.Calm.Refused, rep.Posts))
	}
	_ = tw.Flush()
	if !rep.OK() {
		fmt.Fprintf(w, "violations by kind: %s\n", countList(rep.ByKind))
		for i, v := range rep.Violations {
			if i == 30 {
				fmt.Fprintf(w, "  ... and %d more (all in the JSON report)\n", len(rep.Violations)-30)
				break
			}
			fmt.Fprintf(w, "  %-26s %s\n", v.Kind, v.Detail)
		}
	}
	fmt.Fprintf(w, "%s (replay the schedule with -seed %d)\n", verdict, rep.Seed)
}

func pct(n int, of int64) float64 { return 100 * float64(n) / float64(of) }

func countList(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	parts := make([]string, len(ks))
	for i, k := range ks {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

// WriteJSON writes the whole report as JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(rep)
}

// kindColors gives each fault kind its colour on the timeline.
var kindColors = map[Kind]string{KillService: "#d62728", PauseService: "#ff7f0e", KillBroker: "#8c564b", PauseBroker: "#c49c94",
	KillRedis: "#9467bd", RedisLatency: "#c5b0d5", RedisStall: "#e377c2", RedisCut: "#f7b6d2",
	KafkaLatency: "#aec7e8", KafkaStall: "#1f77b4", KafkaCut: "#98df8a", Failpoint: "#bcbd22", Duplicate: "#17becf", Poison: "#7f7f7f"}

// WriteHTML writes a self-contained page: the verdict, the figures, and a
// timeline of sagas ended per second with each fault drawn where it was in
// force.
func (rep *Report) WriteHTML(w io.Writer) error {
	const width, height, top = 1000.0, 260.0, 20.0
	maxY := 1
	for _, s := range rep.Timeline {
		maxY = max(maxY, s.Ended, s.Accepted, s.Refused)
	}
	n := max(1, len(rep.Timeline))
	x := func(sec float64) float64 { return sec / float64(n) * width }
	y := func(v int) float64 { return top + height - float64(v)/float64(maxY)*height }
	var ended, accepted, refused strings.Builder
	for _, s := range rep.Timeline {
		fmt.Fprintf(&ended, "%.1f,%.1f ", x(float64(s.At)+0.5), y(s.Ended))
		fmt.Fprintf(&accepted, "%.1f,%.1f ", x(float64(s.At)+0.5), y(s.Accepted))
		fmt.Fprintf(&refused, "%.1f,%.1f ", x(float64(s.At)+0.5), y(s.Refused))
	}
	type band struct {
		X, W, Y float64
		Color   string
		Label   string
	}
	var bands []band
	lanes := map[Kind]int{}
	for i, k := range AllKinds {
		lanes[k] = i
	}
	for _, in := range rep.Injected {
		if in.Skipped != "" || in.Err != "" {
			continue
		}
		s, e := in.Started.Sub(rep.Started).Seconds(), in.Healed.Sub(rep.Started).Seconds()
		bands = append(bands, band{X: x(s), W: max(2, x(e)-x(s)), Y: top + height + 10 + float64(lanes[in.Kind])*12,
			Color: kindColors[in.Kind], Label: strings.TrimSpace(in.Fault.String())})
	}
	type tick struct {
		X     float64
		Label string
	}
	var ticks []tick
	every := 10
	for _, e := range []int{10, 30, 60, 120, 300, 600} {
		if every = e; n/e <= 12 {
			break
		}
	}
	for sec := 0; sec < n; sec += every {
		ticks = append(ticks, tick{X: x(float64(sec)), Label: fmt.Sprintf("%ds", sec)})
	}
	var legend []band
	for i, k := range AllKinds {
		legend = append(legend, band{X: float64(i%6) * 165, Y: float64(i / 6 * 16), Color: kindColors[k], Label: string(k)})
	}
	data := map[string]any{"R": rep, "Text": textOf(rep), "Ended": ended.String(), "Accepted": accepted.String(), "Refused": refused.String(),
		"Bands": bands, "Legend": legend, "Ticks": ticks, "W": width, "H": top + height + 10 + float64(len(AllKinds))*12 + 10,
		"Base": top + height, "MaxY": maxY, "Top": top}
	return pageTmpl.Execute(w, data)
}

func textOf(rep *Report) string {
	var b strings.Builder
	rep.WriteText(&b)
	return b.String()
}

var pageTmpl = template.Must(template.New("chaos").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>sagaflow chaos, seed {{.R.Seed}}</title>
<style>body{font:14px system-ui,sans-serif;margin:2em;max-width:1060px}pre{background:#f6f6f6;padding:1em;overflow:auto}
.ok{color:#2a7d2a}.bad{color:#b00}svg text{font:11px system-ui,sans-serif}</style></head><body>
<h1>sagaflow chaos <span class="{{if .R.OK}}ok{{else}}bad{{end}}">{{if .R.OK}}passed{{else}}{{len .R.Violations}} violations{{end}}</span></h1>
<p>Seed {{.R.Seed}}, namespace {{.R.Namespace}}, {{.R.Duration}} at {{.R.Rate}} orders/s. Sagas ended per second (blue), orders accepted per second (grey) and POSTs refused per second (red); below, each fault while it was in force.</p>
<svg width="{{.W}}" height="{{.H}}" viewBox="0 0 {{.W}} {{.H}}" role="img" aria-label="timeline">
<line x1="0" y1="{{.Base}}" x2="{{.W}}" y2="{{.Base}}" stroke="#999"/>
<text x="2" y="{{.Top}}">{{.MaxY}}/s</text>
{{range .Ticks}}<line x1="{{printf "%.1f" .X}}" y1="{{$.Base}}" x2="{{printf "%.1f" .X}}" y2="{{$.Top}}" stroke="#eee"/><text x="{{printf "%.1f" .X}}" y="{{$.Base}}" dy="-3" dx="2" fill="#999">{{.Label}}</text>
{{end}}
<polyline fill="none" stroke="#bbb" stroke-width="1" points="{{.Accepted}}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1" points="{{.Refused}}"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{{.Ended}}"/>
{{range .Bands}}<rect x="{{printf "%.1f" .X}}" y="{{printf "%.1f" .Y}}" width="{{printf "%.1f" .W}}" height="10" fill="{{.Color}}"><title>{{.Label}}</title></rect>
{{end}}</svg>
<svg width="1000" height="40">{{range .Legend}}<rect x="{{.X}}" y="{{.Y}}" width="10" height="10" fill="{{.Color}}"/><text x="{{.X}}" dx="14" y="{{.Y}}" dy="9">{{.Label}}</text>{{end}}</svg>
<h2>Report</h2><pre>{{.Text}}</pre>
<h2>Faults injected</h2><pre>{{range .R.Injected}}{{.Fault}}{{if .Skipped}}  (skipped: {{.Skipped}}){{end}}{{if .Err}}  (error: {{.Err}}){{end}}
{{end}}</pre></body></html>
`))
