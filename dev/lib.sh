# shellcheck shell=bash
# dev/lib.sh: shared by the dev/ scripts; sourced, never run.
#
# Everything a dev/ script creates lives under .cache/ at the repository root
# (gitignored): Kafka's jars, each node's data and logs, Redis's data and log.

DEV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$DEV_DIR/.." && pwd)
# shellcheck disable=SC2034 # used by the scripts that source this file
CACHE=${SAGAFLOW_CACHE:-$ROOT/.cache}

# say prints a progress line; warn and die print to stderr.
say() { printf '%s\n' "$*"; }
warn() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() {
	warn "$*"
	exit 1
}

# port_open HOST PORT: something accepts TCP connections there.
port_open() {
	timeout 2 bash -c ": >/dev/tcp/$1/$2" 2>/dev/null
}

# pid_matches PIDFILE PATTERN: the pidfile names a live process whose command
# line contains PATTERN. A pidfile left by a crash, or whose pid was reused by
# another program, does not match.
pid_matches() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ -r /proc/$pid/cmdline ]] || return 1
	# A zombie (killed, not yet reaped) is not running.
	[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2"
}

# tail_log FILE [N]: the last N lines of a log, framed, for failure messages.
tail_log() {
	local f=$1 n=${2:-40}
	if [[ -s $f ]]; then
		printf -- '----- last %d lines of %s -----\n' "$n" "$f" >&2
		tail -n "$n" "$f" >&2
		printf -- '----- end of %s -----\n' "$f" >&2
	else
		printf -- '(no log at %s)\n' "$f" >&2
	fi
}

# as_root CMD...: run CMD as root (directly, or with sudo when it is there).
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo -n "$@"
	else
		warn "not root and no sudo: cannot run $*"
		return 1
	fi
}

# apt_install PACKAGE...: install Debian packages, saying clearly when apt
# cannot or will not. The package lists are refreshed first, once per run.
APT_UPDATED=
apt_install() {
	command -v apt-get >/dev/null 2>&1 ||
		die "need the Debian package(s) $*, but apt-get is not here: install them by hand"
	say "installing $* with apt-get (this happens once)"
	export DEBIAN_FRONTEND=noninteractive
	if [[ -z $APT_UPDATED ]]; then
		as_root apt-get update -qq >&2 ||
			die "apt-get update failed (see above): install $* by hand"
		APT_UPDATED=1
	fi
	as_root apt-get install -y -qq --no-install-recommends "$@" >&2 ||
		die "apt-get install $* was refused (see above): install $* by hand"
}

# need CMD PACKAGE: make sure CMD is on PATH, installing PACKAGE if not.
need() {
	command -v "$1" >/dev/null 2>&1 && return 0
	warn "$1 is not on PATH; trying to install the Debian package $2"
	apt_install "$2"
	command -v "$1" >/dev/null 2>&1 || die "$1 is still not on PATH after installing $2"
}

# deadline_left END: seconds until the epoch second END (at least 1).
deadline_left() {
	local left=$(($1 - $(date +%s)))
	((left > 0)) || left=1
	echo "$left"
}

# lock FILE: hold an exclusive lock on FILE until this script exits, so two
# `make up` runs at once (two terminals, two test runs) do not both start a
# process and leave a pidfile naming the one that lost.
lock() {
	mkdir -p "$(dirname "$1")"
	exec 9>"$1"
	if ! flock -w 300 9; then
		die "another dev/ script has held $1 for 5 minutes; is one stuck?"
	fi
}
