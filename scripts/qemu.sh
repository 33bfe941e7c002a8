#!/usr/bin/env bash
# scripts/qemu.sh: Debian's QEMU 7.2 source + qemu/patches/*.patch, built
# KVM-only (x86_64-softmmu) with ccache into build/qemu-build.
#   build/qemu-src    apt-get source qemu, git repo: tag 'base' = as unpacked,
#                     then one commit per patch of qemu/patches (git am)
#   build/qemu-build  meson/ninja objdir; qemu-system-x86_64 is the result
# Like the kernel tree, an existing build/qemu-src is never re-created:
# work in it, then `scripts/qemu.sh export` writes qemu/patches.
. "$(dirname "$0")/lib.sh"

QSRC=${QSRC:-$BUILD/qemu-src}
QBUILD=${QBUILD:-$BUILD/qemu-build}
QPATCHES=$ROOT/qemu/patches
QEMU_PACKAGES=(dpkg-dev ninja-build meson libglib2.0-dev libpixman-1-dev libfdt-dev
	       pkg-config seabios qemu-system-data)
QEMU_BIN=$QBUILD/qemu-system-x86_64

# apt-get source needs a deb-src entry: mirror the machine's deb entries
# (same URIs, suites, components) into one file of our own.
add_deb_src() {
	local f=/etc/apt/sources.list.d/kvmi-deb-src.sources
	apt-get indextargets --format '$(IDENTIFIER)' 2>/dev/null | grep -qx Sources && return 0
	[ "$(id -u)" = 0 ] || die "apt has no deb-src entry; run as root once: scripts/qemu.sh fetch"
	log "qemu: adding deb-src entries ($f)"
	local tmp
	tmp=$(mktemp)
	if [ -f /etc/apt/sources.list.d/debian.sources ]; then
		# deb822: copy every "Types: deb" stanza with Types: deb-src
		awk 'BEGIN{RS="";ORS="\n\n"} /(^|\n)Types:[ \t]*deb[ \t]*(\n|$)/ {
			sub(/Types:[ \t]*deb[ \t]*/, "Types: deb-src"); print }' \
			/etc/apt/sources.list.d/debian.sources > "$tmp"
	fi
	if [ -f /etc/apt/sources.list ]; then
		grep -E '^deb[[:space:]]' /etc/apt/sources.list | grep -v 'packages.cloud.google' |
		while read -r _ rest; do
			set -- $rest
			# one-line format -> deb822
			local uri=$1 suite=$2; shift 2
			printf 'Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n\n' "$uri" "$suite" "$*"
		done >> "$tmp"
	fi
	[ -s "$tmp" ] || die "no Debian deb entries found to mirror as deb-src"
	install -m 644 "$tmp" "$f"
	rm -f "$tmp"
	apt-get update -q
}

install_packages() {
	local missing=() p st
	for p in "${QEMU_PACKAGES[@]}"; do
		st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
		[ "$st" = installed ] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing packages: ${missing[*]} (run as root)"
	log "qemu: installing ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

fetch() {
	git -C "$QSRC" rev-parse -q --verify refs/tags/base >/dev/null 2>&1 && {
		log "qemu: $QSRC exists ($(git -C "$QSRC" rev-list --count base..HEAD) commit(s) on base)"
		return 0; }
	install_packages
	add_deb_src
	local dl=$BUILD/qemu-dl
	rm -rf "$dl" "$QSRC.tmp"
	mkdir -p "$dl"
	log "qemu: apt-get source qemu"
	(cd "$dl" && apt-get source -q qemu) > "$LOGS/qemu-fetch.log" 2>&1 ||
		{ tail -20 "$LOGS/qemu-fetch.log" >&2; die "apt-get source qemu failed"; }
	local d
	d=$(find "$dl" -maxdepth 1 -mindepth 1 -type d -name 'qemu-*' | head -1)
	[ -n "$d" ] || die "apt-get source produced no qemu-* directory"
	local ver
	ver=$(cd "$d" && dpkg-parsechangelog -S Version)
	mv "$d" "$QSRC.tmp"
	rm -rf "$dl"
	git -C "$QSRC.tmp" init -q
	git -C "$QSRC.tmp" add -f -A .
	git -C "$QSRC.tmp" -c user.name=harness -c user.email=harness@localhost \
		commit -q -m "qemu $ver (Debian source as unpacked)"
	git -C "$QSRC.tmp" tag base
	local p
	for p in "$QPATCHES"/[0-9][0-9][0-9][0-9]-*.patch; do
		[ -f "$p" ] || continue
		git -C "$QSRC.tmp" -c user.name=harness -c user.email=harness@localhost \
			am -q --committer-date-is-author-date "$p" ||
			die "qemu: $(basename "$p") does not apply"
	done
	mv "$QSRC.tmp" "$QSRC"
	log "qemu: $QSRC = Debian qemu $ver + $(git -C "$QSRC" rev-list --count base..HEAD) patch(es)"
}

build() {
	fetch
	mkdir -p "$QBUILD" "$LOGS"
	local blog=$LOGS/qemu-build.log
	if [ ! -f "$QBUILD/build.ninja" ]; then
		log "qemu: configure (KVM-only, x86_64-softmmu)"
		(cd "$QBUILD" && CC="ccache gcc" "$QSRC/configure" --cc="ccache gcc" \
			--target-list=x86_64-softmmu --enable-kvm --disable-tcg --disable-docs \
			--disable-tools --disable-user --disable-werror --disable-gtk --disable-sdl \
			--disable-vnc --disable-opengl --disable-spice --disable-curses --disable-xen \
			--disable-capstone --disable-guest-agent --disable-slirp) > "$blog" 2>&1 ||
			{ tail -30 "$blog" >&2; rm -f "$QBUILD/build.ninja"; die "qemu configure failed (log $blog)"; }
	fi
	log "qemu: ninja qemu-system-x86_64"
	ninja -C "$QBUILD" -j"$JOBS" qemu-system-x86_64 >> "$blog" 2>&1 ||
		{ grep -E 'error|Error' "$blog" | tail -30 >&2; die "qemu build failed (log $blog)"; }
	log "qemu: $QEMU_BIN"
}

export_patches() {
	rm -f "$QPATCHES"/[0-9][0-9][0-9][0-9]-*.patch
	mkdir -p "$QPATCHES"
	git -C "$QSRC" format-patch -q --zero-commit --no-signature -o "$QPATCHES" base..HEAD
	ls "$QPATCHES"
}

case ${1:-build} in
fetch) fetch ;;
build) build ;;
export) export_patches ;;
*) die "usage: qemu.sh [fetch|build|export]" ;;
esac
