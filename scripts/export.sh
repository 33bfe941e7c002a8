#!/usr/bin/env bash
# Regenerate patches/ from build/linux (base..HEAD) with stable output:
# zero From-hash, no signature, no base-commit, fixed "PATCH" prefix, cover
# letter dated/sent as HEAD's author, subject+blurb from series/cover.txt.
# Files whose content did not change are not rewritten; stale ones removed.
. "$(dirname "$0")/lib.sh"
require_tree

cover=$SERIES_DIR/cover.txt
[ -f "$cover" ] || die "$cover missing (first line: subject, rest: blurb)"
if [ -n "$(git -C "$LINUX" status --porcelain --untracked-files=no)" ]; then
	warn "build/linux has uncommitted changes; they are NOT exported:"
	git -C "$LINUX" status --short --untracked-files=no | sed 's/^/    /' >&2
fi
# Debian's top-level .gitignore ("/*") hides every new file from git status:
# list untracked files explicitly (a new file needs "git add -f").
untracked=$(git -C "$LINUX" ls-files -o)
if [ -n "$untracked" ]; then
	warn "build/linux has untracked files (not exported; new files need 'git add -f'):"
	printf '%s\n' "$untracked" | head -20 | sed 's/^/    /' >&2
fi
n=$(git -C "$LINUX" rev-list --count base..HEAD)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ "$n" -gt 0 ]; then
	# The cover letter's From/Date come from the committer ident and the
	# current time: pin them to HEAD's author so re-exports are identical.
	GIT_COMMITTER_NAME=$(git -C "$LINUX" log -1 --format=%an HEAD) \
	GIT_COMMITTER_EMAIL=$(git -C "$LINUX" log -1 --format=%ae HEAD) \
	GIT_COMMITTER_DATE=$(git -C "$LINUX" log -1 --format=%ad --date=raw HEAD) \
	git -C "$LINUX" -c format.signature= \
		-c format.thread=false -c format.useAutoBase=false \
		-c diff.noprefix=false -c diff.renames=true -c diff.relative=false -c diff.mnemonicPrefix=false -c core.abbrev=12 \
		format-patch -q --cover-letter --no-signature --zero-commit \
		--no-base --subject-prefix=PATCH --no-numbered-files \
		--no-to --no-cc --no-add-header \
		--diff-algorithm=myers --cover-from-description=none --suffix=.patch \
		-o "$tmp" base..HEAD
	"$PY" - "$tmp/0000-cover-letter.patch" "$cover" <<'PYEOF'
import sys
path, cover = sys.argv[1], sys.argv[2]
lines = open(cover, encoding="utf-8").read().split("\n")
subject = lines[0].strip()
blurb = "\n".join(lines[1:]).strip("\n")
text = open(path, encoding="utf-8").read()
for marker, val in (("*** SUBJECT HERE ***", subject), ("*** BLURB HERE ***", blurb)):
    if text.count(marker) != 1:
        sys.exit(f"export: marker {marker!r} not found exactly once in cover letter")
    text = text.replace(marker, val)
open(path, "w", encoding="utf-8").write(text)
PYEOF
fi
mkdir -p "$PATCHES"
changed=0
for f in "$PATCHES"/[0-9][0-9][0-9][0-9]-*.patch; do
	[ -e "$f" ] || continue
	[ -e "$tmp/$(basename "$f")" ] || { rm -f "$f"; echo "  removed   $(basename "$f")"; changed=1; }
done
for f in "$tmp"/*.patch; do
	[ -e "$f" ] || continue
	b=$(basename "$f")
	if cmp -s "$f" "$PATCHES/$b"; then continue; fi
	echo "  $([ -e "$PATCHES/$b" ] && echo updated || echo added)   $b"
	cp "$f" "$PATCHES/$b"; changed=1
done
log "export: $n patch(es) in patches/$([ $changed = 1 ] || echo ' (no change)')"
