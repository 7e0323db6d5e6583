package wire

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/idempotency/redistest"
	"github.com/sagaflow/sagaflow/orders"
)

func TestWindowsThatDoNotNestAreRefused(t *testing.T) {
	if err := DefaultWindows().Validate(); err != nil {
		t.Fatalf("the defaults do not nest: %v", err)
	}
	for _, c := range []struct {
		name string
		edit func(*Windows)
		want string
	}{
		{"key outlives the saga's memory", func(w *Windows) { w.IdempotencyTTL = w.SagaRetention + time.Second }, "-idempotency-ttl"},
		{"dedup shorter than the commands' retention", func(w *Windows) { w.DedupTTL = w.CommandRetention }, "-dedup-ttl"},
		{"order memory longer than its archive", func(w *Windows) { w.OrderMemory = w.OrderTTL + time.Second }, "-order-memory"},
		{"events kept shorter than commands", func(w *Windows) { w.EventRetention = w.CommandRetention - time.Second }, "-event-retention"},
		{"zero window", func(w *Windows) { w.SagaRetention = 0 }, "-saga-retention must be positive"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := DefaultWindows()
			c.edit(&w)
			err := w.Validate()
			if !errors.Is(err, ErrWindows) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Validate() = %v, want ErrWindows naming %s", err, c.want)
			}
		})
	}
}

// The read model's archive on the real Redis: a record put is got back as
// it was, an unknown order is not found, and each key carries the order TTL.
func TestOrderArchiveOnRedis(t *testing.T) {
	rdb := redistest.Client(t)
	a := orderArchive{rdb: rdb, prefix: redistest.Prefix(t) + ":", ttl: time.Hour}
	ctx := context.Background()
	rec := []byte(`{"order_id":"ord-archived","status":"Completed","snapshot":{"id":"ord-archived"}}`)
	if err := a.Put(ctx, []orders.ArchivedOrder{{ID: "ord-archived", Value: rec}}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := a.Get(ctx, "ord-archived")
	if err != nil || !ok || string(got) != string(rec) {
		t.Fatalf("Get = %s, %v, %v; want %s", got, ok, err, rec)
	}
	if _, ok, err := a.Get(ctx, "ord-never"); ok || err != nil {
		t.Fatalf("unknown order: %v, %v", ok, err)
	}
	if ttl := rdb.TTL(ctx, a.key("ord-archived")).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("TTL %s, want the order TTL of 1h", ttl)
	}
}
