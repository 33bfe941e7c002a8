#!/usr/bin/env python3
"""Parse a KVMI harness serial log: per-test KTAP results, kernel splats,
missing completion marker. Usage:
  results.py LOG [TESTLIST [BUILD-FAILED-TEST...]] [--also PREFIX LOG [TESTLIST [BUILD-FAILED-TEST...]]]...
Each --also log (make test: the distro boot, the package test) is parsed the
same way, its case names prefixed with "PREFIX: "; the counts add up.
Prints failures (with diagnostics), skips (with reasons), splats (with
context), the "# INFO: " lines of the tests (kvmi_stress' summary), the
splat count and a final line "N passed, N failed, N skipped".
Exit status: 0 if nothing failed, 1 otherwise."""
import re
import sys

KTIME = re.compile(r'^\[\s*\d+\.\d+\]')
ANSI = re.compile(r'\x1b\[[0-9;?]*[A-Za-z]')
RESULT = re.compile(r'^(not )?ok\s+(\d+)\s*(?:-\s*)?(.*?)\s*$')
# What kvmi_test's TEST_REQUIRE prints when introspection is missing.
NEEDS_KVMI = 'kvm_dev_introspection_cap()'
DIRECTIVE = re.compile(r'\s#\s*(SKIP|TODO|XFAIL)\b:?\s*(.*)$', re.I)
PLAN = re.compile(r'^1\.\.(\d+)(?:\s*#\s*(?:SKIP)?\s*(.*))?')

# Kernel report headers. Case-sensitive on purpose: the benign boot line
# 'PCI: Using host bridge windows from ACPI; if necessary, use "pci=nocrs"
# and report a bug' must not match.
SPLAT = re.compile(
    r'\bBUG:|kernel BUG at|\bWARNING:|\bKASAN:|\bUBSAN:|'
    r'possible circular locking|possible recursive locking|'
    r'inconsistent lock state|\bOops\b|general protection fault|'
    r'Kernel panic|hung task|hung_task|blocked for more than \d+ seconds|'
    r'soft lockup|hard LOCKUP|self-detected stall|rcu_.*detected stalls|'
    r'kmemleak: \d+ new suspected|unreferenced object 0x|'
    r'list_(add|del) corruption|stack-protector|Kernel stack is corrupted')
KMEMLEAK = re.compile(r'kmemleak: \d+ new suspected|unreferenced object 0x')
END_TRACE = re.compile(r'---\[ end trace|^(\[\s*\d+\.\d+\]\s*)?={10,}\s*$')
# The kernel command line carries sysctl.kernel.hung_task_timeout_secs.
BENIGN = re.compile(r'Unhandled (WR|RD)MSR|use "pci=nocrs" and report a bug|'
                    r'[Cc]ommand line: |KVMI-HARNESS: cmdline: ')
MERGE_GAP = 30      # matches closer than this belong to one splat
CONTEXT_AFTER = 30
DIAG_MAX = 40


