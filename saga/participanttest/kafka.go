package participanttest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// Data keys a child participant (Main) gets from World.Child.
const (
	DataRedis  = "redis"  // the test Redis's address (redistest.Addr)
	DataPrefix = "prefix" // the participant's key prefix
)

// NewHandler builds a participant's command handler on a Redis client and
// a key prefix, for a child process.
type NewHandler func(rdb redis.UniversalClient, prefix string) (saga.CommandHandler, error)

// Main is a participant test package's TestMain: in a child started by
// World.Child it runs the participant that h builds on the test Redis
// (crashtest.Main); otherwise it runs the tests.
func Main(m *testing.M, h NewHandler) {
	crashtest.Main(m, func(data map[string]string) (saga.CommandHandler, func(context.Context) (context.Context, saga.Crew), error) {
		opt := &redis.Options{Addr: data[DataRedis]}
		if strings.Contains(data[DataRedis], "://") {
			var err error
			if opt, err = redis.ParseURL(data[DataRedis]); err != nil {
				return nil, nil, err
			}
		}
		rdb := redis.NewClient(opt)
		crew := CrewOn(rdb)
		handler, err := h(rdb, data[DataPrefix])
		return handler, crew, err
	})
}

// CrewOn returns the crews of a Pipeliner on rdb, for
// saga.ParticipantConfig.Crew: the participants of these tests send their
// batches' Redis calls as the services do.
func CrewOn(rdb redis.UniversalClient) func(context.Context) (context.Context, saga.Crew) {
	p := idempotency.NewPipeliner(rdb, 0)
	return func(ctx context.Context) (context.Context, saga.Crew) { return p.Crew(ctx) }
}

// World is one test's topics on the real Kafka (commands, replies, dead
// letters) and a consumer group of its own, for one participant.
type World struct {
	Brokers         string
	CommandTopic    string
	ReplyTopic      string
	DeadLetterTopic string
	Group           string
	// Scope names the participant ("stock"): its failpoints are hit as
	// "<scope>/after-apply" as well as "participant/after-apply".
	Scope string
	// Crew, when set, is the participant's saga.ParticipantConfig.Crew
	// (CrewOn the handler's Redis client).
	Crew func(context.Context) (context.Context, saga.Crew)
}

// NewWorld makes fresh topics with the given partitions (the dead-letter
// topic has one).
func NewWorld(t testing.TB, scope string, partitions int) *World {
	t.Helper()
	b := kafkatest.Brokers(t)
	return &World{Brokers: b,
		CommandTopic:    kafkatest.Topic(t, b, "cmd", partitions),
		ReplyTopic:      kafkatest.Topic(t, b, "rep", partitions),
		DeadLetterTopic: kafkatest.Topic(t, b, "dlq", 1),
		Group:           fmt.Sprintf("%s-test-%d", scope, time.Now().UnixNano()),
		Scope:           scope}
}

// Run runs an in-process participant with handler h until the test ends,
// and fails the test if it stops with an error or takes over a minute to.
func (w *World) Run(t testing.TB, instance string, h saga.CommandHandler, log *zap.Logger) *saga.Participant {
	t.Helper()
	p, err := saga.NewParticipant(saga.ParticipantConfig{
		Kafka: saga.Kafka{Brokers: w.Brokers, Group: w.Group, InstanceID: instance, DeadLetterTopic: w.DeadLetterTopic,
			MaxBatch: 100, MaxInterval: 20 * time.Millisecond, TransactionTimeout: 10 * time.Second,
			SessionTimeout: 6 * time.Second},
		CommandTopic: w.CommandTopic, ReplyTopic: w.ReplyTopic, Failpoint: failpoint.Scoped(w.Scope), Crew: w.Crew,
	}, h, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("participant: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Errorf("participant did not stop within 60s")
			}
		})
	})
	return p
}

