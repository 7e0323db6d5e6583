package orders

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"
)

// writeTimeout bounds one write to an event stream: a client that stopped
// reading is dropped rather than holding a goroutine forever.
const writeTimeout = 10 * time.Second

// orderEvents serves GET /orders/{id}/events: the order at once, then on
// every change.
func (s *Service) orderEvents(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	// Subscribe before reading, so no change falls between the two.
	sub := s.deps.Orders.Subscribe(id)
	defer sub.Close()
	o, ok := s.deps.Orders.Get(id)
	if !ok {
		orderNotFound(w, id)
		return
	}
	st, err := s.startStream(w)
	if err != nil {
		return
	}
	sent := o.rev
	if st.event(o) != nil {
		return
	}
	s.stream(r, st, sub, func(o Order) error {
		if o.rev <= sent {
			return nil // read before it was queued, and sent already
		}
		sent = o.rev
		return st.event(o)
	})
}

// allEvents serves GET /events: the summary of every order that changes.
func (s *Service) allEvents(w http.ResponseWriter, r *http.Request) {
	sub := s.deps.Orders.Subscribe("")
	defer sub.Close()
	st, err := s.startStream(w)
	if err != nil {
		return
	}
	s.stream(r, st, sub, func(o Order) error { return st.event(o.Summary()) })
}

// stream sends the subscription's changes until the client goes away, a
// write fails or the service closes, with a keep-alive comment whenever the
// stream was quiet for the interval.
func (s *Service) stream(r *http.Request, st *eventStream, sub *Subscription, send func(Order) error) {
	keepAlive := time.NewTicker(s.cfg.KeepAlive)
	defer keepAlive.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-keepAlive.C:
			if st.comment("keep-alive") != nil {
				return
			}
		case <-sub.C():
			for _, o := range sub.Next() {
				if send(o) != nil {
					return
				}
			}
			keepAlive.Reset(s.cfg.KeepAlive)
		}
	}
}

// eventStream writes Server-Sent Events.
type eventStream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
}

// startStream sends the headers. It lifts the server's write timeout, which
// would otherwise cut every stream after it, and bounds each write instead.
func (s *Service) startStream(w http.ResponseWriter) (*eventStream, error) {
	rc := http.NewResponseController(w)
	if err := rc.SetWriteDeadline(time.Time{}); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return nil, err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // nginx would buffer the stream otherwise
	w.WriteHeader(http.StatusOK)
	st := &eventStream{w: w, rc: rc}
	// Tell EventSource how soon to reconnect, and get the headers out now:
	// a browser waits for them before it reports the stream open.
	return st, st.write([]byte("retry: 2000\n\n"))
}

func (st *eventStream) event(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	// json.Marshal writes no newline, so the value is one data line.
	return st.write(append(append([]byte("event: order\ndata: "), b...), '\n', '\n'))
}

func (st *eventStream) comment(text string) error {
	return st.write([]byte(": " + text + "\n\n"))
}

func (st *eventStream) write(b []byte) error {
	if err := st.rc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return err
	}
	if _, err := st.w.Write(b); err != nil {
		return err
	}
	return st.rc.Flush()
}
