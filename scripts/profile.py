#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""scripts/profile.py <serial log>: where an event's round trip goes.

Reads the traces kvmi_bench -t dumps (BENCH-PROF-BEGIN/END: tracefs lines
of kvm_exit/kvm_entry, sched_wakeup/sched_switch, the tool thread's
recv()/write() syscalls and the functions kvmi_msg_send_event,
unix_stream_sendmsg and kernel_recvmsg) and cuts every HYPERCALL event of
the vCPU thread, from its kvm_exit to the next kvm_entry, at these points:

  exit        kvm_exit on the vCPU thread
  send        kvmi_msg_send_event() entered: KVM builds the event
  sent        unix_stream_sendmsg() entered by the vCPU: the event is built
  tool-woken  sched_wakeup of the tool thread      (a blocking tool only)
  tool-runs   sched_switch to the tool thread      (a blocking tool only)
  tool-read   the tool's last recv() with data before its reply
  reply       the tool's write() of the reply entered
  recv-woken  sched_wakeup of the receiving thread (when it reads the reply)
  reply-read  kernel_recvmsg() entered to read the reply (vCPU or receiving
              thread)
  vcpu-woken  sched_wakeup of the vCPU thread      (if it slept)
  vcpu-runs   sched_switch to the vCPU thread      (if it slept)
  entry       kvm_entry on the vCPU thread

