#!/usr/bin/env bash
# scripts/bench.sh: make bench. Boots the release kernel with kvmi_bench
# (pipeline.sh bench release), prints its table, and plots the latency
# distributions and the throughput (gnuplot) to $BUILD/bench/kvmi_bench.png.
# Env: BENCH_ARGS (kvmi_bench options), BENCH_LOG (re-plot an existing log).
. "$(dirname "$0")/lib.sh"

rc=0
load() { cut -d' ' -f1-3 /proc/loadavg; }
if [ -z "${BENCH_LOG:-}" ]; then
	load0=$(load)
	"$ROOT/scripts/pipeline.sh" bench release || rc=$?
	BENCH_LOG=$LOGS/$(readlink "$LOGS/bench-release.log")
	# The host is shared: its load decides the scheduling delays.
	echo "host load average (1, 5, 15 min) before: $load0, after: $(load)" > "$BENCH_LOG.load"
fi
[ -f "$BENCH_LOG" ] || die "no bench log ($BENCH_LOG)"
out=$BUILD/bench
mkdir -p "$out"
tr -d '\r' < "$BENCH_LOG" |
	sed -n '/^KVMI-TEST-BEGIN kvmi_bench/,/^KVMI-TEST-END kvmi_bench/p' > "$out/raw.txt"
grep -q '^kvmi_bench: OK' "$out/raw.txt" || { tail -n 30 "$out/raw.txt" >&2; die "kvmi_bench did not finish (log: $BENCH_LOG)"; }

# The machine that made the figures: the host (L0) runs QEMU's software
# CPU; kvmi_bench's first line says what the booted kernel saw.
host_cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
machine="host: $host_cpu, $(nproc) cores, $(qemu-system-x86_64 --version | head -1 | sed 's/ (.*//'), TCG -cpu max -smp ${QEMU_SMP:-2}, nested SVM"
{
	echo "$machine"
	cat "$BENCH_LOG.load" 2>/dev/null || true
	grep -vE '^(BENCH-|KVMI-TEST-)|^\[ *[0-9]+\.[0-9]+\]' "$out/raw.txt"
} > "$out/table.txt"
echo
echo "=== kvmi_bench ($BENCH_LOG) ==="
cat "$out/table.txt"

# Data: one file per latency row ("percentile us"), and the throughput.
rm -f "$out"/cdf-*.dat
awk '$1 == "BENCH-CDF" { print $3, $4 > (dir "/cdf-" $2 ".dat") }' dir="$out" "$out/raw.txt"
awk '$1 == "BENCH-TPUT" { print $2, $3 }' "$out/raw.txt" > "$out/tput.dat"
one=$(awk 'NR == 1 { print $2 }' "$out/tput.dat")

# Baselines black, events in colour; dashed: busy host.
plot=()
while read -r tag style; do
	[ -f "$out/cdf-$tag.dat" ] && plot+=("'$out/cdf-$tag.dat' using 2:1 with lines lw 2 $style title '$tag'")
done <<'ROWS'
exit lc rgb 'black'
kexit lc rgb 'gray50'
hc-block lc rgb '#d62728'
hc-poll lc rgb '#1f77b4'
cr-poll lc rgb '#2ca02c'
msr-poll lc rgb '#9467bd'
pause-poll lc rgb '#ff7f0e'
hc-poll-nopoll lc rgb '#17becf'
hog-exit lc rgb 'black' dt 2
hog-hc-block lc rgb '#d62728' dt 2
hog-hc-poll lc rgb '#1f77b4' dt 2
ROWS
[ ${#plot[@]} -gt 0 ] || die "no latency data in $BENCH_LOG"
gnuplot <<GP
set terminal pngcairo size 1400,560 font ",10"
set output "$out/kvmi_bench.png"
set multiplot layout 1,2 title "kvmi\\\\_bench, one boot (${machine//_/\\\\_})"
set title "round trip, 1 vCPU: cumulative distribution"
set logscale x
set xlabel "us (log)"
set ylabel "percentile"
set key bottom right
set grid
plot $(IFS=,; echo "${plot[*]}")
unset logscale x
set title "HYPERCALL events/s, N vCPUs at once (tool blocks)"
set xlabel "vCPUs"
set ylabel "events/s"
set xrange [0.5:4.5]
set yrange [0:*]
set key top left
plot "$out/tput.dat" using 1:2 with linespoints lw 2 pt 7 title "measured", \
     0.8 * x * $one with lines dt 2 title "goal: 0.8 x N x one vCPU"
unset multiplot
GP
log "bench: table $out/table.txt, plot $out/kvmi_bench.png"
exit "$rc"
