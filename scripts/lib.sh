# shellcheck shell=bash
# Common helpers for the KVMI harness. Sourced by every script in scripts/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
LINUX=${LINUX:-$BUILD/linux}
LOGS=$BUILD/logs
PATCHES=${PATCHES:-$ROOT/patches}
SERIES_DIR=$ROOT/series
CONFIGS=$ROOT/configs
SELFTESTS_OUT=$BUILD/selftests
export CCACHE_DIR=${CCACHE_DIR:-$BUILD/ccache}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-8G}
JOBS=${JOBS:-$(( $(nproc) + 1 ))}
KCC=${KCC:-ccache gcc}
PY=${PY:-/usr/bin/python3}

# Packages needed on a fresh Debian 12 machine.
PACKAGES=(qemu-system-x86 linux-source-6.12 flex bison bc libelf-dev libssl-dev
          busybox-static cpio ccache dwarves kmod rsync git make gcc perl
          python3-ply python3-git
          python3 xz-utils
          sparse
          gnuplot-nox)

log()  { printf '==> %s\n' "$*" >&2; }
warn() { printf 'WARNING(harness): %s\n' "$*" >&2; }
die()  { printf 'ERROR(harness): %s\n' "$*" >&2; exit 1; }

fmt_dur() { local s=$1; printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# Phase timing: "timed <label> cmd args..." runs cmd, prints and records its
# duration in $TIMINGS (default build/logs/timings; "label<TAB>seconds" lines).
timed() {
	local label=$1; shift
	local t0 rc=0
	t0=$(date +%s)
	"$@" || rc=$?
	local dt=$(( $(date +%s) - t0 ))
	mkdir -p "$LOGS"
	printf '%s\t%s\n' "$label" "$dt" >> "${TIMINGS:-$LOGS/timings}"
	printf '==> %s: %s%s\n' "$label" "$(fmt_dur "$dt")" \
		"$([ "$rc" = 0 ] || echo " (FAILED rc=$rc)")" >&2
	return "$rc"
}

objdir_of() { echo "$BUILD/obj-$1"; }

# Kernel make with the harness' fixed settings (out-of-tree, ccache).
kmake() {
	local obj=$1; shift
	make -s -C "$LINUX" O="$obj" CC="$KCC" HOSTCC=gcc -j"$JOBS" "$@"
}

series_patches() {
	# Prints the series patch files in order (without the cover letter).
	[ -d "$PATCHES" ] || return 0
	find "$PATCHES" -maxdepth 1 -name '[0-9][0-9][0-9][0-9]-*.patch' \
		! -name '0000-cover-letter.patch' | LC_ALL=C sort
}

require_tree() {
	git -C "$LINUX" rev-parse -q --verify refs/tags/base >/dev/null 2>&1 ||
		die "$LINUX is missing or has no 'base' tag; run 'make tree' first"
}

# Upstream KVM selftests that must pass in the nested-SVM QEMU guest.
CONTROL_TESTS=${CONTROL_TESTS:-"sync_regs_test userspace_msr_exit_test platform_info_test svm_int_ctl_test"}

# Serialize harness runs that use the same objdir (two people/terminals
# building obj-debug at once would corrupt it). Held until the calling script
# exits; nested harness scripts inherit it through HARNESS_LOCK_<cfg>.
lock_objdir() {
	local cfg=$1 var="HARNESS_LOCK_${1//[^A-Za-z0-9_]/_}"
	[ "${!var:-}" = 1 ] && return 0
	mkdir -p "$BUILD"
	exec {HARNESS_LOCK_FD}> "$BUILD/.lock-obj-$cfg"
	if ! flock -n "$HARNESS_LOCK_FD"; then
		log "waiting for another harness run using build/obj-$cfg ..."
		flock "$HARNESS_LOCK_FD"
	fi
	export "$var=1"
}
