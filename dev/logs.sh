#!/usr/bin/env bash
# dev/logs.sh [N]: the last N (default 60) lines of every log that dev/ keeps:
# each Kafka node's server.log and stdout.log, and Redis's log. For a failed
# CI run, or a look after a chaos test. The logs written to last come last:
# a failure's output is often cut to its end, and there the logs of the
# cluster that was running then are the ones that tell (a CI run once showed
# only the idle 1-node cluster's, which the failed 3-node test never used).
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

n=${1:-60}
shopt -s nullglob
logs=("$CACHE"/kafka/*/node*/logs/server.log "$CACHE"/kafka/*/node*/logs/stdout.log \
	"$CACHE"/redis*/redis.log)
if ((${#logs[@]} == 0)); then
	say "no dev/ logs under $CACHE"
	exit 0
fi
# ls -tr: oldest modification first; the paths have no newlines.
while IFS= read -r f; do
	tail_log "$f" "$n" 2>&1
done < <(ls -1tr -- "${logs[@]}")
