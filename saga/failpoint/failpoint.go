// Package failpoint gives the crash windows of sagaflow names, in the style
// of etcd's gofail: code calls Hit("participant/after-apply") where a crash
// would hurt most, and the chaos suite arms that name from the environment to
// make the process exit, panic or stall exactly there.
//
// Failpoints are compiled in (no code generation, no build tag), so the
// binary the chaos suite kills is the binary that ships. Disarmed they cost
// one atomic load per Hit.
//
// # Arming
//
// SAGAFLOW_FAILPOINTS holds a list of name=term, separated by ',' or ';':
//
//	SAGAFLOW_FAILPOINTS='participant/after-apply=exit'
//	SAGAFLOW_FAILPOINTS='stock/after-apply=50%exit,payment/after-produce=sleep(200ms)'
//	SAGAFLOW_FAILPOINTS='participant/after-produce=25%3*panic'
//
// A term is [P%][K*]action, as in gofail: P (0 to 100, decimals allowed) is
// the probability that a hit fires, 100 when absent; K (at least 1) caps how
// many hits fire, after which the failpoint is spent. Actions:
//
//	exit       os.Exit(137) at once: no deferred function runs, nothing is
//	           flushed, as if the process were killed (137 = 128+SIGKILL)
//	panic      panic with the failpoint's name (deferred functions run)
//	sleep(D)   sleep for the Go duration D, e.g. sleep(200ms)
//	off        nothing: disarmed, useful to override a list
//
// The environment is read once, when the package is initialised. A binary
// should call EnvErr at start-up and refuse to run when it is not nil: a chaos
// run whose failpoint silently failed to arm would prove nothing.
//
// Failpoints are process-wide by nature (they stand for a crash of the whole
// process), which is why their state is a package variable rather than a
// value passed around; Arm and Disarm are for tests and tools.
package failpoint

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Env is the environment variable read at start-up.
const Env = "SAGAFLOW_FAILPOINTS"

// ExitCode is the exit status of the exit action: what a shell reports for a
// process killed by SIGKILL, so supervisors and tests treat both alike.
const ExitCode = 137

// ErrSpec reports a malformed failpoint list.
var ErrSpec = errors.New("failpoint: invalid spec")

// action is what an armed failpoint does when it fires.
type action int

const (
	actOff action = iota
	actExit
	actPanic
	actSleep
)

// term is one armed failpoint.
type term struct {
	spec    string  // as written, for Armed
	percent float64 // chance in percent that a hit fires
	limited bool    // whether left caps the firings
	left    atomic.Int64
	act     action
	sleep   time.Duration
}

var (
	// armed is nil when no failpoint is armed: the only thing a disarmed Hit
	// reads.
	armed  atomic.Pointer[map[string]*term]
	envErr error

	// exit is os.Exit, replaced by tests that cannot let the process die.
	exit = os.Exit
)

func init() {
	envErr = Arm(os.Getenv(Env))
	if envErr != nil {
		// Said at once, in case the binary never calls EnvErr.
		fmt.Fprintf(os.Stderr, "%s=%q: %v (no failpoint armed)\n", Env, os.Getenv(Env), envErr)
	}
}

// EnvErr returns the error in SAGAFLOW_FAILPOINTS, or nil when it was empty or
// valid. When it is not nil no failpoint was armed.
func EnvErr() error { return envErr }

// Hit runs the failpoint name if it is armed, and does nothing otherwise.
// Safe for concurrent use.
func Hit(name string) {
	m := armed.Load()
	if m == nil {
		return
	}
	if t := (*m)[name]; t != nil {
		t.fire(name)
	}
}

// Scoped returns a Hit for code shared by several services in one process:
// it hits name and also name with its first segment replaced by scope, so
// Scoped("stock") arms "participant/after-apply" both as itself and as
// "stock/after-apply". The second name is what lets the chaos suite crash
// the stock participant alone when stock and payment share a process (the
// demo).
func Scoped(scope string) func(name string) {
	return func(name string) {
		if armed.Load() == nil {
			return
		}
		Hit(name)
		if _, rest, ok := strings.Cut(name, "/"); ok {
			Hit(scope + "/" + rest)
		}
	}
}

