package saga

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// A checkpoint is what an orchestrator knew of one partition of saga.state,
// written to a local file now and then, so that a restart reads the topic
// from where the checkpoint ends instead of from its beginning. Kafka
// Streams keeps its state stores the same way (a local store and the
// changelog offset it reflects).
//
// Why a restore from a checkpoint is the restore from the beginning: every
// record on saga.state is the whole state of one saga (a snapshot, or a
// tombstone that forgets it), so the state a partition's log describes is
// the last record of each saga. A checkpoint holds that, as of every
// committed record below its offset Next, and nothing that was not committed
// (the orchestrator changes its memory only after a commit). Reading on from
// Next then lands on the same state. Reading from an offset a little lower
// than need be is harmless (a record applied twice is the same last record),
// so a checkpoint written by any owner of the partition, a zombie's included,
// is as good as any other; only how much is read after it differs.
//
// What compaction could take away is a tombstone at or above Next, once it
// is older than the topic's delete.retention.ms (an hour, set by `sagaflow
// topics`): the checkpoint would then bring back a saga that was forgotten.
// So a checkpoint is used only while the state in it is younger than
// CheckpointMaxAge, half that.
//
// A checkpoint names the cluster and the topic's id: a topic deleted and
// created again under its name has a new id, and what was known of the old
// one is not used for the new one.

// CheckpointMaxAge is how old the state in a checkpoint may be to be used; an
// older one is deleted. It must stay below saga.state's delete.retention.ms.
const CheckpointMaxAge = 30 * time.Minute

// DefaultCheckpointEvery is OrchestratorConfig.CheckpointEvery's default.
const DefaultCheckpointEvery = 10 * time.Second

const checkpointMagic = "sagaflow-checkpoint 1\n"

// checkpointHeader identifies what a checkpoint file is about.
type checkpointHeader struct {
	Cluster   string `json:"cluster"`
	Topic     string `json:"topic"`
	TopicID   string `json:"topic_id"`
	Partition int32  `json:"partition"`
	// Next is the offset to read on from; At is when the state was last
	// known to be that of the log below Next (a restore or a commit).
	Next int64     `json:"next"`
	At   time.Time `json:"at"`
}

type liveSnapshot struct {
	id  string
	val []byte
}

// checkpoint is one partition's state: live sagas as their snapshots, ended
// ones by id and end time, oldest end first.
type checkpoint struct {
	checkpointHeader
	live  []liveSnapshot
	ended []endedSaga
	// instances are the live sagas before they are encoded into live,
	// part the partition they were taken from; body what follows the
	// header until load decodes it.
	instances []*Instance
	part      *partition
	body      []byte
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// encode lays the checkpoint out as: magic, header (JSON), live snapshots,
// ended sagas, each count and length a uvarint, end times as Unix
// nanoseconds, then a CRC-32C of all before it.
func (c *checkpoint) encode() ([]byte, error) {
	head, err := json.Marshal(c.checkpointHeader)
	if err != nil {
		return nil, err
	}
	n := len(checkpointMagic) + len(head) + 32
	for _, l := range c.live {
		n += len(l.id) + len(l.val) + 8
	}
	for _, e := range c.ended {
		n += len(e.id) + 12
	}
	b := make([]byte, 0, n)
	b = append(b, checkpointMagic...)
	b = appendBytes(b, head)
	b = binary.AppendUvarint(b, uint64(len(c.live)))
	for _, l := range c.live {
		b = appendBytes(appendBytes(b, []byte(l.id)), l.val)
	}
	b = binary.AppendUvarint(b, uint64(len(c.ended)))
	for _, e := range c.ended {
		b = appendBytes(b, []byte(e.id))
		b = binary.AppendVarint(b, e.at.UnixNano())
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable)), nil
}

func appendBytes(b, v []byte) []byte {
	return append(binary.AppendUvarint(b, uint64(len(v))), v...)
}

var errBadCheckpoint = errors.New("saga: not a readable checkpoint")

// decodeCheckpoint reads what encode wrote; a truncated or altered file is
// errBadCheckpoint.
func decodeCheckpoint(b []byte) (*checkpoint, error) {
	c, err := openCheckpoint(b)
	if err != nil {
		return nil, err
	}
	return c, c.load()
}

