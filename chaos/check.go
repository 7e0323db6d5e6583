package chaos

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/sagaflow/sagaflow/orders"
	"github.com/sagaflow/sagaflow/payment"
	"github.com/sagaflow/sagaflow/saga"
	"github.com/sagaflow/sagaflow/stock"
)

// Violation is one broken invariant.
type Violation struct {
	Kind   string `json:"kind"`
	Detail string `json:"detail"`
}

// command is one command as the command topics hold it.
type command struct {
	Saga    string
	Step    int
	Phase   saga.Phase
	Attempt int
}

// facts is everything the checks read, gathered from outside the system
// after it healed and drained: the clients' view, the topics (read_committed)
// and Redis.
type facts struct {
	Orders []order
	// Snapshots holds every snapshot of each saga on saga.state, in log order.
	Snapshots map[string][]*saga.Instance
	// Commands are the commands on the command topics, except the ones the
	// suite re-published itself.
	Commands []command
	// Poisoned are the ids of the poison records the suite wrote;
	// DeadLettered the ones found on the dead-letter topic.
	Poisoned     []string
	DeadLettered map[string]bool
	Products     []stock.Product
	// Uncommitted holds the Completed orders whose reservation stock has
	// not committed, by the state it is in, after waiting a drain bound
	// for stock to apply their CommitStock.
	Uncommitted map[string]string
	Customers   []payment.Customer
	// HealedAt is when every fault was healed; every accepted order must end
	// within DrainBound of it.
	HealedAt   time.Time
	DrainBound time.Duration
	// Exits are the service processes' exits other than the final stop, by
	// "process: how". A run whose faults touch no service process (only
	// brokers, say) must have none: a loop that gives up on a broker
	// failover is a bug even when its supervisor restarts it.
	Exits        map[string]int
	ExitsAllowed bool
	// LastWords is, by process, the last line it wrote before its latest
	// such exit: the reason it gave up.
	LastWords map[string]string
}

// validate checks the invariants of docs/design.md on f and returns what is
// broken, a violation per instance, sorted by kind.
func validate(f facts) []Violation {
	var vs []Violation
	add := func(kind, format string, args ...any) {
		vs = append(vs, Violation{Kind: kind, Detail: fmt.Sprintf(format, args...)})
	}
	if !f.ExitsAllowed {
		for what, n := range f.Exits {
			name, _, _ := strings.Cut(what, ": ")
			add("process-exited", "%s, %d time(s), with no fault on any service process; its last line before the exit: %q",
				what, n, f.LastWords[name])
		}
	}
	final := map[string]*saga.Instance{}
	for id, snaps := range f.Snapshots {
		final[id] = checkPath(id, snaps, add)
	}
	// Every accepted order ended, in time, and not as Failed.
	for _, o := range f.Orders {
		if o.ID == "" {
			continue // never accepted: nothing was promised (its saga, if any, is checked below)
		}
		switch {
		case o.Outcome == "":
			add("order-not-ended", "%s (key %s) has no end event %s after the faults healed", o.ID, o.Key, f.DrainBound)
		case o.Ended.After(f.HealedAt.Add(f.DrainBound)):
			add("order-ended-late", "%s ended %s after the faults healed", o.ID, o.Ended.Sub(f.HealedAt).Round(time.Millisecond))
		case o.Outcome == "failed":
			add("saga-failed", "%s ended Failed: it waits for an operator", o.ID)
		}
		if final[o.ID] == nil {
			add("order-without-saga", "%s was accepted but saga.state has no snapshot of it", o.ID)
		}
	}
	for id, state := range f.Uncommitted {
		if state == "" {
			state = "none"
		}
		add("confirm-not-applied", "%s is Completed, but stock has not committed its reservation %s after the drain (reservation: %s)", id, f.DrainBound, state)
	}
	checkCommands(f.Commands, final, add)
	checkStock(f.Products, final, add)
	checkMoney(f.Customers, final, add)
	for _, id := range f.Poisoned {
		if !f.DeadLettered[id] {
			add("poison-not-dead-lettered", "poison record %s is not on the dead-letter topic", id)
		}
	}
	sort.SliceStable(vs, func(i, j int) bool { return vs[i].Kind < vs[j].Kind })
	return vs
}

// checkPath checks one saga's snapshots: each is consistent (Instance.Check:
// legal history, steps that fit the state), versions only grow, each
// history extends the one before, and the last is terminal. It returns the
// last.
func checkPath(id string, snaps []*saga.Instance, add func(kind, format string, args ...any)) *saga.Instance {
	var prev *saga.Instance
	for _, s := range snaps {
		if err := s.Check(); err != nil {
			add("illegal-snapshot", "%s version %d: %v", id, s.Version, err)
		}
		if prev != nil {
			switch {
			case s.Version < prev.Version:
				add("state-went-back", "%s: version %d after %d", id, s.Version, prev.Version)
			case s.Version == prev.Version && s.Ignored == prev.Ignored:
				add("state-applied-twice", "%s: version %d written twice", id, s.Version)
			case prev.Version > 0 && len(s.History) >= int(prev.Version) &&
				s.History[prev.Version-1].MessageID != prev.History[prev.Version-1].MessageID:
				add("history-rewritten", "%s: change %d differs between versions %d and %d", id, prev.Version, prev.Version, s.Version)
			}
		}
		prev = s
	}
	if prev != nil && !prev.IsTerminal() {
		add("saga-not-ended", "%s is %s at step %d (version %d) after the drain", id, prev.State, prev.Step, prev.Version)
	}
	return prev
}

