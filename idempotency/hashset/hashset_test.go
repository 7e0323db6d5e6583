package hashset_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/sagaflow/sagaflow/idempotency/hashset"
	"github.com/sagaflow/sagaflow/idempotency/redistest"
)

func TestAddListGet(t *testing.T) {
	t.Parallel()
	rdb := redistest.Client(t)
	prefix := redistest.Prefix(t)
	s := hashset.New(rdb, prefix+":ids", func(id string) string { return prefix + ":rec:" + id })
	ctx := context.Background()
	if err := s.Load(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"b", "a"} {
		if ok, err := s.Add(ctx, id, "name", id, "n", 7); err != nil || !ok {
			t.Fatalf("add %s: %v, %v", id, ok, err)
		}
	}
	// Adding again leaves the record exactly as it is.
	if _, err := rdb.HIncrBy(ctx, prefix+":rec:a", "n", 5).Result(); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Add(ctx, "a", "name", "other", "n", 0); err != nil || ok {
		t.Errorf("second add of a: %v, %v; want false", ok, err)
	}
	if _, err := s.Add(ctx, "c", "name"); err == nil {
		t.Errorf("add with an odd number of field values: no error")
	}
	ids, hs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]string{{"name": "a", "n": "12"}, {"name": "b", "n": "7"}}
	if !reflect.DeepEqual(ids, []string{"a", "b"}) || !reflect.DeepEqual(hs, want) {
		t.Errorf("list: %v %v, want [a b] %v", ids, hs, want)
	}
	if h, err := s.Get(ctx, "missing"); err != nil || len(h) != 0 {
		t.Errorf("get missing: %v, %v", h, err)
	}
}

func TestParseInt64s(t *testing.T) {
	var a, b int64
	h := map[string]string{"a": "-3", "b": "9007199254740991", "c": "1.5"}
	if err := hashset.ParseInt64s(h, hashset.Int64{Field: "a", Dst: &a}, hashset.Int64{Field: "b", Dst: &b}); err != nil || a != -3 || b != 1<<53-1 {
		t.Errorf("parse: %d %d %v", a, b, err)
	}
	for _, f := range []string{"c", "missing"} {
		if err := hashset.ParseInt64s(h, hashset.Int64{Field: f, Dst: &a}); err == nil {
			t.Errorf("field %s parsed", f)
		}
	}
}
