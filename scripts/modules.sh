#!/usr/bin/env bash
# scripts/modules.sh (make modules): kvm.ko, kvm-amd.ko, kvm-intel.ko and
# kvmgt.ko with the series and CONFIG_KVM_INTROSPECTION=y for Debian's own
# kernel (linux-image-<abi>-amd64 matching linux-source-6.12), from $LINUX
# (default build/linux), then the .deb (scripts/package.sh).
#
# Config: Debian's /boot/config-<release> + configs/distro.config
# (scripts/config.sh distro; objdir build/obj-distro). modules_prepare with
# Debian's kernel release (vermagic), then the modules as external modules
# against the headers package's Module.symvers (the stock vmlinux and module
# exports with their CRCs, less the modules built here).
#
# kvmgt.ko (Intel GVT-g) is rebuilt because it links against kvm.ko: the
# series changes struct kvm and struct kvm_vcpu, so the modversions CRCs of
# every kvm.ko export that takes them change too, and the stock kvmgt.ko
# would be refused ("disagrees about version of symbol"). vfio reaches kvm
# through symbol_get(), which checks no CRC; no other stock module links
# against kvm.ko (modules.dep of the image package).
#
# Checks: no modpost warning, each module's vermagic equals the stock one.
# Output: build/modules/<release>/*.ko and build/modules/<release>/VERSIONS.
. "$(dirname "$0")/lib.sh"
. "$ROOT/scripts/debian.sh"
require_tree

unset LC_ALL
export LANG=C LC_CTYPE=C LC_MESSAGES=C
unset KBUILD_MODPOST_WARN KBUILD_MODPOST_NOFINAL KBUILD_EXTRA_SYMBOLS KBUILD_EXTMOD M

cfg=distro
obj=$(objdir_of $cfg)
lock_objdir $cfg
mkdir -p "$obj" "$LOGS"
blog=$LOGS/build-modules.log
: > "$blog"

debian_fetch_image >> "$blog" 2>&1 || { cat "$blog" >&2; die "Debian kernel packages not available"; }
out=$BUILD/modules/$DEB_KREL
KVM_KOS=(kvm kvm-amd kvm-intel)
GVT_KOS=(kvmgt)

log "modules: config (Debian's config-$DEB_KREL + configs/distro.config)"
DEBIAN_CONFIG=$DEB_CONFIG "$ROOT/scripts/config.sh" $cfg >> "$blog" 2>&1 ||
	{ tail -n 20 "$blog" >&2; die "config failed (log: $blog)"; }

