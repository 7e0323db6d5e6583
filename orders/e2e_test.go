package orders

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestEndToEnd runs the order saga on real Kafka: the API places orders,
// the orchestrator runs them against test participants, and the API shows
// how each ended, as the read model built from the log has it.
func TestEndToEnd(t *testing.T) {
	w := newWorld(t, worldOptions{})
	w.runSaga(t)

	ok := w.place("e2e-ok", teaForAlice)
	// Watch the confirmed one live, as the web page does.
	stream := openStream(t, w.srv.URL+"/orders/"+ok.OrderID+"/events")
	declined := w.place("e2e-declined", `{"customer_id":"broke","lines":[{"product_id":"coffee","quantity":1}]}`)
	outOfStock := w.place("e2e-out", `{"customer_id":"alice","lines":[{"product_id":"unobtainium","quantity":1}]}`)
	slow := w.place("e2e-slow", `{"customer_id":"alice","lines":[{"product_id":"tea","quantity":1}],"scenario":"slow-payment"}`)

	type want struct {
		status Status
		steps  []saga.StepStatus
	}
	cases := map[string]want{
		ok.OrderID: {StatusCompleted, []saga.StepStatus{saga.StepDone, saga.StepDone, saga.StepDone}},
		// The charge was refused: it took no effect, so only the
		// reservation is undone.
		declined.OrderID: {StatusCancelled, []saga.StepStatus{saga.StepCompensated, saga.StepFailed, saga.StepSkipped}},
		// Out of stock: the charge went out with the reservation, so it
		// is refunded (or, if it had not landed yet, refused by the
		// barrier and its refund a no-op).
		outOfStock.OrderID: {StatusCancelled, []saga.StepStatus{saga.StepFailed, saga.StepCompensated, saga.StepSkipped}},
		// The charge timed out: it may have landed late, so it is
		// compensated too.
		slow.OrderID: {StatusCancelled, []saga.StepStatus{saga.StepCompensated, saga.StepCompensated, saga.StepSkipped}},
	}
	var wg sync.WaitGroup
	for id, c := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := w.waitStatus(id, c.status, 60*time.Second)
			var steps []saga.StepStatus
			for _, s := range got.Steps {
				steps = append(steps, s.Status)
			}
			if fmt.Sprint(steps) != fmt.Sprint(c.steps) {
				t.Errorf("%s: steps %v, want %v; history %+v", id, steps, c.steps, got.History)
			}
			if c.status == StatusCancelled && got.Reason == "" {
				t.Errorf("%s: cancelled without a reason", id)
			}
		}()
	}
	wg.Wait()

	// The stream showed the order move forward to Completed, never back,
	// and ended with the final snapshot's steps. Whether Running shows
	// depends on which topic the read model reads first: an end event read
	// ahead of the snapshots takes the order straight to Completed.
	rank := map[Status]int{StatusPlaced: 1, StatusRunning: 2, StatusCompleted: 3}
	var seen []Status
	for done := false; !done; {
		var o Order
		stream.next(&o)
		if len(seen) == 0 || seen[len(seen)-1] != o.Status {
			seen = append(seen, o.Status)
		}
		if rank[o.Status] == 0 || len(seen) > 1 && rank[o.Status] < rank[seen[len(seen)-2]] {
			t.Fatalf("stream showed %v", seen)
		}
		done = o.Status == StatusCompleted && len(o.Steps) == 3 && o.Steps[2].Status == saga.StepDone
	}
	t.Logf("stream showed %v", seen)

	// One end event per saga on orders.events.
	ends := map[string]int{}
	for _, rec := range kafkatest.Read(t, w.Brokers, w.Events, kafkatest.ReadCommitted) {
		env, err := saga.Decode(rec)
		if err != nil {
			t.Fatal(err)
		}
		if env.Type != TypeOrderPlaced {
			ends[env.SagaID+"/"+env.Type]++
		}
	}
	for id, want := range map[string]string{ok.OrderID: TypeOrderConfirmed, declined.OrderID: TypeOrderCancelled,
		outOfStock.OrderID: TypeOrderCancelled, slow.OrderID: TypeOrderCancelled} {
		if ends[id+"/"+want] != 1 || len(ends) != 4 {
			t.Errorf("%s: end events %v, want one %s", id, ends, want)
		}
	}
	if c := w.rm.Counts(); c[StatusCompleted] != 1 || c[StatusCancelled] != 3 {
		t.Errorf("counts %v", c)
	}
}
