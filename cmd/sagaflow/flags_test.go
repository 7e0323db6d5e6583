package main

import (
	"flag"
	"io"
	"testing"

	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

// -linger 0 must reach the loops as "none", not as saga.Kafka's zero, which
// is the default linger.
func TestLingerFlagReachesTheLoops(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, int64(kafkatx.DefaultLinger)},
		{[]string{"-linger", "0"}, -1},
		{[]string{"-linger", "7ms"}, 7e6},
	} {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		in := infraFlags(fs)
		if _, err := in.parse(fs, c.args, "test"); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := int64(in.wire().Kafka.Linger); got != c.want {
			t.Errorf("%v: saga.Kafka.Linger %d ns, want %d", c.args, got, c.want)
		}
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	in := infraFlags(fs)
	if _, err := in.parse(fs, []string{"-linger", "-1ms"}, "test"); err == nil {
		t.Error("-linger -1ms was accepted")
	}
}

// -batch-wait reaches the loops as given, and a wait past -max-interval (a
// batch would close before its wait ended) or below zero is refused.
func TestBatchWaitFlagReachesTheLoops(t *testing.T) {
	parse := func(args ...string) (*infra, error) {
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		in := infraFlags(fs)
		_, err := in.parse(fs, args, "test")
		return in, err
	}
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, 0},
		{[]string{"-batch-wait", "3ms"}, 3e6},
	} {
		in, err := parse(c.args...)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if got := int64(in.wire().Kafka.BatchWait); got != c.want {
			t.Errorf("%v: saga.Kafka.BatchWait %d ns, want %d", c.args, got, c.want)
		}
	}
	for _, args := range [][]string{{"-batch-wait", "-1ms"}, {"-batch-wait", "60ms", "-max-interval", "50ms"}} {
		if _, err := parse(args...); err == nil {
			t.Errorf("%v was accepted", args)
		}
	}
}
