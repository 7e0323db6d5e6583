package saga

import (
	"errors"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

func testCheckpoint(at time.Time) *checkpoint {
	c := &checkpoint{checkpointHeader: checkpointHeader{Cluster: "c1", Topic: "saga.state", TopicID: "t1", Partition: 3, Next: 1234, At: at}}
	c.live = []liveSnapshot{{id: "live-1", val: []byte(`{"id":"live-1"}`)}}
	for i, id := range []string{"a", "b", "c"} {
		c.ended = append(c.ended, endedSaga{id: id, at: at.Add(time.Duration(i) * time.Second)})
	}
	return c
}

func TestCheckpointRoundTripAndDamage(t *testing.T) {
	now := time.Now()
	c := testCheckpoint(now)
	b, err := c.encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.At.Equal(c.At) || got.Next != c.Next || got.Partition != 3 || got.TopicID != "t1" {
		t.Errorf("header %+v, want %+v", got.checkpointHeader, c.checkpointHeader)
	}
	if len(got.live) != 1 || got.live[0].id != "live-1" || string(got.live[0].val) != `{"id":"live-1"}` {
		t.Errorf("live %+v", got.live)
	}
	if len(got.ended) != 3 || got.ended[2].id != "c" || !got.ended[2].at.Equal(c.ended[2].at) {
		t.Errorf("ended %+v", got.ended)
	}
	// Every truncation and every flipped byte is refused, never misread.
	for n := range len(b) {
		if _, err := decodeCheckpoint(b[:n]); !errors.Is(err, errBadCheckpoint) {
			t.Fatalf("truncated to %d bytes: %v", n, err)
		}
		bad := append([]byte(nil), b...)
		bad[n] ^= 0x20
		if _, err := decodeCheckpoint(bad); !errors.Is(err, errBadCheckpoint) {
			t.Fatalf("byte %d flipped: %v", n, err)
		}
	}
}

func TestReadCheckpointRefusesAnotherTopicOrAnOldOne(t *testing.T) {
	dir, now := t.TempDir(), time.Now()
	c := testCheckpoint(now.Add(-time.Minute))
	if _, err := writeCheckpoint(dir, c); err != nil {
		t.Fatal(err)
	}
	want := c.checkpointHeader
	want.Next, want.At = 0, time.Time{}
	if got, err := readCheckpoint(dir, want, now); err != nil || got.Next != 1234 {
		t.Fatalf("the checkpoint itself: %v", err)
	}
	// The same topic name created again has a new id: its file is another.
	again := want
	again.TopicID = "t2"
	if _, err := readCheckpoint(dir, again, now); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("another topic id read a checkpoint: %v", err)
	}
	// A file moved under the wrong name is refused by its header.
	other := want
	other.Partition = 4
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(checkpointFile(dir, want), checkpointFile(dir, other)); err != nil {
		t.Fatal(err)
	}
	if _, err := readCheckpoint(dir, other, now); !errors.Is(err, errBadCheckpoint) {
		t.Errorf("a checkpoint of partition 3 read for partition 4: %v", err)
	}
	// Older than CheckpointMaxAge: compaction may have dropped tombstones
	// it did not see.
	c.At = now.Add(-CheckpointMaxAge - time.Second)
	if _, err := writeCheckpoint(dir, c); err != nil {
		t.Fatal(err)
	}
	if _, err := readCheckpoint(dir, want, now); err == nil || !strings.Contains(err.Error(), "too old") {
		t.Errorf("an old checkpoint was used: %v", err)
	}
	pruneCheckpoints(dir, now.Add(CheckpointMaxAge+time.Minute))
	if _, err := os.Stat(checkpointFile(dir, want)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an unusable checkpoint was kept: %v", err)
	}
	if left, err := os.ReadDir(dir); err != nil || len(left) != 0 {
		t.Errorf("the directory still holds %v (%v)", left, err)
	}
}

