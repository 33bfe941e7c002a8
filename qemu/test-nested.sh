#!/bin/sh
# `make test`: our QEMU with the introspection object and the kvmi tool
# against a nested Linux guest (this kernel's own bzImage), inside the
# booted kernel.  KTAP output, one case per line.
N=/nested
T=/tmp/kvmi-qemu
SECRET=test-secret
GUEST_WAIT=${GUEST_WAIT:-180}
mkdir -p $T
n=0
ok()  { n=$((n + 1)); echo "ok $n $1"; }
nok() { n=$((n + 1)); echo "not ok $n $1"; shift; for l in "$@"; do echo "# $l"; done; }
show() { echo "# --- $1:"; sed 's/^/#   /' "$1" | tail -n ${2:-15}; }

# qemu_start NAME APPEND [extra args]: QEMU in the background, paused (-S)
qemu_start() {
	Q=$T/$1; shift
	app=$1; shift
	rm -f $Q.*
	qemu-system-x86_64 -L $N/firmware -enable-kvm -M q35 -cpu host -smp 1 -m 256M \
		-nodefaults -no-user-config -display none -serial file:$Q.guest \
		-kernel $N/bzImage -initrd $N/guest.cpio \
		-append "console=ttyS0 quiet panic=-1 no5lvl $app" \
		-S -qmp unix:$Q.qmp,server=on,wait=off \
		-object secret,id=kvmisec,data=$SECRET \
		-chardev socket,id=kvmic,path=$Q.sock,reconnect=1 \
		-object introspection,id=kvmi,chardev=kvmic,key=kvmisec,unhook_timeout=10 \
		"$@" > $Q.qemu 2>&1 &
	QPID=$!
}
# wait_for FILE PATTERN SECS [COUNT]: until PATTERN occurs COUNT times
wait_for() {
	i=0
	while [ $i -lt $(($3 * 5)) ]; do
		c=$(grep -c "$2" "$1" 2>/dev/null)
		[ "${c:-0}" -ge "${4:-1}" ] && return 0
		sleep 0.2; i=$((i + 1))
	done
	return 1
}
# (in the background, kvmi is started directly: $! must be the tool)
tool() { kvmi -s $Q.sock -a 30 "$@"; }
gone() { # PID SECS: the process ended within SECS
	i=0
	while kill -0 $1 2>/dev/null; do
		[ $i -ge $(($2 * 5)) ] && return 1
		sleep 0.2; i=$((i + 1))
	done
	return 0
}
stop_qemu() { kill -9 $QPID 2>/dev/null; wait $QPID 2>/dev/null; }

echo "TAP version 13"
echo "1..8"

# --- QEMU A: the guest tries to overwrite LSTAR once its services run ----
qemu_start a "guest.lstar=1"

# 1. a tool with the wrong secret gets no hook; QEMU stays up
tool -k wrong-secret -q $Q.qmp trace > $T/t1 2>&1
if grep -q 'not hooked' $T/t1 && grep -q 'cookie does not match' $Q.qemu &&
   ! grep -q 'tool hooked' $Q.qemu && kill -0 $QPID; then
	ok "wrong cookie: QEMU does not hook"
else
	nok "wrong cookie: QEMU does not hook" "$(show $T/t1)" "$(show $Q.qemu)"
fi

# 2. the right tool attaches, resumes the VM, blocks the LSTAR overwrite
tool -k $SECRET -q $Q.qmp -Q -l 8 -L LSTAR -b 1 -t $GUEST_WAIT -p -x webd,dbd,backupd -w 60 \
	-m $N/System.map -O $N/offsets trace > $T/t2 2>&1
rc=$?
cat $T/t2 | grep -v '^\[' | sed 's/^/# /'
if [ $rc = 0 ] && grep -q 'LSTAR.*BLOCKED' $T/t2 &&
   wait_for $Q.guest 'LSTAR after the write.*write blocked' 10 &&
   wait_for $Q.guest '^guest: alive 5' 20; then
	ok "blocked LSTAR write stays blocked, the guest lives on"
else
	nok "blocked LSTAR write stays blocked, the guest lives on" "rc=$rc" \
		"$(show $T/t2 30)" "$(show $Q.guest)"
fi

# 3. the process list read from outside has the guest's services
if grep -q 'all expected processes found' $T/t2 &&
   grep -qE '^ +1 +1 +0 +init$' $T/t2 && grep -qE '\[kthreadd\]' $T/t2; then
	ok "process list from outside: init, kthreadd, webd, dbd, backupd"
else
	nok "process list from outside: init, kthreadd, webd, dbd, backupd" "$(show $T/t2 40)"
