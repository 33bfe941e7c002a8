#!/usr/bin/env bash
# Create build/linux: Debian linux-source-6.12 + git base commit (tag 'base')
# + the series from patches/ applied with git am (one commit per patch).
# An existing tree (with a 'base' tag) is never touched: only its state is
# printed.
. "$(dirname "$0")/lib.sh"

pkg_version() { dpkg-query -W -f='${Version}' linux-source-6.12 2>/dev/null || echo unknown; }

git_id() {
	# Identity for commits made by the harness, unless the user has one.
	local d=$1
	git -C "$d" config user.name >/dev/null || git -C "$d" config user.name "KVMI harness"
	git -C "$d" config user.email >/dev/null || git -C "$d" config user.email "kvmi-harness@localhost"
}

if [ -e "$LINUX" ]; then
	require_tree
	basemsg=$(git -C "$LINUX" log -1 --format=%s base)
	ontop=$(git -C "$LINUX" rev-list --count base..HEAD)
	dirty=$(git -C "$LINUX" status --porcelain | wc -l)
	npatch=$(series_patches | wc -l)
	log "tree: $LINUX exists - left untouched"
	echo "  base:            $basemsg"
	echo "  installed pkg:   linux-source-6.12 $(pkg_version)"
	echo "  HEAD:            $(git -C "$LINUX" log -1 --format='%h %s')"
	echo "  commits on base: $ontop (patches/ has $npatch)"
	echo "  uncommitted:     $dirty path(s)"
	untracked=$(git -C "$LINUX" ls-files -o | wc -l)
	[ "$untracked" = 0 ] || echo "  untracked:       $untracked file(s) (hidden by Debian's .gitignore; 'git add -f' them)"
	[ -d "$(git -C "$LINUX" rev-parse --git-path rebase-apply)" ] &&
		warn "a 'git am' is in progress in $LINUX"
	case $basemsg in *"$(pkg_version)") ;; *)
		warn "installed linux-source-6.12 ($(pkg_version)) differs from the tree's base" ;;
	esac
	exit 0
fi

tarball=/usr/src/linux-source-6.12.tar.xz
[ -f "$tarball" ] || die "$tarball missing (package linux-source-6.12; run make packages)"
ver=$(pkg_version)
log "tree: linux-source-6.12 $ver"
tmp=$LINUX.tmp
rm -rf "$tmp"
mkdir -p "$tmp"
tar -xJf "$tarball" -C "$tmp" --strip-components=1
git -C "$tmp" init -q -b main
git_id "$tmp"
# Debian's top-level .gitignore ignores "/*": force-add everything.
git -C "$tmp" add -f -A .
git -C "$tmp" commit -q -m "linux-source-6.12 $ver"
git -C "$tmp" tag base
n=0
while IFS= read -r p; do
	if ! git -C "$tmp" am -q "$p"; then
		git -C "$tmp" am --abort || true
		die "tree: $(basename "$p") does not apply on linux-source-6.12 $ver (scratch tree left in $tmp)"
	fi
	n=$((n + 1))
done < <(series_patches)
mv "$tmp" "$LINUX"
log "tree: $LINUX = linux-source-6.12 $ver + $n patch(es)"
