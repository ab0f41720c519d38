#!/usr/bin/env python3
"""Prints the benchmark's tables (Markdown) from the JSON lines of one run.

usage: report.py RESULTS.jsonl

Lines are pam_bench's output (scenario, module, successes, failures,
median_us, p99_us, throughput_per_s, ...), plus {"kind": "machine", ...},
{"kind": "rss", ...} and {"kind": "skipped", ...} lines written by run.sh,
and {"kind": "floor", "floor": ..., "when": "start" | "end", ...} lines
(bench_floor and floor_sqlite.py: the physical floor under a login on the
machine and file system of the run). Our figures are also given against
their floor, measured at the start of the run: a sequential login against
one fdatasync plus two Unix socket round trips (the module's two requests),
and against one SQLite commit plus two round trips; the no-code round trip
against one socket round trip.
The fleet rows are mfad on a PostgreSQL store: module "pam_mfa (ours),
PostgreSQL" through one daemon, "..., 2 hosts" through two daemons on one
database (such a row has successes_by_service, one PAM service per daemon).
They carry the scenario label of the SQLite rows they are compared with.
The rows of module "ideal daemon (I/O only)" are the same module against
bench_ideal, a daemon that only reads the requests and sends canned
answers, with one fdatasync per verified login: what any daemon costs this
client at the least. Each speed target also says how the ideal daemon
fares against it (a target it misses is out of reach for any daemon here).
The rows of "ideal + SQLite + 2 audit lines" and "... 1 audit line" are
bench_ideal doing the I/O the product itself must do: a SQLite commit
(mfad's pragmas) instead of the bare fdatasync, and audit lines to the
run's syslog sink, two per login as mfad's or one; "ideal + 1 audit line"
is the no-code login with its one line. A target these miss is out of
reach for any daemon with this store and this audit trail here.
"""
import json
import sys

OURS, GA, OATH = "pam_mfa (ours)", "google-authenticator", "pam_oath"
OURS_PG = "pam_mfa (ours), PostgreSQL"
OURS_FLEET = "pam_mfa (ours), PostgreSQL, 2 hosts"
IDEAL = "ideal daemon (I/O only)"
IDEAL_LINES = "ideal + SQLite + 2 audit lines"
IDEAL_LINE = "ideal + SQLite + 1 audit line"
IDEAL_NOCODE_LINE = "ideal + 1 audit line"

SEQ = "(a) sequential, 1 user"



def target_lines(title, targets):
    """A title, then one line per (met, text): met is True, False or None."""
    lines = [title, ""]
    for ok, text in targets:
        mark = "not measured" if ok is None else ("MET" if ok else "NOT MET")
        lines.append(f"- {mark}: {text}")
    return lines

def throughput_label(p):
    return f"(b) throughput, {p} client" + ("" if p == 1 else "s")


def contested_label(p):
    return f"(d) contested, {p} procs"


def scale_label(n):
    return f"(c) scale, {n:,} user" + ("" if n == 1 else "s")


NOCODE = "(f) no-code round trip"


def fmt(x, digits=1):
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}"


def ratio(a, b):
    return None if not a or not b else a / b


