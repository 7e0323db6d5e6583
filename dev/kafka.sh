#!/usr/bin/env bash
# dev/kafka.sh: Apache Kafka in KRaft mode from Maven Central, for the tests,
# the chaos suite and the benchmark, listening on loopback only. The 1-node
# mode is two JVMs: broker 1 and a controller of its own (node 0); each node
# of the 3-node mode is one JVM that is both broker and controller.
#
#   dev/kafka.sh up [--brokers 1|3]    fetch, start every node, wait until a
#                                      transactional probe passes (dev/check)
#   dev/kafka.sh down                  stop every node of either mode
#   dev/kafka.sh start  [NODE...]      start nodes (all by default), wait until
#                                      they listen
#   dev/kafka.sh stop   [NODE...]      SIGTERM (controlled shutdown), SIGKILL
#                                      after KAFKA_STOP_WAIT seconds (30), or
#                                      5 s after a 3-node cluster's node is
#                                      left up without a quorum
#   dev/kafka.sh kill   [NODE...]      SIGKILL, as a crash would
#   dev/kafka.sh pause  [NODE...]      SIGSTOP (a hung node, a GC pause)
#   dev/kafka.sh resume [NODE...]      SIGCONT
#   dev/kafka.sh status [NODE...]      exit 0 when every node answers
#   dev/kafka.sh wait                  wait for the probe only
#   dev/kafka.sh fetch                 only lay the jars out
#   dev/kafka.sh reset                 down, then delete all Kafka data
#   dev/kafka.sh logs [NODE]           print the log files' paths
#   dev/kafka.sh bootstrap             print the brokers' addresses
#   dev/kafka.sh routes                print each broker's proxied listener:
#                                      "NODE ADVERTISED LISTEN" (below)
#   dev/kafka.sh run CLASS [ARG...]    run a Kafka tool with the broker's jars,
#       e.g. run org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:19092 --list
#
# Modes: 1 node (broker 127.0.0.1:19092, its controller :19093), or 3 nodes
# (brokers :19092 :19094 :19096, controllers :19093 :19095 :19097, replication
# factor 3, min.insync.replicas 2). They keep their data apart
# (.cache/kafka/single, .cache/kafka/cluster3); starting one stops the other.
# The mode is --brokers N, else KAFKA_BROKERS; node commands use the mode that
# is running. Node numbers are 1..N; in the 1-node mode node 0 is the
# controller, which every command without node numbers includes.
#
# Each broker also has a second listener, PROXIED, for the chaos suite's
# faults on the network between the services and Kafka: broker i listens on
# :19192+2(i-1) and advertises :19292+2(i-1), where nothing listens until a
# chaos run's proxy forwards it to the broker. A client that bootstraps at
# :19292 gets the proxied addresses of every broker in its metadata, so all
# its traffic goes through the proxy; the PLAINTEXT listener (:19092) stays
# direct, for everything else and between the brokers.
#
# Why the 1-node mode has a controller of its own: a broker killed and
# restarted together with its controller (one JVM) comes back before the
# controller has fenced its old registration. It then leads its partitions
# for a moment on the old registration, the controller fences it (every
# partition loses its only leader) and elects it again: two leader changes
# within a second. Kafka 4.0.2's group coordinator lost track of its state
# in that flapping (a group stuck in a rebalance for minutes, in a long
# chaos run), and 4.1 to 4.4 skip commit markers in it (below). With the
# controller alive, `start` waits until it has fenced the killed broker
# (broker.session.timeout.ms after the kill), and the broker comes back to
# partitions without a leader and is elected once. The session timeout is
# longer than the chaos suite's broker pauses (at most 8 s), so a pause
# fences nothing.
#
# Environment: KAFKA_VERSION (4.0.2; see "Why Kafka 4.0.2" below), KAFKA_BROKERS, KAFKA_WAIT (seconds for
# up/start, 300), KAFKA_HEAP_OPTS (-Xms256m -Xmx1g), KAFKA_GC_OPTS (the
# collector and its settings, "-XX:+UseG1GC -XX:MaxGCPauseMillis=20"; the JVM
# refuses two collectors, so KAFKA_JVM_OPTS cannot pick another), KAFKA_STOP_WAIT (30),
# KAFKA_PORT_BASE (19092; with another SAGAFLOW_CACHE, a second cluster),
# KAFKA_SERVER_PROPS (more server.properties settings for every node, as
# key=value words, e.g. "num.io.threads=2 num.network.threads=2"; they win
# over the script's; a node takes them at its next start), KAFKA_JVM_OPTS
# (more JVM flags for every node; they come last, so they win too, e.g.
# -XX:TieredStopAtLevel=4 undoes the 3-node mode's, see start_node),
# SAGAFLOW_CACHE (.cache).
#
# Why Kafka 4.0.2: Kafka 4.1 to 4.4 leave a transaction hanging when it is
# committed while one of its partitions has no leader (KAFKA-20734: their
# metadata cache answers "no such partition" for leader -1, and the
# transaction coordinator skips the marker as if the topic were deleted).
# The transaction then blocks every read_committed reader of the partition
# for good. Every kill of the single node once did that (before it had a
# controller of its own, above); any partition whose in-sync replicas are
# all fenced does. 4.0.2 is the newest release without the bug;
# TestFailoverMarkersReachAPartitionThatWasLeaderless fails on one with it. A cluster's data is tied to the version that made it:
# starting a mode whose data another version wrote deletes that data first.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

