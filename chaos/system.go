package chaos

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// Launcher returns the command that runs sagaflow with args and extra
// environment: the sagaflow binary itself for `sagaflow chaos`, the test
// binary in tests.
type Launcher func(args []string, env []string) *exec.Cmd

// proc is one service process under a supervisor that restarts it whenever
// it exits, as systemd's Restart=always or a Kubernetes pod would.
type proc struct {
	name, service string
	args          []string
	launch        Launcher
	logPath       string

	mu       sync.Mutex
	cmd      *exec.Cmd
	holdTill time.Time // not restarted before
	nextEnv  []string  // environment for the next start only (a failpoint)
	stopping bool
	starts   int
	exits    map[string]int // how it exited, by exit status or signal
	// unstopped counts the exits that were not the run's final stop, by
	// exit status or signal: kills, fencing, crashes.
	unstopped map[string]int
	// lastWords is the last line the process wrote before its latest
	// unstopped exit: why it gave up, for the report.
	lastWords string
	exited    chan struct{} // closed when the current process is gone
}

func newProc(name, service string, args []string, launch Launcher, dir string) *proc {
	return &proc{name: name, service: service, args: args, launch: launch,
		logPath: filepath.Join(dir, name+".log"), exits: map[string]int{}, unstopped: map[string]int{}}
}

// start runs the process once; supervise calls it again after each exit.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := p.launch(p.args, p.nextEnv)
	dieWithParent(cmd)
	p.nextEnv = nil
	cmd.Stdout, cmd.Stderr = f, f
	fmt.Fprintf(f, "=== chaos: start %d of %s at %s\n", p.starts+1, p.name, time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return err
	}
	p.starts++
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		_ = f.Close()
		// Counted before exited closes, so that whoever waited for the
		// exit (a stop, then the report) sees it counted.
		how := exitOf(cmd.ProcessState)
		words := lastLine(p.logPath)
		p.mu.Lock()
		p.exits[how]++
		if !p.stopping {
			p.unstopped[how]++
			p.lastWords = words
		}
		p.mu.Unlock()
		close(exited)
	}(p.exited)
	return nil
}

// supervise restarts the process after every exit until stop.
func (p *proc) supervise(ctx context.Context) {
	for {
		p.mu.Lock()
		exited := p.exited
		p.mu.Unlock()
		<-exited
		p.mu.Lock()
		stopping, hold := p.stopping, time.Until(p.holdTill)
		p.mu.Unlock()
		if stopping || ctx.Err() != nil {
			return
		}
		// A process that exits by itself (fenced, a failpoint) comes back
		// after a second, as a supervisor's restart delay would.
		wait := max(hold, time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		for p.start() != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// lastLine returns the last non-empty line of the log at path, cut to 300
// bytes: a service that gives up says why last ("sagaflow stock: ...").
func lastLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	const tail = 4096
	buf := make([]byte, tail)
	if st, err := f.Stat(); err == nil && st.Size() > tail {
		_, _ = f.Seek(st.Size()-tail, io.SeekStart)
	}
	n, _ := io.ReadFull(f, buf)
	text := strings.TrimSpace(string(buf[:n]))
	if i := strings.LastIndexByte(text, '\n'); i >= 0 {
		text = text[i+1:]
	}
	if len(text) > 300 {
		text = text[:300] + "..."
	}
	return text
}

func exitOf(ps *os.ProcessState) string {
	if ps == nil {
		return "unknown"
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal().String()
	}
	return "exit " + strconv.Itoa(ps.ExitCode())
}

// signal sends sig to the running process; hold keeps a killed one down.
func (p *proc) signal(sig syscall.Signal, hold time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.holdTill = time.Now().Add(hold)
	if p.cmd != nil && p.cmd.Process != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// armNext makes the next start carry env, then kills the current process.
func (p *proc) armNext(env ...string) {
	p.mu.Lock()
	p.nextEnv = env
	p.mu.Unlock()
	p.signal(syscall.SIGKILL, 0)
}

// stopped reports whether stop was called: the process is down for good.
func (p *proc) stopped() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stopping
}

// stop sends SIGTERM (SIGCONT first, in case it is paused) and waits up to
// bound for the exit, then kills. It reports whether the stop was prompt.
func (p *proc) stop(bound time.Duration) bool {
	p.mu.Lock()
	p.stopping = true
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return true
	}
	_ = cmd.Process.Signal(syscall.SIGCONT)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
		return true
	case <-time.After(bound):
		_ = cmd.Process.Kill()
		<-exited
		return false
	}
}

// redisServer is a Redis of the run's own, with AOF fsync always, on a port
// that stays the same across kills.
type redisServer struct {
	bin, dir string
	port     int
	cmd      *exec.Cmd
	exited   chan struct{}
}

func startRedis(ctx context.Context, bin, dir string) (*redisServer, error) {
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("redis-server"); err != nil {
			return nil, fmt.Errorf("chaos: redis-server not found (dev/redis.sh up installs it): %w", err)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r := &redisServer{bin: bin, dir: filepath.Join(dir, "redis"), port: port}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	return r, r.start(ctx)
}

func (r *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(r.port) }

func (r *redisServer) start(ctx context.Context) error {
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no",
		"--logfile", filepath.Join(r.dir, "redis.log"))
	dieWithParent(r.cmd)
	if err := r.cmd.Start(); err != nil {
		return fmt.Errorf("chaos: start redis: %w", err)
	}
	r.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(r.cmd, r.exited)
	rdb := redis.NewClient(&redis.Options{Addr: r.addr()})
	defer rdb.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := rdb.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-r.exited:
			return fmt.Errorf("chaos: redis exited at start; see %s", filepath.Join(r.dir, "redis.log"))
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("chaos: redis did not answer within 30s: %w", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (r *redisServer) kill() {
	_ = r.cmd.Process.Kill()
	<-r.exited
}

func (r *redisServer) stop() {
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.exited:
	case <-time.After(10 * time.Second):
		r.kill()
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
