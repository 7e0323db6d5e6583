package saga

import (
	"slices"
	"sync"
	"time"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// restoring gathers what a restore keeps of saga.state, record by record,
// on top of the partitions' checkpoints when there are any.
//
// Most of the topic is snapshots that a later one of the same saga replaces,
// until compaction removes them, and ended sagas followed by their
// tombstones. So the last record of each saga wins, and only the last
// snapshot of a live saga is decoded (the others are kept as bytes until
// replaced); ended sagas, told apart by the state header, are not decoded
// at all. Each record costs a map operation: the restore of a topic with a
// million sagas is bounded by reading it, not by this.
//
// A checkpoint holds up to a million ended sagas and the records after it a
// few thousand, so the two are kept apart: the checkpoint decodes in the
// background while those records are read, and at the end its sagas go
// straight into the partition (already in end order), except the few that
// a record read after it replaced.
type restoring struct {
	parts map[int32]*partition
	live  map[string]pendingSnapshot
	ended map[string]endedIn
	// gone holds the sagas of checkpointed partitions whose last record
	// read is a tombstone: they leave the checkpoint's state too.
	gone map[string]struct{}
	n    int
	// bytes counts what was read of the topic; seeded the sagas taken
	// from checkpoints.
	bytes  int64
	seeded int

	base    map[int32]*checkpoint
	loading sync.WaitGroup
	mu      sync.Mutex
	loadErr error
}

type pendingSnapshot struct {
	p   int32
	val []byte
}

type endedIn struct {
	p  int32
	at time.Time
}

func newRestoring(partitions []int32) *restoring {
	rs := &restoring{parts: map[int32]*partition{}, live: map[string]pendingSnapshot{}, ended: map[string]endedIn{},
		gone: map[string]struct{}{}, base: map[int32]*checkpoint{}}
	for _, p := range partitions {
		rs.parts[p] = newPartition()
	}
	return rs
}

// seed puts c, whose header and checksum were read, under the records of its
// partition, and decodes the rest of it in the background. It must come
// before the partition's first record.
func (rs *restoring) seed(c *checkpoint, onBad func(*checkpoint)) {
	rs.base[c.Partition] = c
	rs.loading.Add(1)
	go func() {
		defer rs.loading.Done()
		if err := c.load(); err != nil {
			if onBad != nil {
				onBad(c)
			}
			rs.mu.Lock()
			rs.loadErr = err
			rs.mu.Unlock()
		}
	}()
}

func (rs *restoring) add(r kafkatx.Record) {
	rs.n++
	rs.bytes += int64(len(r.Key) + len(r.Value))
	id := string(r.Key)
	switch st := State(r.Header(HeaderState)); {
	case len(r.Value) == 0:
		// A tombstone: the saga was forgotten after its window.
		delete(rs.live, id)
		delete(rs.ended, id)
		if rs.base[r.Partition] != nil {
			rs.gone[id] = struct{}{}
		}
	case st == Completed || st == Cancelled:
		// Ended: only its id and end time are kept, and both are in the
		// record.
		delete(rs.live, id)
		delete(rs.gone, id)
		rs.ended[id] = endedIn{r.Partition, r.Timestamp}
	default:
		// Live, or written before snapshots carried their state (decoded
		// at the end like a live one, and remembered if it ended).
		delete(rs.ended, id)
		delete(rs.gone, id)
		rs.live[id] = pendingSnapshot{r.Partition, r.Value}
	}
}

// replaced reports whether a record read after the checkpoints names id.
func (rs *restoring) replaced(id string) bool {
	if _, ok := rs.live[id]; ok {
		return true
	}
	if _, ok := rs.ended[id]; ok {
		return true
	}
	_, ok := rs.gone[id]
	return ok
}

// finish fills the partitions: ended sagas with their expiry in end order,
// and the live sagas decoded by decode. It fails if a checkpoint did not
// decode.
func (rs *restoring) finish(decode func(*partition, kafkatx.Record)) (map[int32]*partition, error) {
	rs.loading.Wait()
	if rs.loadErr != nil {
		return nil, rs.loadErr
	}
	check := len(rs.live)+len(rs.ended)+len(rs.gone) > 0
	for p, c := range rs.base {
		part := rs.parts[p]
		part.ended = make(map[string]time.Time, len(c.ended))
		kept := c.ended[:0]
		for _, e := range c.ended {
			if check && rs.replaced(e.id) {
				continue
			}
			part.ended[e.id] = e.at
			kept = append(kept, e)
		}
		part.expiry = kept
		rs.seeded += len(c.ended) + len(c.live)
	}
	after := map[int32][]endedSaga{}
	for id, e := range rs.ended {
		rs.parts[e.p].ended[id] = e.at
		after[e.p] = append(after[e.p], endedSaga{id: id, at: e.at})
	}
	for p, es := range after {
		slices.SortFunc(es, func(a, b endedSaga) int { return a.at.Compare(b.at) })
		rs.parts[p].expiry = mergeByEnd(rs.parts[p].expiry, es)
	}
	for p, c := range rs.base {
		for _, l := range c.live {
			if !check || !rs.replaced(l.id) {
				decode(rs.parts[p], kafkatx.Record{Partition: p, Value: l.val})
			}
		}
	}
	for _, l := range rs.live {
		decode(rs.parts[l.p], kafkatx.Record{Partition: l.p, Value: l.val})
	}
	return rs.parts, nil
}

// mergeByEnd merges two lists of ended sagas sorted by end time. Those read
// after a checkpoint mostly ended after all of it: then it is an append.
func mergeByEnd(a, b []endedSaga) []endedSaga {
	if len(a) == 0 || !b[0].at.Before(a[len(a)-1].at) {
		return append(a, b...)
	}
	out := make([]endedSaga, 0, len(a)+len(b))
	for len(a) > 0 && len(b) > 0 {
		if b[0].at.Before(a[0].at) {
			out, b = append(out, b[0]), b[1:]
		} else {
			out, a = append(out, a[0]), a[1:]
		}
	}
	return append(append(out, a...), b...)
}