KAFKA_VERSION=${KAFKA_VERSION:-4.0.2}
KHOME=$CACHE/kafka/$KAFKA_VERSION
LIBS=$KHOME/libs
STAMP=$KHOME/libs.stamp
POM=$DEV_DIR/kafka/pom.xml
LOG4J=$DEV_DIR/kafka/log4j2.properties
MODE_FILE=$CACHE/kafka/mode
# 300 s, not less: next to two CPU hogs, with the failover test's seven
# -race services running, a killed node's JVM took 140 s from its start to
# listening (68 s before its first log line), and a start that gave up at
# 90 s failed the test though the node came up. Later, on the same kind of
# run, one took 104 s to its first log line and did not listen within the
# 150 s we then waited. A node that dies during start-up is still reported
# at once; kafkactl gives a verb 6 minutes.
WAIT=${KAFKA_WAIT:-300}
STOP_WAIT=${KAFKA_STOP_WAIT:-30}
read -r -a HEAP <<<"${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
read -r -a GC_OPTS <<<"${KAFKA_GC_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20}"
read -r -a JVM_OPTS <<<"${KAFKA_JVM_OPTS:-}"
read -r -a SERVER_PROPS <<<"${KAFKA_SERVER_PROPS:-}"
for prop in "${SERVER_PROPS[@]}"; do
	[[ $prop =~ ^[a-z0-9._-]+=.+$ ]] || die "KAFKA_SERVER_PROPS: \"$prop\" is not key=value"
done
CHECK_BIN=$CACHE/bin/check
# Node i's broker listens on PORT_BASE+2(i-1), its controller one above.
# Another base (with another SAGAFLOW_CACHE) runs a second, separate cluster.
PORT_BASE=${KAFKA_PORT_BASE:-19092}
[[ $PORT_BASE =~ ^[0-9]+$ ]] || die "KAFKA_PORT_BASE=$PORT_BASE: want a port number"
CHECK_LOG=$CACHE/bin/check-build.log

# Fixed cluster ids (16 bytes, base64url): one per mode, so a node's data is
# never mistaken for another cluster's.
cluster_id() { if (($1 == 1)); then echo c2FnYWZsb3ctZGV2LWtmaw; else echo c2FnYWZsb3ctZGV2LWtmMw; fi; }

state_dir() { if (($1 == 1)); then echo "$CACHE/kafka/single"; else echo "$CACHE/kafka/cluster$1"; fi; }
# layout MODE: how the mode's nodes are laid out; a mode's data is started
# afresh when its layout (or the Kafka version) changes.
layout() { if (($1 == 1)); then echo "controller+broker"; else echo "combined"; fi; }
# all_nodes MODE: every node of the mode, the 1-node mode's controller first.
all_nodes() { if (($1 == 1)); then echo "0 1"; else seq 1 "$1" | tr '\n' ' '; fi; }
# listen_port MODE NODE: the port that says the node is up.
listen_port() { if (($2 == 0)); then controller_port 1; else broker_port "$2"; fi; }
# session_ms MODE: broker.session.timeout.ms (see "Why the 1-node mode ..."
# above; in the 3-node mode a paused broker is meant to lose its leadership).
session_ms() { if (($1 == 1)); then echo 12000; else echo 5000; fi; }
node_dir() { echo "$(state_dir "$1")/node$2"; }
broker_port() { echo $((PORT_BASE + 2 * ($1 - 1))); }
controller_port() { echo $((PORT_BASE + 1 + 2 * ($1 - 1))); }
# proxied_port NODE: where the broker's PROXIED listener listens;
# proxy_port NODE: the address it advertises, a chaos run's proxy.
proxied_port() { echo $((PORT_BASE + 100 + 2 * ($1 - 1))); }
proxy_port() { echo $((PORT_BASE + 200 + 2 * ($1 - 1))); }
bootstrap() {
	local n=$1 i list=
	for ((i = 1; i <= n; i++)); do list+="${list:+,}127.0.0.1:$(broker_port "$i")"; done
	echo "$list"
}

