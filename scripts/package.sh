#!/usr/bin/env bash
# scripts/package.sh: build/deb/kvmi-modules-<release>_<version>_amd64.deb
# from build/modules/<release>/ (scripts/modules.sh) and packaging/.
# Version: <linux-image version>+kvmi.<commit date of the series' HEAD>,
# so a rebuilt series upgrades the previous package.
. "$(dirname "$0")/lib.sh"
. "$ROOT/scripts/debian.sh"
lock_objdir distro
debian_versions
mods=$BUILD/modules/$DEB_KREL
[ -f "$mods/VERSIONS" ] || die "$mods/VERSIONS missing (run make modules)"
PKG=kvmi-modules-$DEB_KREL
stamp=$(git -C "$LINUX" log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
version=$DEB_VER+kvmi.$stamp
out=$BUILD/deb
root=$out/root

rm -rf "$out" && mkdir -p "$root/DEBIAN" "$root/lib/modules/$DEB_KREL/updates/kvmi" \
	"$root/etc/modprobe.d" "$root/usr/share/doc/$PKG"
cp "$mods"/*.ko "$root/lib/modules/$DEB_KREL/updates/kvmi/"
cp "$mods/VERSIONS" "$root/usr/share/doc/$PKG/"
series=$(sed -n 's/^series \([0-9]* commits, HEAD [0-9a-f]*\).*/\1/p' "$mods/VERSIONS")
subst() {
	sed -e "s|@KREL@|$DEB_KREL|g" -e "s|@IMAGE_VER@|$DEB_VER|g" -e "s|@SOURCE_VER@|$DEB_VER|g" \
		-e "s|@VERSION@|$version|g" -e "s|@SERIES@|$series|g" -e "s|@SIZE@|${size:-0}|g" "$1"
}
subst "$ROOT/packaging/kvmi.conf" > "$root/etc/modprobe.d/kvmi.conf"
for s in preinst postinst postrm; do
	subst "$ROOT/packaging/$s" > "$root/DEBIAN/$s"
	chmod 755 "$root/DEBIAN/$s"
done
echo /etc/modprobe.d/kvmi.conf > "$root/DEBIAN/conffiles"
(cd "$root" && find lib usr -type f -print0 | LC_ALL=C sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
subst "$ROOT/packaging/control.in" > "$root/DEBIAN/control"
chmod -R u=rwX,go=rX "$root"
deb=$out/${PKG}_${version}_amd64.deb
SOURCE_DATE_EPOCH=$(git -C "$LINUX" log -1 --format=%ct HEAD) \
	dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
log "package: $deb"
dpkg-deb -f "$deb" Package Version Pre-Depends | sed 's/^/    /' >&2
