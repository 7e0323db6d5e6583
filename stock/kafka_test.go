package stock_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
	"github.com/sagaflow/sagaflow/stock"
)

// TestMain lets crashtest run this binary as a stock participant.
func TestMain(m *testing.M) {
	crashtest.Main(m, func(data map[string]string) (saga.CommandHandler, error) {
		opt := &redis.Options{Addr: data["redis"]}
		if strings.Contains(data["redis"], "://") {
			var err error
			if opt, err = redis.ParseURL(data["redis"]); err != nil {
				return nil, err
			}
		}
		st, err := stock.NewStore(stock.Config{Prefix: data["prefix"]}, redis.NewClient(opt), nil)
		if err != nil {
			return nil, err
		}
		return stock.NewService(st, nil).Handle, nil
	})
}

// kworld is one test's topics on the real Kafka, with its stock on Redis.
type kworld struct {
	*env
	brokers       string
	cmd, rep, dlq string
	group         string
}

func newKWorld(t *testing.T, parts int) *kworld {
	t.Helper()
	b := kafkatest.Brokers(t)
	w := &kworld{env: newEnv(t), brokers: b,
		cmd:   kafkatest.Topic(t, b, "cmd", parts),
		rep:   kafkatest.Topic(t, b, "rep", parts),
		dlq:   kafkatest.Topic(t, b, "dlq", 1),
		group: fmt.Sprintf("stock-test-%d", time.Now().UnixNano())}
	return w
}

func (w *kworld) kafka(instance string) saga.Kafka {
	return saga.Kafka{Brokers: w.brokers, Group: w.group, InstanceID: instance, DeadLetterTopic: w.dlq,
		MaxBatch: 100, MaxInterval: 20 * time.Millisecond, TransactionTimeout: 10 * time.Second,
		SessionTimeout: 6 * time.Second}
}

