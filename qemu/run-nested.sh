#!/bin/sh
# `make run`: inside the booted kernel, start our QEMU with KVM and a small
# Linux guest, attach the introspection tool through the handshake, watch
# the guest boot as events, list its processes from outside, detach, and
# check the guest keeps running.  Last line: "kvmi_run: OK" or "FAIL".
N=/nested
T=/tmp/kvmi-run
SECRET=${KVMI_SECRET:-make-run-secret}
mkdir -p $T
fail() {
	echo "--- guest console (last lines)"
	tail -n 25 $T/guest.log
	echo "kvmi_run: FAIL: $*"
	kill -9 $QPID 2>/dev/null
	exit 1
}
alive() { c=$(grep -c '^guest: alive' $T/guest.log 2>/dev/null); echo "${c:-0}"; }

echo "kvmi_run: starting QEMU (KVM, 1 vCPU, 256M) with the introspection object"
set -- qemu-system-x86_64 -L $N/firmware -enable-kvm -M q35 -cpu host -smp 1 -m 256M \
	-nodefaults -no-user-config -display none -serial file:$T/guest.log \
	-kernel $N/bzImage -initrd $N/guest.cpio \
	-append "console=ttyS0 quiet panic=-1 no5lvl" \
	-S -qmp unix:$T/qmp.sock,server=on,wait=off -name nested-guest \
	-object secret,id=kvmisec,data=$SECRET \
	-chardev socket,id=kvmic,path=$T/kvmi.sock,reconnect=1 \
	-object introspection,id=kvmi,chardev=kvmic,key=kvmisec
echo "  $*"
t0=$(date +%s)
"$@" > $T/qemu.log 2>&1 &
QPID=$!

# The tool: waits for QEMU's handshake, resumes the VM (started with -S,
# so no boot event is missed), prints the boot as events (12 of each
# kind: then that register is no longer intercepted, so that a guest that
# flushes its TLB through CR4 runs at full speed), lists the processes once
# the guest's services run, detaches.
echo "kvmi_run: kvmi trace (live; RIP, mode, CR3 and the event's payload)"
kvmi -s $T/kvmi.sock -k "$SECRET" -a 30 -q $T/qmp.sock -l 12 -t 0 -p -w 120 \
	-x webd,dbd,backupd -m $N/System.map -O $N/offsets trace
rc=$?
t1=$(date +%s)
echo "--- QEMU's messages ---"
cat $T/qemu.log
if [ $rc != 0 ]; then
	# diagnostics: where init_task's task list is, seen from outside
	it=$(sed -n 's/^\([0-9a-f]*\) [A-Za-z] init_task$/0x\1/p' $N/System.map)
	echo "--- diagnostics: init_task at $it"
	kvmi -s $T/kvmi.sock -k "$SECRET" -a 10 translate $it
	kvmi -s $T/kvmi.sock -k "$SECRET" -a 10 -m $N/System.map -O $N/offsets ps
	fail "the tool exited with $rc"
fi
grep -q 'introspection: tool hooked' $T/qemu.log || fail "QEMU did not hook the tool"

# Detached: the guest must go on.
n0=$(alive)
n1=$n0
i=0
while [ "$n1" -le "$((n0 + 1))" ] && [ $i -lt 60 ]; do
	sleep 0.5
	i=$((i + 1))
	n1=$(alive)
done
echo "--- guest console ---"
grep '^guest:' $T/guest.log | tail -n 8
kill -0 $QPID 2>/dev/null || fail "QEMU died"
[ "$n1" -gt "$n0" ] || fail "the guest stopped after the tool detached ($n0 -> $n1 heartbeats)"
echo "kvmi_run: guest still running after detach ($n0 -> $n1 heartbeats)"
up=$(sed -n 's/^guest: init started (uptime \([0-9.]*\)s.*/\1/p' $T/guest.log)
echo "kvmi_run: nested guest: kernel reached init ${up}s after it started; QEMU start to process list read: $((t1 - t0))s (boot traced live)"
kill $QPID
wait $QPID
grep -q 'introspection: unhooked' $T/qemu.log || fail "QEMU never unhooked"
echo "kvmi_run: OK"
