#!/usr/bin/env bash
# dev/status.sh: say whether Redis and Kafka are up, with pids, ports and log
# files. Exit status 0 only when both answer.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

rc=0
"$DEV_DIR/redis.sh" status || rc=1
"$DEV_DIR/kafka.sh" status || rc=1
exit "$rc"
