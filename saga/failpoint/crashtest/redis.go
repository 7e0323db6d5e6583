package crashtest

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Redis is a redis-server of one test's own, on a free loopback port, with
// its data in a temporary directory: AOF on, appendfsync always (what dev/
// runs), no RDB snapshots. Tests kill and restart it; the shared Redis of
// `make up` must never be, since other tests use it at the same time.
type Redis struct {
	// Addr is host:port, stable across restarts.
	Addr string
	dir  string
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

// StartRedis starts a Redis for t and stops it when t ends. Without a
// redis-server binary the test skips, or fails under CI=true.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		msg := "crashtest: no redis-server in PATH (dev/redis.sh installs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	r := &Redis{Addr: "127.0.0.1:" + strconv.Itoa(port), dir: t.TempDir(), port: port}
	r.Start(t)
	t.Cleanup(func() {
		if r.running() {
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

func (r *Redis) running() bool {
	if r.cmd == nil {
		return false
	}
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// Start starts the server (again) on the same port and directory, and waits
// until it answers PING, which it only does once it has loaded its AOF.
func (r *Redis) Start(t testing.TB) {
	t.Helper()
	if r.running() {
		t.Fatal("crashtest: redis already running")
	}
	r.cmd = exec.Command("redis-server",
		"--port", strconv.Itoa(r.port), "--bind", "127.0.0.1", "--dir", r.dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "",
		"--logfile", filepath.Join(r.dir, "redis.log"), "--daemonize", "no")
	r.done = make(chan struct{})
	if err := r.cmd.Start(); err != nil {
		t.Fatalf("crashtest: start redis-server: %v", err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for !ping(r.Addr) {
		select {
		case <-r.done:
			t.Fatalf("crashtest: redis-server exited at start; log:\n%s", r.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("crashtest: redis at %s does not answer PING; log:\n%s", r.Addr, r.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill kills the server with SIGKILL, as a crash would: no shutdown, no
// final fsync beyond what appendfsync always already did.
func (r *Redis) Kill(t testing.TB) {
	t.Helper()
	if !r.running() {
		t.Fatal("crashtest: redis not running")
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
}

// Log returns the server's log.
func (r *Redis) Log() string {
	b, _ := os.ReadFile(filepath.Join(r.dir, "redis.log"))
	return string(b)
}

// ping speaks RESP by hand: PING must get +PONG (a loading server answers
// -LOADING).
func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}