def scan(log, testlist=None, build_failed=()):
    """One log: (passed, failed, skipped, report lines, splat count)."""
    raw = open(log, 'rb').read().decode('utf-8', 'replace')
    lines = [ANSI.sub('', l).rstrip('\r') for l in raw.split('\n')]
    expected = []
    if testlist:
        for l in open(testlist):
            if l.split():
                expected.append(l.split()[0])

    passed = failed = skipped = 0
    fail_msgs, skip_msgs, pass_names = [], [], []
    info_msgs = []  # "# INFO: ..." lines a test prints (e.g. kvmi_stress' summary)

    # --- test sections -------------------------------------------------
    sections, order, cur = {}, [], None
    rcs, done = {}, False
    for i, l in enumerate(lines):
        s = l.strip()
        if s.startswith('KVMI-TEST-BEGIN '):
            cur = s.split()[1]
            order.append(cur)
            sections[cur] = {'lines': [], 'end_rc': None}
        elif s.startswith('KVMI-TEST-END ') and cur:
            parts = s.split()
            if len(parts) >= 3 and parts[1] == cur:
                sections[cur]['end_rc'] = int(parts[2])
            cur = None
        elif s.startswith('KVMI-TEST-RESULT '):
            parts = s.split()
            if len(parts) >= 3:
                rcs[parts[1]] = int(parts[2])
        elif s == 'KVMI-HARNESS-DONE':
            done = True
        elif cur is not None and not KTIME.match(l):
            sections[cur]['lines'].append(l)

    for name in build_failed:
        failed += 1
        fail_msgs.append((f'{name}: build failed',
                          ['see the build errors above / build/logs/selftests-*.log']))

    for name in expected:
        if name not in sections:
            failed += 1
            fail_msgs.append((name, ['(never started: harness did not get that far)']))

    for name in order:
        sec = sections[name]
        rc = rcs.get(name, sec['end_rc'])
        out = sec['lines']
        plan, results, last = None, [], 0
        for j, l in enumerate(out):
            if l.startswith('# INFO: '):
                info_msgs.append(f'{name}: {l[8:].strip()}')
            m = PLAN.match(l)
            if m and plan is None:
                plan = (int(m.group(1)), (m.group(2) or '').strip())
                continue
            m = RESULT.match(l)
            if not m:
                continue
            desc = m.group(3)
            d = DIRECTIVE.search(' ' + desc)
            directive, reason = (d.group(1).upper(), d.group(2).strip()) if d else (None, '')
            if d:
                desc = (' ' + desc)[:d.start()].strip()
            results.append((m.group(1) is None, desc or ('#' + m.group(2)),
                            directive, reason, out[last:j]))
            last = j + 1

        def tail_diag(chunk):
            chunk = [c for c in chunk if c.strip()]
            return chunk[-DIAG_MAX:]

        if results:
            any_fail = False
            for ok, desc, directive, reason, diag in results:
                tname = f'{name}: {desc}'
                if directive == 'SKIP' and any(NEEDS_KVMI in l for l in [reason] + diag):
                    # kvmi_test skips without the feature (TEST_REQUIRE);
                    # this kernel is built and booted with it.
                    failed += 1
                    fail_msgs.append((tname, ['skipped for want of KVM_CAP_INTROSPECTION']
                                      + tail_diag(diag)))
                elif directive == 'SKIP':
                    skipped += 1
                    skip_msgs.append((tname, reason))
                elif ok or directive in ('TODO', 'XFAIL'):
                    passed += 1
                    pass_names.append(tname)
                else:
                    any_fail = True
                    failed += 1
                    fail_msgs.append((tname, tail_diag(diag)))
            if plan and plan[0] > len(results):
                failed += 1
                fail_msgs.append((f'{name}: incomplete',
                                  [f'plan 1..{plan[0]} but only {len(results)} results (rc={rc})']
                                  + tail_diag(out[last:])))
            elif rc is None:
                failed += 1
                fail_msgs.append((f'{name}: did not finish', tail_diag(out[last:])))
            elif rc not in (0, 4) and not any_fail:
                failed += 1
                fail_msgs.append((f'{name}: exit code {rc}', tail_diag(out[last:])))
        else:
            if rc == 0:
                passed += 1
                pass_names.append(name)
            elif rc == 4:
                reason = plan[1] if plan and plan[1] else ''
                if not reason:
                    sk = [l for l in out if 'SKIP' in l or 'skip' in l.lower()]
                    reason = (sk[-1].strip() if sk else 'exit code 4 (KSFT_SKIP)')
                skipped += 1
                skip_msgs.append((name, reason))
            else:
                failed += 1
                why = 'did not finish (timeout/crash)' if rc is None else f'exit code {rc}'
                if rc == 124 or rc == 143:
                    why += ' (killed by timeout)'
                fail_msgs.append((f'{name}: {why}', tail_diag(out)))

    # --- kernel splats -------------------------------------------------
    # Consecutive matches of one kind (kernel report / kmemleak) within
    # MERGE_GAP lines, not separated by an "---[ end trace" line, are one splat.
    splats = []  # [first, last_match, kind]
    ended = False
    for i, l in enumerate(lines):
        if END_TRACE.search(l):
            ended = True
        m = SPLAT.search(l)
        if not m or BENIGN.search(l):
            continue
        kind = 'kmemleak' if KMEMLEAK.search(l) else 'kernel'
        if (splats and not ended and splats[-1][2] == kind
                and i - splats[-1][1] <= MERGE_GAP):
            splats[-1][1] = i
        else:
            splats.append([i, i, kind])
        ended = False
    for first, lastm, _ in splats:
        failed += 1
        hdr = SPLAT.search(lines[first])
        title = lines[first].strip()
        ctx = lines[max(0, first - 3): min(len(lines), max(first + CONTEXT_AFTER, lastm + 10))]
        fail_msgs.append((f'kernel splat at log line {first + 1}: {title}', ctx))

    if not done:
        failed += 1
        fail_msgs.append(('harness: KVMI-HARNESS-DONE missing (timeout, panic or hang)',
                          ['--- last 30 lines of the log ---'] + lines[-31:]))

    # --- report --------------------------------------------------------
    return (passed, failed, skipped, len(splats),
            [('PASS', n, None) for n in pass_names]
            + [('SKIP', f'{n}: {reason}', None) for n, reason in skip_msgs]
            + [('FAIL', n, diag) for n, diag in fail_msgs]
            + [('INFO', n, None) for n in info_msgs])


def main():
    args = sys.argv[1:]
    if not args or args[0] == '--also':
        sys.exit(__doc__)
    groups, cur = [], ['']
    for a in args:
        if a == '--also':
            groups.append(cur)
            cur = []
        else:
            cur.append(a)
    groups.append(cur)
    totals = [0, 0, 0, 0]
    report, logs = [], []
    for g in groups:
        prefix, rest = (g[0], g[1:])
        if not rest:
            sys.exit(__doc__)
        r = scan(rest[0], rest[1] if len(rest) > 1 else None, rest[2:])
        totals = [t + x for t, x in zip(totals, r[:4])]
        report += [(k, f'{prefix}: {n}' if prefix else n, d) for k, n, d in r[4]]
        logs.append(rest[0])
    for kind in ('PASS', 'SKIP', 'FAIL', 'INFO'):
        for k, n, diag in report:
            if k != kind:
                continue
            print(f'{k}  {n}')
            for d in diag or []:
                print(f'      | {d}')
    passed, failed, skipped, splats = totals
    print(f'kernel splats: {splats}')
    for log in logs:
        print(f'log: {log}')
    print(f'{passed} passed, {failed} failed, {skipped} skipped')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
