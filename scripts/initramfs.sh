#!/usr/bin/env bash
# scripts/initramfs.sh <mode> <cfg> -> build/initramfs-<mode>-<cfg>.cpio
# mode: test  - run the control tests (+ kvmi_test, kvmi_stress, kvmi_bench -s if built), kmemleak, power off
#       bench - kvmi_bench (make bench)
#       stress - the same, with TESTS=kvmi_stress (make stress)
#       run   - run build/selftests/<cfg>/kvmi_demo if built, else as test
#       shell - interactive busybox shell
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: initramfs.sh test|run|shell cfg}
cfg=${2:?usage: initramfs.sh test|run|shell cfg}
# SELFTESTS_CFG: whose test binaries (the distro boot runs the debug ones).
st=$SELFTESTS_OUT/${SELFTESTS_CFG:-$cfg}
root=$BUILD/initramfs-$mode-$cfg
cpio_out=$BUILD/initramfs-$mode-$cfg.cpio
BUSYBOX=${BUSYBOX:-/bin/busybox}
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
file -L "$BUSYBOX" 2>/dev/null | grep -q 'dynamically linked' && die "$BUSYBOX is not static"

rm -rf "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,root,tests}
cp "$BUSYBOX" "$root/bin/busybox"
for a in $("$BUSYBOX" --list-full); do
	[ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done
# INITRAMFS_OVERLAY: a directory copied over the root (scripts/distro.sh:
# Debian's modules, kmod, tests/distro_modules); its files replace busybox's.
[ -z "${INITRAMFS_OVERLAY:-}" ] || cp -a --remove-destination "$INITRAMFS_OVERLAY"/. "$root"/

# Test list: one "name [args...]" per line, binaries in /tests.
list=$root/tests/list
: > "$list"
add_test() { # name path [args]
	local name=$1 path=$2; shift 2
	[ -x "$path" ] || die "test binary $path missing (build selftests first)"
	cp "$path" "$root/tests/$name"
	echo "$name $*" >> "$list"
}
# Per-test arguments: TEST_ARGS_<name> (e.g. TEST_ARGS_kvmi_stress="-t 600 -l").
# kvmi_stress runs short in make test; make stress passes STRESS_ARGS.
TEST_ARGS_kvmi_stress=${TEST_ARGS_kvmi_stress:-"-n 40 -t 45"}
# kvmi_bench: short in make test (checks only that it ran), full in make bench.
TEST_ARGS_kvmi_bench=${TEST_ARGS_kvmi_bench:-"-s"}
if [ "$mode" = run ] && { [ -x "$st/kvmi_demo" ] || [ -x "$root/tests/kvmi_run" ]; }; then
	if [ -x "$st/kvmi_demo" ]; then add_test kvmi_demo "$st/kvmi_demo" ${DEMO_ARGS:-}; fi
	# our QEMU with a nested guest and the kvmi tool (scripts/nested.sh)
	if [ -x "$root/tests/kvmi_run" ]; then echo kvmi_run >> "$list"; fi
elif [ "$mode" = bench ]; then
	add_test kvmi_bench "$st/kvmi_bench" ${BENCH_ARGS:-}
elif [ "$mode" != shell ]; then
	for t in ${TESTS:-$CONTROL_TESTS kvmi_test kvmi_stress kvmi_bench kvmi_qemu}; do
		args_var=TEST_ARGS_$t
		if [ -x "$st/x86_64/$t" ]; then add_test "$t" "$st/x86_64/$t" ${!args_var:-}
		# a test the overlay brought along
		elif [ -x "$root/tests/$t" ]; then echo "$t ${!args_var:-}" >> "$list"
		elif [ "$t" = kvmi_bench ]; then
			# Missing only if it failed to build (counted there).
			if [ -x "$st/$t" ]; then add_test "$t" "$st/$t" ${!args_var:-}; fi
		# The series' tests may be absent or failed to build (counted there).
		# kvmi_qemu: only when scripts/nested.sh staged it (see pipeline.sh)
		elif [ "$t" != kvmi_test ] && [ "$t" != kvmi_stress ] && [ "$t" != kvmi_qemu ]; then die "test binary $st/x86_64/$t missing"; fi
	done
fi
# In shell mode the built tests are still available under /tests.
if [ "$mode" = shell ]; then
	for f in "$st"/x86_64/* "$st"/kvmi_demo "$st"/kvmi_bench; do
		[ -x "$f" ] && [ -f "$f" ] && case $f in *.o|*.d) ;; *) cp "$f" "$root/tests/";; esac
	done
fi

cat > "$root/init" <<INIT
#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
MODE=$mode
TEST_TIMEOUT=${TEST_TIMEOUT:-900}
INIT
cat >> "$root/init" <<'INIT'
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug
ip link set lo up 2>/dev/null
echo "KVMI-HARNESS-START mode=$MODE kernel=$(uname -r) cpus=$(nproc)"
[ -c /dev/kvm ] && echo "KVMI-HARNESS: /dev/kvm present" || echo "KVMI-HARNESS: /dev/kvm MISSING"
echo "KVMI-HARNESS: cmdline: $(cat /proc/cmdline)"

if [ "$MODE" = shell ]; then
	echo "KVMI-HARNESS: interactive shell; tests are in /tests; 'poweroff -f' (or exit) to quit"
	setsid cttyhack sh -l
	poweroff -f
fi

KML=/sys/kernel/debug/kmemleak
if [ -w $KML ]; then
	# Forget boot-time objects so only leaks made during the tests are reported.
	echo scan > $KML; echo clear > $KML
fi

RESULTS=
while read -r name args; do
	[ -n "$name" ] || continue
	echo "KVMI-TEST-BEGIN $name"
	timeout "$TEST_TIMEOUT" /tests/$name $args </dev/null 2>&1
	rc=$?
	echo "KVMI-TEST-END $name $rc"
	RESULTS="$RESULTS $name:$rc"
done < /tests/list

if [ -w $KML ]; then
	echo "KVMI-HARNESS: kmemleak scan"
	sleep 6; echo scan > $KML
	sleep 2; echo scan > $KML
	echo "KVMI-KMEMLEAK-BEGIN"
	cat $KML
	echo "KVMI-KMEMLEAK-END"
fi
for r in $RESULTS; do
	echo "KVMI-TEST-RESULT ${r%%:*} ${r##*:}"
done
echo "KVMI-HARNESS-DONE"
poweroff -f
INIT
chmod +x "$root/init"
(cd "$root" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --reproducible -R 0:0 --quiet) > "$cpio_out"
log "initramfs: $cpio_out ($(du -h "$cpio_out" | cut -f1); tests: $(cut -d' ' -f1 "$list" | tr '\n' ' '))"
