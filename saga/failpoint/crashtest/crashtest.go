// Package crashtest lets a test crash a saga participant where a failpoint
// says and start it again, and kill Redis and start it again on its AOF.
//
// The participant runs in a child process (a kafkatest.Process): the test
// binary itself, run again, which the test package's TestMain turns into a
// participant when the environment says so (Main). The parent arms
// failpoints in the child's environment (SAGAFLOW_FAILPOINTS), waits for it
// to die at one, checks what Kafka and Redis hold, and starts it again
// disarmed with the same instance id, so the new producer fences the dead
// one's transaction.
package crashtest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// envChild carries the Participant (JSON) to the child.
const envChild = "SAGAFLOW_CRASHTEST_PARTICIPANT"

// Exit codes of a child besides failpoint.ExitCode.
const (
	ExitOK     = 0 // stopped by SIGTERM after a graceful shutdown
	ExitError  = 1 // the participant stopped with an error
	ExitFenced = 3 // a newer instance with the same id took over
)

// Participant says what the child runs.
type Participant struct {
	Brokers         string
	CommandTopic    string
	ReplyTopic      string
	DeadLetterTopic string
	Group           string
	// Instance is the instance id: keep it across a crash and its restart.
	Instance string
	// Scope, when set, hits the failpoints through failpoint.Scoped(Scope),
	// as the sagaflow binary does ("stock/after-apply" as well as
	// "participant/after-apply"); otherwise through failpoint.Hit.
	Scope string
	// Data goes to the child's handler factory (Main): a Redis address, a
	// key prefix.
	Data map[string]string
}

// Handler builds the child's command handler from Participant.Data, and
// the crew its batches are applied in (saga.ParticipantConfig.Crew; nil for
// none).
type Handler func(data map[string]string) (saga.CommandHandler, func(context.Context) (context.Context, saga.Crew), error)

// Main is the test package's TestMain: in a child started by Start it runs
// the participant with the handler h builds and exits; otherwise it runs the
// tests.
func Main(m *testing.M, h Handler) {
	if spec := os.Getenv(envChild); spec != "" {
		os.Exit(runChild(spec, h))
	}
	os.Exit(m.Run())
}

func runChild(spec string, h Handler) int {
	log, _ := zap.NewDevelopment()
	var p Participant
	if err := json.Unmarshal([]byte(spec), &p); err != nil {
		log.Error("crashtest: bad participant spec", zap.Error(err))
		return ExitError
	}
	if err := failpoint.EnvErr(); err != nil {
		log.Error("crashtest: failpoints", zap.Error(err))
		return ExitError
	}
	handler, crew, err := h(p.Data)
	if err != nil {
		log.Error("crashtest: handler", zap.Error(err))
		return ExitError
	}
	cfg := saga.ParticipantConfig{
		Kafka: saga.Kafka{Brokers: p.Brokers, Group: p.Group, InstanceID: p.Instance,
			// Static membership: the restart takes the crashed instance's
			// partitions back at once instead of after its session timeout.
			StaticMembership: true, DeadLetterTopic: p.DeadLetterTopic,
			MaxBatch: 50, MaxInterval: 20 * time.Millisecond,
			TransactionTimeout: 10 * time.Second, SessionTimeout: 6 * time.Second},
		CommandTopic: p.CommandTopic,
		ReplyTopic:   p.ReplyTopic,
		Failpoint:    failpoint.Hit,
		Crew:         crew,
	}
	if p.Scope != "" {
		cfg.Failpoint = failpoint.Scoped(p.Scope)
	}
	part, err := saga.NewParticipant(cfg, handler, log)
	if err != nil {
		log.Error("crashtest: participant", zap.Error(err))
		return ExitError
	}
	log.Info("crashtest: participant starting", zap.Strings("failpoints", failpoint.Armed()))
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	err = part.Run(ctx)
	switch {
	case errors.Is(err, kafkatx.ErrFenced):
		log.Info("crashtest: fenced", zap.Error(err))
		return ExitFenced
	case err != nil:
		log.Error("crashtest: participant stopped", zap.Error(err))
		return ExitError
	}
	return ExitOK
}

// Start runs p in a child process (this test binary, through Main) with the
// failpoints of spec armed (the syntax of SAGAFLOW_FAILPOINTS; "" for none,
// overriding the parent's). The child is killed when the test ends if it
// still runs.
func Start(t testing.TB, p Participant, failpoints string) *kafkatest.Process {
	t.Helper()
	spec, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return kafkatest.StartProcess(t, map[string]string{envChild: string(spec), failpoint.Env: failpoints})
}
