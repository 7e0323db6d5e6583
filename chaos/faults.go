package chaos

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind is one kind of fault.
type Kind string

// The fault kinds. Each names what it does to whom; Schedule draws the
// target and how long the fault holds.
const (
	// KillService SIGKILLs one service process; it is restarted after the hold.
	KillService Kind = "kill"
	// PauseService SIGSTOPs an orchestrator or participant for longer than
	// the group session timeout, then SIGCONTs it: the group moves its
	// partitions and the woken zombie must be fenced.
	PauseService Kind = "pause"
	// KillBroker SIGKILLs a Kafka node (in the 3-node mode, half the time the
	// leader of the saga state's first partition) and starts it again.
	KillBroker Kind = "broker-kill"
	// PauseBroker SIGSTOPs a Kafka node, then SIGCONTs it.
	PauseBroker Kind = "broker-pause"
	// KillRedis kill -9s Redis and starts it again on the same data (AOF).
	KillRedis Kind = "redis-kill"
	// RedisLatency delays every chunk through the Redis proxy.
	RedisLatency Kind = "redis-latency"
	// RedisStall holds every byte through the Redis proxy, connections open.
	RedisStall Kind = "redis-stall"
	// RedisCut closes every connection through the Redis proxy and refuses
	// new ones.
	RedisCut Kind = "redis-cut"
	// KafkaLatency, KafkaStall and KafkaCut do the same to every
	// connection between the services and the Kafka brokers, through a
	// proxy per broker (the brokers advertise the proxies' addresses on a
	// listener of their own; dev/kafka.sh routes).
	KafkaLatency Kind = "kafka-latency"
	KafkaStall   Kind = "kafka-stall"
	KafkaCut     Kind = "kafka-cut"
	// Failpoint restarts a process with one failpoint armed to exit there
	// once (a crash at that window); it is then restarted clean.
	Failpoint Kind = "failpoint"
	// Duplicate re-publishes recent commands and replies, as a producer
	// retry or an operator's replay would.
	Duplicate Kind = "duplicate"
	// Poison writes undecodable records to the command, reply and start
	// topics: each must be dead-lettered and block nothing.
	Poison Kind = "poison"
)

// AllKinds is every kind, in the order the report lists them.
var AllKinds = []Kind{KillService, PauseService, KillBroker, PauseBroker, KillRedis, RedisLatency,
	RedisStall, RedisCut, KafkaLatency, KafkaStall, KafkaCut, Failpoint, Duplicate, Poison}

// ParseKinds reads a comma-separated list of kinds; "all" is AllKinds.
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		return slices.Clone(AllKinds), nil
	}
	var ks []Kind
	for _, f := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(f))
		if !slices.Contains(AllKinds, k) {
			return nil, fmt.Errorf("chaos: unknown fault %q (known: %s)", k, kindList(AllKinds))
		}
		if !slices.Contains(ks, k) {
			ks = append(ks, k)
		}
	}
	return ks, nil
}

func kindList(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// failpoints are the crash windows a Failpoint fault arms, by the service
// whose process hits them.
var failpoints = map[string][]string{
	"stock":        {"stock/after-apply", "stock/after-produce"},
	"payment":      {"payment/after-apply", "payment/after-produce"},
	"orchestrator": {"orchestrator/before-commit"},
}

// Fault is one scheduled fault.
type Fault struct {
	At   time.Duration `json:"at_ns"`
	Kind Kind          `json:"kind"`
	// Target is a process ("stock-2"), a Kafka node ("node 1", "leader") or
	// a failpoint's process and name; empty for Redis and topic faults.
	Target string `json:"target,omitempty"`
	// Arg is the failpoint's name for Failpoint, the latency for
	// RedisLatency.
	Arg string `json:"arg,omitempty"`
	// Hold is how long the fault lasts before it is healed.
	Hold time.Duration `json:"hold_ns"`
}

func (f Fault) String() string {
	s := fmt.Sprintf("%7.1fs  %-13s", f.At.Seconds(), f.Kind)
	if f.Target != "" {
		s += " " + f.Target
	}
	if f.Arg != "" {
		s += " " + f.Arg
	}
	if f.Hold > 0 {
		s += fmt.Sprintf(" for %s", f.Hold.Round(100*time.Millisecond))
	}
	return s
}

// Plan is what Schedule needs to know about the system.
type Plan struct {
	Seed     uint64
	Duration time.Duration
	// Every is the mean time between faults.
	Every time.Duration
	Kinds []Kind
	// Processes are the service processes by service, e.g. "stock" ->
	// ["stock-1", "stock-2"].
	Processes map[string][]string
	// KafkaNodes is 1 or 3.
	KafkaNodes int
	// SessionTimeout is the consumer groups' session timeout: a pause holds
	// longer than it.
	SessionTimeout time.Duration
}

// Schedule draws the faults of a run from the plan's seed: the same plan
// gives the same schedule. Faults start after a warm-up of a tenth of the
// run and stop a tenth before its end, and the kinds come round in a shuffled
// order, so a run long enough for len(Kinds) faults has each kind once.
func Schedule(p Plan) []Fault {
	if len(p.Kinds) == 0 || p.Every <= 0 {
		return nil
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x5a6af10))
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(rng.Int64N(int64(hi-lo)+1)) }
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	services := make([]string, 0, len(p.Processes))
	for s := range p.Processes {
		services = append(services, s)
	}
	sort.Strings(services)
	var loops []string // processes in a consumer group
	for _, s := range services {
		if s != "orders" {
			loops = append(loops, p.Processes[s]...)
		}
	}
	var faults []Fault
	var round []Kind
	start, end := p.Duration/10, p.Duration-p.Duration/10
	for at := start + between(0, p.Every); at < end; at += between(p.Every/2, p.Every*3/2) {
		if len(round) == 0 {
			round = slices.Clone(p.Kinds)
			rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		}
		f := Fault{At: at, Kind: round[0]}
		round = round[1:]
		switch f.Kind {
		case KillService:
			f.Target, f.Hold = pick(p.Processes[pick(services)]), between(200*time.Millisecond, 3*time.Second)
		case PauseService:
			f.Target, f.Hold = pick(loops), p.SessionTimeout+between(time.Second, 5*time.Second)
		case KillBroker, PauseBroker:
			f.Target = fmt.Sprintf("node %d", 1+rng.IntN(max(1, p.KafkaNodes)))
			if p.KafkaNodes > 1 && rng.IntN(2) == 0 {
				f.Target = "leader"
			}
			f.Hold = between(2*time.Second, 8*time.Second)
		case KillRedis:
			f.Hold = between(500*time.Millisecond, 3*time.Second)
		case RedisLatency:
			f.Arg, f.Hold = (time.Duration(5+rng.IntN(96)) * time.Millisecond).String(), between(3*time.Second, 10*time.Second)
		case KafkaLatency:
			// Up to 50 ms a chunk: a fetch of many chunks takes many
			// times that.
			f.Arg, f.Hold = (time.Duration(5+rng.IntN(46)) * time.Millisecond).String(), between(3*time.Second, 10*time.Second)
		case RedisStall, RedisCut, KafkaStall, KafkaCut:
			f.Hold = between(time.Second, 5*time.Second)
		case Failpoint:
			svc := []string{"stock", "payment", "orchestrator"}[rng.IntN(3)]
			f.Target, f.Arg = pick(p.Processes[svc]), pick(failpoints[svc])
		case Duplicate, Poison:
		}
		faults = append(faults, f)
	}
	return faults
}
