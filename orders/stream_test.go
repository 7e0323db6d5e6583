package orders

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/saga/kafkatx"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// sseClient reads one event stream.
type sseClient struct {
	t      testing.TB
	cancel context.CancelFunc
	res    *http.Response
	lines  chan string
}

func openStream(t testing.TB, url string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	c := &sseClient{t: t, cancel: cancel, res: res, lines: make(chan string, 100)}
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *sseClient) close() {
	c.cancel()
	c.res.Body.Close()
}

// next returns the data of the next "order" event, or fails the test.
func (c *sseClient) next(v any) {
	c.t.Helper()
	timeout := time.After(20 * time.Second)
	event := ""
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatal("stream ended")
			}
			switch {
			case strings.HasPrefix(l, "event: "):
				event = strings.TrimPrefix(l, "event: ")
			case strings.HasPrefix(l, "data: ") && event == "order":
				if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "data: ")), v); err != nil {
					c.t.Fatalf("event data %q: %v", l, err)
				}
				return
			}
		case <-timeout:
			c.t.Fatal("no event within 20s")
		}
	}
}

// waitLine waits for a line with the prefix.
func (c *sseClient) waitLine(prefix string) {
	c.t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("stream ended before %q", prefix)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
		case <-timeout:
			c.t.Fatalf("no %q within 20s", prefix)
		}
	}
}

func TestOrderStream(t *testing.T) {
	svc, m := newLiteService(t, Config{KeepAlive: 50 * time.Millisecond}, nil)
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close) // after the streams close: Close waits for them
	o := testOrder("ord-s", "alice")
	m.placed(o, time.Now())

	c := openStream(t, srv.URL+"/orders/ord-s/events")
	if ct := c.res.Header.Get("Content-Type"); c.res.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("stream answered %d %s", c.res.StatusCode, ct)
	}
	var got Order
	c.next(&got)
	if got.Status != StatusPlaced || got.OrderID != "ord-s" {
		t.Fatalf("first event %+v", got)
	}
	run := startSaga(t, o)
	feed(t, m, kafkatx.TopicSagaState, "ord-s", run.snapshot())
	c.next(&got)
	if got.Status != StatusRunning || len(got.History) != 1 {
		t.Fatalf("second event %+v", got)
	}
	c.waitLine(": keep-alive")

	// A client that goes away leaves nothing behind.
	c.close()
	kafkatest.WaitFor(t, 10*time.Second, "the stream's subscription to close", func() bool { return m.Subscribers() == 0 })
}

func TestAllOrdersStream(t *testing.T) {
	svc, m := newLiteService(t, Config{}, nil)
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close) // after the streams close: Close waits for them
	c := openStream(t, srv.URL+"/events")
	c.waitLine("retry: ")
	m.placed(testOrder("ord-x", "alice"), time.Now())
	var got map[string]any
	c.next(&got)
	if got["order_id"] != "ord-x" || got["status"] != "Placed" {
		t.Fatalf("event %v", got)
	}
	if _, ok := got["lines"]; ok {
		t.Fatalf("summary carries lines: %v", got)
	}

	// Closing the service ends the streams, so a server shutdown does not
	// wait for clients that never hang up.
	svc.Close()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-c.lines:
			if !ok {
				kafkatest.WaitFor(t, 10*time.Second, "subscriptions to close", func() bool { return m.Subscribers() == 0 })
				return
			}
		case <-timeout:
			t.Fatal("stream still open after Close")
		}
	}
}

// A stream opened for an order sends the state at once even when the order
// changes while it opens, and never sends one state twice.
func TestOrderStreamSendsEachChangeOnce(t *testing.T) {
	svc, m := newLiteService(t, Config{}, nil)
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close) // after the streams close: Close waits for them
	o := testOrder("ord-once", "alice")
	m.placed(o, time.Now())
	c := openStream(t, srv.URL+"/orders/ord-once/events")
	run := startSaga(t, o)
	feed(t, m, kafkatx.TopicSagaState, o.OrderID, run.snapshot())
	run.reply(saga.Success)
	feed(t, m, kafkatx.TopicSagaState, o.OrderID, run.snapshot())
	var seen []int
	for len(seen) == 0 || seen[len(seen)-1] != 2 {
		var got Order
		c.next(&got)
		seen = append(seen, len(got.History))
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] <= seen[i-1] {
			t.Fatalf("history lengths sent: %v", seen)
		}
	}
}