# alive MODE NODE: our JVM for that node is running.
alive() { pid_matches "$(node_dir "$1" "$2")/kafka.pid" "$(node_dir "$1" "$2")/server.properties"; }

# running_mode: the mode with at least one live node, or nothing.
running_mode() {
	local m i
	for m in 3 1; do
		for i in $(all_nodes "$m"); do
			if alive "$m" "$i"; then
				echo "$m"
				return
			fi
		done
	done
}

check_mode() { [[ $1 == 1 || $1 == 3 ]] || die "--brokers $1: only 1 or 3 are supported"; }

# need_java: a Java 17 or newer. Its major version is kept in JAVA_MAJOR
# (for sweeper_off) because asking starts a JVM, and next to CPU hogs that
# alone takes seconds: once per run of this script is enough.
JAVA_MAJOR=
need_java() {
	[[ -n $JAVA_MAJOR ]] && return 0
	need java openjdk-17-jre-headless
	local v
	v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
	if ! [[ ${v%%.*} =~ ^[0-9]+$ ]] || ((${v%%.*} < 17)); then
		die "Kafka $KAFKA_VERSION needs Java 17 or newer; $(command -v java) is Java ${v:-unknown}"
	fi
	JAVA_MAJOR=${v%%.*}
}

# sweeper_off prints the JVM flag that keeps compiled code in the code cache,
# on Java 17 to 19. Their sweeper flushes compiled methods that ran little
# lately, and a broker's many occasional paths (a transaction's markers, a
# group's offsets) are then compiled again, and again. Measured on this
# 2-core machine: without the flag, 13 minutes after its start and at idle,
# the broker compiled 519 methods in 10 s, and under a light load its C2
# compiler thread took 87% of a core; with it, after 38 minutes, one method
# in 20 s. Java 20 removed the sweeper, and the flag with it.
sweeper_off() {
	need_java
	((JAVA_MAJOR < 20)) && echo "-XX:-UseCodeCacheFlushing"
	return 0
}

# fetch: lay Kafka's jars out in .cache/kafka/<version>/libs with Maven, once.
# The stamp records the version and the pom it came from; while both match,
# this is a no-op that runs no JVM.
cmd_fetch() {
	local want
	want="$KAFKA_VERSION $(sha256sum "$POM" | cut -c1-64)"
	if [[ -f $STAMP && $(<"$STAMP") == "$want" && -d $LIBS ]]; then
		return 0
	fi
	need_java
	need mvn maven
	mkdir -p "$KHOME"
	say "kafka: fetching Apache Kafka $KAFKA_VERSION from Maven Central into $LIBS (once)"
	local tmp=$KHOME/libs.tmp log=$KHOME/fetch.log
	rm -rf "$tmp"
	if ! mvn -B -q -f "$POM" -Dkafka.version="$KAFKA_VERSION" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$log" 2>&1; then
		tail_log "$log" 30
		die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (is Maven Central reachable? try KAFKA_VERSION=4.0.1)"
	fi
	ls "$tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn ran but no kafka_2.13 jar is in $tmp (log $log)"
	rm -rf "$LIBS"
	mv "$tmp" "$LIBS"
	echo "$want" >"$STAMP"
}

proxied_listener() { echo "PROXIED://127.0.0.1:$(proxied_port "$1")"; }
proxied_advertised() { echo "PROXIED://127.0.0.1:$(proxy_port "$1")"; }

# write_props MODE NODE: the node's server.properties, rewritten at every start
# so a change here applies without a reset.
write_props() {
	local n=$1 i=$2 dir voters="" j rf isr roles
	dir=$(node_dir "$n" "$i")
	if ((n >= 3)); then
		for ((j = 1; j <= n; j++)); do voters+="${voters:+,}$j@127.0.0.1:$(controller_port "$j")"; done
		rf=3 isr=2
	else
		voters="0@127.0.0.1:$(controller_port 1)"
		rf=1 isr=1
	fi
	mkdir -p "$dir/data" "$dir/logs"
	if ((n >= 3)); then
		roles="process.roles=broker,controller
listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),CONTROLLER://127.0.0.1:$(controller_port "$i"),$(proxied_listener "$i")
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port "$i"),$(proxied_advertised "$i")
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
	elif ((i == 0)); then
		roles="process.roles=controller
listeners=CONTROLLER://127.0.0.1:$(controller_port 1)
listener.security.protocol.map=CONTROLLER:PLAINTEXT"
	else
		roles="process.roles=broker