// openCheckpoint checks b's checksum and reads its header; load reads the
// rest.
func openCheckpoint(b []byte) (*checkpoint, error) {
	if len(b) < len(checkpointMagic)+4 || !bytes.HasPrefix(b, []byte(checkpointMagic)) {
		return nil, errBadCheckpoint
	}
	body := b[:len(b)-4]
	if crc32.Checksum(body, crcTable) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, fmt.Errorf("%w: checksum", errBadCheckpoint)
	}
	r := &byteReader{b: body[len(checkpointMagic):]}
	c := &checkpoint{}
	if err := json.Unmarshal(r.bytes(), &c.checkpointHeader); err != nil || r.bad {
		return nil, fmt.Errorf("%w: header: %v", errBadCheckpoint, err)
	}
	c.body = r.b
	return c, nil
}

// load decodes the sagas. The ids of the ended ones, most of the file, are
// cut from one string: a million small strings cost the restore more in
// allocation and garbage collection than all the rest. The string stays in
// memory until the last of them is forgotten, one retention window at most.
func (c *checkpoint) load() error {
	if c.body == nil {
		return nil // made here, not read
	}
	all := string(c.body)
	r := &byteReader{b: c.body}
	at := func(b []byte) string {
		off := len(c.body) - len(r.b) - len(b)
		return all[off : off+len(b)]
	}
	c.live = make([]liveSnapshot, r.count())
	for i := range c.live {
		id := at(r.bytes())
		c.live[i] = liveSnapshot{id: id, val: r.bytes()}
	}
	c.ended = make([]endedSaga, r.count())
	for i := range c.ended {
		id := at(r.bytes())
		c.ended[i] = endedSaga{id: id, at: time.Unix(0, r.varint())}
	}
	c.body = nil
	if r.bad || len(r.b) != 0 {
		return fmt.Errorf("%w: layout", errBadCheckpoint)
	}
	return nil
}

// byteReader takes uvarint-framed fields off b; a field that does not fit
// sets bad and yields zero values from then on.
type byteReader struct {
	b   []byte
	bad bool
}

func (r *byteReader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *byteReader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad, r.b = true, nil
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count is a count of fields that follow, each at least a byte long, so a
// corrupt count cannot ask for more memory than the file has.
func (r *byteReader) count() int {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return 0
	}
	return int(n)
}

func (r *byteReader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.bad, r.b = true, nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// checkpointFile is where the checkpoint of partition p of the topic lives.
func checkpointFile(dir string, h checkpointHeader) string {
	return filepath.Join(dir, h.Cluster, h.Topic+"-"+h.TopicID, strconv.Itoa(int(h.Partition))+".ckpt")
}

// writeCheckpoint replaces the partition's checkpoint file. The new file is
// written aside and renamed over the old, so a crash leaves one or the
// other. It is not synced: after a crash of the machine a torn file fails
// its checksum and the restore reads the topic from its beginning.
func writeCheckpoint(dir string, c *checkpoint) (int, error) {
	b, err := c.encode()
	if err != nil {
		return 0, err
	}
	path := checkpointFile(dir, c.checkpointHeader)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".ckpt-*")
	if err != nil {
		return 0, err
	}
	_, werr := f.Write(b)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(f.Name(), path)
	}
	if werr != nil {
		os.Remove(f.Name())
		return 0, werr
	}
	return len(b), nil
}

// readCheckpoint returns the usable checkpoint for what want names (its
// Next and At are ignored), or why there is none. Its sagas are not decoded
// yet (see load).
func readCheckpoint(dir string, want checkpointHeader, now time.Time) (*checkpoint, error) {
	b, err := os.ReadFile(checkpointFile(dir, want))
	if err != nil {
		return nil, err
	}
	c, err := openCheckpoint(b)
	if err != nil {
		return nil, err
	}
	got := c.checkpointHeader
	got.Next, got.At = want.Next, want.At
	if got != want {
		return nil, fmt.Errorf("%w: it is about %+v", errBadCheckpoint, c.checkpointHeader)
	}
	if age := now.Sub(c.At); age > CheckpointMaxAge {
		return nil, fmt.Errorf("checkpoint too old to trust (%s, at most %s)", age.Round(time.Second), CheckpointMaxAge)
	}
	return c, nil
}

// pruneCheckpoints deletes the files under dir that no restore would use
// any more (older than CheckpointMaxAge), so that the directory stays
// bounded across topics and clusters that come and go (tests make many).
func pruneCheckpoints(dir string, now time.Time) {
	var dirs []string
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
		case d.IsDir():
			if path != dir {
				dirs = append(dirs, path)
			}
		default:
			if info, err := d.Info(); err == nil && now.Sub(info.ModTime()) > CheckpointMaxAge {
				os.Remove(path)
			}
		}
		return nil
	})
	// Deepest first; a directory that still holds a file stays.
	for _, d := range slices.Backward(dirs) {
		os.Remove(d)
	}
}

