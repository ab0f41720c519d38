#!/usr/bin/env python3
"""Summarise why mfad's threads left the CPU, per login.

Reads `perf script -F comm,tid,event,trace,ip,sym` of a
`perf record -e sched:sched_switch -g -p MFAD_PID` (kernel call stacks)
on stdin; prints, per login, each way a thread of mfad stopped running:
its state (S: went to sleep waiting, D: waited for the disk, R: was
preempted while runnable) and the system call it was in (from the
kernel stack), and, for preemptions, which task took the CPU.

usage: perf script ... | profile_switches.py LOGINS
"""
import collections
import sys


def where(state, stack):
    """The system call a thread stopped in (the first frame naming a
    system call's entry), "preempted" when it was runnable and is not in
    one, else the innermost frame past schedule()."""
    for frame in stack:
        if frame.startswith(("__x64_sys_", "__sys_", "do_sys_")):
            return frame
    if state.startswith("R"):
        return "preempted"
    return stack[1] if len(stack) > 1 else "?"


def main():
    logins = int(sys.argv[1])
    reasons = collections.Counter()
    preempted_by = collections.Counter()
    head, stack = None, []

    def flush():
        if head is not None:
            comm, state, next_comm = head
            reasons[(comm, state, where(state, stack))] += 1
            if state.startswith("R"):
                preempted_by[next_comm] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            head, stack = None, []
        elif "sched:sched_switch" in line:
            state = line.split("prev_state=", 1)[1].split()[0] if "prev_state=" in line else "?"
            next_comm = line.split("next_comm=", 1)[1].split()[0] if "next_comm=" in line else "?"
            head = (line.split()[0], state, next_comm)
        else:
            parts = line.split()
            if len(parts) >= 2:
                stack.append(parts[1])
    flush()
    total = sum(reasons.values())
    print(f"{total:,} switches of mfad's threads over {logins:,} logins: {total / logins:.2f} per login")
    print("  per login  thread     state  where (system call)")
    for (comm, state, place), n in reasons.most_common():
        if n / logins >= 0.01:
            print(f"  {n / logins:9.2f}  {comm:<10} {state:<6} {place}")
    if preempted_by:
        print("preempted (state R) by, per login:")
        for comm, n in preempted_by.most_common(5):
            print(f"  {n / logins:9.2f}  {comm}")


if __name__ == "__main__":
    main()
