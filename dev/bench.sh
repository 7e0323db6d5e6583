#!/usr/bin/env bash
# dev/bench.sh: run the order saga system as separate processes (stock,
# payment, orchestrator, orders) on the dev Kafka and Redis, drive it with
# `sagaflow bench`, then stop the services. `make bench` calls it.
#
#   dev/bench.sh                    the standard set: idle, sparse (one order every 5 s), 32 clients, 1,000/s, a sweep
#                                   of rates (latency and CPU against the load), saturation, the engine's saturation
#                                   (orders straight onto Kafka, the API left out), then the ceiling (the saga's
#                                   Kafka traffic alone; see ceiling below) and a summary, a line a run
#   dev/bench.sh -- -rate 500 ...   one run, with these sagaflow bench flags
#
# Knobs (environment): BENCH_PARTITIONS (4, the services' default: the
# partitions of every topic; docs/performance.md has 1 against 4),
# BENCH_NAMESPACE (bench-pN: the system's topics and groups, so that each
# partition count has topics of its own and none of them meets the tests'
# or the demo's), BENCH_DURATION (30s), BENCH_RATE (1000), BENCH_SATURATE
# (1000, the closed-loop clients that find saturation), BENCH_CLIENTS (32),
# BENCH_SWEEP (100,300,500,700,900: the sweep's rates, one step each; empty
# skips it), BENCH_SWEEP_DURATION (20s, each step's),
# BENCH_SLOW_TXN (250ms: the loops' -slow-txn; each run reports the
# transactions slower than that, and Redis's fsyncs and commands over
# 50 ms; empty passes no -slow-txn, for an older BENCH_BIN), BENCH_SERVICE_FLAGS (extra flags for every service, e.g. "-lanes 4"),
# BENCH_STOCK_FLAGS, BENCH_PAYMENT_FLAGS, BENCH_ORCHESTRATOR_FLAGS and
# BENCH_ORDERS_FLAGS (for one service),
# BENCH_PPROF=1 (the services serve pprof on :16060-16063, the load
# generator on :16064, and a CPU profile of each is taken during the
# 1,000/s run: cpu-0.pprof to cpu-4.pprof), BENCH_MEMWATCH=1 (RSS of every
# service and Redis's used_memory every 10 s into memory.csv),
# BENCH_REDIS_DB (1: the Redis database the runs use, emptied first; see
# below), BENCH_KAFKA_REQUESTS (1: count the dev/ brokers' requests by type
# over each run; 0 leaves the brokers' JMX alone), BENCH_WARMUP (1: before
# the runs, load the system until the dev/ broker's JIT compiler is quiet;
# 0 skips it), BENCH_ENGINE (1: after saturation, the engine run, the same
# clients with their orders put straight onto orders.events; 0 skips it),
# BENCH_CEILING (1: after the standard set, the ceiling
# runs; 0 skips it), BENCH_BIN=path (run this
# sagaflow build instead of building the working tree: two builds side by
# side in one session, e.g. `git worktree add /tmp/base HEAD~1` and `go
# build -o /tmp/before ./cmd/sagaflow` in it, then runs in turns with and
# without BENCH_BIN=/tmp/before). Results: .cache/bench/.
set -euo pipefail
# shellcheck source=dev/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

