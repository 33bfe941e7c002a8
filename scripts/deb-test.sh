#!/usr/bin/env bash
# scripts/deb-test.sh: host-side test of the .deb (scripts/package.sh) with
# dpkg's own install and removal, into extracted Debian roots (never the
# host). Writes a log in the boot logs' format (KVMI-TEST-BEGIN/END, KTAP
# "ok"/"not ok" lines, KVMI-HARNESS-DONE) to build/logs/deb-test.log, which
# results.py counts in the summary as "deb: <case>".
#
# Roots: the linux-image package extracted (dpkg-deb -x) and registered in
# the root's dpkg database as installed (its control fields, file list and
# md5sums), then depmod as its postinst does. dpkg --root with
# --force-script-chrootless runs our maintainer scripts on the host with
# DPKG_ROOT set (they honour it), so preinst, postinst and postrm run for
# real. Wrong-kernel roots register a linux-image-<release> of another
# version, or only another kernel release.
. "$(dirname "$0")/lib.sh"
. "$ROOT/scripts/debian.sh"
lock_objdir distro # its inputs come from make modules
debian_fetch_image > /dev/null
mods=$BUILD/modules/$DEB_KREL
mapfile -t debs < <(ls "$BUILD"/deb/kvmi-modules-"$DEB_KREL"_*_amd64.deb 2>/dev/null)
[ ${#debs[@]} = 1 ] || die "expected one kvmi-modules .deb in $BUILD/deb (run make modules)"
deb=${debs[0]}
PKG=kvmi-modules-$DEB_KREL
IMG=linux-image-$DEB_KREL
KOS=(kvm kvm-amd kvm-intel kvmgt)

work=$BUILD/deb-test
logf=$LOGS/deb-test.log
rm -rf "$work" && mkdir -p "$work" "$LOGS"
exec 3> "$logf"
n=0 failed=0
say() { echo "$*" >&3; }
ok() { n=$((n + 1)); say "ok $n - $1"; }
notok() { # name diag...
	local name=$1; shift
	n=$((n + 1)); failed=1
	local d; for d in "$@"; do say "# $d"; done
	say "not ok $n - $name"
}
check() { # name cmd... : ok if cmd succeeds, else its output as diagnostics
	local name=$1 out; shift
	if out=$("$@" 2>&1); then ok "$name"; else mapfile -t dl <<<"$out"; notok "$name" "${dl[@]}"; fi
}

# new_root DIR [VERSION [RELEASE]]: a root with linux-image-RELEASE VERSION
# registered as installed; files extracted and depmod run only for the real
# package (no VERSION given).
new_root() {
	local r=$1 ver=${2:-} krel=${3:-$DEB_KREL} adm=$1/var/lib/dpkg pkg
	pkg=linux-image-$krel
	mkdir -p "$adm"/{info,updates,triggers} "$r/lib/modules/$krel/kernel" "$r/etc"
	: > "$adm/available"
	if [ -z "$ver" ]; then
		dpkg-deb -x "$DEB_IMAGE_DEB" "$r"
		depmod -b "$r" "$krel"
	fi
	dpkg-deb -e "$DEB_IMAGE_DEB" "$work/ctl"
	cp "$work/ctl/md5sums" "$adm/info/$pkg.md5sums"
	dpkg-deb -c "$DEB_IMAGE_DEB" | awk '{ sub(/^\./, "", $6); print ($6 == "/" ? "/." : $6) }' |
		sed 's|/$||' > "$adm/info/$pkg.list"
	rm -rf "$work/ctl"
	dpkg-deb -f "$DEB_IMAGE_DEB" | awk -v v="$ver" -v p="$pkg" '
		/^Package:/ { print "Package: " p; print "Status: install ok installed"; next }
		/^Version:/ && v != "" { print "Version: " v; next }
		{ print }' > "$adm/status"
	echo >> "$adm/status"
}
dpkg_root() { dpkg --root="$1" --force-script-chrootless --log=/dev/null "${@:2}"; }
# resolved ROOT MODULE: the file modprobe would load last for MODULE.
resolved() {
	modprobe -d "$1" -S "$DEB_KREL" -C "$1/etc/modprobe.d" --show-depends "$2" |
		awk '$1 == "insmod" { f = $2 } END { print f }'
}

say "KVMI-HARNESS-START mode=deb-test package=$(basename "$deb")"
say "KVMI-TEST-BEGIN deb"
say "TAP version 13"
say "1..10"
t0=$(date +%s)

# --- install into the extracted root --------------------------------------
R=$work/root
new_root "$R"
if out=$(dpkg_root "$R" -i "$deb" 2>&1); then ok "install into an extracted $DEB_KREL root"
else mapfile -t dl <<<"$out"; notok "install into an extracted $DEB_KREL root" "${dl[@]}"; fi
st=$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Status}' "$PKG" 2>&1 || true)
check "package state after install: $st" test "$st" = "install ok installed"

bad=()
for m in "${KOS[@]}"; do
	f=$(resolved "$R" "${m//-/_}")
	want=$R/lib/modules/$DEB_KREL/updates/kvmi/$m.ko
	[ "$f" = "$want" ] || { bad+=("modprobe ${m//-/_} -> ${f#"$R"}, want ${want#"$R"}"); continue; }
	[ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$(awk -v m="./$m.ko" '$1 == "sha256" && $3 == m { print $2 }' "$mods/VERSIONS")" ] ||
		bad+=("${f#"$R"} differs from build/modules/$DEB_KREL/$m.ko")
done
f=$(resolved "$R" irqbypass)
[ "$f" = "$R/lib/modules/$DEB_KREL/kernel/virt/lib/irqbypass.ko.xz" ] || bad+=("irqbypass -> ${f#"$R"}, want the stock one")
if [ ${#bad[@]} = 0 ]; then ok "modprobe resolves kvm, kvm_amd, kvm_intel, kvmgt to updates/ (built checksums), irqbypass to stock"
else notok "modprobe resolves kvm, kvm_amd, kvm_intel, kvmgt to updates/ (built checksums), irqbypass to stock" "${bad[@]}"; fi
check "modprobe.d: kvmi.conf installed with 'options kvm introspection=1' commented out" \
	grep -qx '#options kvm introspection=1' "$R/etc/modprobe.d/kvmi.conf"

# --- removal brings the stock modules back --------------------------------
if out=$(dpkg_root "$R" --purge "$PKG" 2>&1); then ok "purge"
else mapfile -t dl <<<"$out"; notok "purge" "${dl[@]}"; fi
bad=()
for m in "${KOS[@]}"; do
	f=$(resolved "$R" "${m//-/_}")
	case $m in kvmgt) rel=kernel/drivers/gpu/drm/i915/$m.ko.xz ;; *) rel=kernel/arch/x86/kvm/$m.ko.xz ;; esac
	[ "$f" = "$R/lib/modules/$DEB_KREL/$rel" ] || { bad+=("modprobe ${m//-/_} -> ${f#"$R"}, want stock $rel"); continue; }
	want=$(awk -v p="lib/modules/$DEB_KREL/$rel" '$2 == p { print $1 }' "$R/var/lib/dpkg/info/$IMG.md5sums")
	[ -n "$want" ] && [ "$(md5sum < "$f" | cut -d' ' -f1)" = "$want" ] ||
		bad+=("$rel: md5 does not match $IMG's md5sums")
done
[ ! -e "$R/lib/modules/$DEB_KREL/updates/kvmi" ] || bad+=("updates/kvmi still exists")
[ ! -e "$R/etc/modprobe.d/kvmi.conf" ] || bad+=("kvmi.conf still exists")
if out=$(dpkg --root="$R" --verify "$IMG" 2>&1) && [ -z "$out" ]; then :; else bad+=("dpkg --verify $IMG: $out"); fi
if [ ${#bad[@]} = 0 ]; then ok "after purge modprobe resolves the stock modules (md5sums of $IMG, dpkg --verify clean)"
else notok "after purge modprobe resolves the stock modules (md5sums of $IMG, dpkg --verify clean)" "${bad[@]}"; fi
rm -rf "$R"

# --- refused on another kernel --------------------------------------------
# refused NAME ROOT: dpkg -i fails on the Pre-Depends naming the exact
# linux-image version; forced past it (--force-depends), preinst refuses with
# its own message; either way nothing is installed.
refused() {
	local name=$1 r=$2 out out2 rc=0 rc2=0 st
	local -a bad=()
	out=$(dpkg_root "$r" -i "$deb" 2>&1) || rc=$?
	[ $rc != 0 ] || bad+=("dpkg -i succeeded")
	grep -qF "pre-depends on $IMG (= $DEB_VER)" <<<"$out" || bad+=("no pre-dependency error naming $IMG (= $DEB_VER)")
	out2=$(dpkg_root "$r" --force-depends -i "$deb" 2>&1) || rc2=$?
	[ $rc2 != 0 ] || bad+=("dpkg --force-depends -i succeeded")
	grep -qF "these modules were built for Linux $DEB_KREL," <<<"$out2" &&
		grep -qF "package $IMG version $DEB_VER" <<<"$out2" ||
		bad+=("no preinst message naming $DEB_KREL and $DEB_VER")
	st=$(dpkg-query --admindir="$r/var/lib/dpkg" -W -f='${db:Status-Status}' "$PKG" 2>/dev/null || true)
	[ "$st" = not-installed ] || [ -z "$st" ] || bad+=("package state '$st'")
	[ -z "$(ls -A "$r/lib/modules/$DEB_KREL/updates" 2>/dev/null)" ] || bad+=("files left in updates/")
	if [ ${#bad[@]} = 0 ]; then ok "$name"
	else mapfile -t dl <<<"$out"$'\n'"$out2"; notok "$name" "${bad[@]}" "--- dpkg output:" "${dl[@]}"; fi
	# the messages, for the log
	grep -E 'pre-depends|is installed, but|is not installed' <<<"$out" | sed 's/^/# /' >&3 || true
	sed -n '/these modules were built/,/Rebuild the package/p' <<<"$out2" | sed 's/^/# /' >&3 || true
}
R=$work/other-version
new_root "$R" "${DEB_VER%-*}-99~deb12u1"
refused "refused: $IMG at another version (dpkg and preinst name $DEB_VER)" "$R"
R=$work/other-kernel
new_root "$R" "6.12.999-1~deb12u1" "6.12.999+deb12-amd64"
refused "refused: only another kernel release installed (dpkg and preinst name $DEB_VER)" "$R"
contents() {
	local want have
	want=$(printf '%s\n' "${KOS[@]/#/./lib/modules/$DEB_KREL/updates/kvmi/}" | sed 's/$/.ko/'
		echo ./etc/modprobe.d/kvmi.conf; echo "./usr/share/doc/$PKG/VERSIONS")
	have=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $6 }')
	diff <(sort <<<"$want") <(sort <<<"$have")
}
check "package files: the four modules, kvmi.conf, VERSIONS" contents
scripts_ok() { local s; for s in preinst postinst postrm; do sh -n "$BUILD/deb/root/DEBIAN/$s" || return 1; done; }
check "preinst, postinst, postrm parse (sh -n)" scripts_ok
say "# deb-test: $(( $(date +%s) - t0 )) s"
say "KVMI-TEST-END deb $failed"
say "KVMI-TEST-RESULT deb $failed"
say "KVMI-HARNESS-DONE"
exec 3>&-
echo deb > "$work/list"
log "deb-test: $n cases, $([ $failed = 0 ] && echo OK || echo FAILED) (log: $logf)"
