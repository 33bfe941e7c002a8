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
# Our QEMU, the kvmi tool and a nested Linux guest (scripts/nested.sh):
# make run's scenario, and the kvmi_qemu cases (in make test by default,
# or when TESTS names them).  Needs the series' tools/kvm/kvmi: without it
# (LINUX= an older tree) they are left out, which counts as a failure when
# they were asked for.
if [ "$mode" = run ] || { [ "$mode" = test ] && [[ " ${TESTS:-kvmi_qemu} " == *" kvmi_qemu "* ]]; }; then
	if [ -f "${KVMI_TOOL_SRC:-$LINUX/tools/kvm/kvmi}/kvmi.c" ]; then
		timed "nested guest + qemu" "$S/nested.sh" "$cfg" || fail_early
		export INITRAMFS_OVERLAY=${INITRAMFS_OVERLAY:-$BUILD/nested-$cfg/root}
	else
		warn "$LINUX has no tools/kvm/kvmi: our QEMU and the nested guest (kvmi_run, kvmi_qemu) are left out"
		fail_early
	fi
fi
timed "initramfs" "$S/initramfs.sh" "$mode" "$cfg" || fail_early
timed "boot+tests ($cfg)" "$S/boot.sh" "$mode" "$cfg" || fail_early
logf=$LOGS/$(readlink "$LOGS/$mode-$cfg.log")
# make test also runs the series on Debian's own kernel (DISTRO=0 skips it):
# the modules and the .deb (modules.sh, package.sh), the .deb installed and
# removed by dpkg (deb-test.sh, cases "deb: ..."), Debian's vmlinuz booted
# with them (distro.sh, cases "distro: ..."). A step that fails to run
# counts as one failure; the debug results still count.
also=() step_failed=()
if [ "$mode" = test ] && [ "${DISTRO:-1}" = 1 ]; then
	lock_objdir distro # build/obj-distro, modules, deb, distro: one run at a time
	rm -f "$LOGS/deb-test.log" "$LOGS/test-distro.log"
	if timed "modules+.deb (distro)" bash -c '"$1/modules.sh" && "$1/package.sh"' - "$S"; then
		timed "package test (dpkg)" "$S/deb-test.sh" || true
		if [ -f "$LOGS/deb-test.log" ]; then also+=(--also deb "$LOGS/deb-test.log" "$BUILD/deb-test/list")
		else step_failed+=("deb-test"); fi
		timed "boot+tests (distro)" "$S/distro.sh" || true
		if [ -e "$LOGS/test-distro.log" ]; then
			also+=(--also distro "$LOGS/$(readlink "$LOGS/test-distro.log")" "$BUILD/initramfs-test-distro/tests/list")
		else step_failed+=("distro boot"); fi
	else
		step_failed+=("distro modules")
	fi
fi
echo
print_timings
echo
echo "=== results ($mode, $cfg) ==="
mapfile -t build_failed < "$SELFTESTS_OUT/$cfg/.build-failed"
exec "$PY" "$S/results.py" "$logf" "$BUILD/initramfs-$mode-$cfg/tests/list" "${build_failed[@]}" \
	"${step_failed[@]}" "${also[@]}"
