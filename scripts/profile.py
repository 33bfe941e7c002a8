#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""scripts/profile.py <serial log>: where an event's round trip goes.

Reads the traces kvmi_bench -t dumps (BENCH-PROF-BEGIN/END: tracefs lines
of kvm_exit/kvm_entry, sched_wakeup/sched_switch, the tool thread's
recv()/write() syscalls and the kvmi_msg_send_event/kvmi_check_reply
functions) and cuts every HYPERCALL event of the vCPU thread, from its
kvm_exit to the next kvm_entry, at these points:

  exit        kvm_exit on the vCPU thread
  send        kvmi_msg_send_event() entered (the event is built and sent)
  tool-woken  sched_wakeup of the tool thread      (a blocking tool only)
  tool-runs   sched_switch to the tool thread      (a blocking tool only)
  tool-read   the tool's last recv() with data before its reply
  reply       the tool's write() of the reply entered
  handled     kvmi_check_reply() entered (by the vCPU or the receiving thread)
  vcpu-woken  sched_wakeup of the vCPU thread      (if it slept)
  vcpu-runs   sched_switch to the vCPU thread      (if it slept)
  entry       kvm_entry on the vCPU thread

A point that did not happen takes the time of the one before it, so its
segment is 0 and the time goes to the next one.  Prints the median of
every segment and of the whole, per traced row.
"""
import re
import statistics
import sys

LINE = re.compile(r'^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+'
                  r'(?P<ts>\d+\.\d+):\s+(?P<what>[\w:]+?):?\s+(?P<rest>.*)$')
POINTS = ['exit', 'send', 'tool-woken', 'tool-runs', 'tool-read', 'reply',
          'handled', 'vcpu-woken', 'vcpu-runs', 'entry']
SEGMENTS = [
    ('exit -> send', 'KVM: the exit up to the event'),
    ('send -> tool-woken', 'event state, sendmsg() until the tool is woken'),
    ('tool-woken -> tool-runs', 'the tool thread waits for a CPU'),
    ('tool-runs -> tool-read', 'the tool reads the event (recv)'),
    ('tool-read -> reply', 'the tool answers'),
    ('reply -> handled', 'the reply reaches a kernel thread (write, wake-up or poll, read)'),
    ('handled -> vcpu-woken', 'reply stored, vCPU woken (if it slept)'),
    ('vcpu-woken -> vcpu-runs', 'the vCPU thread waits for a CPU'),
    ('vcpu-runs -> entry', 'KVM: the reply applied, back into the guest'),
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
    for ts, pid, comm, what, rest in window:
        if what == 'kvm_exit':
            t.setdefault('exit', ts)
        elif what == 'kvmi_msg_send_event' and pid == vcpu:
            t.setdefault('send', ts)
        elif 'send' not in t:
            continue
        elif what == 'sched_wakeup' and field(rest, 'pid') == str(tool) and 'reply' not in t:
            t.setdefault('tool-woken', ts)
        elif what == 'sched_switch' and field(rest, 'next_pid') == str(tool) and 'reply' not in t:
            t.setdefault('tool-runs', ts)
        elif what == 'sys_exit' and pid == tool and 'reply' not in t:
            t['tool-read'] = ts
        elif what == 'sys_enter' and pid == tool:
            t.setdefault('reply', ts)
        elif what == 'kvmi_check_reply' and 'reply' in t:
            if 'handled' not in t:
                t['handled'] = ts
                by = 'vCPU' if pid == vcpu else comm.split('/')[0]
        elif what == 'sched_wakeup' and field(rest, 'pid') == str(vcpu) and 'handled' in t:
            t.setdefault('vcpu-woken', ts)
        elif what == 'sched_switch' and field(rest, 'next_pid') == str(vcpu) and 'handled' in t:
            t.setdefault('vcpu-runs', ts)
        elif what == 'kvm_entry':
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
    for seg, what in SEGMENTS:
        a, b = seg.split(' -> ')
        d = [e[0][b] - e[0][a] for e in evs]
        print(f'  {seg:<26} {statistics.median(d):9.1f} {statistics.mean(d):8.1f} '
              f'{100 * statistics.mean(d) / mean_total:5.0f}%  {what}')
    print(f'  {"exit -> entry (total)":<26} {statistics.median(total):9.1f} {mean_total:8.1f}   100%')
    slept = sum(1 for e in evs if e[0]['vcpu-woken'] != e[0]['handled'])
    woke = sum(1 for e in evs if e[0]['tool-woken'] != e[0]['send'])
    byv = sum(1 for e in evs if e[1] == 'vCPU')
    print(f'  the tool was woken for {100 * woke / len(evs):.0f}% of the events; '
          f'the vCPU slept in {100 * slept / len(evs):.0f}%; '
          f'the vCPU handled the reply itself in {100 * byv / len(evs):.0f}%')
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
