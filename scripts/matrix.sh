#!/usr/bin/env bash
# scripts/matrix.sh [series|bisect]: build matrix of the series in patches/.
#
#   series (make matrix, also run by make check): the whole series, in the
#          configs y, m, off and debian.
#   bisect (make matrix-bisect): every patch in y, m and off, then the whole
#          series in debian. FROM=N starts at patch N.
#
# Configs (scripts/config.sh; one objdir each, build/obj-matrix-<cfg>):
#   y      allnoconfig + base.config (KVM=y, KVM_INTROSPECTION=y); builds
#          arch/x86/kvm/ (virt/kvm comes with it) with W=1 and C=1, sparse
#          run only on the files the series adds (scripts/sparse-new.sh),
#          then links its built-in.a with ld -r (duplicate symbols).
#   m      + matrix-m.config (MODULES=y, KVM/KVM_AMD/KVM_INTEL=m); builds
#          vmlinux.o and the modules, so modpost checks kvm*.ko against
#          vmlinux.o and each other, and links the .ko files.
#   off    like m with KVM_INTROSPECTION not set.
#   debian Debian's own config (/boot/config-* of the linux-image package
#          matching linux-source-6.12, downloaded once to build/debian-<ver>/)
#          + matrix-debian.config; modules_prepare, then the kvm modules as
#          M=arch/x86/kvm against the headers package's Module.symvers (the
#          stock vmlinux exports and CRCs, less the kvm modules' own).
#
# The series is applied with git am in build/matrix-am (a worktree of the
# scratch clone build/matrix, which shares objects with build/linux); the
# build tree build/matrix is then checked out at the resulting commits, so
# only files that differ from the last run get a new mtime. Never touches
# build/linux's working tree.
#
# Checks per (patch or series) x config: the build succeeds; no compiler,
# objtool or sparse warning/error in a file the series adds (y, W=1) or
# touches (m, off, debian; W=0); no modpost warning or error at all (so an
# unexported or undefined symbol fails; KBUILD_MODPOST_WARN is cleared);
# the three .ko files exist (m, off, debian); sparse did check every .c file
# the series adds (y). Objects of the series' .c files are deleted before each
# build, so their warnings are reported on every run (ccache replays them).
# Output: one OK/FAIL line per (patch or series) x config, full logs in
# build/logs/matrix/, last line "matrix: N passed, N failed"; exit 1 on any
# failure.
. "$(dirname "$0")/lib.sh"
require_tree

mode=${1:-series}
case $mode in series | bisect) ;; *) die "usage: matrix.sh [series|bisect]" ;; esac

# ASCII diagnostics (gcc quotes with the locale's quote marks otherwise;
# kbuild unexports LC_ALL, so set the categories themselves).
unset LC_ALL
export LANG=C LC_CTYPE=C LC_MESSAGES=C
# Nothing from the environment may soften the checks or redirect the build.
unset KBUILD_MODPOST_WARN KBUILD_MODPOST_NOFINAL KBUILD_EXTRA_SYMBOLS KBUILD_EXTMOD \
	KBUILD_EXTRA_WARN M C W CHECK MATRIX_SPARSE_FILES MATRIX_SPARSE_LOG

MX=$BUILD/matrix
MXAM=$BUILD/matrix-am
MLOGS=$LOGS/matrix
SRC_TREE=$LINUX
export LINUX=$MX # config.sh and kmake work on the scratch clone
KOS=(arch/x86/kvm/kvm.ko arch/x86/kvm/kvm-amd.ko arch/x86/kvm/kvm-intel.ko)

lock_objdir matrix
for c in y m off debian; do lock_objdir "matrix-$c"; done
t_start=$(date +%s)
mkdir -p "$MLOGS" "$CCACHE_DIR"

# --- scratch clone + worktree, reset to base --------------------------------
base=$(git -C "$SRC_TREE" rev-parse base^{commit})
if [ -d "$MX/.git" ] && [ "$(git -C "$MX" rev-parse -q --verify base^{commit} 2>/dev/null)" != "$base" ]; then
	log "matrix: scratch clone has a different base; recreating"
	rm -rf "$MX" "$MXAM"
