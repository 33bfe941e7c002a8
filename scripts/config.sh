#!/usr/bin/env bash
# scripts/config.sh <cfg>
# Generate build/obj-<cfg>/.config = allnoconfig (or a given start config) +
# merge_config.sh -m of the fragments + olddefconfig, and verify every
# requested option (when a fragment repeats a symbol, the last one wins, as
# in merge_config). Configs:
#   debug          allnoconfig + base.config + debug.config
#   release        allnoconfig + base.config
#   trace          allnoconfig + base.config + trace.config    (make profile)
#   matrix-y       allnoconfig + base.config                  (scripts/matrix.sh)
#   matrix-m       allnoconfig + base.config + matrix-m.config
#   matrix-off     allnoconfig + base.config + matrix-m.config + matrix-off.config
#   matrix-debian  $DEBIAN_CONFIG (Debian's /boot/config-*) + matrix-debian.config
#   distro         $DEBIAN_CONFIG + distro.config (scripts/modules.sh)
# LINUX (default build/linux) is the source tree; matrix.sh points it at its
# scratch clone.
# Skipped when neither the inputs nor any Kconfig file in the tree changed
# (stamp in <objdir>/.harness-config-stamp). If regeneration yields the same
# .config, its old mtime is kept so nothing is rebuilt.
. "$(dirname "$0")/lib.sh"

cfg=${1:?usage: config.sh debug|release|trace|matrix-y|matrix-m|matrix-off|matrix-debian|distro}
start=
case $cfg in
	debug)       frags=("$CONFIGS/base.config" "$CONFIGS/debug.config") ;;
	release)     frags=("$CONFIGS/base.config") ;;
	trace)       frags=("$CONFIGS/base.config" "$CONFIGS/trace.config") ;;
	matrix-y)    frags=("$CONFIGS/base.config") ;;
	matrix-m)    frags=("$CONFIGS/base.config" "$CONFIGS/matrix-m.config") ;;
	matrix-off)  frags=("$CONFIGS/base.config" "$CONFIGS/matrix-m.config" "$CONFIGS/matrix-off.config") ;;
	matrix-debian | distro)
		start=${DEBIAN_CONFIG:?DEBIAN_CONFIG (Debian kernel config file) must be set}
		[ -f "$start" ] || die "config $cfg: $start missing"
		frags=("$CONFIGS/$([ $cfg = distro ] && echo distro || echo matrix-debian).config") ;;
	*) die "unknown config '$cfg'" ;;
esac
require_tree
obj=$(objdir_of "$cfg")
lock_objdir "$cfg"
mkdir -p "$obj"

stamp_of() {
	{
		echo "cc=$KCC $(gcc -dumpfullversion)"
		[ -z "$start" ] || { echo "== start $start"; cat "$start"; }
		for f in "${frags[@]}"; do echo "== $f"; cat "$f"; done
		cd "$LINUX"
		find . \( -path ./tools -o -path ./.git \) -prune -o -name 'Kconfig*' -type f -print0 |
			LC_ALL=C sort -z | xargs -0 sha256sum
	} | sha256sum | cut -d' ' -f1
}

# Verify the fragments' settings in the final .config; a symbol set by more
# than one fragment is checked against its last setting (merge_config's
# rule). A symbol that this tree does not define at all (e.g.
# KVM_INTROSPECTION before the series adds it) only warns; anything else
# missing is fatal.
verify() {
	local bad=0 line sym want have
	local -A wants=()
	local -a order=()
	while IFS= read -r line; do
		case $line in
			CONFIG_*=*) sym=${line%%=*}; want=${line#*=} ;;
			"# CONFIG_"*" is not set") sym=${line#\# }; sym=${sym%% *}; want=n ;;
			*) continue ;;
		esac
		[ -n "${wants[$sym]+x}" ] || order+=("$sym")
		wants[$sym]=$want
	done < <(cat "${frags[@]}")
	for sym in "${order[@]}"; do
		want=${wants[$sym]}
		have=$(grep -m1 "^$sym=" "$obj/.config" | cut -d= -f2- || true)
		[ -n "$have" ] || have=n
		[ "$have" = "$want" ] && continue
		if ! (cd "$LINUX" && find . \( -path ./tools -o -path ./.git \) -prune -o -name 'Kconfig*' -type f -print0 |
				xargs -0 grep -qsE "^[[:space:]]*(menu)?config ${sym#CONFIG_}\$"); then
			warn "config $cfg: $sym is not defined by this tree (wanted $want) - ignored"
			continue
		fi
		printf 'ERROR(harness): config %s: %s=%s but fragment wants %s\n' \
			"$cfg" "$sym" "$have" "$want" >&2
		bad=1
	done
	return $bad
}

stamp=$(stamp_of)
if [ -f "$obj/.config" ] && [ "$(cat "$obj/.harness-config-stamp" 2>/dev/null)" = "$stamp" ]; then
	log "config $cfg: up to date ($obj/.config)"
	exit 0
fi

log "config $cfg: generating $obj/.config"
[ -f "$obj/.config" ] && cp -p "$obj/.config" "$obj/.config.harness-prev"
if [ -n "$start" ]; then
	cp "$start" "$obj/.config"
else
	kmake "$obj" allnoconfig >/dev/null
fi
# merge_config.sh -m: merge only; then olddefconfig resolves dependencies.
mlog=$obj/.merge_config.log
(cd "$obj" && CC="$KCC" "$LINUX/scripts/kconfig/merge_config.sh" -m -O "$obj" \
	"$obj/.config" "${frags[@]}") > "$mlog" 2>&1 || { cat "$mlog" >&2; die "merge_config failed"; }
kmake "$obj" olddefconfig >/dev/null
verify || { rm -f "$obj/.harness-config-stamp"; die "config $cfg: requested options missing (see above)"; }
if [ -f "$obj/.config.harness-prev" ] && cmp -s "$obj/.config" "$obj/.config.harness-prev"; then
	touch -r "$obj/.config.harness-prev" "$obj/.config"
	log "config $cfg: unchanged content, kept old mtime"
fi
rm -f "$obj/.config.harness-prev"
echo "$stamp" > "$obj/.harness-config-stamp"
log "config $cfg: $(grep -c '=y' "$obj/.config") options =y"