// run runs an in-process participant until the test ends.
func (w *kworld) run(t *testing.T, instance string, log *zap.Logger) *saga.Participant {
	t.Helper()
	p, err := saga.NewParticipant(saga.ParticipantConfig{Kafka: w.kafka(instance), CommandTopic: w.cmd,
		ReplyTopic: w.rep, Failpoint: failpoint.Scoped("stock")}, w.svc.Handle, log)
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

func (w *kworld) child(t *testing.T, instance, failpoints string) *kafkatest.Process {
	t.Helper()
	return crashtest.Start(t, crashtest.Participant{Brokers: w.brokers, CommandTopic: w.cmd, ReplyTopic: w.rep,
		DeadLetterTopic: w.dlq, Group: w.group, Instance: instance, Scope: "stock",
		Data: map[string]string{"redis": redistest.Addr(), "prefix": w.prefix}}, failpoints)
}

// replies returns the committed replies by the command they answer.
func (w *kworld) replies(t *testing.T) map[string][]reply {
	t.Helper()
	out := map[string][]reply{}
	for _, r := range kafkatest.Read(t, w.brokers, w.rep, kafkatest.ReadCommitted) {
		env, err := saga.Decode(r)
		if err != nil {
			t.Fatalf("reply at %d/%d: %v", r.Partition, r.Offset, err)
		}
		out[env.CausationID] = append(out[env.CausationID], toReply(t, env))
	}
	return out
}

func count(m map[string][]reply) (n int) {
	for _, rs := range m {
		n += len(rs)
	}
	return n
}

// TestParticipantDuplicatesAndDeadLetters goes through Kafka: N copies of
// one command get N identical committed replies and one effect; malformed
// commands go to the dead-letter topic with their reason, apply nothing,
// and do not stop the partition: the good command after them is answered.
func TestParticipantDuplicatesAndDeadLetters(t *testing.T) {
	t.Parallel()
	w := newKWorld(t, 1) // one partition: the good command is behind the poison
	const copies = 5
	dup := command(stock.TypeReserveStock, "dup", orderJSON("dup", line{"tea", 2}, line{"mug", 1}))
	var msgs []kafkatx.Message
	for range copies {
		msgs = append(msgs, dup.Message(w.cmd))
	}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	poison := map[string]saga.Envelope{
		"value is not JSON":    command(stock.TypeReserveStock, "bad1", raw(`{"lines":[`)),
		"is not an order":      command(stock.TypeReserveStock, "bad2", raw(`{"lines":"tea"}`)),
		"unknown product":      command(stock.TypeReserveStock, "bad3", orderJSON("bad3", line{"tea", 1}, line{"unicorn", 1})),
		"quantity -4":          command(stock.TypeReserveStock, "bad4", orderJSON("bad4", line{"tea", -4})),
		"99999999999999999999": command(stock.TypeReserveStock, "bad5", raw(`{"lines":[{"product_id":"tea","quantity":99999999999999999999}]}`)),
		"quantity 0":           command(stock.TypeReserveStock, "bad6", orderJSON("bad6", line{"mug", 0})),
		"quantity 1000001":     command(stock.TypeReserveStock, "bad7", orderJSON("bad7", line{"mug", 1_000_001})),
	}
	byID := map[string]string{}
	for why, env := range poison {
		msgs = append(msgs, env.Message(w.cmd))
		byID[env.MessageID] = why
	}
	// A record without the envelope's headers at all.
	msgs = append(msgs, kafkatx.NewMessage(w.cmd, []byte("bad8"), []byte(`{}`)))
	good := command(stock.TypeReserveStock, "good", orderJSON("good", line{"teapot", 1}))
	msgs = append(msgs, good.Message(w.cmd))
	kafkatest.Produce(t, w.brokers, msgs)

	p := w.run(t, "i0", zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	kafkatest.WaitFor(t, 90*time.Second, "the good command's reply", func() bool {
		return len(w.replies(t)[good.MessageID]) > 0
	})
	got := w.replies(t)
	if n := count(got); n != copies+1 {
		t.Errorf("%d committed replies, want %d", n, copies+1)
	}
	rs := got[dup.MessageID]
	if len(rs) != copies {
		t.Fatalf("%d replies to %d copies", len(rs), copies)
	}
	for i, r := range rs {
		if r != rs[0] {
			t.Errorf("reply %d to a copy: %+v, want %+v", i, r, rs[0])
		}
	}
	expect(t, rs[0], stock.TypeStockReserved, saga.Success, "")
	expect(t, got[good.MessageID][0], stock.TypeStockReserved, saga.Success, "")
	if c := w.counts(t, "tea"); c != (counts{18, 2, 0, 20}) {
		t.Errorf("tea after %d copies: %+v", copies, c)
	}
	if c := w.counts(t, "mug"); c != (counts{9, 1, 0, 10}) {
		t.Errorf("mug after %d copies and the poison: %+v", copies, c)
	}

	dead := kafkatest.Read(t, w.brokers, w.dlq, kafkatest.ReadCommitted)
	if len(dead) != len(poison)+1 {
		t.Errorf("%d dead letters, want %d", len(dead), len(poison)+1)
	}
	for _, d := range dead {
		reason := string(d.Header(kafkatx.HeaderDLQReason))
		id := string(d.Header(saga.HeaderMessageID))
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
		if string(d.Header(kafkatx.HeaderDLQTopic)) != w.cmd {
			t.Errorf("dead letter %s has origin %q", id, d.Header(kafkatx.HeaderDLQTopic))
		}
	}
	if len(byID) > 0 {
		t.Errorf("not dead-lettered: %v", byID)
	}
	for _, env := range poison {
		if r, err := w.store.Reservation(ctx(t), env.SagaID); err != nil || r.State != "" {
			t.Errorf("poison %s left a reservation %+v, %v", env.SagaID, r, err)
		}
	}
	if s := p.Stats(); s.Poison != int64(len(poison)+1) {
		t.Errorf("participant counted %d poison records, want %d", s.Poison, len(poison)+1)
	}
}

// TestCrashAtFailpoints kills the participant at each crash window, restarts
// it, and checks that every command had one effect and has exactly one
// committed reply.
func TestCrashAtFailpoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, armed, dies string }{
		{"after-apply", "participant/after-apply=exit", "participant/after-apply"},
		// The sleep lets the producer send the replies before the exit, so
		// the broker holds them in the open transaction the restart aborts.
		{"after-produce", "participant/after-produce=sleep(500ms),stock/after-produce=exit", "stock/after-produce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCrashAt(t, tc.armed, tc.dies)
		})
	}
}

