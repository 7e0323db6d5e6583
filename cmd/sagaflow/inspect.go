package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
)

func init() {
	commands["inspect"] = command{"show sagas from saga.state, or the dead letters (read-only)", runInspect}
}

func runInspect(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	in := infraFlags(fs)
	dead := fs.Bool("deadletter", false, "list the records in saga.deadletter with their reasons")
	state := fs.String("state", "", "list only sagas in this state (Running, Compensating, Completed, Cancelled, Failed)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: sagaflow inspect [flags] [SAGA-ID...]\n\nWithout ids: one line per saga. With ids: each saga's steps and history.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	topics := in.wire().Topics
	if *dead {
		return inspectDeadLetters(ctx, *in.kafka, topics.DeadLetter, stdout)
	}
	sagas := map[string]*saga.Instance{}
	err := readTopic(ctx, *in.kafka, topics.State, func(r kafkatx.Record) error {
		if len(r.Value) == 0 {
			delete(sagas, string(r.Key)) // forgotten after its retention window
			return nil
		}
		var s saga.Instance
		if json.Unmarshal(r.Value, &s) == nil && s.ID != "" {
			sagas[s.ID] = &s
		}
		return nil
	})
	if err != nil {
		return err
	}
	if ids := fs.Args(); len(ids) > 0 {
		for _, id := range ids {
			s, ok := sagas[id]
			if !ok {
				return fmt.Errorf("no saga %q in %s", id, topics.State)
			}
			printSaga(stdout, s)
		}
		return nil
	}
	ids := make([]string, 0, len(sagas))
	for id, s := range sagas {
		if *state == "" || strings.EqualFold(string(s.State), *state) {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "SAGA\tTYPE\tSTATE\tSTEP\tVERSION\tIGNORED\tREASON")
	for _, id := range ids {
		s := sagas[id]
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", s.ID, s.Type, s.State, stepName(s), s.Version, s.Ignored, s.Reason)
	}
	fmt.Fprintf(w, "%d sagas\n", len(ids))
	return w.Flush()
}

func stepName(s *saga.Instance) string {
	if s.Step >= 0 && s.Step < len(s.Steps) {
		return s.Steps[s.Step].Name
	}
	return "-"
}

func printSaga(w io.Writer, s *saga.Instance) {
	fmt.Fprintf(w, "saga %s (%s): %s at %s, version %d, %d inputs ignored\n", s.ID, s.Type, s.State, stepName(s), s.Version, s.Ignored)
	if s.Reason != "" {
		fmt.Fprintf(w, "  reason: %s\n", s.Reason)
	}
	if err := s.Check(); err != nil {
		fmt.Fprintf(w, "  ILLEGAL: %v\n", err)
	}
	fmt.Fprintln(w, "  steps:")
	for _, st := range s.Steps {
		fmt.Fprintf(w, "    %-16s %-18s attempt %d/%d\n", st.Name, st.Status, st.Attempt, st.Limit)
	}
	fmt.Fprintln(w, "  history:")
	for _, h := range s.History {
		fmt.Fprintf(w, "    %s  %-12s -> %-12s %s\n", h.At.Format(time.RFC3339Nano), h.From, h.To, h.Cause)
	}
}

func inspectDeadLetters(ctx context.Context, brokers, topic string, stdout io.Writer) error {
	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ORIGIN\tTYPE\tSAGA\tREASON")
	n := 0
	err := readTopic(ctx, brokers, topic, func(r kafkatx.Record) error {
		n++
		fmt.Fprintf(w, "%s[%s]@%s\t%s\t%s\t%s\n", r.Header(kafkatx.HeaderDLQTopic), r.Header(kafkatx.HeaderDLQPartition),
			r.Header(kafkatx.HeaderDLQOffset), r.Header(saga.HeaderType), r.Header(saga.HeaderSagaID), r.Header(kafkatx.HeaderDLQReason))
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%d dead letters\n", n)
	return w.Flush()
}

// readTopic reads every committed record of topic, all partitions.
func readTopic(ctx context.Context, brokers, topic string, fn func(kafkatx.Record) error) error {
	parts, err := kafkatx.Partitions(ctx, brokers, topic)
	if err != nil {
		return err
	}
	return kafkatx.ReadPartitions(ctx, brokers, topic, parts, fn)
}