// Child runs the participant in a child process (the test binary, through
// Main) on the test Redis under prefix, with failpoints armed ("" for none).
func (w *World) Child(t testing.TB, instance, prefix, failpoints string) *kafkatest.Process {
	t.Helper()
	return crashtest.Start(t, crashtest.Participant{Brokers: w.Brokers, CommandTopic: w.CommandTopic,
		ReplyTopic: w.ReplyTopic, DeadLetterTopic: w.DeadLetterTopic, Group: w.Group, Instance: instance,
		Scope: w.Scope, Data: map[string]string{DataRedis: redistest.Addr(), DataPrefix: prefix}}, failpoints)
}

// Replies returns the committed replies by the message id of the command
// they answer.
func (w *World) Replies(t testing.TB) map[string][]Reply {
	t.Helper()
	out := map[string][]Reply{}
	for _, r := range kafkatest.Read(t, w.Brokers, w.ReplyTopic, kafkatest.ReadCommitted) {
		env, err := saga.Decode(r)
		if err != nil {
			t.Fatalf("reply at %d/%d: %v", r.Partition, r.Offset, err)
		}
		out[env.CausationID] = append(out[env.CausationID], ToReply(t, env))
	}
	return out
}

// Count is the number of replies in m.
func Count(m map[string][]Reply) (n int) {
	for _, rs := range m {
		n += len(rs)
	}
	return n
}

// CrashAndRecover produces cmds and runs a child participant under prefix
// with failpoints armed; the child must die at the failpoint dies before it
// commits any reply, and applied (the number of commands whose effect is
// already in Redis) must then be above zero: the crash came after the
// apply. It then starts the child again disarmed with the same instance
// id, waits for a reply to every command, stops it, and checks that every
// command has exactly one committed reply, which it returns by the
// command's message id. For a crash after the produce it also checks that
// replies of the crashed transaction reached the broker (and were
// aborted).
func (w *World) CrashAndRecover(t testing.TB, prefix string, cmds []saga.Envelope, armed, dies string, applied func() int) map[string]Reply {
	t.Helper()
	msgs := make([]kafkatx.Message, len(cmds))
	for i, c := range cmds {
		msgs[i] = c.Message(w.CommandTopic)
	}
	kafkatest.Produce(t, w.Brokers, msgs)

	c := w.Child(t, "crash", prefix, armed)
	if code := c.Wait(t, 90*time.Second); code != failpoint.ExitCode {
		t.Fatalf("armed child exit %d, want %d; log:\n%s", code, failpoint.ExitCode, c.Log())
	}
	if !strings.Contains(c.Log(), "failpoint "+dies+": exit") {
		t.Fatalf("the child did not die at %s; log:\n%s", dies, c.Log())
	}
	if n := Count(w.Replies(t)); n != 0 {
		t.Errorf("%d replies committed by a process that died before its commit", n)
	}
	n := applied()
	if n == 0 {
		t.Errorf("nothing applied in Redis before the crash: it was not after the apply")
	}
	t.Logf("crash at %s: %d orders already applied in Redis, no reply committed", dies, n)

	again := w.Child(t, "crash", prefix, "")
	kafkatest.WaitFor(t, 90*time.Second, "a reply to every command", func() bool {
		return Count(w.Replies(t)) >= len(cmds)
	})
	if code := again.Stop(t); code != crashtest.ExitOK {
		t.Errorf("restarted child exit %d; log:\n%s", code, again.Log())
	}
	got := w.Replies(t)
	out := make(map[string]Reply, len(cmds))
	for _, c := range cmds {
		rs := got[c.MessageID]
		if len(rs) != 1 {
			t.Errorf("%s %s: %d committed replies, want 1", c.Type, c.SagaID, len(rs))
			continue
		}
		out[c.MessageID] = rs[0]
	}
	if n := Count(got); n != len(cmds) {
		t.Errorf("%d committed replies for %d commands", n, len(cmds))
	}
	uncommitted := len(kafkatest.Read(t, w.Brokers, w.ReplyTopic, kafkatest.ReadUncommitted)) - len(cmds)
	t.Logf("%d replies were written in the crashed transaction and aborted", uncommitted)
	if strings.Contains(dies, "after-produce") && uncommitted == 0 {
		t.Errorf("no reply of the crashed transaction reached the broker: the crash did not exercise the window")
	}
	return out
}