// Arm replaces every armed failpoint with those of spec (the syntax of
// SAGAFLOW_FAILPOINTS). An empty spec disarms all. On error nothing changes.
func Arm(spec string) error {
	m, err := parse(spec)
	if err != nil {
		return err
	}
	if len(m) == 0 {
		armed.Store(nil)
		return nil
	}
	armed.Store(&m)
	return nil
}

// Disarm disarms every failpoint.
func Disarm() { armed.Store(nil) }

// Armed returns the armed failpoints as name=term, sorted, for a start-up log
// line.
func Armed() []string {
	m := armed.Load()
	if m == nil {
		return nil
	}
	out := make([]string, 0, len(*m))
	for name, t := range *m {
		out = append(out, name+"="+t.spec)
	}
	sort.Strings(out)
	return out
}

func (t *term) fire(name string) {
	if t.act == actOff {
		return
	}
	if t.percent < 100 && rand.Float64()*100 >= t.percent {
		return
	}
	if t.limited && t.left.Add(-1) < 0 {
		return
	}
	switch t.act {
	case actExit:
		// Straight to stderr (unbuffered) so the log of the dead process
		// says where it died.
		fmt.Fprintf(os.Stderr, "failpoint %s: exit %d\n", name, ExitCode)
		exit(ExitCode)
	case actPanic:
		panic("failpoint " + name)
	case actSleep:
		time.Sleep(t.sleep)
	}
}

// parse reads a list of name=term. Empty entries (a trailing separator) are
// allowed; a name given twice is not, since which one wins would be a guess.
func parse(spec string) (map[string]*term, error) {
	m := map[string]*term{}
	for _, entry := range strings.FieldsFunc(spec, func(r rune) bool { return r == ',' || r == ';' }) {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, def, ok := strings.Cut(entry, "=")
		name, def = strings.TrimSpace(name), strings.TrimSpace(def)
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: %q: want name=term", ErrSpec, entry)
		case name == "" || strings.ContainsAny(name, " \t\n"):
			return nil, fmt.Errorf("%w: %q: empty name or name with spaces", ErrSpec, entry)
		case m[name] != nil:
			return nil, fmt.Errorf("%w: %q is armed twice", ErrSpec, name)
		}
		t, err := parseTerm(def)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrSpec, name, err)
		}
		m[name] = t
	}
	return m, nil
}

// parseTerm reads [P%][K*]action[(arg)].
func parseTerm(s string) (*term, error) {
	t := &term{spec: s, percent: 100}
	rest := s
	if p, after, ok := strings.Cut(rest, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f < 0 || f > 100 {
			return nil, fmt.Errorf("probability %q%%: want a number from 0 to 100", p)
		}
		t.percent, rest = f, after
	}
	if k, after, ok := strings.Cut(rest, "*"); ok {
		n, err := strconv.ParseInt(k, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("count %q*: want a whole number from 1", k)
		}
		t.limited, rest = true, after
		t.left.Store(n)
	}
	name, arg, hasArg := rest, "", false
	if i := strings.IndexByte(rest, '('); i >= 0 {
		if !strings.HasSuffix(rest, ")") {
			return nil, fmt.Errorf("%q: unclosed (", rest)
		}
		name, arg, hasArg = rest[:i], rest[i+1:len(rest)-1], true
	}
	switch name {
	case "exit":
		t.act = actExit
	case "panic":
		t.act = actPanic
	case "off":
		t.act = actOff
	case "sleep":
		d, err := time.ParseDuration(arg)
		if !hasArg || err != nil || d < 0 {
			return nil, fmt.Errorf("sleep(%s): want a duration such as sleep(200ms)", arg)
		}
		t.act, t.sleep = actSleep, d
		return t, nil
	case "":
		return nil, fmt.Errorf("%q: no action", s)
	default:
		return nil, fmt.Errorf("unknown action %q: want exit, panic, sleep(D) or off", name)
	}
	if hasArg {
		return nil, fmt.Errorf("%s takes no argument", name)
	}
	return t, nil
}
