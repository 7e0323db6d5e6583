package orders

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sagaflow/sagaflow/dev/kafkactl"
	"github.com/sagaflow/sagaflow/saga/kafkatx/kafkatest"
)

// TestFailoverAPIAnswersWhileKafkaIsPaused pauses every Kafka node
// (SIGSTOP) under a running system. The API must keep answering within its
// deadline: 503 with Retry-After, at once for the requests beyond
// MaxInFlight and after SendTimeout for those waiting on Kafka, never a
// request left without an answer. After SIGCONT the same keys place their
// orders, without a restart, and the sagas run to the end.
func TestFailoverAPIAnswersWhileKafkaIsPaused(t *testing.T) {
	_, nodes := kafkatest.Cluster(t, 1)
	const sendTimeout, inFlight, posts = 3 * time.Second, 4, 12
	w := newWorld(t, worldOptions{cfg: Config{SendTimeout: sendTimeout, MaxInFlight: inFlight}})
	w.runSaga(t)
	before := w.place("pause-before", teaForAlice)
	w.waitStatus(before.OrderID, StatusCompleted, 60*time.Second)

	resume := func() {
		for n := 1; n <= nodes.Count; n++ {
			kafkatest.Node(t, nodes, kafkactl.Resume, n)
		}
	}
	for n := 1; n <= nodes.Count; n++ {
		kafkatest.Node(t, nodes, kafkactl.Pause, n)
	}
	resumed := false
	defer func() {
		if !resumed {
			resume()
		}
	}()

	type answer struct {
		key    string
		status int
		retry  string
		body   string
		took   time.Duration
		err    error
	}
	answers := make(chan answer, posts)
	client := &http.Client{Timeout: time.Minute}
	for i := range posts {
		key := "pause-" + strconv.Itoa(i)
		go func() {
			start := time.Now()
			req, _ := http.NewRequest(http.MethodPost, w.srv.URL+"/orders", strings.NewReader(teaForAlice))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", key)
			res, err := client.Do(req)
			a := answer{key: key, err: err}
			if err == nil {
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				a.status, a.retry, a.body = res.StatusCode, res.Header.Get("Retry-After"), string(b)
			}
			a.took = time.Since(start)
			answers <- a
		}()
	}
	kinds := map[string]int{}
	for range posts {
		a := <-answers
		switch {
		case a.err != nil:
			t.Errorf("POST %s with Kafka paused: no answer after %s: %v", a.key, a.took, a.err)
		case a.status != http.StatusServiceUnavailable || a.retry == "" || a.took > sendTimeout+2*time.Second:
			t.Errorf("POST %s with Kafka paused: %d (Retry-After %q) after %s, want 503 with Retry-After within %s: %s",
				a.key, a.status, a.retry, a.took.Round(time.Millisecond), sendTimeout+2*time.Second, a.body)
		case strings.Contains(a.body, "overloaded"):
			kinds["overloaded, at once"]++
		default:
			kinds["unavailable, after the send timeout"]++
		}
	}
	t.Logf("%d POSTs with Kafka paused: %v", posts, kinds)
	if kinds["overloaded, at once"] == 0 || kinds["unavailable, after the send timeout"] == 0 {
		t.Errorf("want both kinds of 503 (beyond MaxInFlight=%d and waiting on Kafka), got %v", inFlight, kinds)
	}

	resume()
	resumed = true
	resumedAt := time.Now()
	ids := map[string]string{}
	for i := range posts {
		key := "pause-" + strconv.Itoa(i)
		kafkatest.WaitFor(t, 2*time.Minute, "POST "+key+" to be accepted after SIGCONT", func() bool {
			r := w.post(key, teaForAlice)
			if r.status == http.StatusAccepted {
				ids[key] = r.order(t).OrderID
				return true
			}
			time.Sleep(500 * time.Millisecond) // as Retry-After asks
			return false
		})
	}
	t.Logf("every key placed its order %s after SIGCONT", time.Since(resumedAt).Round(time.Millisecond))
	for _, id := range ids {
		w.waitStatus(id, StatusCompleted, 2*time.Minute)
	}
	t.Logf("every order Completed %s after SIGCONT", time.Since(resumedAt).Round(time.Millisecond))
}
