package saga

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/sagaflow/sagaflow/idempotency"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// TestParticipantBatchIsACrew checks how handle makes a batch's goroutines
// one crew: with room for every saga at once, a batch of one command a
// saga is one pipeline; a saga's second command waits for its first; and
// with less room than sagas the loop that starts them steps out while it
// waits for room, so the first round holds exactly as many calls as there
// is room for, none left behind.
func TestParticipantBatchIsACrew(t *testing.T) {
	cases := []struct {
		name        string
		room        int
		sagas, cmds int // sagas in the batch, commands of the first saga
		first       int // the first round's size
	}{
		{"one command a saga", 512, 300, 1, 300},
		{"two commands of one saga", 64, 7, 2, 7},
		{"less room than sagas", 3, 7, 1, 3},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rdb := redistest.Client(t)
			prefix := redistest.Prefix(t)
			pl := idempotency.NewPipeliner(rdb, time.Minute) // only the members decide when a round leaves
			sizes := &redistest.Sends{}
			rdb.AddHook(sizes)
			p := &Participant{log: zap.NewNop(), cfg: ParticipantConfig{
				Concurrency: c.room, Failpoint: func(string) {},
				Crew: func(ctx context.Context) (context.Context, Crew) { return pl.Crew(ctx) },
			}}
			p.h = func(ctx context.Context, cmd Envelope) (Envelope, error) {
				return Envelope{}, rdb.Incr(ctx, prefix+":"+cmd.SagaID).Err()
			}
			var recs []kafkatx.Record
			for i := range c.sagas {
				n := 1
				if i == 0 {
					n = c.cmds
				}
				for j := range n {
					e := Envelope{MessageID: fmt.Sprintf("m-%d-%d", i, j), SagaID: fmt.Sprintf("s%d", i), Type: "Do",
						Step: 1, Attempt: 1, Phase: PhaseAction, Payload: []byte(`{}`)}
					m := e.Message("cmds")
					recs = append(recs, kafkatx.Record{Topic: m.Topic, Key: m.Key, Value: m.Value, Headers: m.Headers})
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			if err := p.handle(ctx, recs, nil); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)

			got := sizes.Got()
			if len(got) == 0 || got[0] != c.first || slices.Max(got) > c.room {
				t.Fatalf("pipelines %v: want a first of %d and none above %d", got, c.first, c.room)
			}
			sum := 0
			for _, n := range got {
				sum += n
			}
			if sum != len(recs) {
				t.Fatalf("pipelines %v carry %d calls, want %d", got, sum, len(recs))
			}
			if c.cmds == 2 && !slices.Equal(got, []int{c.sagas, 1}) {
				t.Fatalf("pipelines %v, want [%d 1]: the second command after the first", got, c.sagas)
			}
			for i := range c.sagas {
				want := int64(1)
				if i == 0 {
					want = int64(c.cmds)
				}
				if n, err := rdb.Get(ctx, fmt.Sprintf("%s:s%d", prefix, i)).Int64(); err != nil || n != want {
					t.Fatalf("saga s%d: %d calls applied (%v), want %d", i, n, err, want)
				}
			}
			t.Logf("pipelines %v in %v", got, took)
		})
	}
}