// Poison is the traffic of a duplicates-and-poison run (World.DeliverPoison).
type Poison struct {
	// Dup is produced Copies times: every copy must get the same committed
	// reply.
	Dup    saga.Envelope
	Copies int
	// Bad are commands that can never apply, by what their dead letter's
	// reason must mention.
	Bad map[string]saga.Envelope
	// Headerless are records without the envelope's headers: each must be
	// dead-lettered for a missing header.
	Headerless [][]byte
	// Good comes last: its reply shows the partition kept moving past the
	// poison.
	Good saga.Envelope
}

// DeliverPoison produces p's records (the dup's copies, the bad commands,
// the headerless records, then the good command, in that order) and runs
// h in process on them until the good command is answered. It checks that
// the copies and the good command, and nothing else, got committed replies,
// all copies the same one; that every bad and headerless record is in the
// dead-letter topic, with its reason and origin; and that the participant
// counted them as poison. It returns the replies to the dup and the good
// command for the domain's own checks.
func (w *World) DeliverPoison(t *testing.T, h saga.CommandHandler, p Poison) (dup, good Reply) {
	t.Helper()
	var msgs []kafkatx.Message
	for range p.Copies {
		msgs = append(msgs, p.Dup.Message(w.CommandTopic))
	}
	byID := map[string]string{}
	for why, env := range p.Bad {
		msgs = append(msgs, env.Message(w.CommandTopic))
		byID[env.MessageID] = why
	}
	for i, v := range p.Headerless {
		msgs = append(msgs, kafkatx.NewMessage(w.CommandTopic, []byte(fmt.Sprintf("headerless%d", i)), v))
	}
	msgs = append(msgs, p.Good.Message(w.CommandTopic))
	kafkatest.Produce(t, w.Brokers, msgs)

	part := w.Run(t, "i0", h, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	kafkatest.WaitFor(t, 90*time.Second, "the good command's reply", func() bool {
		return len(w.Replies(t)[p.Good.MessageID]) > 0
	})
	got := w.Replies(t)
	if n := Count(got); n != p.Copies+1 {
		t.Errorf("%d committed replies, want %d", n, p.Copies+1)
	}
	rs := got[p.Dup.MessageID]
	if len(rs) != p.Copies {
		t.Fatalf("%d replies to %d copies", len(rs), p.Copies)
	}
	for i, r := range rs {
		if r != rs[0] {
			t.Errorf("reply %d to a copy: %+v, want %+v", i, r, rs[0])
		}
	}

	poison := len(p.Bad) + len(p.Headerless)
	dead := kafkatest.Read(t, w.Brokers, w.DeadLetterTopic, kafkatest.ReadCommitted)
	if len(dead) != poison {
		t.Errorf("%d dead letters, want %d", len(dead), poison)
	}
	for _, d := range dead {
		reason := string(d.Header(kafkatx.HeaderDLQReason))
		id := string(d.Header(saga.HeaderMessageID))
		if string(d.Header(kafkatx.HeaderDLQTopic)) != w.CommandTopic {
			t.Errorf("dead letter %q has origin %q", id, d.Header(kafkatx.HeaderDLQTopic))
		}
		if id == "" {
			if !strings.Contains(reason, "missing header") {
				t.Errorf("headerless record dead-lettered with %q", reason)
			}
			continue
		}
		why, ok := byID[id]
		if !ok || !strings.Contains(reason, why) {
			t.Errorf("dead letter %s: reason %q, want one mentioning %q", id, reason, why)
		}
		delete(byID, id)
	}
	if len(byID) > 0 {
		t.Errorf("not dead-lettered: %v", byID)
	}
	if s := part.Stats(); s.Poison != int64(poison) {
		t.Errorf("participant counted %d poison records, want %d", s.Poison, poison)
	}
	return rs[0], got[p.Good.MessageID][0]
}
