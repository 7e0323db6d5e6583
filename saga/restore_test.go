package saga

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// snapshotRecord is a record of saga.state as the orchestrator writes it: the
// saga's state in a header, or no header for a record written before there
// was one, or no value for a tombstone.
func snapshotRecord(t testing.TB, p int32, in *Instance, header bool, at time.Time) kafkatx.Record {
	t.Helper()
	val, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	r := kafkatx.Record{Partition: p, Key: []byte(in.ID), Value: val, Timestamp: at}
	if header {
		r.Headers = []kafkatx.Header{{Key: HeaderState, Value: []byte(in.State)}}
	}
	return r
}

func tombstone(p int32, id string) kafkatx.Record {
	return kafkatx.Record{Partition: p, Key: []byte(id)}
}

// The restore keeps the last record of each saga: a live saga's newest
// snapshot, an ended saga's id and end time, nothing of a tombstoned one, and
// the ended sagas of each partition in the order they ended, whatever the
// order of their records.
func TestRestoreKeepsTheLastRecordOfEachSaga(t *testing.T) {
	t0 := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	inst := func(id string, st State, step int) *Instance {
		return &Instance{ID: id, Type: "order", State: st, Step: step,
			History: []Change{{At: t0.Add(time.Duration(step) * time.Second), To: st, Step: step}}}
	}
	recs := []kafkatx.Record{
		snapshotRecord(t, 0, inst("live", Running, 0), true, t0),
		snapshotRecord(t, 0, inst("ended", Running, 0), true, t0),
		snapshotRecord(t, 0, inst("gone", Running, 0), true, t0),
		snapshotRecord(t, 0, inst("live", Running, 1), true, t0.Add(time.Second)),
		snapshotRecord(t, 0, inst("ended", Completed, 2), true, t0.Add(5*time.Second)),
		snapshotRecord(t, 0, inst("gone", Cancelled, 1), true, t0.Add(time.Second)),
		tombstone(0, "gone"),
		// Partition 1: the later end comes first, and one saga predates the
		// state header (decoded to learn that it ended, at its last change).
		snapshotRecord(t, 1, inst("late", Cancelled, 1), true, t0.Add(9*time.Second)),
		snapshotRecord(t, 1, inst("early", Completed, 2), true, t0.Add(3*time.Second)),
		snapshotRecord(t, 1, inst("old", Completed, 2), false, t0.Add(7*time.Second)),
		snapshotRecord(t, 1, inst("failed", Failed, 1), true, t0.Add(2*time.Second)),
	}
	rs := newRestoring([]int32{0, 1})
	for _, r := range recs {
		rs.add(r)
	}
	var decoded []string
	o := &Orchestrator{}
	parts, err := rs.finish(func(part *partition, r kafkatx.Record) {
		var in Instance
		if err := json.Unmarshal(r.Value, &in); err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, in.ID)
		o.restoreSnapshot(part, r)
	})
	if err != nil {
		t.Fatal(err)
	}
	if rs.n != len(recs) {
		t.Errorf("counted %d records, want %d", rs.n, len(recs))
	}
	if len(decoded) != 3 {
		t.Errorf("decoded %v, want only the live sagas and the one without a state header", decoded)
	}

	p0, p1 := parts[0], parts[1]
	if in := p0.sagas["live"]; in == nil || in.Step != 1 {
		t.Errorf("live saga restored as %+v, want its newest snapshot (step 1)", in)
	}
	if _, ok := p0.sagas["ended"]; ok || !p0.ended["ended"].Equal(t0.Add(5*time.Second)) {
		t.Errorf("ended saga: in memory %v, remembered at %v", ok, p0.ended["ended"])
	}
	if _, ok := p0.ended["gone"]; ok || p0.sagas["gone"] != nil {
		t.Error("a tombstoned saga was restored")
	}
	if p1.sagas["failed"] == nil {
		t.Error("a Failed saga (waiting for an operator) was not restored as live")
	}
	var order []string
	for _, e := range p1.expiry {
		order = append(order, e.id)
	}
	if got := fmt.Sprint(order); got != "[old early late]" {
		t.Errorf("partition 1 forgets in the order %s, want the order of their ends [old early late]", got)
	}
	if len(p1.ended) != 3 || len(p0.expiry) != 1 {
		t.Errorf("remembered %d on partition 1 (want 3), %d on partition 0 (want 1)", len(p1.ended), len(p0.expiry))
	}
}

// A forgotten head of the expiry queue does not cost a copy of the rest.
func TestForgetDropsTheOldestEnded(t *testing.T) {
	p := newPartition()
	t0 := time.Now()
	for i := range 10 {
		p.remember(fmt.Sprint(i), t0.Add(time.Duration(i)*time.Second))
	}
	gone := p.expired(t0.Add(20*time.Second), 15*time.Second, 100)
	if len(gone) != 6 || gone[0].id != "0" || gone[5].id != "5" {
		t.Fatalf("expired %v, want 0..5", gone)
	}
	p.forget(len(gone))
	if len(p.expiry) != 4 || p.expiry[0].id != "6" || len(p.ended) != 4 {
		t.Fatalf("after forgetting 6: expiry %v, %d remembered", p.expiry, len(p.ended))
	}
	p.remember("10", t0.Add(10*time.Second))
	if last := p.expiry[len(p.expiry)-1]; last.id != "10" {
		t.Errorf("a new end went to %v, not the back", p.expiry)
	}
}

// BenchmarkRestoreRecords is the restore's own cost per record of saga.state,
// on what a busy topic holds between compactions: per saga, three running
// snapshots, the ended one and, for most, its tombstone. b.N counts sagas.
func BenchmarkRestoreRecords(b *testing.B) {
	t0 := time.Now()
	run := snapshotRecord(b, 0, &Instance{ID: "x", Type: "order", State: Running}, true, t0)
	end := snapshotRecord(b, 0, &Instance{ID: "x", Type: "order", State: Completed}, true, t0)
	recs := make([]kafkatx.Record, 0, 5*b.N)
	for i := range b.N {
		key := []byte(fmt.Sprintf("order-%012d", i))
		p := int32(i % 12)
		for range 3 {
			recs = append(recs, kafkatx.Record{Partition: p, Key: key, Value: run.Value, Headers: run.Headers})
		}
		recs = append(recs, kafkatx.Record{Partition: p, Key: key, Value: end.Value, Headers: end.Headers,
			Timestamp: t0.Add(time.Duration(i) * time.Microsecond)})
		if i%4 != 0 {
			recs = append(recs, kafkatx.Record{Partition: p, Key: key})
		}
	}
	parts := make([]int32, 12)
	for i := range parts {
		parts[i] = int32(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	rs := newRestoring(parts)
	for _, r := range recs {
		rs.add(r)
	}
	if _, err := rs.finish(func(*partition, kafkatx.Record) { b.Fatal("no saga is live") }); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(recs))/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkForgetAtSteadyState is the tick's work at a steady rate: 100
// sagas end and the 100 oldest of 100,000 remembered are forgotten.
func BenchmarkForgetAtSteadyState(b *testing.B) {
	p := newPartition()
	t0 := time.Now()
	ids := make([]string, 100_000+100*b.N)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	for i := range 100_000 {
		p.remember(ids[i], t0.Add(time.Duration(i)))
	}
	next := 100_000
	b.ResetTimer()
	for range b.N {
		p.forget(100)
		for range 100 {
			p.remember(ids[next], t0.Add(time.Duration(next)))
			next++
		}
	}
	if len(p.ended) != 100_000 {
		b.Fatalf("%d remembered, want 100000", len(p.ended))
	}
}
