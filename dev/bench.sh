#!/usr/bin/env bash
# dev/bench.sh: run the order saga system as separate processes (stock,
# payment, orchestrator, orders) on the dev Kafka and Redis, drive it with
# `sagaflow bench`, then stop the services. `make bench` calls it.
#
#   dev/bench.sh                    the standard set: idle, 32 clients, 1,000/s, saturation
#   dev/bench.sh -- -rate 500 ...   one run, with these sagaflow bench flags
#
# Knobs (environment): BENCH_DURATION (30s), BENCH_RATE (1000), BENCH_SATURATE
# (1000, the closed-loop clients that find saturation), BENCH_CLIENTS (32),
# BENCH_SERVICE_FLAGS (extra flags for every service, e.g. "-lanes 4"),
# BENCH_STOCK_FLAGS, BENCH_PAYMENT_FLAGS, BENCH_ORCHESTRATOR_FLAGS and
# BENCH_ORDERS_FLAGS (for one service),
# BENCH_PPROF=1 (the services serve pprof on :16060-16063 and a CPU profile
# of each is taken during the 1,000/s run), BENCH_MEMWATCH=1 (RSS of every
# service and Redis's used_memory every 10 s into memory.csv). Results:
# .cache/bench/.
set -euo pipefail
# shellcheck source=dev/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

OUT=$CACHE/bench
mkdir -p "$OUT" "$CACHE/bin"
K=${SAGAFLOW_KAFKA:-127.0.0.1:19092}
R=${SAGAFLOW_REDIS:-127.0.0.1:16379}
BIN=$CACHE/bin/sagaflow
API=127.0.0.1:18080
say "bench: building sagaflow"
go build -o "$BIN" ./cmd/sagaflow

pids=()
stop_services() {
	((${#pids[@]})) || return 0
	kill -TERM "${pids[@]}" 2>/dev/null || true
	local deadline=$((SECONDS + 20))
	for p in "${pids[@]}"; do
		while kill -0 "$p" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
	done
	pids=()
}
trap stop_services EXIT

read -r -a extra <<<"${BENCH_SERVICE_FLAGS:-}"
common=(-kafka "$K" -redis "$R" -log-level info "${extra[@]}")
"$BIN" topics -kafka "$K" >/dev/null
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
"$BIN" bench -kafka "$K" -redis "$R" -url "http://$API/" -clients 1 -duration 1s -drain 90s \
	-floor-samples 1 -quiet >/dev/null || die "no saga ended during the warm-up; see the logs in $OUT"

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
			row+=",$(redis-cli -u "redis://$R" info memory 2>/dev/null | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')"
			echo "$row"
		done
	) >"$OUT/memory.csv" &
	memwatch=$!
	trap 'kill $memwatch 2>/dev/null; stop_services' EXIT
fi

bench() {
	local name=$1
	shift
	say "== bench $name: sagaflow bench $*"
	"$BIN" bench -kafka "$K" -redis "$R" -url "http://$API/" \
		-json "$OUT/$name.json" -html "$OUT/$name.html" "$@" | tee "$OUT/$name.txt"
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

if (($# > 0)); then
	[[ $1 == -- ]] && shift
	bench custom "$@"
	restart_orchestrator
	exit 0
fi
D=${BENCH_DURATION:-30s}
bench idle -clients 1 -duration 10s
bench closed -clients "${BENCH_CLIENTS:-32}" -duration "$D"
profilers=()
if [[ ${BENCH_PPROF:-0} == 1 ]]; then
	secs=${D%s}
	for j in 0 1 2 3; do
		curl -fsS -o "$OUT/cpu-$j.pprof" "http://127.0.0.1:$((16060 + j))/debug/pprof/profile?seconds=$((secs / 2))" &
		profilers+=($!)
	done
fi
bench open -rate "${BENCH_RATE:-1000}" -duration "$D"
((${#profilers[@]} == 0)) || wait "${profilers[@]}"
# Saturation: more clients than the system can serve at once, so it runs
# flat out with a bounded queue (an open loop past capacity only grows one).
bench saturation -clients "${BENCH_SATURATE:-1000}" -duration "$D" -drain 60s || true
restart_orchestrator
say "bench: results in $OUT (*.txt, *.json, *.html)"
