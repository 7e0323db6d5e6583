package payment_test

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
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/failpoint"
	"github.com/sagaflow/sagaflow/saga/failpoint/crashtest"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestMain lets crashtest run this binary as a payment participant.
func TestMain(m *testing.M) {
	crashtest.Main(m, func(data map[string]string) (saga.CommandHandler, error) {
		opt := &redis.Options{Addr: data["redis"]}
		if strings.Contains(data["redis"], "://") {
			var err error
			if opt, err = redis.ParseURL(data["redis"]); err != nil {
				return nil, err
			}
		}
		st, err := payment.NewStore(payment.Config{Prefix: data["prefix"]}, redis.NewClient(opt), nil)
		if err != nil {
			return nil, err
		}
		return payment.NewService(st, payment.ServiceConfig{}, nil).Handle, nil
	})
}

// kworld is one test's topics on the real Kafka, with its accounts on Redis.
type kworld struct {
	*env
	brokers       string
	cmd, rep, dlq string
	group         string
}

func newKWorld(t *testing.T, parts int) *kworld {
	t.Helper()
	b := kafkatest.Brokers(t)
	return &kworld{env: newEnv(t), brokers: b,
		cmd:   kafkatest.Topic(t, b, "cmd", parts),
		rep:   kafkatest.Topic(t, b, "rep", parts),
		dlq:   kafkatest.Topic(t, b, "dlq", 1),
		group: fmt.Sprintf("payment-test-%d", time.Now().UnixNano())}
}

func (w *kworld) run(t *testing.T, instance string, log *zap.Logger) *saga.Participant {
	t.Helper()
	p, err := saga.NewParticipant(saga.ParticipantConfig{
		Kafka: saga.Kafka{Brokers: w.brokers, Group: w.group, InstanceID: instance, DeadLetterTopic: w.dlq,
			MaxBatch: 100, MaxInterval: 20 * time.Millisecond, TransactionTimeout: 10 * time.Second,
			SessionTimeout: 6 * time.Second},
		CommandTopic: w.cmd, ReplyTopic: w.rep, Failpoint: failpoint.Scoped("payment"),
	}, w.svc.Handle, log)
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
		DeadLetterTopic: w.dlq, Group: w.group, Instance: instance, Scope: "payment",
		Data: map[string]string{"redis": redistest.Addr(), "prefix": w.prefix}}, failpoints)
}

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
// one charge get N identical committed replies and one debit; malformed
// commands are dead-lettered with their reason, move no money, and do not
// stop the partition.
func TestParticipantDuplicatesAndDeadLetters(t *testing.T) {
	t.Parallel()
	w := newKWorld(t, 1)
	const copies = 5
	dup := command(payment.TypeChargePayment, "dup", orderJSON("dup", "alice", 3, 1500))
	var msgs []kafkatx.Message
	for range copies {
		msgs = append(msgs, dup.Message(w.cmd))
	}
	raw := func(s string) json.RawMessage { return json.RawMessage(s) }
	poison := map[string]saga.Envelope{
		"value is not JSON":                command(payment.TypeChargePayment, "bad1", raw(`{"total_cents":`)),
		"unknown customer":                 command(payment.TypeChargePayment, "bad2", orderJSON("bad2", "mallory", 1, 100)),
		"total -300 cents":                 command(payment.TypeChargePayment, "bad3", orderRaw("bad3", "alice", 1, 300, -300, "")),
		"total 0 cents":                    command(payment.TypeChargePayment, "bad4", orderRaw("bad4", "alice", 1, 0, 0, "")),
		"99999999999999999999":             command(payment.TypeChargePayment, "bad5", raw(`{"customer_id":"alice","total_cents":99999999999999999999}`)),
		"total 9007199254740992 cents":     command(payment.TypeChargePayment, "bad6", orderRaw("bad6", "alice", 1, 100, 1<<53, "")),
		"is not the sum of the lines, 900": command(payment.TypeChargePayment, "bad7", orderRaw("bad7", "alice", 3, 300, 1000, "")),
	}
	byID := map[string]string{}
	for why, env := range poison {
		msgs = append(msgs, env.Message(w.cmd))
		byID[env.MessageID] = why
	}
	good := command(payment.TypeChargePayment, "good", orderJSON("good", "bob", 1, 700))
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
	expect(t, rs[0], payment.TypePaymentCharged, saga.Success, "")
	if m := w.money(t, "alice"); m != (money{95_500, 4_500, 100_000}) {
		t.Errorf("alice after %d copies and the poison: %+v", copies, m)
	}
	if m := w.money(t, "bob"); m != (money{59_300, 700, 60_000}) {
		t.Errorf("bob: %+v", m)
	}
	dead := kafkatest.Read(t, w.brokers, w.dlq, kafkatest.ReadCommitted)
	if len(dead) != len(poison) {
		t.Errorf("%d dead letters, want %d", len(dead), len(poison))
	}
	for _, d := range dead {
		reason := string(d.Header(kafkatx.HeaderDLQReason))
		id := string(d.Header(saga.HeaderMessageID))
		why, ok := byID[id]
		if !ok || !strings.Contains(reason, why) {
			t.Errorf("dead letter %s: reason %q, want one mentioning %q", id, reason, why)
		}
		delete(byID, id)
	}
	if len(byID) > 0 {
		t.Errorf("not dead-lettered: %v", byID)
	}
	for _, env := range poison {
		if r, err := w.store.Payment(ctx(t), env.SagaID); err != nil || r.State != "" {
			t.Errorf("poison %s left a payment %+v, %v", env.SagaID, r, err)
		}
	}
	if s := p.Stats(); s.Poison != int64(len(poison)) {
		t.Errorf("participant counted %d poison records, want %d", s.Poison, len(poison))
	}
}