func testCrashAt(t *testing.T, armed, dies string) {
	w := newKWorld(t, 2)
	// Ten orders: four are confirmed, three released, three stay reserved;
	// one saga's commands are on one partition, in order.
	var msgs []kafkatx.Message
	var cmds []saga.Envelope
	add := func(typ, id string) {
		c := command(typ, id, orderJSON(id, line{"tea", 1}, line{"mug", 1}))
		cmds = append(cmds, c)
		msgs = append(msgs, c.Message(w.cmd))
	}
	for i := range 10 {
		id := fmt.Sprintf("c%d", i)
		add(stock.TypeReserveStock, id)
		switch {
		case i < 4:
			add(stock.TypeCommitStock, id)
		case i < 7:
			add(stock.TypeReleaseStock, id)
		}
	}
	kafkatest.Produce(t, w.brokers, msgs)

	c := w.child(t, "crash", armed)
	if code := c.Wait(t, 90*time.Second); code != failpoint.ExitCode {
		t.Fatalf("armed child exit %d, want %d; log:\n%s", code, failpoint.ExitCode, c.Log())
	}
	if !strings.Contains(c.Log(), "failpoint "+dies+": exit") {
		t.Fatalf("the child did not die at %s; log:\n%s", dies, c.Log())
	}
	if n := count(w.replies(t)); n != 0 {
		t.Errorf("%d replies committed by a process that died before its commit", n)
	}
	applied := 0
	for i := range 10 {
		if r, _ := w.store.Reservation(ctx(t), fmt.Sprintf("c%d", i)); r.State != "" {
			applied++
		}
	}
	if applied == 0 {
		t.Errorf("nothing applied in Redis before the crash: it was not after the apply")
	}
	t.Logf("crash at %s: %d orders already applied in Redis, no reply committed", dies, applied)

	again := w.child(t, "crash", "")
	kafkatest.WaitFor(t, 90*time.Second, "a reply to every command", func() bool {
		return count(w.replies(t)) >= len(cmds)
	})
	if code := again.Stop(t); code != crashtest.ExitOK {
		t.Errorf("restarted child exit %d; log:\n%s", code, again.Log())
	}
	got := w.replies(t)
	hanging := 0
	for i, c := range cmds {
		rs := got[c.MessageID]
		if len(rs) != 1 {
			t.Errorf("%s %s: %d committed replies, want 1", c.Type, c.SagaID, len(rs))
			continue
		}
		// The crashed batch held the reserve and the release of the
		// released orders: the release ran, so the redelivered reserve is
		// refused as hanging (the barrier's rule: an action after its
		// compensation is refused even if it ran before). The orchestrator
		// is compensating by then and ignores it; the effect was once.
		released := i+1 < len(cmds) && cmds[i+1].Type == stock.TypeReleaseStock
		switch r := rs[0]; {
		case r.Outcome == saga.Success:
		case released && r.Type == stock.TypeStockRejected && strings.Contains(r.Reason, "hanging"):
			hanging++
		default:
			t.Errorf("%s %s: %+v", c.Type, c.SagaID, r)
		}
	}
	t.Logf("%d redelivered reserves answered hanging", hanging)
	if n := count(got); n != len(cmds) {
		t.Errorf("%d committed replies for %d commands", n, len(cmds))
	}
	uncommitted := len(kafkatest.Read(t, w.brokers, w.rep, kafkatest.ReadUncommitted)) - len(cmds)
	t.Logf("%d replies were written in the crashed transaction and aborted", uncommitted)
	if strings.Contains(dies, "after-produce") && uncommitted == 0 {
		t.Errorf("no reply of the crashed transaction reached the broker: the crash did not exercise the window")
	}
	// Four sold, three reserved, three given back: one effect each.
	for _, id := range []string{"tea", "mug"} {
		seeded := map[string]int64{"tea": 20, "mug": 10}[id]
		if c := w.counts(t, id); c != (counts{seeded - 7, 3, 4, seeded}) {
			t.Errorf("%s: %+v", id, c)
		}
	}
}
