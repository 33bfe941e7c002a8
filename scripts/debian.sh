# shellcheck shell=bash
# Debian's own kernel matching linux-source-6.12, fetched with apt-get
# download (never installed on this machine). Sourced after lib.sh by
# matrix.sh, modules.sh, package.sh, deb-test.sh and distro.sh.
#
# debian_fetch: config + headers' Module.symvers into build/debian-<ver>/
#   (only these two files are kept). Sets DEB_VER (package version, e.g.
#   6.12.117-1~deb12u1), DEB_KABI (6.12.117+deb12), DEB_KREL (kernel
#   release, 6.12.117+deb12-amd64), DEBDIR, DEB_CONFIG.
# debian_fetch_image: also the linux-image .deb itself (vmlinuz, stock
#   modules), kept as build/debian-<ver>/linux-image.deb. Sets DEB_IMAGE_DEB.

debian_versions() {
	local tag
	DEB_VER=$(dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null) ||
		{ echo "ERROR: linux-source-6.12 is not installed"; return 1; }
	tag=$(sed -n 's/.*~\(deb[0-9][0-9]*\)u[0-9]*$/\1/p' <<<"$DEB_VER")
	DEB_KABI=${DEBIAN_KABI:-${DEB_VER%%-*}+$tag}
	DEB_KREL=$DEB_KABI-amd64
	DEBDIR=$BUILD/debian-$DEB_VER
	DEB_CONFIG=$DEBDIR/config-$DEB_KREL
}

# apt must know PKG=VERSION for each argument; one apt-get update if not.
debian_apt_known() {
	apt-cache show "$@" >/dev/null 2>&1 && return 0
	[ "$(id -u)" = 0 ] && apt-get update -q >&2
	apt-cache show "$@" >/dev/null 2>&1 || {
		echo "ERROR: $* not known to apt (run apt-get update; set DEBIAN_KABI" \
			"if the ABI name is not $DEB_KABI)"
		return 1
	}
}

debian_fetch() {
	local img hdr tmp
	debian_versions || return 1
	[ -f "$DEBDIR/.complete" ] && { echo "debian: using $DEBDIR"; return 0; }
	img=linux-image-$DEB_KREL hdr=linux-headers-$DEB_KREL
	debian_apt_known "$img=$DEB_VER" "$hdr=$DEB_VER" || return 1
	tmp=$DEBDIR.tmp
	rm -rf "$tmp" && mkdir -p "$tmp/x"
	echo "debian: apt-get download $img=$DEB_VER $hdr=$DEB_VER"
	(cd "$tmp" && apt-get download -q "$img=$DEB_VER" "$hdr=$DEB_VER") || return 1
	dpkg-deb --fsys-tarfile "$tmp/${img}_"*.deb | tar -x -C "$tmp/x" "./boot/config-$DEB_KREL" &&
		dpkg-deb --fsys-tarfile "$tmp/${hdr}_"*.deb |
		tar -x -C "$tmp/x" "./usr/src/linux-headers-$DEB_KREL/Module.symvers" || return 1
	mv "$tmp/x/boot/config-$DEB_KREL" "$tmp/x/usr/src/linux-headers-$DEB_KREL/Module.symvers" "$tmp/"
	printf '%s %s\n%s %s\n' "$img" "$DEB_VER" "$hdr" "$DEB_VER" > "$tmp/packages"
	# The image package is kept for make modules/test (vmlinuz, stock modules).
	mv "$tmp/${img}_"*.deb "$tmp/linux-image.deb"
	rm -rf "$tmp/x" "$tmp"/*_*.deb
	touch "$tmp/.complete"
	# keep an image .deb fetched earlier by debian_fetch_image
	[ -f "$tmp/linux-image.deb" ] || [ ! -f "$DEBDIR/linux-image.deb" ] ||
		mv "$DEBDIR/linux-image.deb" "$tmp/"
	rm -rf "$DEBDIR" && mv "$tmp" "$DEBDIR"
	echo "debian: cached in $DEBDIR"
}

debian_fetch_image() {
	local img tmp
	debian_fetch || return 1
	DEB_IMAGE_DEB=$DEBDIR/linux-image.deb
	[ -f "$DEB_IMAGE_DEB" ] && return 0
	img=linux-image-$DEB_KREL
	debian_apt_known "$img=$DEB_VER" || return 1
	tmp=$DEBDIR/dl.tmp
	rm -rf "$tmp" && mkdir -p "$tmp"
	echo "debian: apt-get download $img=$DEB_VER"
	(cd "$tmp" && apt-get download -q "$img=$DEB_VER") || return 1
	mv "$tmp/${img}_"*.deb "$DEB_IMAGE_DEB" && rm -rf "$tmp"
}
