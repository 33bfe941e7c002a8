#!/usr/bin/env bash
# scripts/build-kernel.sh <debug|release>: (re)configure if needed, then build
# bzImage out of tree in build/obj-<cfg> with ccache. Output goes to
# build/logs/build-<cfg>.log; errors are shown on failure.
. "$(dirname "$0")/lib.sh"

cfg=${1:?usage: build-kernel.sh debug|release}
obj=$(objdir_of "$cfg")
lock_objdir "$cfg"
"$ROOT/scripts/config.sh" "$cfg"
mkdir -p "$LOGS" "$CCACHE_DIR"
blog=$LOGS/build-$cfg.log
log "kernel build ($cfg): make -C $LINUX O=$obj -j$JOBS CC=\"$KCC\" bzImage (log: $blog)"
cc_stats() { ccache --print-stats 2>/dev/null | awk '$1 ~ /cache_hit$/ {h += $2} $1 == "cache_miss" {m += $2} END {print h+0, m+0}'; }
read -r h0 m0 < <(cc_stats)
t0=$(date +%s)
if ! make -C "$LINUX" O="$obj" CC="$KCC" HOSTCC=gcc -j"$JOBS" bzImage > "$blog" 2>&1; then
	grep -nE 'error|Error|\*\*\*' "$blog" | head -60 >&2 || true
	echo "--- last lines of $blog ---" >&2
	tail -n 25 "$blog" >&2
	die "kernel build ($cfg) failed"
fi
# Compiler warnings of this build (KASAN inflates stack frames, so the
# debug build's -Wframe-larger-than= warnings are noise and hidden).
skip='^$'
[ "$cfg" = debug ] && skip='Wframe-larger-than='
grep -E 'warning:' "$blog" | grep -vE "$skip" | sort -u | head -40 | sed 's/^/  build warning: /' >&2 || true
ls -l "$obj/arch/x86/boot/bzImage" >&2
read -r h1 m1 < <(cc_stats)
ncc=$(grep -cE '^\s+CC\s' "$blog" || true)
log "kernel build ($cfg): $ncc C files compiled (ccache: $((h1 - h0)) hits, $((m1 - m0)) misses) in $(fmt_dur $(( $(date +%s) - t0 )))"
