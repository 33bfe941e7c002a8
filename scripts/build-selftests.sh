#!/usr/bin/env bash
# scripts/build-selftests.sh <debug|release>
# Install the kernel's uapi headers into build/obj-<cfg>/usr/include, then
# build static KVM selftests into build/selftests/<cfg>/ (nothing is written
# into the source tree), plus demo/kvmi_demo.c if it exists and BUILD_DEMO=1
# (make run / make shell; make test does not need the demo).
. "$(dirname "$0")/lib.sh"

cfg=${1:?usage: build-selftests.sh debug|release}
obj=$(objdir_of "$cfg")
lock_objdir "$cfg"
out=$SELFTESTS_OUT/$cfg
kdir=$LINUX/tools/testing/selftests/kvm
[ -f "$obj/.config" ] || "$ROOT/scripts/config.sh" "$cfg"
mkdir -p "$out" "$LOGS"
slog=$LOGS/selftests-$cfg.log

log "selftests ($cfg): make headers -> $obj/usr/include"
kmake "$obj" headers > "$slog" 2>&1 || { cat "$slog" >&2; die "make headers failed"; }

tests=()
for t in $CONTROL_TESTS; do tests+=("x86_64/$t"); done
# The series' own tests (kvmi_test, and the kvmi_stress stress mode): each
# is built when its source and its kvm selftests Makefile line exist.
KVMI_TESTS="kvmi_test kvmi_stress"
kvmi=()
for k in $KVMI_TESTS; do
	[ -f "$kdir/x86_64/$k.c" ] || continue
	if grep -qE "^TEST_GEN_PROGS_x86_64[[:space:]]*\\+?=[[:space:]]*x86_64/$k[[:space:]]*\$" "$kdir/Makefile"; then
		kvmi+=("x86_64/$k")
	else
		warn "x86_64/$k.c exists but the kvm selftests Makefile lacks 'TEST_GEN_PROGS_x86_64 += x86_64/$k': not built"
	fi
done
# Tests that failed to build are listed here (one per line) so that the
# results count them as failures; their stale binaries are removed.
failed_list=$out/.build-failed
: > "$failed_list"

# OUTPUT= keeps all objects out of the source tree; KHDR_INCLUDES points the
# build at the headers of this objdir (lib.mk's default is the source tree's
# usr/include, which must stay absent for O= builds).
# LDFLAGS given on the command line replaces the Makefile's "-pthread
# -no-pie" (glibc >= 2.34 has pthreads in libc; -static implies no PIE).
kst_make() {
	make -C "$kdir" -j"$JOBS" OUTPUT="$out" \
		KHDR_INCLUDES="-isystem $obj/usr/include" \
		EXTRA_CFLAGS=-static LDFLAGS=-static CC="$KCC" \
		"${@/#/$out/}" >> "$slog" 2>&1
}
show_errors() {
	grep -nE 'error|Error' "$1" | head -40 >&2 || true
	echo "--- last lines of $1 ---" >&2
	tail -n 15 "$1" >&2
}
untracked_before=$(git -C "$LINUX" ls-files -o -- tools/testing/selftests)
log "selftests ($cfg): ${tests[*]##*/}"
kst_make "${tests[@]}" || { show_errors "$slog"; die "selftests build failed (log: $slog)"; }
for k in "${kvmi[@]}"; do
	log "selftests ($cfg): ${k##*/}"
	klog=$LOGS/selftests-$cfg-${k##*/}.log
	: > "$klog"
	if ! slog=$klog kst_make "$k"; then
		show_errors "$klog"
		warn "${k##*/} failed to build (log: $klog); the other tests still run"
		rm -f "$out/$k"
		echo "${k##*/}" >> "$failed_list"
	fi
done
# Optional demo: demo/kvmi_demo.c, static, against this kernel's uapi
# headers. If it includes the selftest library (kvm_util.h / test_util.h)
# it is compiled with the selftest include paths and linked with libkvm.
demo=$ROOT/demo/kvmi_demo.c
if [ -f "$demo" ] && [ "${BUILD_DEMO:-0}" = 1 ]; then
	log "selftests ($cfg): demo/kvmi_demo.c -> $out/kvmi_demo"
	cflags=(-static -O2 -g -Wall -std=gnu99 -isystem "$obj/usr/include" -pthread)
	extra=()
	if grep -qE '#include[[:space:]]*[<"](kvm_util|test_util|processor)\.h' "$demo"; then
		cflags+=(-DCONFIG_64BIT -I"$LINUX/tools/include" -I"$LINUX/tools/arch/x86/include"
			 -I"$kdir/include" -I"$kdir/include/x86_64" -I"$LINUX/tools/testing/selftests"
			 -fno-stack-protector -fno-PIE -fno-strict-aliasing -U_FORTIFY_SOURCE)
		mapfile -t extra < <(find "$out/lib" -name '*.o' | LC_ALL=C sort)
		[ ${#extra[@]} -gt 0 ] || die "demo needs libkvm objects but none were built"
	fi
	$KCC "${cflags[@]}" -o "$out/kvmi_demo" "$demo" "${extra[@]}" -ldl >> "$slog" 2>&1 ||
		{ tail -n 30 "$slog" >&2; die "demo build failed"; }
fi
# bench/kvmi_bench.c (make bench; a short run in make test): always built,
# like the demo with the selftest library.
bench=$ROOT/bench/kvmi_bench.c
if [ -f "$bench" ]; then
	log "selftests ($cfg): bench/kvmi_bench.c -> $out/kvmi_bench"
	mapfile -t libobjs < <(find "$out/lib" -name '*.o' | LC_ALL=C sort)
	[ ${#libobjs[@]} -gt 0 ] || die "kvmi_bench needs libkvm objects but none were built"
	rm -f "$out/kvmi_bench"
	if ! $KCC -static -O2 -g -Wall -std=gnu99 -pthread -isystem "$obj/usr/include" \
		-DCONFIG_64BIT -I"$LINUX/tools/include" -I"$LINUX/tools/arch/x86/include" \
		-I"$kdir/include" -I"$kdir/include/x86_64" -I"$LINUX/tools/testing/selftests" \
		-fno-stack-protector -fno-PIE -fno-strict-aliasing -U_FORTIFY_SOURCE \
		-o "$out/kvmi_bench" "$bench" "${libobjs[@]}" -ldl >> "$slog" 2>&1; then
		tail -n 30 "$slog" >&2
		warn "kvmi_bench failed to build; the other tests still run"
		echo kvmi_bench >> "$failed_list"
	fi
fi
built=()
for t in "${tests[@]}" "${kvmi[@]}" kvmi_demo kvmi_bench; do [ -x "$out/$t" ] && built+=("${t##*/}"); done
log "selftests ($cfg): built in $out: ${built[*]}"
new_files=$(comm -13 <(printf '%s\n' "$untracked_before") <(git -C "$LINUX" ls-files -o -- tools/testing/selftests))
[ -z "$new_files" ] || warn "selftests build created files in the source tree: $(echo $new_files | head -c 300)"
