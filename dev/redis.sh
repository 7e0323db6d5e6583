#!/usr/bin/env bash
# dev/redis.sh: the Redis the tests, the chaos suite and the benchmark use.
#
#   dev/redis.sh up       start if needed and wait until it answers PING
#   dev/redis.sh start    the same (kept for symmetry with dev/kafka.sh)
#   dev/redis.sh stop     SHUTDOWN (the AOF is fsynced), then wait for exit
#   dev/redis.sh kill     SIGKILL, as a crash or power loss would
#   dev/redis.sh status   exit 0 when it answers
#   dev/redis.sh log      print the log's path
#
# Debian's redis-server (apt-get installed when missing), on the address of
# SAGAFLOW_REDIS (default 127.0.0.1:16379), loopback only, daemonized, with its
# data, pidfile and log in .cache/redis. Durability: AOF with
# appendfsync always (REDIS_APPENDFSYNC=everysec|no to measure the cost; the
# README says what those risk). The append-only file is rewritten when it
# has grown to five times its size after the last rewrite
# (REDIS_AOF_REWRITE_PERCENTAGE, 400; Redis's own default is 100, twice):
# each rewrite forks and writes out the whole dataset, and at 100 those
# rewrites took up to a core for 10 s at a time under load
# (docs/performance.md, "Redis's append-only file"). A Redis that already
# answers on the port, however it was started, counts as up and is never
# stopped by these scripts.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

