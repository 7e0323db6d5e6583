package bench

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a process whose CPU a run counts, under a name; the CPU of
// several processes with one name is summed (a Kafka of several nodes).
type Proc struct {
	Name string
	PID  int
}

// LoadGen is the name the bench's own CPU is counted under.
const LoadGen = "loadgen"

// ParseProcs reads NAME=PID[,NAME=PID...], the -cpu flag.
func ParseProcs(s string) ([]Proc, error) {
	var ps []Proc
	for _, f := range strings.Split(s, ",") {
		name, pid, ok := strings.Cut(strings.TrimSpace(f), "=")
		n, err := strconv.Atoi(pid)
		if !ok || name == "" || err != nil || n <= 0 {
			return nil, fmt.Errorf("-cpu: %q is not NAME=PID", f)
		}
		if name == LoadGen {
			return nil, fmt.Errorf("-cpu: %q is the bench's own name (its CPU is always counted)", name)
		}
		ps = append(ps, Proc{name, n})
	}
	return ps, nil
}

// PartCPU is the CPU one part spent during a step, its drain included.
type PartCPU struct {
	Name  string        `json:"name"`
	Spent time.Duration `json:"spent_ns"`
	// PerSaga is Spent per saga that ended in the step, in milliseconds.
	PerSaga float64 `json:"ms_per_saga"`
}

// cpuSample is the CPU each part has used so far, in the order of
// partNames.
type cpuSample []time.Duration

// partNames are the watched parts by name, in the order each name first
// comes in procs, and the bench itself last.
func partNames(procs []Proc) []string {
	var names []string
	for _, p := range procs {
		if !slices.Contains(names, p.Name) {
			names = append(names, p.Name)
		}
	}
	return append(names, LoadGen)
}

// sampleCPU reads the CPU time each part of partNames(procs) has used so
// far, or nothing when no process is watched (the bench's own CPU is
// counted only beside what it is compared with). A process that is gone
// is an error: a step measured against a dead service measures nothing.
func sampleCPU(procs []Proc) (cpuSample, error) {
	if len(procs) == 0 {
		return nil, nil
	}
	names := partNames(procs)
	s := make(cpuSample, len(names))
	for _, p := range procs {
		d, err := procCPU(p.PID)
		if err != nil {
			return nil, fmt.Errorf("cpu of %s (pid %d): %w", p.Name, p.PID, err)
		}
		s[slices.Index(names, p.Name)] += d
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return nil, fmt.Errorf("cpu of the bench itself: %w", err)
	}
	s[len(s)-1] = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return s, nil
}

// userHZ is the unit of /proc's CPU times: USER_HZ, 100 on every Linux
// architecture Go runs on (the kernel scales its own HZ to it for /proc).
const userHZ = 100

// procCPU is the user and system time process pid and the children it has
// waited for have used, from Linux's /proc/pid/stat. The children are
// Redis's: with appendonly it forks to rewrite its append-only file each
// time the file has grown by auto-aof-rewrite-percentage, and under load
// such a child took up to a core for 10 s at a time (docs/performance.md),
// which the process's own times never show. A child's time is added when
// its parent waits for it, so a rewrite counts in the run it ends in.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return statCPU(string(b))
}

// statCPU reads utime, stime, cutime and cstime, the 14th to 17th fields
// of a /proc/pid/stat line. The second field, the command's name in
// parentheses, may hold spaces and parentheses itself, so the fields are
// counted from its last ')'.
func statCPU(line string) (time.Duration, error) {
	i := strings.LastIndexByte(line, ')')
	if i < 0 {
		return 0, errors.New("not a /proc/pid/stat line")
	}
	f := strings.Fields(line[i+1:]) // f[0] is field 3, the state
	if len(f) < 15 {
		return 0, errors.New("a /proc/pid/stat line too short")
	}
	var ticks int64
	for _, v := range f[11:15] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/pid/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// spent is what each part used between two samples, per saga of ended.
func spent(names []string, before, after cpuSample, ended int64) []PartCPU {
	parts := make([]PartCPU, len(names))
	for i, n := range names {
		d := after[i] - before[i]
		parts[i] = PartCPU{Name: n, Spent: d, PerSaga: ms(d) / float64(max(ended, 1))}
	}
	return parts
}