A point that did not happen takes the time of the one before it, so its
segment is 0 and the time goes to the next one.  Prints the median and
mean of every segment and of the whole, per traced row.  The clock is
tracefs' "global" one, printed in whole microseconds.
"""
import re
import statistics
import sys

LINE = re.compile(r'^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+'
                  r'(?P<ts>\d+\.\d+):\s+(?P<what>[\w:]+?):?\s+(?P<rest>.*)$')
POINTS = ['exit', 'send', 'sent', 'tool-woken', 'tool-runs', 'tool-read',
          'reply', 'recv-woken', 'reply-read', 'vcpu-woken', 'vcpu-runs',
          'entry']
SEGMENTS = [
    ('exit', 'send', 'KVM: the exit, up to the event'),
    ('send', 'sent', 'KVM: the event built (registers, segments, MSRs)'),
    ('sent', 'tool-woken', 'sendmsg() until the tool is woken (IPI to its CPU)'),
    ('tool-woken', 'tool-runs', 'the tool thread waits for its CPU'),
    ('tool-runs', 'tool-read', 'the tool reads the event (recv)'),
    ('tool-read', 'reply', 'the tool answers'),
    ('reply', 'recv-woken', 'the receiving thread is woken by the write'),
    ('recv-woken', 'reply-read', 'it gets its CPU (or the polling vCPU sees the reply)'),
    ('reply-read', 'vcpu-woken', 'the reply read and stored, the vCPU woken'),
    ('vcpu-woken', 'vcpu-runs', 'the vCPU thread waits for its CPU'),
    ('vcpu-runs', 'entry', 'KVM: the reply applied, back into the guest'),
]


def parse(lines):
    ev = []
    for line in lines:
        m = LINE.match(line.replace('\r', ''))
        if not m:
            continue
        ev.append((float(m['ts']) * 1e6, int(m['pid']), m['comm'].strip(),
                   m['what'], m['rest']))
    ev.sort(key=lambda e: e[0])
    return ev


def field(rest, name):
    m = re.search(r'\b' + name + r'=(\S+)', rest)
    return m.group(1) if m else None


def events_of(ev, vcpu, tool):
    """Yields (points dict, handled-by comm) per event of the vCPU."""
    start = None
    for i, (ts, pid, comm, what, rest) in enumerate(ev):
        if pid != vcpu:
            continue
        if what == 'kvm_exit':
            start = i
        elif what == 'kvm_entry' and start is not None:
            window = ev[start:i + 1]
            start = None
            if any(w[3] == 'kvmi_msg_send_event' and w[1] == vcpu for w in window):
                yield cut(window, vcpu, tool)


def cut(window, vcpu, tool):
    t = {}
    by = None
    recv_woken = None
    for ts, pid, comm, what, rest in window:
        if what == 'kvm_exit':
            t.setdefault('exit', ts)
        elif what == 'kvmi_msg_send_event' and pid == vcpu:
            t.setdefault('send', ts)
        elif 'send' not in t:
            continue
        elif what == 'unix_stream_sendmsg' and pid == vcpu:
            t.setdefault('sent', ts)
        elif 'reply' not in t:
            if what == 'sched_wakeup' and field(rest, 'pid') == str(tool):
                t.setdefault('tool-woken', ts)
            elif what == 'sched_switch' and field(rest, 'next_pid') == str(tool):
                t.setdefault('tool-runs', ts)
            elif what == 'sys_exit' and pid == tool:
                t['tool-read'] = ts
            elif what == 'sys_enter' and pid == tool:
                t['reply'] = ts
        elif 'reply-read' not in t:
            if what == 'sched_wakeup' and (field(rest, 'comm') or '').startswith('kvmi/'):
                recv_woken = recv_woken or ts
            elif what == 'kernel_recvmsg' and (pid == vcpu or comm.startswith('kvmi/')):
                t['reply-read'] = ts
                by = 'vCPU' if pid == vcpu else 'receiving thread'
                if by != 'vCPU' and recv_woken is not None:
                    t['recv-woken'] = recv_woken
        elif what == 'sched_wakeup' and field(rest, 'pid') == str(vcpu):
            t.setdefault('vcpu-woken', ts)
        elif what == 'sched_switch' and field(rest, 'next_pid') == str(vcpu):
            t.setdefault('vcpu-runs', ts)
        if what == 'kvm_entry':
            t['entry'] = ts
    prev = None
    for p in POINTS:
        if p not in t:
            t[p] = prev
        prev = t[p]
    return t, by


def report(tag, head, lines):
    vcpu = int(field(head, 'vcpu'))
    tool = int(field(head, 'tool'))
    guest_med = field(head, 'median_us')
    ev = parse(lines)
    evs = [e for e in events_of(ev, vcpu, tool) if None not in e[0].values()]
    print(f'\n{tag}: {len(evs)} events traced (guest-timed median with tracing: {guest_med} us)')
    if not evs:
        print('  no complete event in the trace')
        return False
    total = [e[0]['entry'] - e[0]['exit'] for e in evs]
    print(f'  {"segment":<26} {"median us":>9} {"mean us":>8} {"share":>6}  what')
    mean_total = statistics.mean(total)
    for a, b, what in SEGMENTS:
        d = [e[0][b] - e[0][a] for e in evs]
        print(f'  {a + " -> " + b:<26} {statistics.median(d):9.1f} {statistics.mean(d):8.1f} '
              f'{100 * statistics.mean(d) / mean_total:5.0f}%  {what}')
    print(f'  {"exit -> entry (total)":<26} {statistics.median(total):9.1f} {mean_total:8.1f}   100%')
    slept = sum(1 for e in evs if e[0]['vcpu-woken'] != e[0]['reply-read'])
    woke = sum(1 for e in evs if e[0]['tool-woken'] != e[0]['sent'])
    byv = sum(1 for e in evs if e[1] == 'vCPU')
    print(f'  the tool was woken for {100 * woke / len(evs):.0f}% of the events; '
          f'the vCPU read the reply itself in {100 * byv / len(evs):.0f}%, '
          f'slept in {100 * slept / len(evs):.0f}%')
    return True


def main():
    rows = {}
    cur = None
    with open(sys.argv[1], errors='replace') as f:
        for line in f:
            line = line.rstrip('\r\n')
            if line.startswith('BENCH-PROF-BEGIN '):
                cur = line.split()[1]
                rows[cur] = (line, [])
            elif line.startswith('BENCH-PROF-END '):
                cur = None
            elif cur:
                rows[cur][1].append(line)
    if not rows:
        sys.exit('profile: no BENCH-PROF-BEGIN in ' + sys.argv[1])
    ok = all([report(tag, head, lines) for tag, (head, lines) in rows.items()])
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
