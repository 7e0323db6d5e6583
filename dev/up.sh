#!/usr/bin/env bash
# dev/up.sh [--brokers 1|3]: start Redis and Kafka for the tests and wait
# until both really answer. Idempotent: what runs already is left alone (a
# quick no-op when everything is up), a node whose process died is started
# again, and a service that already answers on its port, however it was
# started, counts as up. KAFKA_BROKERS=3 is the same as --brokers 3.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

BROKERS=${KAFKA_BROKERS:-1}
while (($#)); do
	case $1 in
	--brokers) BROKERS=${2:?--brokers needs 1 or 3}; shift 2 ;;
	--brokers=*) BROKERS=${1#*=}; shift ;;
	-h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown argument $1 (usage: dev/up.sh [--brokers 1|3])" ;;
	esac
done
[[ $BROKERS == 1 || $BROKERS == 3 ]] || die "--brokers $BROKERS: only 1 or 3 are supported"

start=$(date +%s)
"$DEV_DIR/redis.sh" up
"$DEV_DIR/kafka.sh" up --brokers "$BROKERS"

kafka=$("$DEV_DIR/kafka.sh" bootstrap --brokers "$BROKERS")
say ""
say "up in $(($(date +%s) - start))s. Logs:"
say "  redis: $("$DEV_DIR/redis.sh" log)"
"$DEV_DIR/kafka.sh" logs --brokers "$BROKERS" | sed 's/^/  kafka: /'
say "The tests read (these are the defaults):"
say "  export SAGAFLOW_KAFKA=${SAGAFLOW_KAFKA:-$kafka}"
say "  export SAGAFLOW_REDIS=${SAGAFLOW_REDIS:-127.0.0.1:16379}"
