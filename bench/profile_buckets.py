#!/usr/bin/env python3
"""mfad's CPU time by activity, from the call stacks of a perf recording.

usage: perf script -i perf.data -F comm,tid,period,ip,sym | profile_buckets.py LOGINS

Each sample goes into the first bucket below one of whose patterns matches a
frame of its stack (kernel and user frames, leaf to root), "other" if none.
Prints, per bucket, its share of mfad's samples and the CPU time it takes per
login (sample periods in ns / LOGINS, the logins made while recording); then
what "other" holds, and how many threads of each name the samples came from
(threads started per request show up there).

The samples are on-CPU time only (perf's cpu-clock event): time mfad spends
waiting (for the disk to finish an fsync, for the next request) is not in
them. In a virtual machine without a PMU the sampling interrupt lands when
interrupts are enabled again, so some time shows up in finish_task_switch and
_raw_spin_unlock_irqrestore: it is counted with what the stack was doing.
"""
import collections
import re
import sys

BUCKETS = [
    ("fsync (SQLite commit)", r"do_fsync|__x64_sys_fsync|__x64_sys_fdatasync|\bunixSync\b"),
    ("thread creation and exit (clone3, exit)", r"__do_sys_clone|kernel_clone|copy_process|wake_up_new_task|"
                                                r"__x64_sys_exit\b|do_exit|std::thread::Builder.*spawn|"
                                                r"std::sys::thread::unix::Thread>::new$|pthread_create"),
    ("socket I/O to the PAM client", r"unix_stream_|__sys_accept|unix_accept|__x64_sys_accept|mio::net::uds::stream|"
                                     r"mio::net::uds::listener|__x64_sys_shutdown"),
    ("audit / syslog datagrams", r"unix_dgram_|mfad::audit::"),
    ("thread hand-offs (futex, eventfd, epoll, context switches)",
     r"futex|eventfd|__x64_sys_epoll_wait|do_epoll_wait|try_to_wake_up|__schedule\b|finish_task_switch|"
     r"tokio::runtime::.*(park|unpark|Unparker|spawn_blocking|spawn_task|Notify|wake)|std::sync::mpmc|Condvar|"
     r"__x64_sys_sched_yield|tokio::sync::"),
    ("NSS lookups (account by name)", r"^comm:nss-lookup$|_nss_|getpw(nam|uid)|getgr(nam|gid)|"
                                      r"mfad::nss::(?!with_early_answer)"),
    ("PBKDF2 / HMAC / SHA / OTP / sealing", r"pbkdf2|hmac|sha1::|sha2::|otp::|aes|chacha|poly1305|ring::|mfad::crypto::|"
                                            r"mfad::keys::.*(seal|open)"),
    ("JSON (serde_json, serde)", r"serde_json|serde_core::|serde::|Serialize|Deserialize"),
    ("SQLite (statements, pages, WAL writes)", r"sqlite3|rusqlite|\bwal[A-Z]|\bpager[A-Z]|\bbtree|unixWrite|unixRead"),
    ("store file checks (stat, open)", r"StoreFiles|store::files::|__x64_sys_(new)?fstatat|__x64_sys_statx|"
                                       r"__x64_sys_openat|__x64_sys_newfstat"),
    ("memory allocation", r"^(malloc|_int_malloc|_int_free|cfree|free|realloc|_int_realloc|unlink_chunk|"
                          r"malloc_consolidate|__libc_malloc|__libc_free)\b"),
]


def samples(lines):
    """(comm, tid, period, frames) per sample of `perf script -F comm,tid,period,ip,sym`."""
    head, frames = None, []
    for line in lines:
        if not line.strip():
            if head:
                yield head[0], head[1], head[2], frames
            head, frames = None, []
        elif line[0] not in " \t":
            parts = line.split()
            # comm may contain spaces: the last two fields are tid and period.
            head = (" ".join(parts[:-2]), parts[-2], int(parts[-1]))
            frames = []
        else:
            parts = line.split(None, 1)
            sym = parts[1] if len(parts) > 1 else ""
            frames.append(re.sub(r" \([^()]*\)$", "", sym.strip()))
    if head:
        yield head[0], head[1], head[2], frames


def main() -> None:
    logins = int(sys.argv[1])
    compiled = [(name, re.compile(pattern)) for name, pattern in BUCKETS]
    totals = {name: 0 for name, _ in BUCKETS}
    totals["other"] = 0
    other = collections.Counter()  # innermost frame of ours in "other"
    threads = collections.defaultdict(set)  # comm: thread ids seen
    count = 0
    for comm, tid, period, frames in samples(sys.stdin):
        count += 1
        threads[comm].add(tid)
        keys = frames + [f"comm:{comm}"]
        bucket = "other"
        for name, pattern in compiled:
            if any(pattern.search(frame) for frame in keys):
                bucket = name
                break
        totals[bucket] += period
        if bucket == "other":
            ours = [f for f in frames if f.startswith(("mfad::", "<mfad::", "mfa_shared::", "<mfa_shared::"))]
            other[ours[0] if ours else frames[0] if frames else "?"] += period
    total = sum(totals.values()) or 1
    print(f"{count:,} samples of mfad, {total / 1e6:,.1f} ms of CPU over {logins:,} logins: "
          f"{total / 1e3 / logins:.1f} µs of mfad CPU per login")
    print(f"{'share':>7}  {'µs/login':>8}  activity")
    for name, ns in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{100 * ns / total:6.1f}%  {ns / 1e3 / logins:8.1f}  {name}")
    print('"other", by its innermost function of ours (else its leaf):')
    for name, ns in other.most_common(8):
        print(f"{100 * ns / total:6.1f}%  {ns / 1e3 / logins:8.1f}  {name[:110]}")
    print("threads seen in the samples, by name: " +
          ", ".join(f"{comm} {len(tids):,}" for comm, tids in sorted(threads.items(), key=lambda kv: -len(kv[1]))))


if __name__ == "__main__":
    main()
