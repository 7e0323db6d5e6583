package orders

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// TestAsyncAPIIsHonest keeps docs/asyncapi.yaml in step with the code: every
// topic of kafkatx.SagaflowTopics is a channel, and each channel carries
// exactly the messages the code sends there, as the order saga's
// definition builds them, with the replies of docs/messages.md, the
// orchestrator's control records, snapshots and dead letters.
func TestAsyncAPIIsHonest(t *testing.T) {
	b, err := os.ReadFile("../docs/asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("docs/asyncapi.yaml: %v", err)
	}
	if doc["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi: %v, want 3.0.0", doc["asyncapi"])
	}

	// What the code sends, by topic.
	want := map[string][]string{}
	add := func(topic, typ string) {
		if !slices.Contains(want[topic], typ) {
			want[topic] = append(want[topic], typ)
		}
	}
	for _, spec := range kafkatx.SagaflowTopics(1) {
		want[spec.Name] = nil
	}
	def := Definition(DefaultSagaConfig())
	replyTopic := map[string]string{kafkatx.TopicStockCommands: kafkatx.TopicStockReplies,
		kafkatx.TopicPaymentCommands: kafkatx.TopicPaymentReplies}
	sample, _ := json.Marshal(testOrder("ord-doc", "alice"))
	for _, st := range def.Steps {
		for _, build := range []saga.Builder{st.Action, st.Compensation} {
			if build == nil {
				continue
			}
			cmd, err := build(sample)
			if err != nil {
				t.Fatal(err)
			}
			add(st.Topic, cmd.Type)
			replies := Replies(cmd.Type)
			if len(replies) == 0 {
				t.Fatalf("Replies has no entry for %s", cmd.Type)
			}
			for _, r := range replies {
				add(replyTopic[st.Topic], r)
			}
		}
	}
	for _, ev := range []saga.Event{def.OnCompleted, def.OnCancelled, def.OnFailed} {
		add(ev.Topic, ev.Type)
	}
	for typ := range Starts() {
		add(kafkatx.TopicOrderEvents, typ)
	}
	add(kafkatx.TopicSagaControl, saga.TypeTick)
	add(kafkatx.TopicSagaControl, saga.TypeOperatorCommand)
	add(kafkatx.TopicSagaState, "SagaSnapshot")
	add(kafkatx.TopicSagaDeadLetter, "DeadLetter")

	// What the document says, by topic.
	got := map[string][]string{}
	channels, _ := doc["channels"].(map[string]any)
	for id, c := range channels {
		ch, _ := c.(map[string]any)
		addr, _ := ch["address"].(string)
		if _, dup := got[addr]; dup {
			t.Errorf("topic %s has two channels", addr)
		}
		got[addr] = []string{}
		msgs, _ := ch["messages"].(map[string]any)
		for key, m := range msgs {
			ref, _ := m.(map[string]any)["$ref"].(string)
			target, ok := lookup(doc, ref)
			if !ok {
				t.Errorf("channel %s: message %s: $ref %q resolves to nothing", id, key, ref)
				continue
			}
			name, _ := target.(map[string]any)["name"].(string)
			if name != key {
				t.Errorf("channel %s: message %s is named %q; the name is the type header's value", id, key, name)
			}
			got[addr] = append(got[addr], name)
		}
	}
	for _, m := range []map[string][]string{want, got} {
		for _, v := range m {
			sort.Strings(v)
		}
	}
	topics := map[string]bool{}
	for k := range want {
		topics[k] = true
	}
	for k := range got {
		topics[k] = true
	}
	for topic := range topics {
		if fmt.Sprint(want[topic]) != fmt.Sprint(got[topic]) {
			_, inCode := want[topic]
			_, inDoc := got[topic]
			t.Errorf("topic %s: code sends %v (a topic: %v), document lists %v (a channel: %v)",
				topic, want[topic], inCode, got[topic], inDoc)
		}
	}

	// Every header the envelope and the dead-letter queue write is described.
	described := map[string]bool{}
	for _, ref := range []string{"#/components/schemas/EnvelopeHeaders/properties",
		"#/components/schemas/CommandHeaders/allOf/1/properties", "#/components/messages/DeadLetter/headers/properties"} {
		props, _ := lookup(doc, ref)
		m, ok := props.(map[string]any)
		if !ok {
			t.Fatalf("%s is not a properties object", ref)
		}
		for k := range m {
			described[k] = true
		}
	}
	for _, h := range []string{saga.HeaderMessageID, saga.HeaderSagaID, saga.HeaderType, saga.HeaderCausationID,
		saga.HeaderSchemaVersion, saga.HeaderTraceparent, saga.HeaderStep, saga.HeaderAttempt, saga.HeaderPhase,
		kafkatx.HeaderDLQReason, kafkatx.HeaderDLQTopic, kafkatx.HeaderDLQPartition, kafkatx.HeaderDLQOffset, kafkatx.HeaderDLQAt} {
		if !described[h] {
			t.Errorf("header %s is not described", h)
		}
	}

	// And every $ref in the document resolves.
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "$ref" {
					if _, ok := lookup(doc, x.(string)); !ok {
						t.Errorf("$ref %v resolves to nothing", x)
					}
					continue
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
}

// lookup resolves a local JSON pointer (RFC 6901) in a decoded document.
func lookup(doc map[string]any, ref string) (any, bool) {
	if !strings.HasPrefix(ref, "#/") {
		return nil, false
	}
	var cur any = doc
	for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
		part = strings.NewReplacer("~1", "/", "~0", "~").Replace(part)
		switch c := cur.(type) {
		case map[string]any:
			var ok bool
			if cur, ok = c[part]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(part)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			cur = c[i]
		default:
			return nil, false
		}
	}
	return cur, true
}