listeners=PLAINTEXT://127.0.0.1:$(broker_port 1),$(proxied_listener 1)
advertised.listeners=PLAINTEXT://127.0.0.1:$(broker_port 1),$(proxied_advertised 1)
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,PROXIED:PLAINTEXT
inter.broker.listener.name=PLAINTEXT"
	fi
	cat >"$dir/server.properties" <<EOF
# Written by dev/kafka.sh at every start; edit that script, not this file.
node.id=$i
$roles
controller.listener.names=CONTROLLER
controller.quorum.voters=$voters
log.dirs=$dir/data

# Our code creates its topics explicitly (kafkatx.CreateTopics); a typo must
# fail, not make a topic.
auto.create.topics.enable=false
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$isr

# Internal topics. Fewer partitions than the defaults (50): on a 2-core
# machine the first transaction and the first group join come up faster.
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr

# Tests start many consumer groups; do not wait 3 s for more members.
group.initial.rebalance.delay.ms=0

# A killed node's old registration blocks its restart until its session
# expires, and a dead broker keeps its partitions' leadership until then.
# 3 nodes: 5 s instead of 9 s speeds up the failover tests' kill/restart
# cycles. 1 node: 12 s, longer than a chaos pause (see the top of the script).
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=$(session_ms "$n")

# A restarting broker gives up and exits when the controller has not taken
# its registration within this time (Kafka's default, 60 s). On a starved
# machine the quorum can take that long to fence the killed node's old
# registration (a CI run beside two CPU hogs saw the controller spend 22 s
# on one fencing, and the restarted node give up and exit), and a node that
# exits leaves the cluster short. It may try for as long as start waits
# for it.
initial.broker.registration.timeout.ms=$((WAIT * 1000))
EOF
	if ((${#SERVER_PROPS[@]})); then
		printf '\n# KAFKA_SERVER_PROPS\n' >>"$dir/server.properties"
		printf '%s\n' "${SERVER_PROPS[@]}" >>"$dir/server.properties"
	fi
}

# format MODE NODE: format the node's storage once, before its first start.
format_node() {
	local n=$1 i=$2 dir
	dir=$(node_dir "$n" "$i")
	[[ -f $dir/data/meta.properties ]] && return 0
	say "kafka: formatting node $i storage (cluster $(cluster_id "$n"))"
	if ! java -Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" \
		kafka.tools.StorageTool format --ignore-formatted \
		--cluster-id "$(cluster_id "$n")" --config "$dir/server.properties" \
		>"$dir/logs/format.log" 2>&1; then
		tail_log "$dir/logs/format.log" 30
		die "formatting the storage of kafka node $i failed (log $dir/logs/format.log)"
	fi
	echo "$KAFKA_VERSION $(layout "$n")" >"$(state_dir "$n")/kafka.version"
}

# match_version MODE: a mode's data can only be read by the Kafka version
# that formatted it (an older one refuses a newer metadata.version), in the
# layout that wrote it. When KAFKA_VERSION or the layout differs from the
# stamp (or the data predates the stamp), and none of the mode's nodes runs,
# start the mode afresh. The data here is the tests' and the benchmark's,
# made again by every run.
match_version() {
	local n=$1 dir stamp i
	dir=$(state_dir "$n")
	stamp=$dir/kafka.version
	[[ -d $dir ]] || return 0
	[[ -f $stamp && $(<"$stamp") == "$KAFKA_VERSION $(layout "$n")" ]] && return 0
	for i in $(all_nodes "$n"); do
		alive "$n" "$i" && return 0
	done
	if compgen -G "$dir/node*/data/meta.properties" >/dev/null; then
		say "kafka: the $n-node data in $dir was written by Kafka $(cat "$stamp" 2>/dev/null || echo "before $KAFKA_VERSION"); deleting it to start Kafka $KAFKA_VERSION ($(layout "$n")) afresh"
		rm -rf "$dir"
	fi
}

# wait_fenced MODE NODE: when dev/ killed the node, wait until the
# controller has fenced its old registration (the session timeout after the
# kill, and a second), so that it comes back to partitions without a leader
# instead of leading them on the old registration first (see the top).
wait_fenced() {
	local dir at left
	dir=$(node_dir "$1" "$2")
	[[ -s $dir/killed.at ]] || return 0
	at=$(<"$dir/killed.at")
	rm -f "$dir/killed.at"
	[[ $at =~ ^[0-9]+$ ]] || return 0
	left=$((at + ($(session_ms "$1") + 999) / 1000 + 1 - $(date +%s)))
	if ((left > 0)); then
		say "kafka: node $2 was killed ${left}s short of its session timeout; waiting for the controller to fence it"
		sleep "$left"
	fi
}

# start_node MODE NODE: launch the node's JVM unless it runs already.
start_node() {
	local n=$1 i=$2 dir bp cp pid what end flags=()
	dir=$(node_dir "$n" "$i")
	bp=$(listen_port "$n" "$i")
	cp=$(controller_port "$i")
	if alive "$n" "$i"; then
		say "kafka: node $i already running (pid $(<"$dir/kafka.pid"))"
		return 0
	fi
	rm -f "$dir/kafka.pid"
	if port_open 127.0.0.1 "$bp"; then
		say "kafka: something already answers on 127.0.0.1:$bp; treating node $i as up (not started by dev/)"
		return 0
	fi
	if ((n >= 3)) && port_open 127.0.0.1 "$cp"; then
		die "port $cp is busy (kafka node $i's controller port): see ss -ltnp 'sport = :$cp'"
	fi
	if ((n == 1 && i == 0)); then
		what="controller 127.0.0.1:$bp"
	elif ((n == 1)); then
		what="broker 127.0.0.1:$bp"
	else
		what="broker 127.0.0.1:$bp, controller 127.0.0.1:$cp"
	fi
	wait_fenced "$n" "$i"
	write_props "$n" "$i"
	format_node "$n" "$i"
	# Worked out here, not in the subshell below: between its fork and its
	# exec the node counts as not started.
	read -r -a flags <<<"$(sweeper_off)"
	# The 3-node mode is for the failover tests, whose nodes restart under
	# load, not for speed: C1 alone compiles at a fraction of the CPU, and a
	# restarted node starts sooner. Measured with three CPU hogs beside it, a
	# clean stop then start of one node until it listened: 8.7 and 10.4 s
	# with both compilers, 5.7 and 6.5 s with C1 alone. Next to the failover
	# test's seven -race services and two hogs, a node took 150 s and more.
	if ((n == 3)); then flags+=(-XX:TieredStopAtLevel=1); fi
	# The 3-node nodes stand in for three machines of their own, so a CPU
	# hog on this box should slow the services under test, not the brokers
	# they run on. setsid gives each JVM a scheduling group of its own (the
	# kernel's autogroup, one per session), and nice -5 on that group
	# (sched(7); root only, else left at 0) gives it three times a hog's
	# weight. Beside two `yes` hogs in the test's session, the system
	# failover test took 245 s at a load average of 40 to 80 with the groups
	# at 0, and 161 s at about 8 with them at -5; a CI run with them at 0
	# failed there, its controllers 25 s on one event and a transaction
	# coordinator 20 s loading one transaction.
	local group_nice=0
	if ((n == 3)); then group_nice=-5; fi
	say "kafka: starting node $i ($what)"
	{
		echo
		echo "=== $(date -Is) dev/kafka.sh start node $i ==="
	} >>"$dir/logs/stdout.log"
	# setsid: the JVM outlives this script and is not hit by a terminal's ^C.
	# Everything the JVM prints before log4j is up (a bad flag, a crash) goes
	# to stdout.log.
	(
		cd "$dir"
		exec 9>&- # the JVM must not inherit (and hold) the dev/ lock
		exec setsid bash -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec "$@"' "$group_nice" java "${HEAP[@]}" "${GC_OPTS[@]}" "${flags[@]}" "${JVM_OPTS[@]}" \
			-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
			-Dkafka.logs.dir="$dir/logs" -Dlog4j2.configurationFile="$LOG4J" \
			-cp "$LIBS/*" kafka.Kafka "$dir/server.properties" \
			</dev/null >>"$dir/logs/stdout.log" 2>&1
	) &
	pid=$!
	end=$(($(date +%s) + WAIT))
	echo "$pid" >"$dir/kafka.pid"
	# Until the subshell has exec'd into java, the pid's command line is
	# bash's. That takes milliseconds on a quiet machine and seconds next to
	# CPU hogs; only a subshell that has died, or the start's deadline,
	# means the node did not start.
	until alive "$n" "$i"; do
		kill -0 "$pid" 2>/dev/null || break
		(($(date +%s) < end)) || break
		sleep 0.1
	done
	alive "$n" "$i" && return 0
	node_logs "$n" "$i"
	kill -0 "$pid" 2>/dev/null || die "kafka node $i did not start (is java working? logs above)"
	die "kafka node $i: its java did not start within ${WAIT}s (KAFKA_WAIT)"
}

node_logs() {
	local dir
	dir=$(node_dir "$1" "$2")
	tail_log "$dir/logs/stdout.log" 15
	tail_log "$dir/logs/server.log" 40
}

# wait_listening MODE END NODE...: until each node's port (a broker's, or
# the 1-node mode's controller's) accepts connections; fail fast when a JVM
# dies.
wait_listening() {
	local n=$1 end=$2 i
	shift 2
	for i in "$@"; do
		until port_open 127.0.0.1 "$(listen_port "$n" "$i")"; do
			if ! alive "$n" "$i"; then
				node_logs "$n" "$i"
				die "kafka node $i exited during start-up (logs above; $(node_dir "$n" "$i")/logs)"
			fi
			if (($(date +%s) >= end)); then
				node_logs "$n" "$i"
				die "kafka node $i does not listen on 127.0.0.1:$(listen_port "$n" "$i") after ${WAIT}s"
			fi
			sleep 0.5
		done
	done
}

# build_check: compile dev/check (kafkatx.Probe; cgo, so the first build takes
# a minute) into .cache/bin. Run in the background while the JVMs start.
build_check() {
	command -v go >/dev/null 2>&1 || {
		echo "go is not on PATH: dev/check needs Go (see the README's Prerequisites)" >"$CHECK_LOG"
		return 1
	}
	mkdir -p "$(dirname "$CHECK_BIN")"
	(cd "$ROOT" && go build -o "$CHECK_BIN" ./dev/check) >"$CHECK_LOG" 2>&1
}

# probe MODE BUILD_PID: wait for the check build, then run it with what is
# left of the deadline. The deadline for the probe starts after the build, so
# a cold cgo build does not eat into Kafka's time.
probe() {
	local n=$1 build=$2 end i
	if ! wait "$build"; then
		cat "$CHECK_LOG" >&2
		die "could not build dev/check (go build ./dev/check, above): Kafka is started but unverified"
	fi
	end=$(($(date +%s) + WAIT))
	if ! "$CHECK_BIN" -kafka "$(bootstrap "$n")" -timeout "$(deadline_left "$end")s"; then
		for ((i = 1; i <= n; i++)); do node_logs "$n" "$i"; done
		die "kafka ($(bootstrap "$n")) listens but does not pass the transactional probe within ${WAIT}s"
	fi
}

# select_nodes MODE [NODE...]: set NODES to the node numbers asked for, all
# by default.
select_nodes() {
	local n=$1 i
	shift
	NODES=()
	if (($# == 0)); then
		read -r -a NODES <<<"$(all_nodes "$n")"
		return
	fi
	for i in "$@"; do
		if ! [[ $i =~ ^[0-9]+$ ]] || ((i > n)) || ((i < 1 && n > 1)); then
			die "node $i: the $n-node mode has nodes $(all_nodes "$n")"
		fi
		NODES+=("$i")
	done
}

# signal_nodes MODE SIGNAL NODE...: send SIGNAL to the nodes that run.
signal_nodes() {
	local n=$1 sig=$2 i
	shift 2
	for i in "$@"; do
		if alive "$n" "$i"; then
			say "kafka: SIG$sig node $i (pid $(<"$(node_dir "$n" "$i")/kafka.pid"))"
			kill -s "$sig" "$(<"$(node_dir "$n" "$i")/kafka.pid")" 2>/dev/null || true
			[[ $sig != KILL ]] || date +%s >"$(node_dir "$n" "$i")/killed.at"
		else
			say "kafka: node $i is not running"
		fi
	done
}

# stop_nodes MODE NODE...: SIGTERM all at once (stopping them one by one
# would lose the quorum half-way and stall the last ones' controlled
# shutdown), then SIGKILL whatever is left after STOP_WAIT seconds. Even at
# once, the 3-node mode's last node often lost its quorum before its
# controller approved its shutdown, and then waited out all of STOP_WAIT
# (its log: elections that cannot win, heartbeats that cannot be sent; in
# most `make test` runs). A node stopping while fewer than two of the three
# are alive can never be approved, so it gets ALONE_WAIT seconds to finish
# what it was doing and is then killed.
ALONE_WAIT=5
stop_nodes() {
	local n=$1 i pid end left voters alone_since=
	shift
	local -a pids=() rest=()
	# The 1-node mode's controller goes last: the broker's controlled
	# shutdown needs it.
	if ((n == 1)) && [[ " $* " == *" 0 "* ]]; then
		for i in "$@"; do ((i == 0)) || rest+=("$i"); done
		((${#rest[@]} == 0)) || stop_nodes 1 "${rest[@]}"
		set -- 0
	fi
	for i in "$@"; do
		if alive "$n" "$i"; then
			pid=$(<"$(node_dir "$n" "$i")/kafka.pid")
			say "kafka: stopping node $i (pid $pid)"
			kill -CONT "$pid" 2>/dev/null || true # a paused node cannot stop
			kill -TERM "$pid" 2>/dev/null || true
			pids+=("$pid")
		fi
	done
	end=$(($(date +%s) + STOP_WAIT))
	for pid in ${pids[@]+"${pids[@]}"}; do
		while running "$pid"; do
			left=$((end - $(date +%s)))
			if ((left <= 0)); then
				warn "kafka pid $pid did not stop within ${STOP_WAIT}s; killing it"
				kill -KILL "$pid" 2>/dev/null || true
				break
			fi
			if ((n == 3)); then
				voters=0
				for i in $(all_nodes 3); do
					if alive 3 "$i"; then ((++voters)); fi
				done
				if ((voters < 2)); then
					: "${alone_since:=$(date +%s)}"
					if (($(date +%s) - alone_since >= ALONE_WAIT)); then
						say "kafka: pid $pid is the last node up, without a quorum to approve its shutdown; killing it"
						kill -KILL "$pid" 2>/dev/null || true
						break
					fi
				fi
			fi
			sleep 0.2
		done
	done
	for i in "$@"; do rm -f "$(node_dir "$n" "$i")/kafka.pid"; done
}

# running PID: the process is alive and not a zombie.
running() { kill -0 "$1" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }

status_nodes() {
	local n=$1 i dir bp state rc=0
	shift
	say "kafka: $n-node mode, data in $(state_dir "$n")"
	for i in "$@"; do
		dir=$(node_dir "$n" "$i")
		bp=$(listen_port "$n" "$i")
		if alive "$n" "$i"; then
			if [[ $(awk '{print $3}' "/proc/$(<"$dir/kafka.pid")/stat" 2>/dev/null) == T ]]; then
				state="paused (SIGSTOP), pid $(<"$dir/kafka.pid")"
				rc=1
			elif port_open 127.0.0.1 "$bp"; then
				state="up, pid $(<"$dir/kafka.pid")"
			else
				state="starting (not listening yet), pid $(<"$dir/kafka.pid")"
				rc=1
			fi
		else
			state=down
			rc=1
		fi
		if ((n == 1 && i == 0)); then
			say "  node 0 (controller): $state; 127.0.0.1:$bp; log $dir/logs/server.log"
		elif ((n == 1)); then
			say "  node $i: $state; broker 127.0.0.1:$bp; log $dir/logs/server.log"
		else
			say "  node $i: $state; broker 127.0.0.1:$bp, controller 127.0.0.1:$(controller_port "$i"); log $dir/logs/server.log"
		fi
	done
	return "$rc"
}

# --- arguments ---------------------------------------------------------------
FLAG_BROKERS=
ARGS=()
while (($#)); do
	case $1 in
	--brokers) FLAG_BROKERS=${2:?--brokers needs 1 or 3}; shift 2 ;;
	--brokers=*) FLAG_BROKERS=${1#*=}; shift ;;
	*) ARGS+=("$1"); shift ;;
	esac
done
set -- ${ARGS[@]+"${ARGS[@]}"}
CMD=${1:-status}
(($#)) && shift

# The mode to bring up: the flag, else KAFKA_BROKERS, else 1.
up_mode() { echo "${FLAG_BROKERS:-${KAFKA_BROKERS:-1}}"; }
# The mode to act on: the flag, else the running one, else KAFKA_BROKERS,
# else the last one brought up, else 1.
node_mode() {
	local m=$FLAG_BROKERS
	[[ -n $m ]] || m=$(running_mode)
	[[ -n $m ]] || m=${KAFKA_BROKERS:-}
	[[ -n $m || ! -s $MODE_FILE ]] || m=$(<"$MODE_FILE")
	echo "${m:-1}"
}

case $CMD in
fetch | up | start | stop | down | reset) lock "$CACHE/kafka/.lock" ;;
esac

case $CMD in
fetch)
	cmd_fetch
	;;
up)
	N=$(up_mode)
	check_mode "$N"
	OTHER=$((N == 1 ? 3 : 1))
	build_check &
	BUILD=$!
	if [[ $(running_mode) == "$OTHER" ]]; then
		say "kafka: switching from the $OTHER-node to the $N-node mode: stopping the $OTHER-node cluster"
		select_nodes "$OTHER"
		stop_nodes "$OTHER" "${NODES[@]}"
	fi
	select_nodes "$N"
	all_up=1
	for i in "${NODES[@]}"; do
		if alive "$N" "$i"; then
			# A node left paused by a chaos test listens but never answers.
			kill -CONT "$(<"$(node_dir "$N" "$i")/kafka.pid")" 2>/dev/null || true
		elif ! port_open 127.0.0.1 "$(listen_port "$N" "$i")"; then
			all_up=
		fi
	done
	if [[ -z $all_up ]]; then
		cmd_fetch
		need_java
		mkdir -p "$CACHE/kafka"
		echo "$N" >"$MODE_FILE"
		match_version "$N"
		for i in "${NODES[@]}"; do start_node "$N" "$i"; done
	fi
	wait_listening "$N" $(($(date +%s) + WAIT)) "${NODES[@]}"
	probe "$N" "$BUILD"
	mkdir -p "$CACHE/kafka"
	echo "$N" >"$MODE_FILE"
	say "kafka: up, $N node(s), bootstrap $(bootstrap "$N")"
	;;
start)
	N=$(node_mode)
	check_mode "$N"
	select_nodes "$N" "$@"
	# A broker of the 1-node mode needs its controller.
	if ((N == 1)) && [[ " ${NODES[*]} " != *" 0 "* ]] && ! alive 1 0; then
		NODES=(0 "${NODES[@]}")
	fi
	cmd_fetch
	need_java
	mkdir -p "$CACHE/kafka"
	echo "$N" >"$MODE_FILE"
	match_version "$N"
	for i in "${NODES[@]}"; do start_node "$N" "$i"; done
	wait_listening "$N" $(($(date +%s) + WAIT)) "${NODES[@]}"
	;;
wait)
	N=$(node_mode)
	build_check &
	probe "$N" $!
	;;
stop)
	N=$(node_mode)
	select_nodes "$N" "$@"
	stop_nodes "$N" "${NODES[@]}"
	;;
down)
	for m in 3 1; do
		select_nodes "$m"
		stop_nodes "$m" "${NODES[@]}"
	done
	if port_open 127.0.0.1 "$PORT_BASE"; then
		say "kafka: something not started by dev/ still answers on 127.0.0.1:$PORT_BASE; leaving it"
	fi
	;;
kill | pause | resume)
	N=$(node_mode)
	select_nodes "$N" "$@"
	case $CMD in kill) SIG=KILL ;; pause) SIG=STOP ;; *) SIG=CONT ;; esac
	signal_nodes "$N" "$SIG" "${NODES[@]}"
	;;
