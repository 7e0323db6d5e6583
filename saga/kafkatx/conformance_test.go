package kafkatx_test

import (
	"testing"

	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// conformance is the Loop's contract as tests, and every broker sagaflow runs
// on must pass all of it: the real Kafka of `make up` (TestReal) and the
// embedded broker of `sagaflow demo` (TestEmbedded). A test that cannot mean
// anything on the embedded broker, because of a limitation of that broker,
// says which in embeddedSkip and still runs on the real one.
var conformance = []struct {
	name         string
	test         func(t *testing.T, brokers string)
	embeddedSkip string
}{
	{name: "CommitPath", test: testCommitPath},
	{name: "AbortPathHandlesBatchAgain", test: testAbortPathHandlesBatchAgain},
	{name: "PoisonRecordIsDeadLetteredAndPartitionMoves", test: testPoisonRecordIsDeadLetteredAndPartitionMoves},
	{name: "RebalanceJoinAndLeave", test: testRebalanceJoinAndLeave},
	{name: "OnAssignFailureStopsButStopDuringItIsGraceful", test: testOnAssignFailureAndStopDuringIt},
	{name: "CrashMidTransaction", test: testCrashMidTransaction},
	{name: "ZombieIsFenced", test: testZombieIsFenced},
	{name: "StaticMemberStopsRightAfterRebalance", test: testStaticMemberStopsRightAfterRebalance},
	{name: "StopIsBoundedWhateverTheLoopDoes", test: testStopIsBoundedWhateverTheLoopDoes},
	{name: "SlowTransactionIsLoggedWithItsPhases", test: testSlowTransactionIsLogged},
}

// TestReal runs the suite on the broker at SAGAFLOW_KAFKA (`make up`). It
// skips when none answers, except under CI=true, where it fails.
func TestReal(t *testing.T) {
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) { c.test(t, kafkatest.Brokers(t)) })
	}
}

// TestEmbedded runs the suite on the embedded broker, a fresh one per test.
func TestEmbedded(t *testing.T) {
	for _, c := range conformance {
		t.Run(c.name, func(t *testing.T) {
			if c.embeddedSkip != "" {
				t.Skip("embedded broker: " + c.embeddedSkip)
			}
			c.test(t, kafkatest.Embedded(t))
		})
	}
}
