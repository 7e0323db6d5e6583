//go:build !linux

package chaos

import "os/exec"

// dieWithParent does nothing where the kernel has no parent-death signal;
// a killed run's processes are then left for the operator to stop.
func dieWithParent(*exec.Cmd) {}