fi

# 4. the tool dies: QEMU unhooks, and a new tool gets a new handshake
kvmi -s $Q.sock -a 30 -k $SECRET -Q -l 8 trace > $T/t4 2>&1 &
TP=$!
if wait_for $Q.qemu 'tool hooked (session 2)' 30; then
	kill -9 $TP; wait $TP 2>/dev/null
	if wait_for $Q.qemu 'unhooked (connection closed)' 10 2 &&
	   tool -k $SECRET -m $N/System.map -O $N/offsets ps > $T/t4b 2>&1 &&
	   grep -q 'tool hooked (session 3)' $Q.qemu && grep -q ' webd$' $T/t4b; then
		ok "tool killed: UNHOOK, then a new handshake"
	else
		nok "tool killed: UNHOOK, then a new handshake" "$(show $Q.qemu)" "$(show $T/t4b)"
	fi
else
	kill -9 $TP 2>/dev/null
	nok "tool killed: UNHOOK, then a new handshake" "no second session" "$(show $Q.qemu)"
fi

# 5. pause: the tool gets the UNHOOK event and leaves, then QEMU unhooks
kvmi -s $Q.sock -a 30 -k $SECRET -Q -l 8 trace > $T/t5 2>&1 &
TP=$!
if wait_for $Q.qemu 'tool hooked (session 4)' 30 && kvmi qmp $Q.qmp stop &&
   gone $TP 15 && grep -q 'UNHOOK: the VMM is about to unhook us' $T/t5 &&
   wait_for $Q.qemu 'unhooked (paused)' 5 && kvmi qmp $Q.qmp cont; then
	ok "pause: PREUNHOOK, the tool leaves, UNHOOK"
else
	kill -9 $TP 2>/dev/null
	nok "pause: PREUNHOOK, the tool leaves, UNHOOK" "$(show $T/t5)" "$(show $Q.qemu)"
fi

# 6. quit while the vCPU waits inside an event: QEMU exits, the tool sees EOF
kvmi -s $Q.sock -a 30 -k $SECRET -H trace > $T/t6 2>&1 &
TP=$!
if wait_for $T/t6 'holding this event' 30 && kvmi qmp $Q.qmp quit &&
   gone $QPID 20 && gone $TP 10 && grep -q 'closed the connection' $T/t6; then
	ok "quit while a vCPU is inside an event"
else
	nok "quit while a vCPU is inside an event" "$(show $T/t6)" "$(show $Q.qemu)"
fi
stop_qemu; kill -9 $TP 2>/dev/null

# --- QEMU B: the guest reboots every 3 s -----------------------------------
qemu_start b "guest.reboot=1"

# 7. guest reboot with the tool attached: UNHOOK at reset, a new session after
kvmi -s $Q.sock -a 30 -k $SECRET -q $Q.qmp -Q -l 8 trace > $T/t7 2>&1 &
TP=$!
if wait_for $Q.guest 'guest: rebooting' $GUEST_WAIT && gone $TP 20 &&
   grep -q 'closed the connection' $T/t7 && grep -qE 'unhooked \((guest reset|connection closed)\)' $Q.qemu &&
   tool -k $SECRET -Q -t 1 trace > $T/t7b 2>&1 &&
   grep -q 'tool hooked (session 2)' $Q.qemu &&
   wait_for $Q.guest 'guest: init started' $GUEST_WAIT 2; then
	ok "guest reboot with the tool attached: UNHOOK, new session, guest boots again"
else
	kill -9 $TP 2>/dev/null
	nok "guest reboot with the tool attached: UNHOOK, new session, guest boots again" \
		"$(show $T/t7)" "$(show $T/t7b)" "$(show $Q.qemu)" "$(show $Q.guest)"
fi

stop_qemu; kill -9 $TP 2>/dev/null

# --- QEMU C: a guest that boots normally (B's resets would end the session)
qemu_start c ""

# 8. QEMU killed while the vCPU waits for a reply: the tool sees EOF
kvmi -s $Q.sock -a 30 -k $SECRET -q $Q.qmp -H trace > $T/t8 2>&1 &
TP=$!
if wait_for $T/t8 'holding this event' 60 && kill -9 $QPID && gone $QPID 10 &&
   gone $TP 10 && grep -q 'closed the connection' $T/t8; then
	ok "QEMU killed while a vCPU waits: the tool sees EOF"
else
	nok "QEMU killed while a vCPU waits: the tool sees EOF" "$(show $T/t8)" "$(show $Q.qemu)"
fi
stop_qemu; kill -9 $TP 2>/dev/null
exit 0