status)
	N=${FLAG_BROKERS:-$(running_mode)}
	if [[ -z $N ]]; then
		if port_open 127.0.0.1 "$PORT_BASE"; then
			say "kafka: up on 127.0.0.1:$PORT_BASE (not started by dev/)"
			exit 0
		fi
		say "kafka: down"
		exit 1
	fi
	select_nodes "$N" "$@"
	status_nodes "$N" "${NODES[@]}"
	;;
reset)
	for m in 3 1; do
		select_nodes "$m"
		stop_nodes "$m" "${NODES[@]}"
	done
	say "kafka: deleting $CACHE/kafka/single and $CACHE/kafka/cluster3"
	rm -rf "$CACHE/kafka/single" "$CACHE/kafka/cluster3" "$MODE_FILE"
	;;
bootstrap)
	bootstrap "$(node_mode)"
	;;
routes)
	N=$(running_mode)
	[[ -n $N ]] || die "kafka: no node started by dev/ is running (dev/kafka.sh up)"
	for ((i = 1; i <= N; i++)); do
		# A node started before the PROXIED listener existed has none
		# until it starts again.
		grep -q '^listeners=.*PROXIED' "$(node_dir "$N" "$i")/server.properties" 2>/dev/null ||
			die "kafka: node $i runs without the PROXIED listener; restart it (dev/kafka.sh stop $i; dev/kafka.sh start $i)"
		echo "$i 127.0.0.1:$(proxy_port "$i") 127.0.0.1:$(proxied_port "$i")"
	done
	;;
logs)
	N=$(node_mode)
	select_nodes "$N" "$@"
	for i in "${NODES[@]}"; do
		if ! alive "$N" "$i" && port_open 127.0.0.1 "$(listen_port "$N" "$i")"; then
			echo "(node $i: 127.0.0.1:$(listen_port "$N" "$i") was not started by dev/)"
		else
			echo "$(node_dir "$N" "$i")/logs/server.log"
		fi
	done
	;;
run)
	(($#)) || die "run needs a class name, e.g. org.apache.kafka.tools.TopicCommand"
	cmd_fetch
	need_java
	mkdir -p "$CACHE/kafka/tools"
	exec java -Dkafka.logs.dir="$CACHE/kafka/tools" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" "$@"
	;;
-h | --help | help)
	sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'
	;;
*)
	die "unknown command $CMD (see dev/kafka.sh help)"
	;;
esac
