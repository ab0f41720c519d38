#!/usr/bin/env python3
"""A sequential login's critical path, step by step, from system calls.

Reads `perf script -F comm,tid,time,event,trace` of
`perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -a` taken
while one PAM client (pam_bench, COMM_CLIENT) logs in one login after
another through one daemon (its threads named COMM_DAEMON...), and prints
the median time of each step of a login with its code:

  the client's connect, the daemon's accept, its read of the first request,
  its prompt, the client's code, the daemon's read of it, its sync call, the
  reply, and the client's time until its next connect.

Each step runs from one system call to the next along the login's path,
whichever process makes it, so the steps add up to the whole login; a
step's time includes the wakeup of the process that takes the next one.
Tracing every system call of the machine slows each one down (a few µs), so
the sum is larger than an untraced login: compare the steps between two
daemons traced the same way, not with the benchmark's medians.

usage: perf script ... | profile_timeline.py COMM_CLIENT COMM_DAEMON_PREFIX
"""

import re
import statistics
import sys

READS = {0, 45}  # read, recvfrom
WRITES = {1, 44}  # write, sendto
SYNCS = {74, 75}  # fsync, fdatasync
CONNECT, ACCEPT4, ACCEPT = 42, 288, 43

LINE = re.compile(
    r"^\s*(?P<comm>.+?)\s+(?P<tid>\d+)\s+(?P<time>\d+\.\d+):\s+raw_syscalls:sys_(?P<kind>enter|exit):\s+NR (?P<nr>\d+)\s*"
    r"(?:\((?P<args>[^)]*)\)|= (?P<ret>-?\d+))"
)

# The instants of a login, in the order they come.
ORDER = ["connect", "accepted", "read1", "prompt", "client_read1", "code", "read2", "sync", "synced", "reply",
         "client_read2", "next_connect"]

STEPS = [
    ("connect", "the client's connect until the daemon's accept returns"),
    ("request", "accepted until the first request is read"),
    ("prompt", "the daemon's work on it, until the prompt is sent"),
    ("to client", "the prompt sent until the client has read it"),
    ("client", "the client: the prompt read until the code is sent"),
    ("to daemon", "the code sent until the daemon has read it"),
    ("check", "the daemon's work on the code, until its sync call"),
    ("sync", "the sync call (fsync/fdatasync)"),
    ("decided", "the sync returned until the reply is sent"),
    ("to client", "the reply sent until the client has read it"),
    ("next", "the client: the reply read until its next connect"),
]


def events(lines, client, daemon):
    """(time, who, kind, nr, fd) at an enter and (..., (fd, ret)) at an exit,
    for the client's and the daemon's calls."""
    pending = {}  # tid -> the first argument (a descriptor) of its last enter
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        comm = m["comm"]
        who = "C" if comm == client else "D" if comm.startswith(daemon) else None
        if who is None:
            continue
        tid, nr, t = m["tid"], int(m["nr"]), float(m["time"]) * 1e6
        if m["kind"] == "enter":
            first = m["args"].split(",")[0].strip() if m["args"] else ""
            fd = int(first, 16) if re.fullmatch(r"[0-9a-fA-F]+", first) else -1
            pending[tid] = fd
            yield t, who, "enter", nr, fd
        else:
            yield t, who, "exit", nr, (pending.pop(tid, -1), int(m["ret"]))


def logins(evs):
    """The times of each login's steps (a dict per complete login)."""
    logins, cur, conn = [], None, None
    for t, who, kind, nr, val in evs:
        if who == "C" and kind == "enter" and nr == CONNECT:
            if cur is not None and len(cur) == 11:
                cur["next_connect"] = t
                logins.append(cur)
            cur, conn = {"connect": t}, None
            continue
        if cur is None:
            continue
        n = len(cur)  # the steps seen so far: the next one is order[n]
        if who == "D" and kind == "exit" and nr in (ACCEPT4, ACCEPT) and n == 1 and val[1] >= 0:
            conn = val[1]
            cur["accepted"] = t
        elif who == "D" and kind == "exit" and nr in READS and val[0] == conn and val[1] > 0 and n in (2, 6):
            cur[ORDER[n]] = t
        elif who == "D" and kind == "enter" and nr in WRITES and val == conn and n in (3, 9):
            cur[ORDER[n]] = t
        elif who == "C" and kind == "exit" and nr in READS and val[1] > 0 and n in (4, 10):
            cur[ORDER[n]] = t
        elif who == "C" and kind == "enter" and nr in WRITES and n == 5:
            cur["code"] = t
        elif who == "D" and nr in SYNCS and ((kind == "enter" and n == 7) or (kind == "exit" and n == 8)):
            cur[ORDER[n]] = t
    return logins


def main():
    client, daemon = sys.argv[1], sys.argv[2]
    done = logins(events(sys.stdin, client, daemon))
    if not done:
        print("no complete login found in the trace")
        return
    print(f"{len(done):,} logins traced; median µs of each step:")
    total = 0.0
    for (name, what), a, b in zip(STEPS, ORDER, ORDER[1:]):
        values = [login[b] - login[a] for login in done if b in login and a in login]
        median = statistics.median(values)
        total += median
        print(f"  {median:8.1f}  {name:<10} {what}")
    whole = statistics.median(login["next_connect"] - login["connect"] for login in done)
    print(f"  {total:8.1f}  (sum of the medians; the median whole login, connect to next connect: {whole:.1f})")


if __name__ == "__main__":
    main()