# The .config must be Debian's but for introspection (and what only names
# the toolchain or signing, which shapes no structure): a different option
# can change struct module or a struct KVM shares with the stock kernel.
cfgdiff() { # debian ours: "SYMBOL: debian X, ours Y" per difference
	awk '
	function val(l) { if (l ~ /^# CONFIG_.* is not set$/) return "n"; sub(/^[^=]*=/, "", l); return l }
	function sym(l) { if (l ~ /^# CONFIG_/) { split(l, a, " "); return a[2] } sub(/=.*/, "", l); return l }
	/^(CONFIG_|# CONFIG_.* is not set)/ { s = sym($0); if (FILENAME == ARGV[1]) d[s] = val($0); else o[s] = val($0) }
	END {
		for (s in o) if ((s in d ? d[s] : "n") != o[s]) print s ": debian " (s in d ? d[s] : "unset") ", ours " o[s]
		for (s in d) if (!(s in o) && d[s] != "n") print s ": debian " d[s] ", ours unset"
	}' "$1" "$2" | LC_ALL=C sort
}
cfg_ok='^CONFIG_(KVM_INTROSPECTION|CC_VERSION_TEXT|BUILD_SALT|MODULE_SIG_ALL|MODULE_SIG_KEY|SYSTEM_TRUSTED_KEYS|RUSTC_[A-Z_]*):'
if bad=$(cfgdiff "$DEB_CONFIG" "$obj/.config" | grep -Ev "$cfg_ok"); then
	printf '%s\n' "$bad" >&2
	die "the config differs from Debian's in the options above"
fi

# Kernel release = version + LOCALVERSION: Debian's, e.g. 6.12.117+deb12-amd64.
kver=$(make -s -C "$LINUX" kernelversion)
case $DEB_KREL in "$kver"*) ;; *) die "source is $kver but Debian's kernel is $DEB_KREL" ;; esac
localver=${DEB_KREL#"$kver"}
log "modules: modules_prepare (kernel release $DEB_KREL)"
kmake "$obj" LOCALVERSION="$localver" modules_prepare >> "$blog" 2>&1 ||
	{ tail -n 30 "$blog" >&2; die "modules_prepare failed (log: $blog)"; }
krel=$(cat "$obj/include/config/kernel.release")
[ "$krel" = "$DEB_KREL" ] || die "objdir kernel release is '$krel', not $DEB_KREL"

awk -F'\t' '$3 !~ /^(arch\/x86\/kvm\/kvm(-amd|-intel)?|drivers\/gpu\/drm\/i915\/kvmgt)$/' \
	"$DEBDIR/Module.symvers" > "$obj/Module.symvers.new"
[ -s "$obj/Module.symvers.new" ] || die "empty Module.symvers from $DEBDIR"
mv "$obj/Module.symvers.new" "$obj/Module.symvers"

# M= in an O= build leaves VPATH empty (src = obj); VPATH=<tree> makes src
# the tree's directory while the objects stay in O=.
for m in "${KVM_KOS[@]}"; do rm -f "$obj/arch/x86/kvm/$m.ko"; done
rm -f "$obj/drivers/gpu/drm/i915/kvmgt.ko"
log "modules: kvm, kvm-amd, kvm-intel (M=arch/x86/kvm)"
kmake "$obj" M=arch/x86/kvm VPATH="$LINUX" modules >> "$blog" 2>&1 ||
	{ grep -E 'error|Error|ERROR' "$blog" | head -n 20 >&2; die "kvm modules build failed (log: $blog)"; }
# Only kvmgt from the i915 directory (CONFIG_DRM_I915= skips i915.ko itself,
# which stays the stock one), against the kvm.ko just built.
log "modules: kvmgt (M=drivers/gpu/drm/i915, i915.ko not rebuilt)"
kmake "$obj" M=drivers/gpu/drm/i915 VPATH="$LINUX" CONFIG_DRM_I915= \
	KBUILD_EXTRA_SYMBOLS="$obj/arch/x86/kvm/Module.symvers" modules >> "$blog" 2>&1 ||
	{ grep -E 'error|Error|ERROR' "$blog" | head -n 20 >&2; die "kvmgt build failed (log: $blog)"; }

if grep -E '^(WARNING|ERROR): modpost:|is missing\.$' "$blog" >&2; then
	die "modpost reported the problems above (log: $blog)"
fi

# Stock vermagic, from the image package's kvm.ko.
stock=$(mktemp -d)
trap 'rm -rf "$stock"' EXIT
dpkg-deb --fsys-tarfile "$DEB_IMAGE_DEB" |
	tar -x -C "$stock" "./lib/modules/$DEB_KREL/kernel/arch/x86/kvm/kvm.ko.xz"
want=$(modinfo -F vermagic "$stock/lib/modules/$DEB_KREL/kernel/arch/x86/kvm/kvm.ko.xz")
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
for m in "${KVM_KOS[@]/#/arch/x86/kvm/}" "${GVT_KOS[@]/#/drivers/gpu/drm/i915/}"; do
	ko=$obj/$m.ko
	[ -f "$ko" ] || die "$m.ko was not built (log: $blog)"
	have=$(modinfo -F vermagic "$ko")
	[ "$have" = "$want" ] || die "$m.ko: vermagic '$have', stock kernel has '$want'"
	# as Debian installs its modules (INSTALL_MOD_STRIP=1)
	strip --strip-debug -o "$out.tmp/$(basename "$ko")" "$ko"
done

series=$(git -C "$LINUX" rev-list --count base..HEAD)
head=$(git -C "$LINUX" rev-parse --short=12 HEAD)
dirty=$(git -C "$LINUX" status --porcelain --untracked-files=no | wc -l)
{
	echo "kernel-release $DEB_KREL"
	echo "linux-source-6.12 $DEB_VER"
	cat "$DEBDIR/packages"
	echo "series $series commits, HEAD $head$([ "$dirty" = 0 ] || echo " +$dirty uncommitted file(s)") ($LINUX)"
	echo "gcc $(gcc -dumpfullversion)"
	echo "vermagic $want"
	(cd "$out.tmp" && sha256sum ./*.ko | sed 's/^/sha256 /')
	for ko in "$out.tmp"/*.ko; do
		echo "build-id $(readelf -n "$ko" | sed -n 's/.*Build ID: //p')  ./${ko##*/}"
	done
} > "$out.tmp/VERSIONS"
rm -rf "$out" && mv "$out.tmp" "$out"
log "modules: built in $out (log: $blog); versions used:"
sed 's/^/    /' "$out/VERSIONS" >&2
