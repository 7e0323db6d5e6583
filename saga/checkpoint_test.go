package saga_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// A restarted orchestrator reads saga.state on from its checkpoint, and what
// it then knows is what a read of the whole topic would tell: the sagas that
// ended after the checkpoint are remembered (their second start ignored),
// and one that was running in the checkpoint goes on to its end. The
// checkpoint used is an older one, as after a crash: the records written
// after it are read on top of it.
func TestRestartReadsOnFromItsCheckpoint(t *testing.T) {
	w := newWorld(t, 2)
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	w.runParticipants(t, log)
	cfg := w.orchestratorConfig("orch", "o0")
	cfg.CheckpointDir, cfg.CheckpointEvery = filepath.Join(t.TempDir(), "ck"), 200*time.Millisecond
	o1, err := saga.NewOrchestrator(cfg, log.Named("first"))
	if err != nil {
		t.Fatal(err)
	}
	stop1 := runBg(t, o1.Run)

	before, silent := ids("before", 8), ids("silent", 2)
	w.start(t, before, func(i int) testData {
		if i == 0 {
			return testData{Fail: "charge"}
		}
		return testData{}
	})
	// These wait for a charge reply that never comes: live in the
	// checkpoint, they time out and compensate after the restart.
	w.start(t, silent, func(int) testData { return testData{Silent: "charge"} })
	w.waitTerminal(t, before, 30*time.Second)
	kafkatest.WaitFor(t, 10*time.Second, "the first sagas to end in memory", func() bool {
		return o1.Stats().Remembered == int64(len(before))
	})
	// Checkpoints written after that (the writer runs every 200ms).
	kafkatest.WaitFor(t, 10*time.Second, "checkpoints of every change", func() bool {
		return o1.Stats().Unsaved == 0
	})
	old := filepath.Join(t.TempDir(), "old")
	if err := os.CopyFS(old, os.DirFS(cfg.CheckpointDir)); err != nil {
		t.Fatal(err)
	}

	after := ids("after", 5)
	w.start(t, after, func(int) testData { return testData{} })
	w.waitTerminal(t, after, 30*time.Second)
	stop1()

	// A crash after the older checkpoint: the newer ones are lost.
	if err := os.RemoveAll(cfg.CheckpointDir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(old, cfg.CheckpointDir); err != nil {
		t.Fatal(err)
	}
	o2, err := saga.NewOrchestrator(cfg, log.Named("second"))
	if err != nil {
		t.Fatal(err)
	}
	stop2 := runBg(t, o2.Run)
	kafkatest.WaitFor(t, 60*time.Second, "the second orchestrator to restore", func() bool {
		return o2.Stats().FromCheckpoint > 0
	})
	st := o2.Stats()
	total := len(kafkatest.Read(t, w.brokers, w.state, kafkatest.ReadCommitted))
	if st.Restored == 0 || st.Restored >= int64(total) {
		t.Errorf("the restore read %d of saga.state's %d records: want the ones after the checkpoint only", st.Restored, total)
	}
	if st.Remembered < int64(len(before)+len(after)) {
		t.Errorf("remembered %d ended sagas, want at least %d: %+v", st.Remembered, len(before)+len(after), st)
	}

	// Second starts of sagas that ended before and after the checkpoint are
	// both ignored; the silent ones end.
	w.start(t, []string{before[1], after[1]}, func(int) testData { return testData{} })
	w.waitTerminal(t, silent, 60*time.Second)
	kafkatest.WaitFor(t, 10*time.Second, "the second starts to be ignored", func() bool {
		return o2.Stats().Ignored >= st.Ignored+2
	})
	w.commands(t) // fails on any command sent twice
	kafkatest.WaitFor(t, 10*time.Second, "every saga to end in memory", func() bool {
		s := o2.Stats()
		return s.Live == 0 && s.Remembered == int64(len(before)+len(after)+len(silent))
	})
	stop2()

	// A clean stop writes the checkpoints as the partitions leave: the next
	// start reads nothing of the topic.
	o3, err := saga.NewOrchestrator(cfg, log.Named("third"))
	if err != nil {
		t.Fatal(err)
	}
	runBg(t, o3.Run)
	kafkatest.WaitFor(t, 60*time.Second, "the third orchestrator to restore", func() bool {
		return o3.Stats().FromCheckpoint > 0
	})
	if st := o3.Stats(); st.Restored != 0 || st.Remembered != int64(len(before)+len(after)+len(silent)) {
		t.Errorf("after a clean stop: %+v, want nothing read and every saga remembered", st)
	}
}