// TestCrashAtFailpoints kills the participant at each crash window, restarts
// it, and checks one effect and exactly one committed reply per command.
func TestCrashAtFailpoints(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, armed, dies string }{
		{"after-apply", "payment/after-apply=exit", "payment/after-apply"},
		{"after-produce", "participant/after-produce=sleep(500ms),payment/after-produce=exit", "payment/after-produce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testCrashAt(t, tc.armed, tc.dies)
		})
	}
}

func testCrashAt(t *testing.T, armed, dies string) {
	w := newKWorld(t, 2)
	// Ten orders of alice's: charges of 10.00 to 19.00; four refunded.
	var msgs []kafkatx.Message
	var cmds []saga.Envelope
	var captured int64
	for i := range 10 {
		id := fmt.Sprintf("c%d", i)
		amount := int64(1000 + 100*i)
		c := command(payment.TypeChargePayment, id, orderJSON(id, "alice", 1, amount))
		cmds = append(cmds, c)
		msgs = append(msgs, c.Message(w.cmd))
		if i < 4 {
			r := command(payment.TypeRefundPayment, id, orderJSON(id, "alice", 1, amount))
			cmds = append(cmds, r)
			msgs = append(msgs, r.Message(w.cmd))
		} else {
			captured += amount
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
		if p, _ := w.store.Payment(ctx(t), fmt.Sprintf("c%d", i)); p.State != "" {
			applied++
		}
	}
	if applied == 0 {
		t.Errorf("nothing applied in Redis before the crash: it was not after the apply")
	}
	t.Logf("crash at %s: %d orders already charged in Redis, no reply committed", dies, applied)

	again := w.child(t, "crash", "")
	kafkatest.WaitFor(t, 90*time.Second, "a reply to every command", func() bool {
		return count(w.replies(t)) >= len(cmds)
	})
	if code := again.Stop(t); code != crashtest.ExitOK {
		t.Errorf("restarted child exit %d; log:\n%s", code, again.Log())
	}
	got := w.replies(t)
	for i, c := range cmds {
		rs := got[c.MessageID]
		if len(rs) != 1 {
			t.Errorf("%s %s: %d committed replies, want 1", c.Type, c.SagaID, len(rs))
			continue
		}
		// A charge redelivered after its refund ran in the crashed batch
		// is answered hanging (the barrier's rule); the debit was once.
		refunded := i+1 < len(cmds) && cmds[i+1].Type == payment.TypeRefundPayment
		switch r := rs[0]; {
		case r.Outcome == saga.Success:
		case refunded && strings.Contains(r.Reason, "hanging"):
		default:
			t.Errorf("%s %s: %+v", c.Type, c.SagaID, r)
		}
	}
	if n := count(got); n != len(cmds) {
		t.Errorf("%d committed replies for %d commands", n, len(cmds))
	}
	uncommitted := len(kafkatest.Read(t, w.brokers, w.rep, kafkatest.ReadUncommitted)) - len(cmds)
	t.Logf("%d replies were written in the crashed transaction and aborted", uncommitted)
	if strings.Contains(dies, "after-produce") && uncommitted == 0 {
		t.Errorf("no reply of the crashed transaction reached the broker: the crash did not exercise the window")
	}
	if m := w.money(t, "alice"); m != (money{100_000 - captured, captured, 100_000}) {
		t.Errorf("alice: %+v, want %d captured", m, captured)
	}
}
