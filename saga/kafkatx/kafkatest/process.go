package kafkatest

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Process is a child process running this same test binary, for tests that
// kill, pause or stop a real process. The child learns its role from the
// environment, in the test package's TestMain:
//
//	func TestMain(m *testing.M) {
//		if os.Getenv("MY_CHILD") != "" {
//			os.Exit(runChild())
//		}
//		os.Exit(m.Run())
//	}
type Process struct {
	cmd  *exec.Cmd
	logs Buffer
	done chan struct{}
}

// Buffer collects output from several goroutines (a child's two pipes, a
// logger that outlives its test) and hands it out whole.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// StartProcess starts the test binary with env added to the environment; it
// runs no test ("-test.run=^$"), so TestMain decides what it does. The test's
// cleanup kills it if it still runs.
func StartProcess(t testing.TB, env map[string]string) *Process {
	t.Helper()
	p := &Process{done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "-test.run=^$")
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.logs, &p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start child process: %v", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.done
	})
	return p
}

// Log returns everything the child printed so far.
func (p *Process) Log() string { return p.logs.String() }

// Done is closed when the child has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Signal sends s to the child.
func (p *Process) Signal(t testing.TB, s syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(s); err != nil {
		t.Fatalf("signal %v: %v", s, err)
	}
}

// Kill SIGKILLs the child and waits until it is gone: a crash, no cleanup.
func (p *Process) Kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop asks for a graceful stop (SIGTERM) and returns the exit code.
func (p *Process) Stop(t testing.TB) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	return p.Wait(t, 60*time.Second)
}

// Wait waits for the child to exit and returns its exit code.
func (p *Process) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("child did not exit within %s; its output:\n%s", timeout, p.Log())
	}
	return p.cmd.ProcessState.ExitCode()
}