fi
if [ ! -d "$MX/.git" ]; then
	log "matrix: creating scratch clone $MX (shares objects with build/linux)"
	rm -rf "$MXAM"
	git clone -q --shared --no-checkout "$SRC_TREE" "$MX"
	git -C "$MX" config user.name >/dev/null || git -C "$MX" config user.name "KVMI harness"
	git -C "$MX" config user.email >/dev/null || git -C "$MX" config user.email "kvmi-harness@localhost"
	git -C "$MX" checkout -q -f --detach "$base"
fi
git -C "$MX" tag -f base "$base" >/dev/null
git -C "$MX" worktree prune
if [ ! -e "$MXAM/.git" ]; then
	rm -rf "$MXAM"
	git -C "$MX" worktree add -q --detach "$MXAM" "$base"
fi
git -C "$MXAM" am --abort >/dev/null 2>&1 || true
git -C "$MXAM" checkout -q -f --detach "$base"
git -C "$MXAM" clean -q -fdx

# --- apply patches/ ----------------------------------------------------------
mapfile -t patches < <(series_patches)
shas=() names=()
for p in "${patches[@]}"; do
	if ! out=$(git -C "$MXAM" am -q "$p" 2>&1); then
		git -C "$MXAM" am --abort >/dev/null 2>&1 || true
		echo "FAIL  $(basename "$p"): does not apply"
		printf '%s\n' "$out" | head -n 10 | sed 's/^/      /'
		echo "matrix: 0 passed, 1 failed"
		exit 1
	fi
	shas+=("$(git -C "$MXAM" rev-parse HEAD)")
	names+=("$(basename "$p" .patch)")
