package kafkatx

import (
	"context"
	"strconv"
	"sync"

	"go.uber.org/zap"
)

// Lanes runs several Loops side by side in one process: each is a member of
// the group with its own consumer and its own transactional producer, so the
// instance has several transactions in flight at once, one per lane, on the
// partitions the group gave that lane. One producer commits one transaction
// at a time, and the broker refuses the next one on the same transactional
// id until the previous one's markers are written; lanes take that wait off
// the path of the other partitions. (Kafka Streams' stream threads, each
// with its own producer, are the precedent.)
//
// Nothing of the loop's guarantees changes: every partition still has one
// owner, the one lane the group gave it to, and each lane has a stable
// transactional id of its own (the configured one, with "#i" appended when
// there is more than one lane), so a restarted instance fences every lane of
// its predecessor.
type Lanes struct {
	loops []*Loop
}

// NewLanes returns n lanes of cfg (n < 1 means 1). The handler, OnAssign,
// OnRevoke and OnPoison are shared and called from every lane's goroutine at
// once, each time for that lane's partitions only.
func NewLanes(cfg Config, n int, h Handler, log *zap.Logger) (*Lanes, error) {
	n = max(n, 1)
	ls := &Lanes{}
	for i := range n {
		c := cfg
		if n > 1 {
			c.TransactionalID = cfg.TransactionalID + "#" + strconv.Itoa(i)
		}
		l, err := New(c, h, log)
		if err != nil {
			return nil, err
		}
		ls.loops = append(ls.loops, l)
	}
	return ls, nil
}

// Run runs every lane until ctx is done or one of them stops on its own
// (an error, fenced): then the others are stopped too, since an instance
// running on part of its lanes would keep partitions it does not process.
// It returns the first lane's error, or nil after a graceful stop, and like
// Loop.Run it returns within StopTimeout of ctx being done.
func (ls *Lanes) Run(ctx context.Context) error {
	if len(ls.loops) == 1 {
		return ls.loops[0].Run(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for _, l := range ls.loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := l.Run(ctx)
			mu.Lock()
			if first == nil && err != nil {
				first = err
			}
			mu.Unlock()
			cancel()
		}()
	}
	wg.Wait()
	return first
}

// Stats adds up the lanes' counters.
func (ls *Lanes) Stats() Stats {
	var s Stats
	for _, l := range ls.loops {
		s.add(l.Stats())
	}
	return s
}
