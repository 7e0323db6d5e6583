package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"reflect"
	"strings"
	"testing"
	"time"
)

// These tests change the process-wide failpoints, so none is parallel.

func TestParse(t *testing.T) {
	type want struct {
		act     action
		percent float64
		count   int64 // 0: unlimited
		sleep   time.Duration
	}
	for _, tc := range []struct {
		spec string
		want map[string]want
		err  string
	}{
		{spec: "", want: map[string]want{}},
		{spec: " , ;", want: map[string]want{}},
		{spec: "participant/after-apply=exit", want: map[string]want{
			"participant/after-apply": {act: actExit, percent: 100}}},
		{spec: "stock/after-apply=50%exit,payment/after-produce=sleep(200ms)", want: map[string]want{
			"stock/after-apply":     {act: actExit, percent: 50},
			"payment/after-produce": {act: actSleep, percent: 100, sleep: 200 * time.Millisecond}}},
		{spec: " a = 25%3*panic ; b=off; c=2*exit;", want: map[string]want{
			"a": {act: actPanic, percent: 25, count: 3},
			"b": {act: actOff, percent: 100},
			"c": {act: actExit, percent: 100, count: 2}}},
		{spec: "a=0.5%sleep(1s)", want: map[string]want{"a": {act: actSleep, percent: 0.5, sleep: time.Second}}},
		{spec: "a=0%exit", want: map[string]want{"a": {act: actExit, percent: 0}}},
		{spec: "a=sleep(0s)", want: map[string]want{"a": {act: actSleep, percent: 100}}},

		{spec: "a", err: "want name=term"},
		{spec: "=exit", err: "empty name"},
		{spec: "a b=exit", err: "name with spaces"},
		{spec: "a=exit,a=panic", err: "armed twice"},
		{spec: "a=", err: "no action"},
		{spec: "a=crash", err: "unknown action"},
		{spec: "a=Exit", err: "unknown action"},
		{spec: "a=101%exit", err: "probability"},
		{spec: "a=-1%exit", err: "probability"},
		{spec: "a=x%exit", err: "probability"},
		{spec: "a=0*exit", err: "count"},
		{spec: "a=-2*exit", err: "count"},
		{spec: "a=1.5*exit", err: "count"},
		{spec: "a=sleep", err: "sleep"},
		{spec: "a=sleep()", err: "sleep"},
		{spec: "a=sleep(soon)", err: "sleep"},
		{spec: "a=sleep(-1s)", err: "sleep"},
		{spec: "a=sleep(1s", err: "unclosed"},
		{spec: "a=exit(3)", err: "takes no argument"},
		{spec: "a=panic()", err: "takes no argument"},
	} {
		got, err := parse(tc.spec)
		if tc.err != "" {
			if err == nil || !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parse(%q) = %v, want ErrSpec mentioning %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("parse(%q): %v", tc.spec, err)
			continue
		}
		gotW := map[string]want{}
		for name, tm := range got {
			w := want{act: tm.act, percent: tm.percent, sleep: tm.sleep}
			if tm.limited {
				w.count = tm.left.Load()
			}
			gotW[name] = w
		}
		if !reflect.DeepEqual(gotW, tc.want) {
			t.Errorf("parse(%q) = %+v, want %+v", tc.spec, gotW, tc.want)
		}
	}
}

// arm arms spec for one test and disarms when it ends.
func arm(t *testing.T, spec string) {
	t.Helper()
	if err := Arm(spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(Disarm)
}

// exited replaces os.Exit for one test with a panic carrying the code.
type exited int

func catchExit(t *testing.T) {
	t.Cleanup(func() { exit = os.Exit })
	exit = func(code int) { panic(exited(code)) }
}

// hits calls Hit n times and counts how many fired, for actions that panic.
func hits(name string, n int) (fired int) {
	for range n {
		func() {
			defer func() {
				if recover() != nil {
					fired++
				}
			}()
			Hit(name)
		}()
	}
	return fired
}

func TestHitDisarmedDoesNothing(t *testing.T) {
	Disarm()
	Hit("participant/after-apply") // must not panic or exit
	arm(t, "other=panic")
	Hit("participant/after-apply")
}

func TestHitExit(t *testing.T) {
	catchExit(t)
	arm(t, "participant/after-apply=exit")
	defer func() {
		if got := recover(); got != exited(ExitCode) {
			t.Errorf("exit action: recovered %v, want exit %d", got, ExitCode)
		}
	}()
	Hit("participant/after-apply")
	t.Error("exit action returned")
}

func TestHitPanicNamesTheFailpoint(t *testing.T) {
	arm(t, "x/y=panic")
	defer func() {
		if got := recover(); got != "failpoint x/y" {
			t.Errorf("recovered %v", got)
		}
	}()
	Hit("x/y")
}

func TestHitSleep(t *testing.T) {
	arm(t, "slow=sleep(50ms)")
	start := time.Now()
	Hit("slow")
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Errorf("sleep(50ms) returned after %v", d)
	}
}