done
series_sha=$base
[ ${#shas[@]} = 0 ] || series_sha=${shas[${#shas[@]} - 1]}

targets=() labels=() cfglists=()
if [ "$mode" = bisect ]; then
	from=${FROM:-1}
	[[ $from =~ ^[0-9]+$ ]] && [ "$from" -ge 1 ] || die "FROM=$from: not a patch number"
	for i in "${!shas[@]}"; do
		[ $((i + 1)) -ge "$from" ] || continue
		targets+=("${shas[i]}") labels+=("${names[i]}") cfglists+=("y m off")
	done
	targets+=("$series_sha") labels+=(series) cfglists+=(debian)
else
	targets+=("$series_sha") labels+=(series) cfglists+=("y m off debian")
fi
log "matrix ($mode): ${#patches[@]} patch(es); logs in $MLOGS/"

# --- helpers -----------------------------------------------------------------
# Alternation (ERE) of the given paths, each .c also as its .o (objtool).
files_alt() {
	local alt="" f
	for f in "$@"; do
		f=$(printf '%s' "$f" | sed 's/[].[*+?^$(){}|\\]/\\&/g')
		alt+="${alt:+|}$f"
		case $f in *'\.c') alt+="|${f%'\.c'}\\.o" ;; esac
	done
	printf '%s' "${alt:-^NOMATCH^}"
}
# Names of the functions defined in the given C files (definitions start in
# column 0, kernel style), as an ERE alternation.
funcs_alt() {
	[ $# -gt 0 ] || { printf '^NOMATCH^'; return; }
	grep -hoE '^([A-Za-z_][A-Za-z0-9_ *]*[ *])?[A-Za-z_][A-Za-z0-9_]*\(' "$@" 2>/dev/null |
		sed -E 's/\($//; s/.*[ *]//' | sort -u | paste -sd'|' -
}
any_re='^[^[:space:]]+:([0-9]+:)*[[:space:]]*(warning|error|fatal error):'

# diagnostics LOG COUNTFILE: prints the diagnostics (compiler, sparse,
# kernel-doc, objtool) of LOG that belong to the files in $MX_FILES (an ERE
# alternation), each with its context lines, and writes the number of the
# other ones to COUNTFILE. A diagnostic belongs to them when it is located in
# one of them, or is in a header but reached from one of them ("inlined from
# ... at <file>"), or is sparse's "context imbalance in '<f>'" for a function
# <f> in $MX_FUNCS (sparse reports it where the unlock is, e.g. srcu.h).
# A header diagnostic merely "included from" one of the files is the
# header's own and does not count.
diagnostics() {
	awk -v cntfile="$2" '
	BEGIN {
		P = ENVIRON["MX_FILES"]; F = ENVIRON["MX_FUNCS"]
		main = "(^|/)(" P "):([0-9]+:)*[[:space:]]*(warning|error|fatal error):"
		inl = "inlined from [^\n]* at ([^ \n]*/)?(" P "):"
		anyd = "^[^[:space:]]+:([0-9]+:)*[[:space:]]*(warning|error|fatal error):"
		imb = "context imbalance in '\''[^'\'']+'\''"
	}
	/^In file included from |^[[:space:]]+from |^In function |^[[:space:]]+inlined from |: note: in included file|: In function |: In member function |: At top level:/ {
		ctx = ctx $0 "\n"; next
	}
	$0 ~ anyd {
		ours = ($0 ~ main) || (ctx ~ inl)
		if (!ours && match($0, imb)) {
			name = substr($0, RSTART + 22, RLENGTH - 23)
			if (name ~ ("^(" F ")$")) ours = 1
		}
		if (ours) {
			# without the include chain: "In function" / "inlined from"
			# / sparse'"'"'s "in included file" say where it comes from
			n = split(ctx, c, "\n")
			for (i = 1; i < n; i++)
				if (c[i] !~ /^In file included from |^[[:space:]]+from /) print c[i]
			print
		} else nother++
		ctx = ""; next
	}
	{ ctx = "" }
	END { print nother + 0 > cntfile }' "$1"
}

rm_series_objs() {
	local obj=$1 f
	for f in "${touched_c[@]}"; do rm -f "$obj/${f%.c}.o"; done
}

# debian_fetch (scripts/debian.sh): Debian's kernel matching
# linux-source-6.12, config + Module.symvers cached in build/debian-<ver>/.
. "$ROOT/scripts/debian.sh"

# build_<cfg> OBJ: the build steps; output goes to the config's log.
build_y() {
	local obj=$1
	"$ROOT/scripts/config.sh" matrix-y || return 1
	rm_series_objs "$obj"
	: > "$obj/.matrix-sparse"
	(
		export MATRIX_SPARSE_FILES="${new_c[*]}" MATRIX_SPARSE_LOG=$obj/.matrix-sparse
		kmake "$obj" W=1 C=1 CHECK="$ROOT/scripts/sparse-new.sh" arch/x86/kvm/
	) || return 1
	# With KVM=y, kvm, kvm-amd and kvm-intel end up in one vmlinux: link
	# them together (ld -r) so that a symbol defined twice fails here too.
	ld -m elf_x86_64 -z noexecstack -r -o "$obj/.matrix-kvm-y.o" \
		--whole-archive "$obj/arch/x86/kvm/built-in.a" ||
		{ echo "ERROR: ld -r of arch/x86/kvm/built-in.a failed (KVM=y link)"; return 1; }
}
build_m() {
	"$ROOT/scripts/config.sh" matrix-m || return 1
	rm_series_objs "$1"
	kmake "$1" vmlinux modules
}
build_off() {
	"$ROOT/scripts/config.sh" matrix-off || return 1
	rm_series_objs "$1"
	kmake "$1" vmlinux modules
}
build_debian() {
	local obj=$1
	debian_fetch || return 1
	DEBIAN_CONFIG=$DEB_CONFIG "$ROOT/scripts/config.sh" matrix-debian || return 1
	kmake "$obj" modules_prepare || return 1
	# The stock exports (vmlinux and every module) except those of the
	# modules built here: modpost resolves kvm*.ko against them (with
	# their CRCs) and against the kvm modules of this build.
	awk -F'\t' '$3 !~ /^arch\/x86\/kvm\/kvm(-amd|-intel)?$/' "$DEBDIR/Module.symvers" > "$obj/Module.symvers.new"
	[ -s "$obj/Module.symvers.new" ] || { echo "ERROR: empty Module.symvers from $DEBDIR"; return 1; }
	echo "debian: $(wc -l < "$obj/Module.symvers.new") stock exports in $obj/Module.symvers"
	mv "$obj/Module.symvers.new" "$obj/Module.symvers"
	rm_series_objs "$obj"
	rm -f "${KOS[@]/#/$obj/}"
	# M= in an O= build leaves VPATH empty (src = obj, in the objdir);
	# VPATH=<tree> makes src the tree's arch/x86/kvm, objects stay in O=.
	kmake "$obj" M=arch/x86/kvm VPATH="$MX" modules
}

pass=0 fail=0
run_cfg() {
	local cfg=$1 label=$2 obj=$BUILD/obj-matrix-$1 rc=0 t0 logf tag f
	local -a bad=() notes=()
	tag=${label%%-*}
	logf=$MLOGS/$tag-$cfg.log
	mkdir -p "$obj"
	t0=$(date +%s)
	"build_$cfg" "$obj" > "$logf" 2>&1 || rc=$?
	local dt=$(($(date +%s) - t0))

	# Which diagnostics count: W=1/sparse ones of the added files (y), W=0
	# ones of every file the series adds or changes (others).
	local nother
	if [ "$cfg" = y ]; then
		MX_FILES=$(files_alt "${new_files[@]}")
	else
		MX_FILES=$(files_alt "${touched[@]}")
	fi
	MX_FUNCS=$(funcs_alt "${new_c[@]/#/$MX/}")
	export MX_FILES MX_FUNCS
	mapfile -t bad < <(diagnostics "$logf" "$obj/.matrix-nother")
	nother=$(cat "$obj/.matrix-nother")
	[ "$nother" = 0 ] || notes+=("$nother diagnostic(s) of other files filtered")
	# modpost: no warning or error of any kind, and it must have had its
	# symbol input (vmlinux.o / Module.symvers).
	mapfile -t -O "${#bad[@]}" bad < <(grep -E '^(WARNING|ERROR): modpost:|is missing\.$|Modules may not have dependencies' "$logf")
	if [ $rc = 0 ]; then
		case $cfg in
		m | off | debian)
			for f in "${KOS[@]}"; do
				[ -f "$obj/$f" ] || bad+=("harness: $f was not built")
			done
			;;
		esac
		if [ "$cfg" = y ]; then
			for f in "${new_c[@]}"; do
				grep -qxF "$f" "$obj/.matrix-sparse" || bad+=("harness: sparse did not check $f (not compiled in config y?)")
			done
			[ ${#new_c[@]} = 0 ] || notes+=("W=1+sparse on ${#new_c[@]} new file(s)")
		fi
		if [ "$cfg" = off ] && grep -qs '^CONFIG_KVM_INTROSPECTION=y' "$obj/.config"; then
			bad+=("harness: CONFIG_KVM_INTROSPECTION=y in the off config")
		fi
	fi
	local note=""
	[ ${#notes[@]} = 0 ] || note="  ($(IFS=';'; echo "${notes[*]}" | sed 's/;/; /g'))"
	if [ $rc = 0 ] && [ ${#bad[@]} = 0 ]; then
		printf 'OK    %-57s %-6s %s%s\n' "$label" "$cfg" "$(fmt_dur $dt)" "$note"
		pass=$((pass + 1))
		return 0
	fi
	printf 'FAIL  %-57s %-6s %s%s\n' "$label" "$cfg" "$(fmt_dur $dt)" "$note"
	if [ ${#bad[@]} = 0 ]; then
		mapfile -t bad < <(grep -E "$any_re|^(ERROR|make(\[[0-9]+\])?:.*Error|.*\*\*\*)|undefined|multiple definition" "$logf" | head -n 12)
		[ ${#bad[@]} -gt 0 ] || mapfile -t bad < <(tail -n 8 "$logf")
	fi
	# paths relative to the tree, as in the patches
	printf '%s\n' "${bad[@]}" | head -n 12 |
		sed -e "s|$MX/||g" -e 's|arch/x86/kvm/\.\./\.\./\.\./||g' -e 's/^/      /'
	echo "      (log: ${logf#"$ROOT"/})"
	fail=$((fail + 1))
}

# --- the matrix --------------------------------------------------------------
for i in "${!targets[@]}"; do
	git -C "$MX" checkout -q -f --detach "${targets[i]}"
	git -C "$MX" clean -q -fdx
	excl=(':!tools/' ':!Documentation/' ':!samples/')
	mapfile -t touched < <(git -C "$MX" diff --name-only --diff-filter=AMR base HEAD -- '*.[ch]' "${excl[@]}")
	mapfile -t touched_c < <(printf '%s\n' "${touched[@]}" | grep '\.c$' || true)
	mapfile -t new_files < <(git -C "$MX" diff --name-only --diff-filter=A base HEAD -- '*.[ch]' "${excl[@]}")
	mapfile -t new_c < <(printf '%s\n' "${new_files[@]}" | grep '\.c$' || true)
	for cfg in ${cfglists[i]}; do
		run_cfg "$cfg" "${labels[i]}"
	done
done

log "matrix ($mode): $(fmt_dur $(($(date +%s) - t_start)))"
echo "matrix: $pass passed, $fail failed"
[ $fail = 0 ]
