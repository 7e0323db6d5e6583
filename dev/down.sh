#!/usr/bin/env bash
# dev/down.sh: stop the Kafka nodes (either mode) and the Redis that dev/
# started. Data stays in .cache/ for the next dev/up.sh; dev/kafka.sh reset
# deletes Kafka's, rm -rf .cache/redis Redis's. Services that dev/ did not
# start are left running.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

rc=0
"$DEV_DIR/kafka.sh" down || rc=1
"$DEV_DIR/redis.sh" stop || rc=1
exit "$rc"