// identity returns the cluster and topic id of the state topic, asked of
// Kafka once. Two restores may both ask; they get the same answer.
func (o *Orchestrator) identity(ctx context.Context) (checkpointHeader, error) {
	if id := o.ident.Load(); id != nil {
		return *id, nil
	}
	cluster, id, err := kafkatx.TopicIdentity(ctx, o.cfg.Brokers, o.cfg.StateTopic)
	if err != nil {
		return checkpointHeader{}, err
	}
	h := checkpointHeader{Cluster: cluster, Topic: o.cfg.StateTopic, TopicID: id}
	o.ident.Store(&h)
	return h, nil
}

// checkpoints writes the checkpoints of owned partitions every
// CheckpointEvery until ctx ends.
func (o *Orchestrator) checkpoints(ctx context.Context) {
	t := time.NewTicker(o.cfg.CheckpointEvery)
	defer t.Stop()
	var pruned time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			o.checkpoint(nil)
			if now.Sub(pruned) > CheckpointMaxAge/3 {
				pruneCheckpoints(o.cfg.CheckpointDir, now)
				pruned = now
			}
		}
	}
}

// checkpoint writes the checkpoint of each partition in only (all owned ones
// when nil) whose state changed since its last one.
func (o *Orchestrator) checkpoint(only []int32) {
	id := o.ident.Load()
	if o.cfg.CheckpointDir == "" || id == nil {
		return
	}
	ident := *id
	o.mu.Lock()
	var todo []*checkpoint
	for p, part := range o.parts {
		if (only != nil && !slices.Contains(only, p)) || part.next < 0 || !part.nextAt.After(part.written) {
			continue
		}
		c := &checkpoint{checkpointHeader: ident, ended: slices.Clone(part.expiry)}
		c.Partition, c.Next, c.At = p, part.next, part.nextAt
		// Committed instances are never changed in place (Transition
		// returns a new one), so they are encoded below, unlocked.
		c.instances = slices.Collect(maps.Values(part.sagas))
		c.part = part
		todo = append(todo, c)
	}
	o.mu.Unlock()
	for _, c := range todo {
		began := time.Now()
		c.live = make([]liveSnapshot, len(c.instances))
		var err error
		for i, in := range c.instances {
			c.live[i].id = in.ID
			if c.live[i].val, err = EncodeSnapshot(in); err != nil {
				break
			}
		}
		n := 0
		if err == nil {
			n, err = writeCheckpoint(o.cfg.CheckpointDir, c)
		}
		if err != nil {
			// Tried again at the next pass.
			o.log.Warn("checkpoint not written; a restart reads more of saga.state", zap.Int32("partition", c.Partition), zap.Error(err))
			continue
		}
		o.mu.Lock()
		if c.part.written.Before(c.At) {
			c.part.written = c.At
		}
		o.mu.Unlock()
		o.log.Debug("checkpoint written", zap.Int32("partition", c.Partition), zap.Int64("next", c.Next),
			zap.Int("live", len(c.live)), zap.Int("ended", len(c.ended)), zap.Int("bytes", n), zap.Duration("took", time.Since(began)))
	}
}

// fromCheckpoints seeds rs with the usable checkpoints of partitions and
// returns where to read each partition on from (-1: the beginning).
func (o *Orchestrator) fromCheckpoints(ctx context.Context, rs *restoring, partitions []int32, now time.Time) map[int32]int64 {
	from := make(map[int32]int64, len(partitions))
	for _, p := range partitions {
		from[p] = -1
	}
	if o.cfg.CheckpointDir == "" {
		return from
	}
	ident, err := o.identity(ctx)
	if err != nil {
		o.log.Warn("saga.state not identified; restoring without checkpoints", zap.Error(err))
		return from
	}
	for _, p := range partitions {
		want := ident
		want.Partition = p
		c, err := readCheckpoint(o.cfg.CheckpointDir, want, now)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				o.log.Info("checkpoint not used; this partition is read from the beginning", zap.Int32("partition", p), zap.Error(err))
			}
			continue
		}
		rs.seed(c, func(c *checkpoint) { os.Remove(checkpointFile(o.cfg.CheckpointDir, c.checkpointHeader)) })
		from[p] = c.Next
	}
	return from
}