func TestHitCountLimit(t *testing.T) {
	arm(t, "p=3*panic")
	if got := hits("p", 10); got != 3 {
		t.Errorf("3*panic fired %d times in 10 hits", got)
	}
}

func TestHitProbability(t *testing.T) {
	arm(t, "p=30%panic,never=0%panic")
	const n = 4000
	got := hits("p", n)
	// Binomial(4000, 0.3): mean 1200, sd about 29; 6 sd either side.
	if got < 1025 || got > 1375 {
		t.Errorf("30%%panic fired %d of %d times", got, n)
	}
	if got := hits("never", 1000); got != 0 {
		t.Errorf("0%%panic fired %d times", got)
	}
}

func TestHitProbabilityAndCount(t *testing.T) {
	arm(t, "p=50%5*panic")
	if got := hits("p", 1000); got != 5 {
		t.Errorf("50%%5*panic fired %d times in 1000 hits", got)
	}
}

func TestScoped(t *testing.T) {
	arm(t, "stock/after-apply=panic")
	stock, payment := Scoped("stock"), Scoped("payment")
	fired := func(f func(string), name string) (ok bool) {
		defer func() { ok = recover() != nil }()
		f(name)
		return false
	}
	if !fired(stock, "participant/after-apply") {
		t.Error("stock/after-apply did not fire for the stock scope")
	}
	if fired(payment, "participant/after-apply") {
		t.Error("stock/after-apply fired for the payment scope")
	}
	arm(t, "participant/after-apply=panic")
	if !fired(payment, "participant/after-apply") {
		t.Error("the unscoped name did not fire through Scoped")
	}
	Disarm()
	if fired(stock, "participant/after-apply") {
		t.Error("fired while disarmed")
	}
}

func TestArmErrorKeepsWhatWasArmed(t *testing.T) {
	arm(t, "b=off,a=2*exit")
	if err := Arm("a=bogus"); !errors.Is(err, ErrSpec) {
		t.Fatalf("Arm(bogus) = %v", err)
	}
	if got, want := Armed(), []string{"a=2*exit", "b=off"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Armed() = %q, want %q", got, want)
	}
	if err := Arm(""); err != nil || Armed() != nil {
		t.Errorf("Arm(\"\") = %v, Armed %q", err, Armed())
	}
}

// TestExitKillsTheProcess runs this test binary again with the failpoint
// armed from the environment, as the chaos suite does, and checks that the
// child dies at the failpoint with ExitCode and without running its deferred
// functions.
func TestExitKillsTheProcess(t *testing.T) {
	if os.Getenv("FAILPOINT_TEST_CHILD") == "1" {
		if err := EnvErr(); err != nil {
			os.Exit(2)
		}
		defer os.Stdout.WriteString("deferred function ran\n")
		Hit("child/crash")
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestExitKillsTheProcess$")
	cmd.Env = append(os.Environ(), "FAILPOINT_TEST_CHILD=1", Env+"=child/crash=exit")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitCode {
		t.Fatalf("child: %v, want exit %d; output:\n%s", err, ExitCode, out)
	}
	if !strings.Contains(string(out), "failpoint child/crash: exit 137") {
		t.Errorf("child output does not say where it died:\n%s", out)
	}
	if strings.Contains(string(out), "deferred function ran") {
		t.Errorf("a deferred function ran: exit must not clean up")
	}
}

func TestEnvErrorIsReported(t *testing.T) {
	if os.Getenv("FAILPOINT_TEST_CHILD") == "2" {
		if EnvErr() == nil || Armed() != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnvErrorIsReported$")
	cmd.Env = append(os.Environ(), "FAILPOINT_TEST_CHILD=2", Env+"=a=explode")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child with a bad spec: %v; output:\n%s", err, out)
	}
	if !strings.Contains(string(out), Env) {
		t.Errorf("a bad spec was not reported on stderr:\n%s", out)
	}
}

func BenchmarkHitDisarmed(b *testing.B) {
	Disarm()
	for b.Loop() {
		Hit("participant/after-apply")
	}
}

func BenchmarkHitArmedOther(b *testing.B) {
	if err := Arm("something/else=exit"); err != nil {
		b.Fatal(err)
	}
	defer Disarm()
	for b.Loop() {
		Hit("participant/after-apply")
	}
}
