#!/usr/bin/env bash
# dev/logs.sh [N]: the last N (default 60) lines of every log that dev/ keeps:
# each Kafka node's server.log and stdout.log, and Redis's log. For a failed
# CI run, or a look after a chaos test.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

n=${1:-60}
shopt -s nullglob
found=
for f in "$CACHE"/kafka/*/node*/logs/server.log "$CACHE"/kafka/*/node*/logs/stdout.log \
	"$CACHE"/redis*/redis.log; do
	found=1
	tail_log "$f" "$n" 2>&1
done
[[ -n $found ]] || say "no dev/ logs under $CACHE"