ADDR=${SAGAFLOW_REDIS:-127.0.0.1:16379}
ADDR=${ADDR#redis://}
ADDR=${ADDR%%/*}
HOST=${ADDR%:*}
PORT=${ADDR##*:}
[[ $PORT =~ ^[0-9]+$ && $HOST != "$ADDR" ]] || die "SAGAFLOW_REDIS=$ADDR: want host:port"
case $HOST in
127.0.0.1 | localhost) HOST=127.0.0.1 LOCAL=1 ;;
*) LOCAL= ;;
esac
if [[ $PORT == 16379 ]]; then
	DIR=$CACHE/redis
else
	DIR=$CACHE/redis-$PORT
fi
PIDFILE=$DIR/redis.pid
LOGFILE=$DIR/redis.log
FSYNC=${REDIS_APPENDFSYNC:-always}
REWRITE=${REDIS_AOF_REWRITE_PERCENTAGE:-400}
# 0 would turn the rewrites off and let the file grow without bound.
[[ $REWRITE =~ ^[1-9][0-9]*$ ]] || die "REDIS_AOF_REWRITE_PERCENTAGE=$REWRITE: want a whole number from 1 (the file's growth, in percent of its size after the last rewrite, that starts the next)"
WAIT=${REDIS_WAIT:-30}

ping() {
	if command -v redis-cli >/dev/null 2>&1; then
		[[ $(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>/dev/null) == PONG ]]
	else
		# No redis-cli (a Redis from elsewhere): speak RESP by hand.
		# shellcheck disable=SC2016 # expanded by the inner bash
		timeout 3 bash -c '
			exec 3<>"/dev/tcp/$1/$2" || exit 1
			printf "PING\r\n" >&3
			IFS= read -r line <&3
			[[ $line == "+PONG"* ]]' _ "$HOST" "$PORT" 2>/dev/null
	fi
}

# loading: Redis is reading its AOF. It answers LOADING while it reads the
# base file, but may not answer at all while it replays the incremental one;
# its log then says where it is.
loading() {
	if command -v redis-cli >/dev/null 2>&1 &&
		[[ $(timeout 3 redis-cli -h "$HOST" -p "$PORT" ping 2>&1) == *LOADING* ]]; then
		return 0
	fi
	local recent
	recent=$(tail -n 8 "$LOGFILE" 2>/dev/null)
	ours && [[ $recent != *"Ready to accept"* ]] && grep -qiE "loading|reading rdb|loaded from base" <<<"$recent"
}

ours() {
	pid_matches "$PIDFILE" redis-server && pid_matches "$PIDFILE" ":$PORT"
}

cmd_status() {
	if ours && ping; then
		say "redis: up, pid $(<"$PIDFILE"), $HOST:$PORT, appendfsync $(fsync_now), log $LOGFILE"
	elif ours; then
		say "redis: process $(<"$PIDFILE") is running but does not answer PING on $HOST:$PORT (log $LOGFILE)"
		return 1
	elif ping; then
		say "redis: up on $HOST:$PORT, appendfsync $(fsync_now) (not started by dev/, so dev/down.sh leaves it)"
	else
		say "redis: down ($HOST:$PORT)"
		return 1
	fi
}

fsync_now() {
	if command -v redis-cli >/dev/null 2>&1; then
		timeout 3 redis-cli -h "$HOST" -p "$PORT" config get appendfsync 2>/dev/null | sed -n 2p
	else
		echo "?"
	fi
}

cmd_up() {
	if ping; then
		if ours; then
			say "redis: already up on $HOST:$PORT (pid $(<"$PIDFILE"))"
		else
			say "redis: something already answers on $HOST:$PORT; using it (not started by dev/)"
			[[ $(fsync_now) == always || $FSYNC != always ]] ||
				warn "redis on $HOST:$PORT has appendfsync $(fsync_now), not always: see the README's Redis durability"
		fi
		return 0
	fi
	[[ -n $LOCAL ]] || die "no Redis answers at $HOST:$PORT, and dev/ only starts one on 127.0.0.1"
	if ours; then
		# Running but not answering: it may still be loading its AOF.
		say "redis: pid $(<"$PIDFILE") is running; waiting for it to answer"
	else
		if port_open "$HOST" "$PORT"; then
			die "port $PORT is busy: something that is not Redis listens on $HOST:$PORT (see: ss -ltnp 'sport = :$PORT')"
		fi
		need redis-server redis-server
		need redis-cli redis-tools
		mkdir -p "$DIR"
		rm -f "$PIDFILE"
		say "redis: starting on $HOST:$PORT (appendonly yes, appendfsync $FSYNC, auto-aof-rewrite-percentage $REWRITE), data in $DIR"
		# --save "": the AOF is the durability; RDB snapshots would only add
		# fork pauses. What redis-server says before it opens its log file
		# (a bad option) goes to the same file. 9>&-: the daemon must not
		# inherit (and hold) the dev/ lock.
		# shellcheck disable=SC2094
		if ! redis-server --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
			--daemonize yes --dir "$DIR" --pidfile "$PIDFILE" --logfile "$LOGFILE" \
			--appendonly yes --appendfsync "$FSYNC" --auto-aof-rewrite-percentage "$REWRITE" \
			--save "" >>"$LOGFILE" 2>&1 9>&-; then
			tail_log "$LOGFILE"
			die "redis-server did not start (see the log above)"
		fi
	fi
	local end=$(($(date +%s) + WAIT))
	until ping; do
		if (($(date +%s) >= end)) && loading; then
			# A large AOF (a long benchmark leaves gigabytes) takes
			# longer than WAIT to load; Redis says so, and that is
			# progress, not a hang.
			say "redis: still loading its data from $DIR; waiting ${WAIT}s more"
			end=$(($(date +%s) + WAIT))
		elif (($(date +%s) >= end)); then
			tail_log "$LOGFILE"
			die "redis on $HOST:$PORT did not answer PING within ${WAIT}s (log $LOGFILE)"
		fi
		if [[ -s $PIDFILE ]] && ! ours; then
			tail_log "$LOGFILE"
			die "redis-server exited during start-up (log $LOGFILE)"
		fi
		sleep 0.2
	done
	say "redis: up on $HOST:$PORT (pid $(<"$PIDFILE"))"
}

cmd_stop() {
	if ! ours; then
		rm -f "$PIDFILE"
		if ping; then
			say "redis: $HOST:$PORT was not started by dev/; leaving it running"
		else
			say "redis: not running"
		fi
		return 0
	fi
	local pid end
	pid=$(<"$PIDFILE")
	say "redis: stopping pid $pid"
	timeout 10 redis-cli -h "$HOST" -p "$PORT" shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
	end=$(($(date +%s) + 20))
	while kill -0 "$pid" 2>/dev/null; do
		if (($(date +%s) >= end)); then
			warn "redis pid $pid did not exit within 20s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$PIDFILE"
}

cmd_kill() {
	if ours; then
		say "redis: SIGKILL pid $(<"$PIDFILE")"
		kill -KILL "$(<"$PIDFILE")" 2>/dev/null || true
	else
		say "redis: no redis started by dev/ is running"
	fi
}

case ${1:-status} in
up | start | stop) lock "$DIR/.lock" ;;
esac

case ${1:-status} in
up | start) cmd_up ;;
stop) cmd_stop ;;
kill) cmd_kill ;;
status) cmd_status ;;
log)
	if ours || ! ping; then
		echo "$LOGFILE"
	else
		echo "(not started by dev/: $HOST:$PORT logs wherever its owner put them)"
	fi
	;;
-h | --help | help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
*) die "unknown command $1 (up|start|stop|kill|status|log)" ;;
esac
