#!/usr/bin/env bash
# scripts/nested.sh <cfg>: everything the booted kernel needs to run our
# QEMU with a nested Linux guest and the introspection tool attached,
# staged in build/nested-<cfg>/root (copied into the initramfs by
# initramfs.sh):
#   /usr/bin/qemu-system-x86_64 + its shared libraries, /nested/firmware
#   /usr/bin/kvmi                the tool (tools/kvm/kvmi, static)
#   /nested/bzImage              the guest kernel: this config's own bzImage
#   /nested/System.map, offsets  its symbols and task_struct offsets (ps)
#   /nested/guest.cpio           busybox + qemu/guest/* (named services)
#   /tests/kvmi_run, kvmi_qemu   the make run scenario and the make test cases
. "$(dirname "$0")/lib.sh"

cfg=${1:?usage: nested.sh cfg}
obj=$(objdir_of "$cfg")
lock_objdir "$cfg"
stage=$BUILD/nested-$cfg
root=$stage/root
QBUILD=${QBUILD:-$BUILD/qemu-build}
# the tool's source: the series' tools/kvm/kvmi (KVMI_TOOL_SRC overrides)
tsrc=${KVMI_TOOL_SRC:-$LINUX/tools/kvm/kvmi}
[ -f "$tsrc/kvmi.c" ] || die "$tsrc/kvmi.c missing: the series has no tools/kvm/kvmi (set KVMI_TOOL_SRC)"
qemu=$QBUILD/qemu-system-x86_64
[ -f "$obj/arch/x86/boot/bzImage" ] || die "$obj has no bzImage (build the kernel first)"
[ -f "$obj/usr/include/linux/kvmi.h" ] || die "$obj/usr/include has no kvmi.h (make headers: build-selftests.sh)"

timed "qemu build" "$ROOT/scripts/qemu.sh" build

rm -rf "$stage"
mkdir -p "$root"/{usr/bin,nested/firmware,tests} "$stage/tool"
tlog=$LOGS/nested-$cfg.log
: > "$tlog"

# the tool, against this kernel's uapi headers
log "nested: tools/kvm/kvmi"
make -C "$tsrc" OUTPUT="$stage/tool/" CC="$KCC" \
	KHDR_INCLUDES="-isystem $obj/usr/include" CFLAGS="-O2 -g -static" \
	LDFLAGS=-static >> "$tlog" 2>&1 || { tail -30 "$tlog" >&2; die "kvmi tool build failed"; }
cp "$stage/tool/kvmi" "$root/usr/bin/kvmi"

# task_struct offsets, compiled against the guest kernel's objdir
log "nested: task_struct offsets (kvmi-offsets.c against $obj)"
od=$stage/offsets-src
mkdir -p "$od"
cp "$tsrc/kvmi-offsets.c" "$od/"
echo 'obj-y += kvmi-offsets.o' > "$od/Kbuild"
kmake "$obj" M="$od" kvmi-offsets.s >> "$tlog" 2>&1 || { tail -30 "$tlog" >&2; die "kvmi-offsets build failed"; }
sed -n 's/.*"->\([^ ]*\) \$\{0,1\}\([0-9]*\) .*/\1 \2/p' "$od/kvmi-offsets.s" > "$root/nested/offsets"
[ "$(wc -l < "$root/nested/offsets")" -ge 6 ] || die "offsets: $(cat "$root/nested/offsets")"
cp "$obj/System.map" "$root/nested/System.map"
cp "$obj/arch/x86/boot/bzImage" "$root/nested/bzImage"

# QEMU, its libraries (loader included) and the firmware it loads
strip -o "$root/usr/bin/qemu-system-x86_64" "$qemu"
ldd "$qemu" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
	[ -f "$lib" ] || continue
	mkdir -p "$root$(dirname "$lib")"
	cp -L "$lib" "$root$lib"
done
cp /usr/share/seabios/bios-256k.bin "$root/nested/firmware/"
for f in linuxboot_dma.bin kvmvapic.bin; do
	cp "$QBUILD/pc-bios/$f" "$root/nested/firmware/" 2>/dev/null ||
		cp "/usr/share/qemu/$f" "$root/nested/firmware/"
done

# the nested guest's initramfs
log "nested: guest initramfs"
g=$stage/guest
mkdir -p "$g"/{bin,sbin,proc,sys,dev,tmp}
cp /bin/busybox "$g/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$g/bin/$a"; done
cp "$ROOT/qemu/guest/init" "$g/init"
for s in webd dbd backupd; do cp "$ROOT/qemu/guest/service" "$g/bin/$s"; done
$KCC -static -O2 -Wall -o "$g/bin/lstar-poke" "$ROOT/qemu/guest/lstar-poke.c" >> "$tlog" 2>&1 ||
	die "lstar-poke build failed"
(cd "$g" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --reproducible -R 0:0 --quiet) > "$root/nested/guest.cpio"

cp "$ROOT/qemu/run-nested.sh" "$root/tests/kvmi_run"
cp "$ROOT/qemu/test-nested.sh" "$root/tests/kvmi_qemu"
chmod +x "$root/tests/kvmi_run" "$root/tests/kvmi_qemu"
log "nested: staged in $root ($(du -sh "$root" | cut -f1))"