// The records after a checkpoint apply on top of it as they would on top of
// the records before it: the last record of each saga wins.
func TestRestoreFromACheckpointAppliesTheRecordsAfterIt(t *testing.T) {
	now := time.Now()
	c := testCheckpoint(now)
	c.Partition = 0
	rs := newRestoring([]int32{0})
	rs.seed(c, nil)
	inst := func(id string, st State) *Instance {
		return &Instance{ID: id, Type: "order", State: st, History: []Change{{At: now, To: st}}}
	}
	rs.add(tombstone(0, "a"))                                          // forgotten after the checkpoint
	rs.add(snapshotRecord(t, 0, inst("b", Running), true, now))        // the last record wins, whatever it says
	rs.add(snapshotRecord(t, 0, inst("live-1", Completed), true, now)) // the live one ended
	rs.add(snapshotRecord(t, 0, inst("d", Cancelled), true, now))      // began and ended after it
	var decoded []string
	parts, err := rs.finish(func(_ *partition, r kafkatx.Record) { decoded = append(decoded, string(r.Value)) })
	if err != nil {
		t.Fatal(err)
	}
	p := parts[0]
	if _, ok := p.ended["a"]; ok {
		t.Error("a tombstoned saga is remembered")
	}
	if _, ok := p.ended["b"]; ok {
		t.Error("b is remembered as ended after a record that says it runs")
	}
	for _, id := range []string{"c", "live-1", "d"} {
		if _, ok := p.ended[id]; !ok {
			t.Errorf("%s is not remembered as ended", id)
		}
	}
	// Ended after the checkpoint but before its last end: merged in order.
	if len(p.expiry) != 3 || p.expiry[2].id != "c" || !slices.IsSortedFunc(p.expiry, func(a, b endedSaga) int { return a.at.Compare(b.at) }) {
		t.Errorf("expiry %+v, want live-1 and d, then c", p.expiry)
	}
	if len(decoded) != 1 || rs.seeded != 4 || rs.n != 4 {
		t.Errorf("decoded %q, seeded %d, read %d", decoded, rs.seeded, rs.n)
	}
}

// What a checkpoint costs with 900,000 ended sagas in it (15 minutes of
// ends at 1,000 sagas/s): writing it, which the orchestrator does every
// CheckpointEvery, and loading it into a restore.
func BenchmarkCheckpoint900k(b *testing.B) {
	now := time.Now()
	c := &checkpoint{checkpointHeader: checkpointHeader{Cluster: "c", Topic: "saga.state", TopicID: "t", Next: 1, At: now}}
	for i := range 900_000 {
		c.ended = append(c.ended, endedSaga{id: "ord-" + strconv.Itoa(1_000_000_000+i) + "-4f1c2a9e", at: now.Add(time.Duration(i) * time.Millisecond)})
	}
	dir := b.TempDir()
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			n, err := writeCheckpoint(dir, c)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(n))
		}
	})
	want := c.checkpointHeader
	b.Run("load", func(b *testing.B) {
		for b.Loop() {
			got, err := readCheckpoint(dir, want, now)
			if err != nil {
				b.Fatal(err)
			}
			rs := newRestoring([]int32{0})
			rs.seed(got, nil)
			if parts, err := rs.finish(nil); err != nil || len(parts[0].ended) != 900_000 {
				b.Fatal(err)
			}
		}
	})
}

// A checkpoint is trusted for CheckpointMaxAge because compaction keeps a
// tombstone on saga.state for delete.retention.ms: the topic as `sagaflow
// topics` makes it must keep them at least twice as long.
func TestCheckpointAgeStaysWithinTheTombstoneRetention(t *testing.T) {
	for _, spec := range kafkatx.SagaflowTopics(1) {
		if spec.Name != kafkatx.TopicSagaState {
			continue
		}
		ms, err := strconv.ParseInt(spec.Config["delete.retention.ms"], 10, 64)
		if err != nil {
			t.Fatalf("saga.state delete.retention.ms: %v", err)
		}
		if keep := time.Duration(ms) * time.Millisecond; keep < 2*CheckpointMaxAge {
			t.Errorf("saga.state keeps tombstones %s, a checkpoint is used up to %s old: want at least twice", keep, CheckpointMaxAge)
		}
		return
	}
	t.Fatal("no saga.state in SagaflowTopics")
}
