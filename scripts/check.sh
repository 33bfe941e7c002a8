#!/usr/bin/env bash
# Apply patches/*.patch one by one with git am in a scratch clone of the
# tree's 'base' (build/check; never build/linux's working tree) and run
# scripts/checkpatch.pl --strict on each. Exit non-zero on any failure.
. "$(dirname "$0")/lib.sh"
require_tree

CHECK=$BUILD/check
lock_objdir check
base=$(git -C "$LINUX" rev-parse base^{commit})
mapfile -t patches < <(series_patches)

if [ -d "$CHECK/.git" ] && [ "$(git -C "$CHECK" rev-parse -q --verify base^{commit} 2>/dev/null)" != "$base" ]; then
	log "check: scratch clone has a different base; recreating"
	rm -rf "$CHECK"
fi
if [ ! -d "$CHECK/.git" ]; then
	log "check: creating scratch clone $CHECK (shares objects with build/linux)"
	git clone -q --shared --no-checkout "$LINUX" "$CHECK"
	git -C "$CHECK" config user.name >/dev/null || git -C "$CHECK" config user.name "KVMI harness"
	git -C "$CHECK" config user.email >/dev/null || git -C "$CHECK" config user.email "kvmi-harness@localhost"
fi
# Scratch clone only: reset it to base.
git -C "$CHECK" am --abort >/dev/null 2>&1 || true
git -C "$CHECK" checkout -q -f --detach "$base"
git -C "$CHECK" clean -q -fdx
git -C "$CHECK" tag -f base "$base" >/dev/null

if [ ${#patches[@]} -eq 0 ]; then
	log "check: no patches in patches/ - nothing to check"
	echo "checkpatch: 0 passed, 0 failed"
	exit 0
fi

pass=0 fail=0 i=0
for p in "${patches[@]}"; do
	i=$((i + 1))
	name=$(basename "$p")
	if ! out=$(git -C "$CHECK" am -q "$p" 2>&1); then
		echo "FAIL  $name: does not apply"
		printf '%s\n' "$out" | sed 's/^/      /'
		git -C "$CHECK" am --abort >/dev/null 2>&1 || true
		fail=$((fail + 1 + ${#patches[@]} - i))
		echo "      (remaining $(( ${#patches[@]} - i )) patch(es) not checked)"
		break
	fi
	# PATH: spdxcheck.py (run by checkpatch) needs Debian python3 + python3-ply/-git.
	if out=$(cd "$CHECK" && PATH=/usr/bin:$PATH perl scripts/checkpatch.pl --strict --color=never "$p" 2>&1); then
		echo "OK    $name: applies, checkpatch clean"
		pass=$((pass + 1))
	else
		echo "FAIL  $name: applies, checkpatch:"
		printf '%s\n' "$out" | sed 's/^/      /'
		fail=$((fail + 1))
	fi
done
# Sanity: the applied series must equal build/linux's committed series.
if [ $fail = 0 ] && [ "$(git -C "$CHECK" rev-parse HEAD^{tree})" != "$(git -C "$LINUX" rev-parse HEAD^{tree})" ]; then
	warn "patches/ does not match build/linux HEAD (forgot 'make export'?)"
fi
echo "checkpatch: $pass passed, $fail failed"
[ $fail = 0 ]
