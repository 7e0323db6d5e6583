package saga_test

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga"
)

// BenchmarkOrchestrator measures sagas/s end to end on the real broker: the
// three-step test saga with instant in-process participants, each saga taking
// four transactions of the orchestrator and three of the participants. The
// clock runs from the first start produced until the last saga ended.
//
//	make up && go test -run '^$' -bench BenchmarkOrchestrator -benchtime 2000x ./saga/
func BenchmarkOrchestrator(b *testing.B) {
	w := newWorld(b, 4)
	o, err := saga.NewOrchestrator(w.orchestratorConfig("orch", "bench"), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	runBg(b, o.Run)
	for _, p := range w.participants(b, zap.NewNop()) {
		runBg(b, p.Run)
	}
	all := ids("bench", b.N)
	b.ResetTimer()
	start := time.Now()
	w.start(b, all, func(int) testData { return testData{} })
	for o.Stats().Ended < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "sagas/s")
	st := o.LoopStats()
	b.ReportMetric(float64(st.Records)/float64(max(1, st.Committed)), "records/txn")
}