// checkCommands finds commands sent twice (a Kafka duplicate the
// transactions should have prevented) and lost (a gap in the attempts, or
// fewer on the topic than the saga's last snapshot says it sent).
func checkCommands(cmds []command, final map[string]*saga.Instance, add func(kind, format string, args ...any)) {
	type stepPhase struct {
		saga  string
		step  int
		phase saga.Phase
	}
	seen := map[command]int{}
	attempts := map[stepPhase]map[int]bool{}
	for _, c := range cmds {
		seen[c]++
		if seen[c] == 2 {
			add("duplicate-command", "%s step %d %s attempt %d is on the command topic twice", c.Saga, c.Step, c.Phase, c.Attempt)
		}
		k := stepPhase{c.Saga, c.Step, c.Phase}
		if attempts[k] == nil {
			attempts[k] = map[int]bool{}
		}
		attempts[k][c.Attempt] = true
	}
	for k, as := range attempts {
		for a := 1; a <= len(as); a++ {
			if !as[a] {
				add("lost-command", "%s step %d %s: attempts %v, attempt %d missing", k.saga, k.step, k.phase, keys(as), a)
				break
			}
		}
	}
	for id, s := range final {
		if s == nil || !s.IsTerminal() {
			continue
		}
		for i, st := range s.Steps {
			phase := saga.PhaseAction
			switch st.Status {
			case saga.StepCompensating, saga.StepCompensated, saga.StepCompensationFailed:
				phase = saga.PhaseCompensation
			case saga.StepPending, saga.StepSkipped:
				if n := len(attempts[stepPhase{id, i, saga.PhaseAction}]); n > 0 {
					add("unsent-command", "%s step %d is %s but %d action commands of it are on the topic", id, i, st.Status, n)
				}
				continue
			}
			if n := len(attempts[stepPhase{id, i, phase}]); n != st.Attempt {
				kind := "lost-command"
				if n > st.Attempt {
					kind = "unsent-command"
				}
				add(kind, "%s step %d %s: the saga sent %d attempts, the topic holds %d", id, i, phase, st.Attempt, n)
			}
		}
	}
}

func keys(m map[int]bool) []int {
	ks := make([]int, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Ints(ks)
	return ks
}

// placed is the order a saga started with.
func placed(s *saga.Instance) (orders.OrderPlaced, bool) {
	var p orders.OrderPlaced
	return p, json.Unmarshal(s.Data, &p) == nil
}

// checkStock: each product's stock is conserved and not negative, and what
// was sold is what the Completed sagas ordered. A saga still running (the
// drain ran out) may hold a reservation or be confirming: its quantities
// bound what may be reserved or sold on top, so with every saga ended the
// bounds are exact.
func checkStock(ps []stock.Product, final map[string]*saga.Instance, add func(kind, format string, args ...any)) {
	sold, open := map[string]int64{}, map[string]int64{}
	for _, s := range final {
		p, ok := placed(s)
		if !ok {
			continue
		}
		for _, l := range p.Lines {
			switch {
			case s.State == saga.Completed:
				sold[l.ProductID] += l.Quantity
			case !s.IsTerminal():
				open[l.ProductID] += l.Quantity
			}
		}
	}
	for _, p := range ps {
		if p.Available < 0 || p.Reserved < 0 || p.Sold < 0 || p.Available+p.Reserved+p.Sold != p.Stocked {
			add("stock-not-conserved", "%s: available %d + reserved %d + sold %d, stocked %d", p.ID, p.Available, p.Reserved, p.Sold, p.Stocked)
		}
		if p.Reserved+p.Sold > sold[p.ID]+open[p.ID] {
			add("stock-left-reserved", "%s: %d reserved and %d sold, but the completed sagas ordered %d and the running ones %d",
				p.ID, p.Reserved, p.Sold, sold[p.ID], open[p.ID])
		}
		if p.Sold < sold[p.ID] || p.Sold > sold[p.ID]+open[p.ID] {
			add("stock-sold-mismatch", "%s: sold %d, the completed sagas ordered %d (running ones %d)", p.ID, p.Sold, sold[p.ID], open[p.ID])
		}
	}
}

// checkMoney: each customer's money is conserved and not negative, and what
// was captured is the totals of the Completed sagas, plus at most those of
// the sagas still running (charged, not yet confirmed or refunded): a charge
// applied twice, or a refund missed or doubled, shows here.
func checkMoney(cs []payment.Customer, final map[string]*saga.Instance, add func(kind, format string, args ...any)) {
	captured, open := map[string]int64{}, map[string]int64{}
	for _, s := range final {
		p, ok := placed(s)
		switch {
		case !ok:
		case s.State == saga.Completed:
			captured[p.CustomerID] += p.TotalCents
		case !s.IsTerminal():
			open[p.CustomerID] += p.TotalCents
		}
	}
	for _, c := range cs {
		if c.BalanceCents < 0 || c.CapturedCents < 0 || c.BalanceCents+c.CapturedCents != c.DepositedCents {
			add("money-not-conserved", "%s: balance %d + captured %d, deposited %d", c.ID, c.BalanceCents, c.CapturedCents, c.DepositedCents)
		}
		if c.CapturedCents < captured[c.ID] || c.CapturedCents > captured[c.ID]+open[c.ID] {
			add("captured-mismatch", "%s: captured %d cents, the completed sagas total %d (running ones %d)",
				c.ID, c.CapturedCents, captured[c.ID], open[c.ID])
		}
	}
}