def main() -> None:
    rows, rss, skipped, machine, floors = [], [], [], {}, {}
    with open(sys.argv[1]) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            doc = json.loads(line)
            kind = doc.get("kind", "bench")
            if kind == "machine":
                machine = doc
            elif kind == "rss":
                rss.append(doc)
            elif kind == "skipped":
                skipped.append(doc)
            elif kind == "floor":
                floors[(doc.get("when", "start"), doc["floor"])] = doc
            else:
                rows.append(doc)
    by = {(r["scenario"], r["module"]): r for r in rows}

    out = []
    if machine:
        out.append(
            f"Run {machine.get('date')} on {machine.get('nproc')} x {machine.get('cpu')}, "
            f"kernel {machine.get('kernel')}, {machine.get('os')}; scratch on {machine.get('fs')}; "
            f"commit {machine.get('commit')}; {machine.get('peers')}; PostgreSQL {machine.get('postgres', '-')}; "
            f"sizes: {machine.get('sizes')}; "
            f"load average {machine.get('load_start')} at the start, {machine.get('load_end')} at the end; "
            f"the scenarios took {machine.get('elapsed_s')} s."
        )
        out.append("")

    # The floor, measured by the run itself.
    def floor(name):
        """Median µs of a floor, from the start of the run (else the end)."""
        f = floors.get(("start", name)) or floors.get(("end", name))
        return f["median_us"] if f else None

    names = list(dict.fromkeys(name for _, name in floors))
    if names:
        out.append("The floor on this machine, in the run's scratch directory (the stores' file system), measured "
                   "by the run itself at its start and again at its end:")
        out.append("")
        out.append("| floor | what | iterations | median µs | p99 µs | at the end: median µs | p99 µs |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        for name in names:
            f, e = floors.get(("start", name), {}), floors.get(("end", name), {})
            out.append(f"| {name} | {(f or e).get('what')} | {fmt((f or e).get('iterations'))} | "
                       f"{fmt(f.get('median_us'))} | {fmt(f.get('p99_us'))} | "
                       f"{fmt(e.get('median_us'))} | {fmt(e.get('p99_us'))} |")
        out.append("")

    # A round trip's floor is the one with both ends on one CPU: the least
    # two processes pay here. Unpinned, a wakeup may cross to the other
    # CPU, which in a virtual machine costs more the idler that CPU is.
    sync, commit, connect = floor("fdatasync"), floor("sqlite_commit"), floor("unix_connect_rtt")
    connect1 = floor("unix_connect_rtt_1cpu")
    placed = floor("unix_rtt")
    rtt = floor("unix_rtt_1cpu") or placed
    seq_floor = sync + 2 * rtt if sync and rtt else None
    seq_sqlite_floor = commit + 2 * rtt if commit and rtt else None
    against = []
    a, n = by.get((SEQ, OURS)), by.get((NOCODE, OURS))
    if a and seq_floor:
        against.append(f"- sequential login median {a['median_us']:,.1f} µs = **{a['median_us'] / seq_floor:.2f}x** "
                       f"the floor of one fdatasync + 2 socket round trips ({sync:,.1f} + 2 x {rtt:,.1f} = "
                       f"{seq_floor:,.1f} µs); {a['median_us'] - seq_floor:,.1f} µs above it" +
                       (f"; {a['median_us'] / (sync + 2 * placed):.2f}x the same with the round trips as the "
                        f"scheduler placed them ({sync + 2 * placed:,.1f} µs)" if placed and placed != rtt else ""))
    if a and seq_sqlite_floor:
        against.append(f"- sequential login median {a['median_us']:,.1f} µs = **{a['median_us'] / seq_sqlite_floor:.2f}x** "
                       f"one SQLite commit + 2 socket round trips ({commit:,.1f} + 2 x {rtt:,.1f} = "
                       f"{seq_sqlite_floor:,.1f} µs); {a['median_us'] - seq_sqlite_floor:,.1f} µs above it")
    if n and rtt:
        against.append(f"- no-code round trip median {n['median_us']:,.1f} µs = **{n['median_us'] / rtt:.2f}x** one "
                       f"socket round trip ({rtt:,.1f} µs)" +
                       (f"; {n['median_us'] / placed:.2f}x one as the scheduler placed it ({placed:,.1f} µs)"
                        if placed and placed != rtt else "") +
                       (f"; {n['median_us'] / connect:.2f}x a connect + one round trip + close ({connect:,.1f} µs)"
                        if connect else "") +
                       (f", {n['median_us'] / connect1:.2f}x the same on one CPU ({connect1:,.1f} µs)"
                        if connect1 else ""))
    # Each ideal daemon, as the report's readers know it.
    described = {
        IDEAL: "the ideal daemon (the same module; a daemon that only reads the requests, sends canned answers and, "
               "for a code, writes once and fdatasyncs)",
        IDEAL_LINES: f"{IDEAL_LINES} (the ideal daemon with the product's own I/O)",
        IDEAL_LINE: f"{IDEAL_LINE} (the ideal daemon with the product's own I/O)",
        IDEAL_NOCODE_LINE: f"{IDEAL_NOCODE_LINE} (the ideal daemon with the no-code login's audit line)",
    }
    for scenario, what in ((SEQ, "sequential login"), (throughput_label(32), "32 clients"), (NOCODE, "no-code round trip")):
        ours = by.get((scenario, OURS))
        for module, description in described.items():
            ideal = by.get((scenario, module))
            if not ours or not ideal:
                continue
            line = (f"- {what}, {description}: median {ideal['median_us']:,.1f} µs, "
                    f"{ideal['throughput_per_s']:,.0f} logins/s; ours {ours['median_us'] / ideal['median_us']:.2f}x "
                    f"its median, {ours['throughput_per_s'] / ideal['throughput_per_s']:.2f}x its throughput")
            if scenario == SEQ and seq_floor:
                line += f"; it is {ideal['median_us'] / seq_floor:.2f}x the floor"
            if scenario == NOCODE and rtt:
                line += f"; it is {ideal['median_us'] / rtt:.2f}x one socket round trip"
            against.append(line)
    if against:
        out.append("Ours against the floor (as measured at the start of the run; a socket round trip is "
                   "unix_rtt_1cpu, both ends on one CPU, the least a request and its reply between two processes "
                   "cost on this machine):")
        out.append("")
        out.extend(against)
        out.append("")

    out.append("| scenario | module | successes | failures | median µs | p99 µs | throughput /s |")
    out.append("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        out.append(
            f"| {r['scenario']} | {r['module']} | {fmt(r['successes'])} | {fmt(r['failures'])} | "
            f"{fmt(r['median_us'])} | {fmt(r['p99_us'])} | {fmt(r['throughput_per_s'])} |"
        )
    out.append("")

    # Ratios, pair by pair from this run: every scenario that has both rows.
    out.append("Ratios ours / google-authenticator, pair by pair from this run (median and p99: below 1 "
               "is faster than google-authenticator; throughput: above 1 is more logins per second); "
               "ours / pam_oath alongside:")
    out.append("")
    out.append("| scenario | median | p99 | throughput | median vs pam_oath | throughput vs pam_oath |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["module"] != OURS or (r["scenario"], GA) not in by:
            continue
        g = by[(r["scenario"], GA)]
        o = by.get((r["scenario"], OATH), {})
        out.append(
            f"| {r['scenario']} | {fmt(ratio(r['median_us'], g['median_us']), 2)} | "
            f"{fmt(ratio(r['p99_us'], g['p99_us']), 2)} | "
            f"{fmt(ratio(r['throughput_per_s'], g['throughput_per_s']), 2)} | "
            f"{fmt(ratio(r['median_us'], o.get('median_us')), 2)} | "
            f"{fmt(ratio(r['throughput_per_s'], o.get('throughput_per_s')), 2)} |"
        )
    out.append("")

    # The PostgreSQL rows against ours on SQLite, same scenario, same run.
    pg_rows = [r for r in rows if r["module"] in (OURS_PG, OURS_FLEET) and (r["scenario"], OURS) in by]
    if pg_rows:
        out.append("Fleet rows against ours on SQLite (the same scenario in this run; median: below 1 is "
                   "faster than SQLite, throughput: above 1 is more logins per second):")
        out.append("")
        out.append("| scenario | module | median vs SQLite | p99 vs SQLite | throughput vs SQLite |")
        out.append("|---|---|---:|---:|---:|")
        for r in pg_rows:
            q = by[(r["scenario"], OURS)]
            out.append(
                f"| {r['scenario']} | {r['module']} | {fmt(ratio(r['median_us'], q['median_us']), 2)} | "
                f"{fmt(ratio(r['p99_us'], q['p99_us']), 2)} | "
                f"{fmt(ratio(r['throughput_per_s'], q['throughput_per_s']), 2)} |"
            )
        out.append("")

    contested = [r for r in rows if r.get("mode") == "contested"]
    if contested:
        out.append("Contested code: rounds by how many of the processes had the same code accepted "
                   "(spread: how far apart the processes' pam_authenticate calls began in a round)")
        out.append("")
        out.append("| module | procs | rounds | exactly one | accepted per round (accepted: rounds) "
                   "| codes repeated within 9 counters | spread median µs | spread max µs |")
        out.append("|---|---:|---:|---:|---|---:|---:|---:|")
        for r in contested:
            dist = ", ".join(f"{k}: {v}" for k, v in sorted(r["accepted_per_round"].items(), key=lambda kv: int(kv[0])))
            procs = r["procs"]
            daemons = r.get("successes_by_service")
            if daemons:
                procs = f"{procs} ({' + '.join([str(procs // len(daemons))] * len(daemons))})"
            out.append(f"| {r['module']} | {procs} | {fmt(r['rounds'])} | {fmt(r['rounds_exactly_one'])} | {dist} "
                       f"| {fmt(r.get('repeated_codes'))} "
                       f"| {fmt(r.get('start_spread_median_us'))} | {fmt(r.get('start_spread_max_us'))} |")
        out.append("")

    if rss:
        out.append("| mfad with | import s | VmRSS MiB after the logins | VmHWM (peak) MiB |")
        out.append("|---|---:|---:|---:|")
        for r in rss:
            users = f"{r['users']:,} user" + ("" if r["users"] == 1 else "s")
            out.append(f"| {users} | {r['import_s']} | {r['vmrss_kb'] / 1024:.1f} | {r['vmhwm_kb'] / 1024:.1f} |")
        out.append("")

    # Through which daemon the logins of a two-daemon row went.
    split = [r for r in rows if r.get("successes_by_service")]
    for r in split:
        by_daemon = ", ".join(f"{svc}: {fmt(n)}" for svc, n in r["successes_by_service"].items())
        what = "rounds won" if r.get("mode") == "contested" else "accepted logins"
        out.append(f"- {r['scenario']}, {r['module']}: {what} by PAM service (one per daemon): {by_daemon}.")
    if split:
        out.append("")

    # Failures outside the contested scenario, with what may explain them.
    notes = [r for r in rows if r["failures"] and r.get("mode") != "contested"]
    for r in notes:
        out.append(f"- {r['scenario']}, {r['module']}: {r['failures']:,} failed calls; "
                   f"{r.get('repeated_codes', 0)} of the codes offered reappear within the next 9 counters.")
    if notes:
        out.append("")

    for s in skipped:
        out.append(f"- skipped {s['what']}: {s['reason']}")
    if skipped:
        out.append("")

    # Where the CPU time went at 32 clients, per accepted login (pam_bench
    # --cpu-of, while its workers ran): the machine's busy and idle time,
    # the daemon's share of the busy time (mfad, or the ideal daemon) and
    # the rest (the clients, the kernel's work for them, the log sink).
    def cpu_per_login(scenario, module):
        r = by.get((scenario, module))
        if not r or "cpu" not in r or not r["successes"]:
            return None
        c, us = r["cpu"], 1e6 / r["cpu"]["ticks_per_s"] / r["successes"]
        return {"busy": c["busy_ticks"] * us, "idle": c["idle_ticks"] * us, "daemon": c["process_ticks"] * us}

    tp32 = throughput_label(32)
    daemons = (OURS, IDEAL, IDEAL_LINES, IDEAL_LINE)
    spent = [(m, cpu_per_login(tp32, m)) for m in (OURS, GA, IDEAL, IDEAL_LINES, IDEAL_LINE)]
    spent = [(m, c) for m, c in spent if c]
    if spent:
        out.append(f"CPU time per accepted login, {tp32}, while the workers ran (/proc/stat and the daemon's "
                   f"/proc/PID/stat, in clock ticks; {machine.get('nproc', '?')} CPUs):")
        out.append("")
        out.append("| module | busy µs | idle µs | the daemon µs | the rest µs (clients, kernel, log sink) |")
        out.append("|---|---:|---:|---:|---:|")
        for m, c in spent:
            daemon = fmt(c["daemon"]) if m in daemons else "-"
            rest = c["busy"] - c["daemon"] if m in daemons else c["busy"]
            out.append(f"| {m} | {fmt(c['busy'])} | {fmt(c['idle'])} | {daemon} | {fmt(rest)} |")
        out.append("")

    # The single-host targets.
    def row(scenario, module):
        return by.get((scenario, module))

    def ideal(scenario, figure):
        """How the ideal daemon fares by the same measure, for a target's
        line, and with the product's own I/O (a SQLite commit, audit lines)."""
        said = [f"; the ideal daemon: {figure(r)}" for r in [row(scenario, IDEAL)] if r]
        said += [f"; {m}: {figure(r)}" for m in (IDEAL_LINES, IDEAL_LINE, IDEAL_NOCODE_LINE)
                 for r in [row(scenario, m)] if r]
        return "".join(said)

    targets = []
    a, ga = row(SEQ, OURS), row(SEQ, GA)
    if a and ga:
        q = a["median_us"] / ga["median_us"]
        targets.append((q <= 0.6, f"sequential median <= 0.6x google-authenticator's: {q:.2f}x "
                                  f"({a['median_us']:.1f} vs {ga['median_us']:.1f} µs)" +
                                  ideal(SEQ, lambda r: f"{r['median_us'] / ga['median_us']:.2f}x")))
    if a and seq_floor:
        q = a["median_us"] / seq_floor
        targets.append((q <= 1.5, f"sequential median <= 1.5x the floor (fdatasync + 2 socket round trips, one CPU): "
                                  f"{q:.2f}x ({a['median_us']:.1f} vs {seq_floor:.1f} µs)" +
                                  ideal(SEQ, lambda r: f"{r['median_us'] / seq_floor:.2f}x")))
    else:
        targets.append((None, "sequential median <= 1.5x the floor (fdatasync + 2 socket round trips, one CPU): "
                              "not measured"))
    t, g = row(throughput_label(32), OURS), row(throughput_label(32), GA)
    if t and g:
        q = t["throughput_per_s"] / g["throughput_per_s"]
        budget = ""
        c, nproc = cpu_per_login(tp32, OURS), machine.get("nproc")
        if c and nproc:
            # What a login may cost in all at the target rate, less what the
            # rest of our run cost per login: what is left for mfad.
            per_login = int(nproc) * 1e6 / (3 * g["throughput_per_s"])
            rest = c["busy"] - c["daemon"]
            budget = (f"; at that rate {nproc} CPUs give {per_login:.1f} µs per login, the rest of our run "
                      f"(clients, kernel, log sink) took {rest:.1f}, which leaves {per_login - rest:.1f} µs "
                      f"for mfad, against the {c['daemon']:.1f} it took")
        targets.append((q >= 3.0, f"32 clients throughput >= 3x google-authenticator's: {q:.2f}x "
                                  f"({t['throughput_per_s']:.0f} vs {g['throughput_per_s']:.0f} /s)" +
                                  ideal(throughput_label(32),
                                        lambda r: f"{r['throughput_per_s'] / g['throughput_per_s']:.2f}x") +
                                  budget))
    if t:
        q = t["p99_us"] / t["median_us"]
        targets.append((q <= 2.0, f"32 clients p99 <= 2x their median: {q:.2f}x "
                                  f"({t['p99_us']:.1f} vs {t['median_us']:.1f} µs)"))
    n = row(NOCODE, OURS)
    if n:
        targets.append((n["median_us"] <= 50, f"no-code round trip median <= 50 µs: {n['median_us']:.1f} µs" +
                        ideal(NOCODE, lambda r: f"{r['median_us']:.1f} µs")))
        if rtt:
            q = n["median_us"] / rtt
            targets.append((q <= 2.0, f"no-code round trip median <= 2x one socket round trip (one CPU): {q:.2f}x "
                                      f"({n['median_us']:.1f} vs {rtt:.1f} µs)" +
                                      ideal(NOCODE, lambda r: f"{r['median_us'] / rtt:.2f}x") +
                                      (f"; a login's own connection (connect, one round trip, close, one CPU) "
                                       f"costs {connect1 / rtt:.2f}x by itself ({connect1:.1f} µs)" if connect1 else "")))
        else:
            targets.append((None, "no-code round trip median <= 2x one socket round trip: not measured"))
    one = row(scale_label(1), OURS)
    big = row(scale_label(1_000_000), OURS)
    if one and big:
        q = big["median_us"] / one["median_us"]
        targets.append((q <= 1.2, f"1,000,000 users median <= 1.2x the 1-user median: {q:.2f}x "
                                  f"({big['median_us']:.1f} vs {one['median_us']:.1f} µs)"))
    else:
        targets.append((None, "1,000,000 users median <= 1.2x the 1-user median: not measured"))
    big_rss = [r for r in rss if r["users"] == 1_000_000]
    if big_rss:
        mib = big_rss[0]["vmrss_kb"] / 1024
        targets.append((mib <= 50, f"mfad RSS at 1,000,000 users <= 50 MiB: {mib:.1f} MiB"))
    else:
        targets.append((None, "mfad RSS at 1,000,000 users <= 50 MiB: not measured"))
    for p in (2, 8, 32):
        c = row(contested_label(p), OURS)
        if c:
            ok = c["rounds_exactly_one"] == c["rounds"]
            # A 6-digit code recurs now and then: when one offered recurs
            # within the next 9 counters, a second process's offer matches
            # that later counter in the look-ahead window (accepted as it,
            # by RFC 4226's rules), and the rounds up to it then find their
            # counters used: an acceptance of another counter, not a replay.
            repeated = c.get("repeated_codes", 0)
            verb = "reappears" if repeated == 1 else "reappear"
            why = (f" ({repeated} of the codes offered {verb} within the next 9 counters: a second process's "
                   f"offer of such a code is taken as that later counter, and the rounds up to it then find no "
                   f"counter left to accept)" if not ok and repeated else "")
            targets.append((ok, f"contested, {p} procs: exactly one acceptance in "
                                f"{c['rounds_exactly_one']} of {c['rounds']} rounds{why}"))
    out.extend(target_lines("Targets:", targets))

    # Fleet targets: PostgreSQL against SQLite, both from this run.
    fleet = []
    c = row(contested_label(32), OURS_FLEET)
    if c:
        ok = c["rounds_exactly_one"] == c["rounds"]
        fleet.append((ok, f"contested across 2 hosts (2 x 16 procs): exactly one acceptance in "
                          f"{c['rounds_exactly_one']} of {c['rounds']} rounds"))
    else:
        fleet.append((None, "contested across 2 hosts: exactly one acceptance every round: not measured"))
    f, t = row(throughput_label(32), OURS_FLEET), row(throughput_label(32), OURS)
    if f and t:
        q = f["throughput_per_s"] / t["throughput_per_s"]
        fleet.append((q >= 1.0, f"fleet throughput (2 daemons x 16 clients) >= single-host SQLite 32 clients: "
                                f"{q:.2f}x ({f['throughput_per_s']:.0f} vs {t['throughput_per_s']:.0f} /s)"))
    else:
        fleet.append((None, "fleet throughput (2 daemons) >= single-host SQLite 32 clients: not measured"))
    p, a = row(SEQ, OURS_PG), row(SEQ, OURS)
    if p and a:
        q = p["median_us"] / a["median_us"]
        fleet.append((q <= 2.0, f"PostgreSQL sequential median <= 2x SQLite's: {q:.2f}x "
                                f"({p['median_us']:.1f} vs {a['median_us']:.1f} µs)"))
    else:
        fleet.append((None, "PostgreSQL sequential median <= 2x SQLite's: not measured"))
    out.append("")
    out.extend(target_lines("Fleet targets (PostgreSQL store, against SQLite in the same run):", fleet))
    print("\n".join(out))


if __name__ == "__main__":
    main()