OUT=$CACHE/bench
mkdir -p "$OUT" "$CACHE/bin"
K=${SAGAFLOW_KAFKA:-127.0.0.1:19092}
R=${SAGAFLOW_REDIS:-127.0.0.1:16379}
BIN=${BENCH_BIN:-$CACHE/bin/sagaflow}
API=127.0.0.1:18080
# The runs get a Redis database of their own, emptied before they start. A
# saga leaves about eight keys for the dedup window (8 days): an hour of
# runs left the dev Redis millions of keys and gigabytes larger, which
# slows every run after it (AOF rewrites of that size on the shared cores)
# and the tests' key scans, which use database 0.
DB=${BENCH_REDIS_DB:-1}
[[ $DB =~ ^[0-9]+$ ]] || die "BENCH_REDIS_DB=$DB is not a database number"
if [[ $R == *://* ]]; then
	warn "bench: SAGAFLOW_REDIS=$R is a URL: the runs use its database as it is, and leave their keys in it"
else
	# RESP by hand: redis-cli may be missing when the Redis is not dev/'s.
	# Then the two settings that move the figures most (the README's Redis
	# durability), for the record: "?" where CONFIG is refused.
	# shellcheck disable=SC2016 # expanded by the inner bash
	settings=$(timeout 120 bash -c '
		exec 3<>"/dev/tcp/${1%:*}/${1##*:}" || exit 1
		printf "SELECT %s\r\nFLUSHDB\r\n" "$2" >&3
		IFS= read -r a <&3 && IFS= read -r b <&3
		[[ $a == "+OK"* && $b == "+OK"* ]] || exit 1
		for name in appendfsync auto-aof-rewrite-percentage; do
			printf "CONFIG GET %s\r\n" "$name" >&3
			IFS= read -r h <&3
			v="?"
			if [[ $h == "*2"* ]]; then
				read -r _ <&3 && read -r _ <&3 && read -r _ <&3 && IFS= read -r v <&3
				v=${v%$'"'"'\r'"'"'}
			fi
			printf "%s %s, " "$name" "$v"
		done' _ "$R" "$DB") ||
		die "could not empty database $DB of the Redis at $R (BENCH_REDIS_DB picks another)"
	say "bench: Redis database $DB at $R emptied for the runs (${settings%, })"
	REDIS_ADDR=$R # host:port, for the latency monitor (redis_latency_start)
	R="redis://$R/$DB"
fi
if [[ -z ${BENCH_BIN:-} ]]; then
	say "bench: building sagaflow"
	go build -o "$BIN" ./cmd/sagaflow
fi
[[ -x $BIN ]] || die "BENCH_BIN=$BIN is not an executable"

# redis_latency_restore: the monitor's threshold as it was before the run;
# the EXIT trap calls it too, for a run that did not get to its report.
redis_latency_restore() {
	[[ -n ${latency_was:-} ]] || return 0
	redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}" config set latency-monitor-threshold "$latency_was" >/dev/null 2>&1 || true
}
pids=()
stop_services() {
	redis_latency_restore
	((${#pids[@]})) || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	local deadline=$((SECONDS + 20))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
	pids=()
}
# descendants PID: every process under PID, the deepest first.
need pgrep procps
descendants() {
	local c
	for c in $(pgrep -P "$1" || true); do
		descendants "$c"
		echo "$c"
	done
}
# on_exit: a script that ends early (SIGTERM, an error) stops everything it
# started. A SIGTERM ends bash at once but reaches none of its children, and
# a `sagaflow bench` left running went on loading the stopped services,
# counting refusals, until its drain ended a minute later; sent SIGTERM, it
# prints its figures so far and exits within two seconds. (The list also
# holds this trap's own command substitution, gone by the time kill runs.)
on_exit() {
	local rest
	# Not tee: it ends with its input, after the bench's last lines.
	rest=$(descendants $$ | while read -r p; do [[ $(cat "/proc/$p/comm" 2>/dev/null) == tee ]] || echo "$p"; done)
	# shellcheck disable=SC2086 # one pid a word
	[[ -z $rest ]] || kill -TERM $rest 2>/dev/null || true
	stop_services
}
trap on_exit EXIT

read -r -a extra <<<"${BENCH_SERVICE_FLAGS:-}"
PARTS=${BENCH_PARTITIONS:-4}
NS=${BENCH_NAMESPACE:-bench-p$PARTS}
system=(-kafka "$K" -namespace "$NS")
# -slow-txn: the loops log each transaction slower than this with where its
# time went, and each run's slow_report counts them (a tail's causes).
# BENCH_SLOW_TXN= (empty) passes none, for a BENCH_BIN built before the flag.
common=("${system[@]}" -partitions "$PARTS" -redis "$R" -log-level info "${extra[@]}")
SLOW=${BENCH_SLOW_TXN-250ms}
[[ -z $SLOW ]] || common+=(-slow-txn "$SLOW")
say "bench: topics $NS.*, $PARTS partitions each"
# A topic keeps the partition count it was created with: one that differs
# says so here.
topics=$("$BIN" topics "${common[@]}")
grep -v ": $PARTS partitions$" <<<"$topics" >&2 || true
# start_service I SVC: start service SVC as the I-th process (pids[I]).
start_service() {
	local i=$1 svc=$2
	own="BENCH_${svc^^}_FLAGS" # e.g. BENCH_ORCHESTRATOR_FLAGS="-lanes 4"
	read -r -a ownflags <<<"${!own:-}"
	args=("$svc" "${common[@]}" -instance "bench-$svc" "${ownflags[@]}")
	# The loops log a progress line every 10s at info; the API would log
	# every order.
	[[ $svc == orders ]] && args+=(-addr "$API" -log-level warn)
	[[ ${BENCH_PPROF:-0} == 1 ]] && args+=(-pprof "127.0.0.1:$((16060 + i))")
	"$BIN" "${args[@]}" >>"$OUT/$svc.log" 2>&1 &
	pids[i]=$!
}
services=(stock payment orchestrator orders)
# services_alive WHEN: stop, with the end of its log, when a service has
# exited. A run against a dead API only counts refused connections, and
# against a dead participant only timeouts: neither measures anything.
services_alive() {
	local i rc
	for i in "${!services[@]}"; do
		kill -0 "${pids[$i]}" 2>/dev/null && continue
		rc=0
		wait "${pids[$i]}" 2>/dev/null || rc=$?
		tail -n 20 "$OUT/${services[$i]}.log" >&2 || true
		die "bench: the ${services[$i]} service exited (status $rc) $1; its log is $OUT/${services[$i]}.log"
	done
}
rm -f "$OUT"/{stock,payment,orchestrator,orders}.log
for i in "${!services[@]}"; do
	start_service "$i" "${services[$i]}"
done
say "bench: services started (logs in $OUT); waiting for the orders API"
deadline=$((SECONDS + 90))
until curl -fsS "http://$API/readyz" >/dev/null 2>&1; do
	((SECONDS < deadline)) || die "the orders API did not get ready in 90s; see $OUT/orders.log"
	sleep 0.5
done
# The participants and the orchestrator join their groups and restore after
# the API is up: one saga through the whole system says they are there.
say "bench: warming up (one saga end to end)"
"$BIN" bench "${system[@]}" -redis "$R" -url "http://$API/" -clients 1 -duration 1s -drain 90s \
	-floor-samples 1 -quiet >/dev/null || die "no saga ended during the warm-up; see the logs in $OUT"

# parts: the processes whose CPU the runs count, as "part pid" lines: the
# four services in order (pid 0 when stopped: the ceiling runs without
# them), each local Kafka JVM, and Redis. A pidfile left by a node that is
# gone (or whose pid was reused) counts nothing.
parts() {
	local i f
	for i in "${!services[@]}"; do
		echo "${services[$i]} ${pids[$i]:-0}"
	done
	for f in "$CACHE"/kafka/*/node*/kafka.pid; do
		if pid_matches "$f" "${f%/kafka.pid}/server.properties"; then echo "kafka $(<"$f")"; fi
	done
	f=$CACHE/redis/redis.pid
	if pid_matches "$f" redis-server; then echo "redis $(<"$f")"; fi
}

# cpu_ticks: the CPU time (user + system, in clock ticks) each part and
# the children it waited for have used so far, as "part ticks" lines: the
# four services first, then the Kafka JVMs summed and Redis. The children
# are Redis's append-only file rewrites (as `sagaflow bench -cpu` counts
# them). A part it cannot find reads 0.
cpu_ticks() {
	local part pid
	parts | while read -r part pid; do
		echo "$part $(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat" 2>/dev/null || echo 0)"
	done | awk '!($1 in t) { order[n++] = $1 } { t[$1] += $2 }
		END { for (i = 0; i < n; i++) print order[i], t[order[i]]
		      if (!("kafka" in t)) print "kafka 0"
		      if (!("redis" in t)) print "redis 0" }'
}

# cpu_procs: the -cpu list for `sagaflow bench`, which counts each part's
# CPU per saga that ended (and its own, as loadgen), the Kafka JVMs summed
# under one name. On a machine where every part shares the cores, that is
# the figure that says where the time goes; it moves much less from run to
# run than throughput does.
cpu_procs() {
	parts | awk '$2 > 0 { printf "%s%s=%s", (n++ ? "," : ""), $1, $2 }'
}

# kafka_requests: the requests the local Kafka brokers have served so far,
# by type, as "type count" lines, from each broker's own request metrics
# (kafka.network RequestsPerSec). The broker's CPU follows its requests
# (docs/performance.md), and only the broker sees them all: the clients'
# statistics miss its requests to itself (the AddPartitionsToTxn
# verification a transactional Produce triggers, the markers). jcmd opens
# the JVM's local JMX connector, which only this user on this machine can
# reach, and Kafka's JmxTool reads it with the broker's own jars. Prints
# nothing without a dev/ broker or jcmd.
kafka_requests() {
	local f pid addr cp
	command -v jcmd >/dev/null || return 0
	for f in "$CACHE"/kafka/*/node*/kafka.pid; do
		pid_matches "$f" "${f%/kafka.pid}/server.properties" || continue
		grep -q '^process.roles=.*broker' "${f%/kafka.pid}/server.properties" || continue
		pid=$(<"$f")
		jcmd "$pid" ManagementAgent.start_local >/dev/null 2>&1 || true
		addr=$(jcmd "$pid" PerfCounter.print 2>/dev/null |
			sed -n 's/^sun.management.JMXConnectorServer.address="\(.*\)"$/\1/p')
		cp=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | sed -n '/^-cp$/{n;p;q}')
		[[ -n $addr && -n $cp ]] || continue
		timeout 60 java -cp "$cp" org.apache.kafka.tools.JmxTool --jmx-url "$addr" --one-time true \
			--object-name 'kafka.network:type=RequestMetrics,name=RequestsPerSec,request=*,version=*' \
			--attributes Count --report-format properties 2>/dev/null || true
	done | tr ',' '\n' | awk -F'[=:]' '
		/^request=/ { r = $2 }
		# FetchConsumer and FetchFollower count again what Fetch counts.
		/^version=/ && r != "FetchConsumer" && r != "FetchFollower" { n[r] += $4 }
		END { for (r in n) print r, n[r] }'
}

# requests_report BEFORE AFTER ENDED: kafka_requests' difference per saga
# that ended, most first; nothing when either count is empty.
requests_report() {
	[[ -s $1 && -s $2 ]] || return 0
	awk -v ended="$3" '
		NR == FNR { before[$1] = $2; next }
		{ d = $2 - before[$1]; if (d > 0) { n[$1] = d; total += d } }
		END {
			if (ended <= 0 || total <= 0) exit
			while (1) {
				best = ""
				for (r in n) if (best == "" || n[r] > n[best]) best = r
				if (best == "" || n[best] / ended < 0.01) break
				line = line sprintf("%s%s %.2f", (line == "" ? "" : ", "), best, n[best] / ended)
				shown += n[best]; delete n[best]
			}
			if (total > shown) line = line sprintf(", other %.2f", (total - shown) / ended)
			printf "  kafka        requests per saga: %s; total %.2f\n", line, total / ended
		}' "$1" "$2"
}

# kafka_threads: the CPU time (clock ticks) each thread of the local Kafka
# JVMs has used so far, as "pid/tid kind ticks" lines, the kind read from
# the thread's name (the kernel keeps its first 15 characters). The `cpu`
# line says how much the broker spends; this says on what: serving requests
# (its network and request handler threads), the transaction coordinator's
# senders (markers, and the verification of a transactional Produce), the
# group coordinator, the log cleaner (compacted topics), KRaft's metadata,
# garbage collection, and the JIT compiler. The last is what makes a Kafka
# just started slow: under load its C2 compiler took 37 to 44% of the
# broker's CPU for the first two minutes, and a 32-client run measured 38
# sagas/s where the same run measured 173 five minutes later.
kafka_threads() {
	local f pid
	for f in "$CACHE"/kafka/*/node*/kafka.pid; do
		pid_matches "$f" "${f%/kafka.pid}/server.properties" || continue
		pid=$(<"$f")
		# cat, not awk on the files: a thread may end between the glob and
		# the read, and mawk stops at a file it cannot open.
		cat /proc/"$pid"/task/*/stat 2>/dev/null | awk -v pid="$pid" '{
			name = $0; sub(/^[0-9]+ \(/, "", name); sub(/\) [A-Za-z] .*$/, "", name)
			rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
			kind = "other"
			if (name ~ /^data-plane|^kafka-network|^kafka-request/) kind = "requests"
			else if (name ~ /CompilerThre/) kind = "jit"
			else if (name ~ /^(GC Thread|G1 |VM Thread)/) kind = "gc"
			else if (name ~ /^(TxnMarkerSender|AddPartitionsTo|transaction)/) kind = "transactions"
			else if (name ~ /^group-coordina/) kind = "groups"
			else if (name ~ /^kafka-log-clean/) kind = "log-cleaner"
			else if (name ~ /raft|metadat|to-con|^controller/) kind = "metadata"
			print pid "/" $1, kind, f[12] + f[13] }'
	done
}

# threads_spent BEFORE AFTER: the CPU ticks each kind of thread spent
# between two kafka_threads, as "kind ticks" lines. Threads that ended in
# between are left out.
threads_spent() {
	awk 'NR == FNR { before[$1] = $3; next }
		{ d = $3 - before[$1]; if (d > 0) n[$2] += d }
		END { for (k in n) print k, n[k] }' "$1" "$2"
}

# jit_share BEFORE AFTER: the JIT compiler's share of the Kafka JVMs' CPU
# between two kafka_threads, in whole percent.
jit_share() {
	threads_spent "$1" "$2" | awk '{ t += $2; if ($1 == "jit") j = $2 }
		END { printf "%d", (t > 0 ? 100 * j / t : 0) }'
}

# threads_report BEFORE AFTER: threads_spent as shares of the Kafka JVMs'
# CPU, most first, and a warning when the JIT compiler's share says the
# broker was still warming up; nothing when there is no dev/ broker.
threads_report() {
	[[ -s $1 && -s $2 ]] || return 0
	threads_spent "$1" "$2" | awk '
		{ n[$1] = $2; total += $2 }
		END {
			if (total <= 0) exit
			jit = 100 * n["jit"] / total
			while (1) {
				best = ""
				for (k in n) if (best == "" || n[k] > n[best]) best = k
				if (best == "") break
				line = line sprintf("%s%s %.0f%%", (line == "" ? "" : ", "), best, 100 * n[best] / total)
				delete n[best]
			}
			printf "  kafka        cpu by thread: %s\n", line
			if (jit >= 10)
				printf "  warning      the broker was still warming up: its JIT compiler took %.0f%% of its CPU in this run (a Kafka just started compiles for minutes under load; dev/bench.sh warms it first, BENCH_WARMUP)\n", jit
		}'
}

# log_lines: each loop service's log length now, as "service lines" lines,
# where slow_report starts reading.
log_lines() {
	local svc
	for svc in stock payment orchestrator; do
		echo "$svc $(wc -l <"$OUT/$svc.log" 2>/dev/null || echo 0)"
	done
}

# slow_report BEFORE: the transactions each loop logged as slow since
# log_lines wrote BEFORE (those over -slow-txn; a loop logs one a second
# at most and its next line counts those it left out), with the slowest
# and the phase that took most of it: a slow handler is the service's own
# work or its Redis, slow offsets or a slow commit are the broker's.
slow_report() {
	local svc from line out=""
	[[ -s $1 ]] || return 0
	while read -r svc from; do
		# awk, not grep, picks the lines: grep finding none would fail the
		# pipeline (pipefail).
		line=$(tail -n +"$((from + 1))" "$OUT/$svc.log" 2>/dev/null | awk -v svc="$svc" '
			function num(k) { return match($0, "\"" k "\": [0-9.]+") ? substr($0, RSTART + length(k) + 4, RLENGTH - length(k) - 4) + 0 : 0 }
			index($0, "slow transaction") { n += 1 + num("not_logged_before"); t = num("took_ms")
			  if (t > worst) { worst = t; phase = "handler"; p = num("handler_ms")
			    if (num("offsets_wait_ms") > p) { phase = "offsets"; p = num("offsets_wait_ms") }
			    if (num("commit_ms") > p) { phase = "commit"; p = num("commit_ms") }
			    if (num("begin_ms") > p) { phase = "begin"; p = num("begin_ms") }
			    if (num("after_commit_ms") > p) { phase = "after commit"; p = num("after_commit_ms") } } }
			END { if (n) printf "%s %d (worst %.0f ms, %s %.0f ms)", svc, n, worst, phase, p }') || true
		if [[ -n $line ]]; then out+="${out:+, }$line"; fi
	done <"$1"
	printf "  slow txns    %s\n" "${out:-none over ${SLOW:-the default}}"
}

# redis_latency_start / redis_latency_report: Redis's own latency monitor
# over a run (the dev/ Redis, or one at a host:port). With appendfsync
# always, Redis waits for each fsync before it answers, and a slow one
# stalls every client at once; the report says in how many seconds of the
# run an fsync or a command took 50 ms or more, and the worst. The
# monitor's threshold is put back as it was.
redis_latency_start() {
	[[ -n ${REDIS_ADDR:-} ]] && command -v redis-cli >/dev/null || return 0
	local rc=(redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}")
	latency_was=$("${rc[@]}" config get latency-monitor-threshold 2>/dev/null | sed -n 2p) || true
	[[ -n $latency_was ]] || return 0
	# A Redis that refuses CONFIG (a managed one) reports nothing, and the
	# runs go on.
	{ "${rc[@]}" config set latency-monitor-threshold 50 && "${rc[@]}" latency reset; } >/dev/null 2>&1 || true
}
redis_latency_report() {
	[[ -n ${latency_was:-} ]] || return 0
	local rc=(redis-cli -h "${REDIS_ADDR%:*}" -p "${REDIS_ADDR##*:}") ev line out=""
	for ev in aof-fsync-always command fast-command; do
		line=$("${rc[@]}" latency history "$ev" 2>/dev/null | paste - - | awk -v ev="$ev" '
			NF == 2 { n++; if ($2 > worst) worst = $2 }
			END { if (n) printf "%s in %d s (worst %d ms)", ev, n, worst }') || true
		if [[ -n $line ]]; then out+="${out:+, }$line"; fi
	done
	redis_latency_restore
	printf "  redis        over 50 ms: %s\n" "${out:-nothing}"
}

# A service that just started may still be busy with what it found: the
# orchestrator restoring saga.state, the orders API's read model moving the
# orders that ended long ago to the Redis archive. Measured on top of that,
# the first run is slower than the next by a varying amount, so the runs
# wait until the services are idle (together under 10% of a core for 2 s).
settle() {
	local t0=$SECONDS a b busy
	while ((SECONDS - t0 < 180)); do
		a=$(cpu_ticks | awk 'NR <= 4 {s += $2} END {print s}')
		sleep 2
		b=$(cpu_ticks | awk 'NR <= 4 {s += $2} END {print s}')
		busy=$(((b - a) * 100 / 2 / $(getconf CLK_TCK)))
		if ((busy < 10)); then
			say "bench: services idle after $((SECONDS - t0)) s"
			return 0
		fi
	done
	warn "bench: the services were still busy after 180 s (${busy}% of a core); measuring anyway"
}
# warm_kafka: drive the system in 10-second rounds, 32 clients and 200 in
# turns, until the dev/ broker's JIT compiler takes under a tenth of its
# CPU in a round of each, for at most 8 minutes. A broker just started
# (`make up`) compiles its hot paths for minutes, and only under load: idle,
# it compiles nothing, so only a round under load tells a warm broker from
# a cold one. The two loads take different paths through the broker (small
# transactions, large ones): measured, 3.5 minutes at 200 clients left it
# compiling for 35% of its CPU in a 32-client run that came next. A warm
# broker costs two rounds. BENCH_WARMUP=0 skips it.
warm_kafka() {
	[[ ${BENCH_WARMUP:-1} == 1 ]] || return 0
	local round clients share cool=0 t0=$SECONDS
	for ((round = 1; SECONDS - t0 < 480; round++)); do
		clients=$((round % 2 == 1 ? 32 : 200))
		kafka_threads >"$OUT/warm.before"
		[[ -s $OUT/warm.before ]] || return 0 # no dev/ broker to watch
		"$BIN" bench "${system[@]}" -redis "$R" -url "http://$API/" -clients "$clients" -duration 10s \
			-drain 60s -floor-samples 1 -quiet >/dev/null || warn "bench: a warm-up round ended with an error; see the logs in $OUT"
		kafka_threads >"$OUT/warm.after"
		share=$(jit_share "$OUT/warm.before" "$OUT/warm.after")
		rm -f "$OUT"/warm.{before,after}
		services_alive "during the warm-up"
		say "bench: warm-up round $round ($clients clients): Kafka's JIT compiler took ${share}% of its CPU"
		if ((share < 10)); then
			((++cool >= 2)) && return 0
		else
			cool=0
		fi
	done
	warn "bench: Kafka was still compiling after $((SECONDS - t0)) s of warm-up; measuring anyway"
}
warm_kafka
settle
services_alive "before the runs"

# BENCH_MEMWATCH=1: sample every service's RSS and Redis's used_memory every
# 10 s into $OUT/memory.csv while the runs go on (flat memory is the point of
# the retention windows).
if [[ ${BENCH_MEMWATCH:-0} == 1 ]]; then
	(
		echo "seconds,stock_kb,payment_kb,orchestrator_kb,orders_kb,redis_used_memory"
		t0=$SECONDS
		while sleep 10; do
			row="$((SECONDS - t0))"
			for p in "${pids[@]}"; do
				row+=",$(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)"
			done
			row+=",$(redis-cli -u "$R" info memory 2>/dev/null | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')"
			echo "$row"
		done
	) >"$OUT/memory.csv" &
fi

ran=() # the runs of this invocation, in order, for summary
bench() {
	local name=$1 ended
	shift
	ran+=("$name")
	say "== bench $name: sagaflow bench $*"
	[[ ${BENCH_KAFKA_REQUESTS:-1} == 1 ]] && kafka_requests >"$OUT/$name.requests-before"
	kafka_threads >"$OUT/$name.threads-before"
	log_lines >"$OUT/$name.logs-before"
	redis_latency_start
	local prof=()
	[[ ${BENCH_PPROF:-0} == 1 ]] && prof=(-pprof 127.0.0.1:16064)
	"$BIN" bench "${system[@]}" -redis "$R" -url "http://$API/" "${prof[@]}" -cpu "$(cpu_procs)" \
		-json "$OUT/$name.json" -html "$OUT/$name.html" "$@" | tee "$OUT/$name.txt"
	kafka_threads >"$OUT/$name.threads-after"
	services_alive "during the $name run"
	[[ ${BENCH_KAFKA_REQUESTS:-1} == 1 ]] && kafka_requests >"$OUT/$name.requests-after"
	# The sagas that ended during the run, drain included, as the CPU
	# counts (a sweep's table has no such line: its requests go unreported).
	ended=$(sed -n 's/^ *sagas .* ended \([0-9]*\),.*/\1/p' "$OUT/$name.txt")
	requests_report "$OUT/$name.requests-before" "$OUT/$name.requests-after" "${ended:-0}" | tee -a "$OUT/$name.txt"
	threads_report "$OUT/$name.threads-before" "$OUT/$name.threads-after" | tee -a "$OUT/$name.txt"
	slow_report "$OUT/$name.logs-before" | tee -a "$OUT/$name.txt"
	redis_latency_report | tee -a "$OUT/$name.txt"
	rm -f "$OUT/$name".{requests,threads}-{before,after} "$OUT/$name.logs-before"
}

# restart_orchestrator: BENCH_RESTART=1 SIGKILLs the orchestrator after the
# runs, starts it again and times the first saga placed after the restart:
# what a crash costs with everything the runs left in saga.state.
restart_orchestrator() {
	[[ ${BENCH_RESTART:-0} == 1 ]] || return 0
	kill -KILL "${pids[2]}"
	wait "${pids[2]}" 2>/dev/null || true
	local t0=$EPOCHREALTIME id status=""
	start_service 2 orchestrator
	id=$(curl -fsS -X POST "http://$API/orders" -H 'Content-Type: application/json' \
		-H "Idempotency-Key: restart-$EPOCHSECONDS-$RANDOM" \
		-d '{"customer_id":"bench-c0","lines":[{"product_id":"bench-p0","quantity":1}]}' |
		sed -n 's/.*"order_id":"\([^"]*\)".*/\1/p')
	[[ -n $id ]] || die "restart: the order was not accepted"
	while [[ $status != Completed ]] && (($(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{print int(b-a)}') < 120)); do
		sleep 0.02
		# The order's own status is the first one in its JSON (steps have theirs).
		status=$(curl -fsS "http://$API/orders/$id" | grep -o '"status":"[A-Za-z]*"' | head -n 1 | cut -d'"' -f4)
	done
	say "== restart: orchestrator SIGKILLed and started again; order $id placed then is $status $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.2f", b-a}') s after the restart" | tee "$OUT/restart.txt"
	grep -h "restored sagas" "$OUT/orchestrator.log" | tail -1 | tee -a "$OUT/restart.txt"
}

# ceiling: the order saga's Kafka traffic alone, on the same broker right
# after the runs, with the services stopped: BenchmarkSagaShape
# (saga/kafkatx) sends the same records through the same topics, hops and
# transactions, with handlers that only pass them on. What it reaches
# bounds what the services can reach on this machine: a gap between the
# two is the services' (and Redis's and HTTP's) own cost, the rest is
# Kafka's. Its sub-benchmarks are fixed (4 partitions and 1, 32 clients;
# 4 partitions, 1,000 clients), whatever BENCH_PARTITIONS says.
ceiling() {
	[[ ${BENCH_CEILING:-1} == 1 ]] || return 0
	stop_services
	say "== ceiling: the saga's Kafka traffic alone (BenchmarkSagaShape)"
	go test -c -o "$CACHE/bin/kafkatx.test" ./saga/kafkatx || die "bench: building saga/kafkatx's benchmarks failed"
	local run sub n line
	: >"$OUT/ceiling.txt"
	for run in partitions=4/clients=32:15000 partitions=1/clients=32:15000 partitions=4/clients=1000:60000; do
		sub=${run%:*} n=${run##*:}
		cpu_ticks >"$OUT/ceiling.cpu-before"
		line=$(SAGAFLOW_KAFKA=$K "$CACHE/bin/kafkatx.test" -test.run '^$' -test.bench "^BenchmarkSagaShape/$sub\$" \
			-test.benchtime "${n}x" 2>"$OUT/ceiling.log" | grep -o "[0-9.]* orch-txns/saga.*") ||
			die "bench: the ceiling run $sub failed; see $OUT/ceiling.log"
		cpu_ticks >"$OUT/ceiling.cpu-after"
		# sagas/s, p50, p99 and the broker's CPU a saga (the set-up's
		# topic creation and group joins included).
		awk -v name="$sub" -v n="$n" -v hz="$(getconf CLK_TCK)" -v line="$line" '
			NR == FNR { before[$1] = $2; next }
			$1 == "kafka" { ms = ($2 - before[$1]) * 1000 / hz / n }
			END { nf = split(line, f, /[ \t]+/)
			      for (i = 2; i <= nf; i++) v[f[i]] = f[i - 1]
			      printf "  ceiling      %s: %.1f sagas/s, p50 %.1f ms, p99 %.1f ms; kafka cpu %.2f ms a saga\n",
				name, v["sagas/s"], v["p50-ms"], v["p99-ms"], ms }' \
			"$OUT/ceiling.cpu-before" "$OUT/ceiling.cpu-after" | tee -a "$OUT/ceiling.txt"
	done
	rm -f "$OUT"/ceiling.cpu-{before,after}
}

# summary: a line for each run of the standard set, from its table, so that
# the figures end up on one screen (the runs' own lines and the sweep's
# table are in $OUT/NAME.txt). Only this invocation's runs: a file left by
# an earlier one (BENCH_ENGINE=0 this time) would pass off old figures as
# new.
summary() {
	local name
	say "bench: summary (each run in full: $OUT/NAME.txt)"
	printf '  %-11s %10s %11s %11s %8s %11s\n' run sagas/s p50 p99 refused "CPU a saga"
	for name in "${ran[@]}"; do
		[[ $name == sweep ]] && continue
		awk -v name="$name" '
			/^  throughput / { tp = $2 }
			/^  sagas / { for (i = 2; i < NF; i++) if ($i == "refused") refused = $(i + 1) }
			/^  latency / { for (i = 2; i < NF; i++) {
				if ($i == "p50") p50 = $(i + 1) " " $(i + 2)
				if ($i == "p99") p99 = $(i + 1) " " $(i + 2) } }
			/^  cpu / { for (i = 2; i < NF; i++) if ($i == "total") cpu = $(i + 1) " ms" }
			END { printf "  %-11s %10s %11s %11s %8s %11s\n", name, tp, p50, p99, refused, cpu }' "$OUT/$name.txt" || true
	done
	[[ " ${ran[*]} " != *" sweep "* ]] || say "  (the sweep: $OUT/sweep.txt and sweep.html)"
}

if (($# > 0)); then
	[[ $1 == -- ]] && shift
	bench custom "$@"
	restart_orchestrator
	exit 0
fi
D=${BENCH_DURATION:-30s}
bench idle -clients 1 -duration 10s
# One order every 5 s: the loops sit idle between orders, as on a quiet day.
# The idle run above never lets a connection fall idle; this one caught
# producers that closed theirs after 5 s and reconnected, with a growing
# backoff, for every order (seconds an order).
bench sparse -rate 0.2 -duration 60s
bench closed -clients "${BENCH_CLIENTS:-32}" -duration "$D"
profilers=()
if [[ ${BENCH_PPROF:-0} == 1 ]]; then
	secs=${D%s}
	# The load generator starts listening only with its run: curl waits
	# for it.
	for j in 0 1 2 3 4; do
		curl -fsS --retry 10 --retry-connrefused --retry-delay 1 -o "$OUT/cpu-$j.pprof" "http://127.0.0.1:$((16060 + j))/debug/pprof/profile?seconds=$((secs / 2))" &
		profilers+=($!)
	done
fi
bench open -rate "${BENCH_RATE:-1000}" -duration "$D"
((${#profilers[@]} == 0)) || wait "${profilers[@]}"
# The sweep: open loops one after another at rising rates, for the curve of
# latency and CPU a saga against the load (sweep.html).
SWEEP=${BENCH_SWEEP-100,300,500,700,900}
[[ -z $SWEEP ]] || bench sweep -rate "$SWEEP" -duration "${BENCH_SWEEP_DURATION:-20s}"
# Saturation: more clients than the system can serve at once, so it runs
# flat out with a bounded queue (an open loop past capacity only grows one).
bench saturation -clients "${BENCH_SATURATE:-1000}" -duration "$D" -drain 60s || true
# The engine: the same flat-out load with each order put straight onto
# orders.events (-via kafka), the orders API left out (its read model
# still runs). The gap to saturation is what the API's requests cost: HTTP
# on both ends, the Idempotency-Key's two Redis calls, the API's own
# producer, and the smaller transactions everything else then commits.
if [[ ${BENCH_ENGINE:-1} == 1 ]]; then
	bench engine -via kafka -clients "${BENCH_SATURATE:-1000}" -duration "$D" -drain 60s || true
fi
restart_orchestrator
ceiling
summary
say "bench: results in $OUT (*.txt, *.json, *.html)"
