package chaos

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy forwards TCP connections from its own address to a target and can
// slow, stall or cut them: the network between the services and Redis, or
// Kafka.
type Proxy struct {
	ln     net.Listener
	target string

	mu      sync.Mutex
	latency time.Duration
	stalled chan struct{} // closed when a stall ends; nil when not stalled
	cut     bool
	conns   map[net.Conn]struct{}
}

// NewProxy listens on listen ("127.0.0.1:0": a free loopback port) and
// forwards to target until Close.
func NewProxy(listen, target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("chaos: proxy to %s: %w", target, err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops listening and closes every connection.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Heal()
	p.closeAll()
}

// Latency delays every chunk forwarded in either direction by d (0: none).
func (p *Proxy) Latency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Stall holds every byte in both directions, connections open, until Heal.
func (p *Proxy) Stall() {
	p.mu.Lock()
	if p.stalled == nil {
		p.stalled = make(chan struct{})
	}
	p.mu.Unlock()
}

// Cut closes every connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	p.cut = true
	p.mu.Unlock()
	p.closeAll()
}

// Heal ends latency, stall and cut.
func (p *Proxy) Heal() {
	p.mu.Lock()
	p.latency, p.cut = 0, false
	if p.stalled != nil {
		close(p.stalled)
		p.stalled = nil
	}
	p.mu.Unlock()
}

func (p *Proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		cut := p.cut
		p.mu.Unlock()
		if cut {
			_ = in.Close()
			continue
		}
		go p.serve(in)
	}
}

func (p *Proxy) serve(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = in.Close()
		return
	}
	p.track(in, true)
	p.track(out, true)
	defer func() {
		p.track(in, false)
		p.track(out, false)
	}()
	done := make(chan struct{}, 2)
	go func() { p.pipe(out, in); done <- struct{}{} }()
	go func() { p.pipe(in, out); done <- struct{}{} }()
	<-done
	_ = in.Close()
	_ = out.Close()
	<-done
}

// pipe copies src to dst chunk by chunk, applying the faults in force.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			lat, stalled := p.latency, p.stalled
			p.mu.Unlock()
			if stalled != nil {
				<-stalled
			}
			if lat > 0 {
				time.Sleep(lat)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // EOF or closed: the other direction is closed by serve
			return
		}
	}
}

// proxies are the proxies of one side (Redis, or every Kafka broker), which a
// network fault hits all at once.
type proxies []*Proxy

func (ps proxies) each(f func(*Proxy)) {
	for _, p := range ps {
		f(p)
	}
}

func (ps proxies) Latency(d time.Duration) { ps.each(func(p *Proxy) { p.Latency(d) }) }
func (ps proxies) Stall()                  { ps.each((*Proxy).Stall) }
func (ps proxies) Cut()                    { ps.each((*Proxy).Cut) }
func (ps proxies) Heal()                   { ps.each((*Proxy).Heal) }
func (ps proxies) Close()                  { ps.each((*Proxy).Close) }
