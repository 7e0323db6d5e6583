#!/usr/bin/env bash
# dev/chromium.sh: make sure the browser of the browser test
# (orders/web/browser_test.go) is here: Debian's chromium at /usr/bin/chromium,
# or whatever SAGAFLOW_CHROMIUM names. When /usr/bin/chromium is missing it is
# installed with apt-get (apt-get update, then apt-get install -y chromium);
# when apt refuses, this says so and fails. A quick no-op when it is there.
# `make test` runs it before the tests.
set -euo pipefail
# shellcheck source=dev/lib.sh
. "$(dirname "$0")/lib.sh"

CHROMIUM=${SAGAFLOW_CHROMIUM:-/usr/bin/chromium}
if [[ ! -x $CHROMIUM ]]; then
	# Only the default path is ours to install; another one was chosen by hand.
	[[ $CHROMIUM == /usr/bin/chromium ]] ||
		die "SAGAFLOW_CHROMIUM=$CHROMIUM is not an executable file"
	warn "$CHROMIUM is missing: installing Debian's chromium for the browser test"
	apt_install chromium
	[[ -x $CHROMIUM ]] ||
		die "apt-get installed chromium, but $CHROMIUM is still not there: install it by hand or set SAGAFLOW_CHROMIUM"
fi
# Debian's wrapper script complains on stderr about its own environment checks;
# only the version line matters here.
say "chromium: $("$CHROMIUM" --version 2>/dev/null | head -n 1) ($CHROMIUM)"
