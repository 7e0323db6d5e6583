package saga_test

import (
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// An ended saga leaves the orchestrator's memory when it ends; inside its
// retention window a second start with its id is ignored (one run, one set
// of commands); after the window its snapshot is tombstoned, and a restarted
// orchestrator restores nothing of it.
func TestEndedSagaIsForgottenAfterItsWindow(t *testing.T) {
	w := newWorld(t, 2)
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	w.runParticipants(t, log)
	cfg := w.orchestratorConfig("orch", "o0")
	const window = 4 * time.Second
	cfg.Retention = window
	o, err := saga.NewOrchestrator(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	stop := runBg(t, o.Run)

	ids := []string{"ret-1", "ret-2", "ret-3", "ret-4"}
	w.start(t, ids, func(i int) testData {
		if i == 3 {
			return testData{Fail: "charge"} // one cancels: both ends leave memory
		}
		return testData{}
	})
	w.waitTerminal(t, ids, 30*time.Second)
	kafkatest.WaitFor(t, 10*time.Second, "the ended sagas to leave memory", func() bool {
		st := o.Stats()
		return st.Live == 0 && st.Remembered == int64(len(ids))
	})

	// Inside the window: the same start again is passed over.
	ignored := o.Stats().Ignored
	w.start(t, ids[:1], func(int) testData { return testData{} })
	kafkatest.WaitFor(t, 10*time.Second, "the second start to be ignored", func() bool {
		return o.Stats().Ignored > ignored
	})
	w.commands(t) // fails on any command sent twice
	if st := o.Stats(); st.Live != 0 {
		t.Fatalf("a second start inside the window made a live saga again: %+v", st)
	}

	// After the window: tombstoned and forgotten.
	kafkatest.WaitFor(t, window+20*time.Second, "the ended sagas to be forgotten", func() bool {
		st := o.Stats()
		return st.Forgotten == int64(len(ids)) && st.Remembered == 0
	})
	if snaps := w.snapshots(t); len(snaps) != 0 {
		t.Errorf("saga.state still holds %d sagas after their window", len(snaps))
	}
	stop()

	// A new orchestrator restores none of them.
	o2, err := saga.NewOrchestrator(cfg, log.Named("second"))
	if err != nil {
		t.Fatal(err)
	}
	runBg(t, o2.Run)
	kafkatest.WaitFor(t, 60*time.Second, "the second orchestrator to own the partitions", func() bool {
		return o2.LoopStats().Assigned > 0
	})
	if st := o2.Stats(); st.Live != 0 || st.Remembered != 0 {
		t.Errorf("restored after the window: %+v", st)
	}
	for _, id := range ids {
		if _, ok := o2.Instance(id); ok {
			t.Errorf("saga %s restored after its window", id)
		}
	}
}
