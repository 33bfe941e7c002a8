#!/usr/bin/env bash
# scripts/pipeline.sh <mode> <cfg>: packages -> tree -> config+kernel ->
# selftests -> initramfs -> boot -> results, with per-phase timings.
#   make test = pipeline.sh test debug ; make run = pipeline.sh run release
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: pipeline.sh test|run cfg}
cfg=${2:?usage: pipeline.sh test|run cfg}
lock_objdir "$cfg"
mkdir -p "$LOGS"
export TIMINGS=$LOGS/timings-$mode-$cfg
: > "$TIMINGS"
t0=$(date +%s)
S=$ROOT/scripts
print_timings() {
	echo "=== phase timings ==="
	while IFS=$'\t' read -r label secs; do
		printf '  %-26s %s\n' "$label:" "$(fmt_dur "$secs")"
	done < "$TIMINGS"
	printf '  %-26s %s\n' "total:" "$(fmt_dur $(( $(date +%s) - t0 )))"
}
fail_early() {
	print_timings
	echo "0 passed, 1 failed, 0 skipped"
	exit 1
}
timed "packages" "$S/packages.sh" || fail_early
timed "tree" "$S/tree.sh" || fail_early
log "series: $(git -C "$LINUX" rev-list --count base..HEAD) commit(s) on $(git -C "$LINUX" log -1 --format=%s base)"
timed "kernel build ($cfg)" "$S/build-kernel.sh" "$cfg" || fail_early
[ "$mode" = run ] && export BUILD_DEMO=1
timed "selftests build ($cfg)" "$S/build-selftests.sh" "$cfg" || fail_early
timed "initramfs" "$S/initramfs.sh" "$mode" "$cfg" || fail_early
timed "boot+tests ($cfg)" "$S/boot.sh" "$mode" "$cfg" || fail_early
logf=$LOGS/$(readlink "$LOGS/$mode-$cfg.log")
echo
print_timings
echo
echo "=== results ($mode, $cfg) ==="
mapfile -t build_failed < "$SELFTESTS_OUT/$cfg/.build-failed"
exec "$PY" "$S/results.py" "$logf" "$BUILD/initramfs-$mode-$cfg/tests/list" "${build_failed[@]}"
