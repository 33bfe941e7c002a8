#!/usr/bin/env bash
# scripts/profile.sh: make profile. Boots the kernel with tracing
# (configs/trace.config, build/obj-trace) with kvmi_bench -t, which traces
# a few hundred HYPERCALL events per row, then scripts/profile.py says where
# each round trip goes ($BUILD/bench/profile.txt).
# Env: PROFILE_LOG (re-read an existing log).
. "$(dirname "$0")/lib.sh"

rc=0
if [ -z "${PROFILE_LOG:-}" ]; then
	BENCH_ARGS=-t "$ROOT/scripts/pipeline.sh" bench trace || rc=$?
	PROFILE_LOG=$LOGS/$(readlink "$LOGS/bench-trace.log")
fi
[ -f "$PROFILE_LOG" ] || die "no profile log ($PROFILE_LOG)"
mkdir -p "$BUILD/bench"
{
	echo "host load average (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
	"$PY" "$ROOT/scripts/profile.py" "$PROFILE_LOG"
} > "$BUILD/bench/profile.txt" || rc=1
echo
echo "=== profile ($PROFILE_LOG) ==="
cat "$BUILD/bench/profile.txt"
log "profile: $BUILD/bench/profile.txt"
exit "$rc"
