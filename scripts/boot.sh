#!/usr/bin/env bash
# scripts/boot.sh <mode> <cfg>: boot build/obj-<cfg> bzImage with the
# initramfs of <mode> in QEMU (TCG, -cpu max => nested SVM), serial log to
# build/logs/<mode>-<cfg>-<time>.log (+ symlink <mode>-<cfg>.log).
# Env: BOOT_TIMEOUT (s, default 1800), QEMU_MEM (2G), QEMU_SMP (1; bench: 2),
#      KERNEL_ARGS (extra cmdline), QUIET=1 (don't echo the console),
#      QEMU_ARGS (extra QEMU arguments), TCG_THREAD (single; bench: multi).
. "$(dirname "$0")/lib.sh"

mode=${1:?usage: boot.sh test|run|shell cfg}
cfg=${2:?usage: boot.sh test|run|shell cfg}
obj=$(objdir_of "$cfg")
# BOOT_KERNEL: another kernel image (scripts/distro.sh: Debian's vmlinuz).
kernel=${BOOT_KERNEL:-$obj/arch/x86/boot/bzImage}
initrd=$BUILD/initramfs-$mode-$cfg.cpio
[ -f "$kernel" ] || die "$kernel missing (build the kernel first)"
[ -f "$initrd" ] || die "$initrd missing"
mkdir -p "$LOGS"
logf=$LOGS/$mode-$cfg-$(date +%Y%m%d-%H%M%S).log
ln -sfn "$(basename "$logf")" "$LOGS/$mode-$cfg.log"

# no5lvl: with -cpu max (LA57) the kernel runs 5-level paging, and one boot
# in about ten reported a KASAN wild-memory-access in handle_edge_irq from
# start_kernel (0.005 s, long before KVM), on an ff11... (LA57) address.
# The decompressor honours no5lvl (hence the harmless "Unknown kernel
# command line parameters" notice).
# hung_task_timeout_secs=10: a task stuck on the tool (KVM bounds every
# wait on it by a 5 s send timeout) is reported well within a test's run.
# BOOT_KVM_ARGS replaces kvm.introspection=1 (the distro boot sets none:
# there the package's modprobe.d file must turn it on).
append="console=ttyS0 panic=-1 panic_on_warn=0 no5lvl ${BOOT_KVM_ARGS-kvm.introspection=1}"
append+=" sysctl.kernel.hung_task_timeout_secs=10 ${KERNEL_ARGS:-}"
# Single-threaded TCG (one host thread for both vCPUs): with multi-threaded
# TCG, QEMU 7.2's nested SVM now and then put L1's own state (RIP right
# after L1's VMRUN, RAX = the VMCB's address, L1's CR3/EFER) into an L2
# guest's VMCB save area, and at times L2's into L1: the L2 guest
# triple-faulted (KVM_EXIT_SHUTDOWN) or the booted kernel died silently.
# kvmi_stress hit it in each of 4 runs of 200 s with -m 0x27, also with
# vgif=off; never in 519 iterations with thread=single, at the same speed.
# Single-threaded TCG with two vCPUs made the nested Linux guest of the
# QEMU cases boot 10x slower (every cross-vCPU wake-up waits for TCG's
# round-robin), so the booted kernel gets one vCPU: one TCG thread, and its
# own scheduler hands the CPU over.  make bench keeps two vCPUs on
# multi-threaded TCG, as its figures were measured (TCG_THREAD=multi|single
# and QEMU_SMP override).
if [ "$mode" = bench ]; then tcg=multi smp=2; else tcg=single smp=1; fi
tcg=${TCG_THREAD:-$tcg} smp=${QEMU_SMP:-$smp}
qemu=(qemu-system-x86_64 -M q35 -accel "tcg,thread=$tcg" -cpu max -smp "$smp" -m "${QEMU_MEM:-2G}"
      -no-reboot -kernel "$kernel" -initrd "$initrd" -append "$append" ${QEMU_ARGS:-})
log "boot ($mode, $cfg): ${qemu[*]}"
if [ "$mode" = shell ]; then
	echo "(QEMU: Ctrl-A X quits; log: $logf)" >&2
	"${qemu[@]}" -nographic 2>&1 | tee "$logf"
	exit 0
fi
log "serial log: $logf (timeout ${BOOT_TIMEOUT:-1800}s)"
rc=0
if [ "${QUIET:-0}" = 1 ]; then
	timeout -k 10 "${BOOT_TIMEOUT:-1800}" "${qemu[@]}" -display none -monitor none \
		-serial stdio < /dev/null > "$logf" 2>&1 || rc=$?
else
	set -o pipefail
	timeout -k 10 "${BOOT_TIMEOUT:-1800}" "${qemu[@]}" -display none -monitor none \
		-serial stdio < /dev/null 2>&1 | tee "$logf" || rc=$?
fi
[ "$rc" = 124 ] && warn "QEMU timed out after ${BOOT_TIMEOUT:-1800}s"
[ "$rc" = 0 ] || [ "$rc" = 124 ] || warn "QEMU exited with rc=$rc"
exit 0
