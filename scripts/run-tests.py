#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Boot a test kernel in QEMU and judge what ran inside it.

The guest prints KUnit's KTAP on ttyS0 (with the kernel log) and the KVM
selftests' KTAP on ttyS1 (tests/guest/init). Both are parsed with the
kernel's own KTAP parser (tools/testing/kunit/kunit_parser.py of the tree
under test). The run fails on a failed or crashed test, a kernel oops, BUG,
WARNING or panic, a missing KUnit suite or selftest, or a timeout.

Exit status 0 only when everything expected ran and passed (or skipped).
A JSON summary is written with --json for the README's results table.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

CRASH = re.compile(r"Kernel panic|Oops|BUG:|WARNING:|general protection fault|"
                   r"Call Trace:|kernel BUG|UBSAN:|KASAN:|KFENCE:|"
                   # lockdep and might_sleep(); most also say "WARNING:"/"BUG:"
                   r"possible circular locking|inconsistent lock state|"
                   r"possible recursive locking|sleeping function called from invalid context")


def parse(kunit_dir, lines):
    sys.path.insert(0, kunit_dir)
    import kunit_parser  # noqa: E402 (from the tree under test)
    return kunit_parser, kunit_parser.parse_run_tests(lines)


def leaves(test, prefix=""):
    """(name, status) of every test case, suites' children flattened."""
    name = f"{prefix}.{test.name}" if prefix else test.name
    if not test.subtests:
        yield name, test.status.name
    for sub in test.subtests:
        yield from leaves(sub, name if test.name else "")


def selftest_status(test):
    """A selftest's status; SKIPPED when every test case in it skipped."""
    statuses = {status for _, status in leaves(test)}
    return "SKIPPED" if statuses == {"SKIPPED"} else test.status.name


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--initrd", required=True)
    ap.add_argument("--src", required=True, help="kernel tree (for kunit_parser)")
    ap.add_argument("--logdir", required=True)
    ap.add_argument("--timeout", type=int, default=900, help="whole boot, seconds")
    ap.add_argument("--suite", action="append", default=[],
                    help="KUnit suite that must have run (repeatable)")
    ap.add_argument("--selftest", action="append", default=[],
                    help="selftest that must have run (repeatable)")
    ap.add_argument("--qemu-arg", action="append", default=[])
    ap.add_argument("--append", default="")
    ap.add_argument("--json", help="write a summary here")
    args = ap.parse_args()

    os.makedirs(args.logdir, exist_ok=True)
    console = os.path.join(args.logdir, "console.log")
    tap = os.path.join(args.logdir, "selftests.ktap")
    for f in (console, tap):
        if os.path.exists(f):
            os.unlink(f)
    cmd = ["qemu-system-x86_64", "-accel", "tcg", "-cpu", "EPYC-Milan",
           "-m", "2048", "-smp", "2", "-nographic", "-no-reboot",
           "-monitor", "none", "-serial", f"file:{console}",
           "-serial", f"file:{tap}",
           "-kernel", args.kernel, "-initrd", args.initrd,
           "-append", f"console=ttyS0 panic=-1 {args.append}".strip()] + args.qemu_arg
    print("+ " + " ".join(cmd), flush=True)
    start = time.monotonic()
    problems = []
    try:
        # QEMU's own messages (TCG lacks some EPYC-Milan features) go to a log.
        with open(os.path.join(args.logdir, "qemu.log"), "w") as qlog:
            subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                           timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        problems.append(f"timeout: the guest did not power off within {args.timeout} s")
    elapsed = time.monotonic() - start
    print(f"guest ran for {elapsed:.1f} s; logs in {args.logdir}", flush=True)

    with open(console, errors="replace") as f:
        klog = f.read().splitlines()
    for line in klog:
        if CRASH.search(line):
            problems.append(f"kernel log: {line.strip()}")
    if not any("guest: tests finished" in line for line in klog):
        problems.append("the guest's init did not finish")

    kunit_dir = os.path.join(args.src, "tools/testing/kunit")
    summary = {"seconds": round(elapsed, 1), "kunit": {}, "selftests": {}}
    results = {}
    if args.suite:
        print("=== KUnit (ttyS0) ===", flush=True)
        _, ktest = parse(kunit_dir, klog)
        if ktest.counts.errors:
            problems.append(f"KUnit output: {ktest.counts.errors} parse errors")
        suites = {s.name: s for s in ktest.subtests}
        for s in args.suite:
            if s not in suites:
                problems.append(f"KUnit suite {s} did not run")
        for name, status in leaves(ktest):
            results[f"kunit:{name}"] = status
        summary["kunit"] = {s.name: s.status.name for s in ktest.subtests}
    if args.selftest:
        print("=== KVM selftests (ttyS1) ===", flush=True)
        with open(tap, errors="replace") as f:
            _, stest = parse(kunit_dir, f.read().splitlines())
        if stest.counts.errors:
            problems.append(f"selftest output: {stest.counts.errors} parse errors")
        ran = {t.name: t for t in stest.subtests}
        for s in args.selftest:
            if os.path.basename(s) not in ran:
                problems.append(f"selftest {s} did not run")
        for name, status in leaves(stest):
            results[f"selftest:{name}"] = status
        # A kselftest-harness test whose subtests all skipped exits 0, so
        # its own line says "ok": report it as skipped, as its leaves are.
        summary["selftests"] = {t.name: selftest_status(t) for t in stest.subtests}

    counts = {"passed": 0, "failed": 0, "skipped": 0}
    for name, status in results.items():
        if status == "SUCCESS":
            counts["passed"] += 1
        elif status == "SKIPPED":
            counts["skipped"] += 1
        else:
            counts["failed"] += 1
            problems.append(f"{name}: {status}")
    summary.update(counts)
    summary["problems"] = problems
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1, sort_keys=True)
    for p in problems:
        print(f"PROBLEM: {p}")
    print(f"boot: {counts['passed']} passed, {counts['failed']} failed, "
          f"{counts['skipped']} skipped")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
