package chaos

import (
	"os/exec"
	"syscall"
)

// dieWithParent has the kernel kill c's process when the chaos run's own
// process dies: a run killed or timed out (a test binary's panic) must not
// leave services and a Redis behind to load the machine and the next run.
func dieWithParent(c *exec.Cmd) {
	if c.SysProcAttr == nil {
		c.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
