#!/usr/bin/env bash
# clean: remove build outputs, keep build/linux (the work tree) and build/ccache.
# distclean: remove all of build/ - refuses while build/linux holds work that
# is not exported to patches/ (uncommitted changes or commits not in
# patches/), unless FORCE=1.
. "$(dirname "$0")/lib.sh"
what=${1:-clean}
rm -rf "$BUILD"/obj-* "$BUILD"/selftests "$BUILD"/initramfs-* "$BUILD"/logs "$BUILD"/check \
	"$BUILD"/matrix "$BUILD"/matrix-am "$LINUX.tmp"
[ "$what" = distclean ] || { log "clean: done (kept build/linux and build/ccache)"; exit 0; }
if [ -d "$LINUX/.git" ] && [ "${FORCE:-0}" != 1 ]; then
	dirty=$(git -C "$LINUX" status --porcelain | wc -l)
	n=$(git -C "$LINUX" rev-list --count base..HEAD 2>/dev/null || echo 0)
	if [ "$dirty" != 0 ] || [ "$n" != "$(series_patches | wc -l)" ]; then
		die "distclean: build/linux has $dirty uncommitted path(s) and $n commit(s) vs $(series_patches | wc -l) patch(es); run 'make export' or use FORCE=1"
	fi
fi
rm -rf "$BUILD"
log "distclean: removed $BUILD"
