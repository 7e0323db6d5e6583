package kafkatx

import (
	"time"

	"go.uber.org/zap"
)

// txnTiming is where one transaction's time went. The offsets are sent
// beside the handler (see attempt), so a transaction takes about begin +
// max(handler, offsets) + commit + after; offsetsWait is how long the
// loop waited for them once the handler had returned, and after is what
// followed the commit: the wait for the delivery reports of its records
// (which tell the offsets the commit gave them) and the handler's
// callbacks for a committed transaction.
type txnTiming struct {
	begin, handler, offsets, offsetsWait, commit, after time.Duration
}

// slowTxns logs the transactions that took longer than a threshold, with
// where their time went: a latency tail is a few such transactions, and
// the phase that grew says whose it is. A slow handler is the handler's
// own work or its store (a participant's Redis); slow offsets or a slow
// commit are the broker. One line a second at most, so that a loop that
// is slow all the time does not flood its log; the line says how many it
// left out, and the progress line counts them all.
type slowTxns struct {
	threshold time.Duration // zero or less: off
	every     time.Duration
	logged    time.Time
	unlogged  int
	// Since the previous progress line: how many, and the slowest.
	count int64
	worst time.Duration
}

// slowLogEvery is how often at most a loop logs a slow transaction.
const slowLogEvery = time.Second

func newSlowTxns(threshold time.Duration) *slowTxns {
	return &slowTxns{threshold: threshold, every: slowLogEvery}
}

// note looks at a committed transaction that took took, and logs it when
// it was slow and no line was logged in the last s.every. It reports
// whether it logged.
func (s *slowTxns) note(log *zap.Logger, now time.Time, took time.Duration, t txnTiming, records, produced int) bool {
	if s.threshold <= 0 || took < s.threshold {
		return false
	}
	s.count++
	s.worst = max(s.worst, took)
	if !s.logged.IsZero() && now.Sub(s.logged) < s.every {
		s.unlogged++
		return false
	}
	log.Warn("slow transaction", zap.Float64("took_ms", ms(took)), zap.Int("records", records), zap.Int("produced", produced),
		zap.Float64("begin_ms", ms(t.begin)), zap.Float64("handler_ms", ms(t.handler)),
		zap.Float64("offsets_ms", ms(t.offsets)), zap.Float64("offsets_wait_ms", ms(t.offsetsWait)),
		zap.Float64("commit_ms", ms(t.commit)), zap.Float64("after_commit_ms", ms(t.after)),
		zap.Int("not_logged_before", s.unlogged))
	s.logged, s.unlogged = now, 0
	return true
}

// progress returns the progress line's fields for the slow transactions
// since its previous line, and starts counting again. Nothing when there
// were none, or the watch is off.
func (s *slowTxns) progress() []zap.Field {
	if s.count == 0 {
		return nil
	}
	f := []zap.Field{zap.Int64("slow_txns", s.count), zap.Float64("slowest_ms", ms(s.worst))}
	s.count, s.worst = 0, 0
	return f
}

// ms is d in milliseconds, to the microsecond: the unit every timing the
// loops log is in.
func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
