#!/usr/bin/env bash
# Interactive busybox shell on the release kernel (QEMU serial on this terminal).
. "$(dirname "$0")/lib.sh"
cfg=${CFG:-release}
lock_objdir "$cfg"
S=$ROOT/scripts
"$S/packages.sh"; "$S/tree.sh"
"$S/build-kernel.sh" "$cfg"
BUILD_DEMO=1 "$S/build-selftests.sh" "$cfg" ||
	"$S/build-selftests.sh" "$cfg" || warn "selftests failed to build; shell without them"
"$S/initramfs.sh" shell "$cfg"
exec "$S/boot.sh" shell "$cfg"
