#!/usr/bin/env python3
"""Prints the interleaved rounds of `bench/run.sh --rounds R` (Markdown).

usage: rounds.py RESULTS.jsonl

The speed targets compare ours with google-authenticator and with the
floor. On a shared machine whose speed drifts within minutes, one run of
each module after the other compares the modules and the drift together.
Here each round ran every module once, one after the other, in an order
that rotates from round to round, so a drift touches them alike; each
ratio is taken within a round, and a target is judged by the median of
its rounds' ratios (the spread says how far one run alone could land).
Lines are pam_bench's with a "round" number, plus run.sh's "floor",
"machine" and "skipped" lines.
"""
import json
import statistics
import sys

OURS, GA = "pam_mfa (ours)", "google-authenticator"
IDEAL = "ideal daemon (I/O only)"
IDEAL_LINES = "ideal + SQLite + 2 audit lines"
IDEAL_LINE = "ideal + SQLite + 1 audit line"
IDEAL_NOCODE_LINE = "ideal + 1 audit line"
SEQ, TP32, NOCODE = "(a) sequential, 1 user", "(b) throughput, 32 clients", "(f) no-code round trip"


def spread(values, digits=2):
    """The median of values, and their least and greatest."""
    if not values:
        return "-"
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    rows, floors, machine, skipped = [], {}, {}, []
    with open(sys.argv[1]) as f:
        for line in f:
            if not line.strip():
                continue
            doc = json.loads(line)
            kind = doc.get("kind", "bench")
            if kind == "machine":
                machine = doc
            elif kind == "floor":
                floors.setdefault(doc["floor"], doc)  # the start's, when there are two
            elif kind == "skipped":
                skipped.append(doc)
            elif "round" in doc:
                rows.append(doc)
    rounds = sorted({r["round"] for r in rows})
    by = {(r["round"], r["scenario"], r["module"]): r for r in rows}

    out = []
    if machine:
        out += [f"Rounds run {machine.get('date')} on {machine.get('nproc')} x {machine.get('cpu')}, "
                f"kernel {machine.get('kernel')}; scratch on {machine.get('fs')}; commit {machine.get('commit')}; "
                f"{machine.get('sizes')}; load average {machine.get('load_start')} at the start, "
                f"{machine.get('load_end')} at the end; {machine.get('elapsed_s')} s.", ""]
    for s in skipped:
        out += [f"Skipped: {s.get('what')} ({s.get('reason')})", ""]

    def figure(scenario, module, key):
        """The figure of every round that has the row, in round order."""
        return [by[(n, scenario, module)][key] for n in rounds if (n, scenario, module) in by]

    def per_round(scenario, key, top, bottom):
        """top's figure over bottom's, round by round (rounds with both rows)."""
        return [by[(n, scenario, top)][key] / by[(n, scenario, bottom)][key]
                for n in rounds if (n, scenario, top) in by and (n, scenario, bottom) in by
                and by[(n, scenario, bottom)][key]]

    out += ["Each module's figure: the median of its rounds (the least and the greatest round):", "",
            "| scenario | module | rounds | failures | median µs | p99 µs | throughput /s |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for scenario in dict.fromkeys(r["scenario"] for r in rows):
        for module in dict.fromkeys(r["module"] for r in rows if r["scenario"] == scenario):
            out.append(f"| {scenario} | {module} | {len(figure(scenario, module, 'median_us'))} | "
                       f"{sum(figure(scenario, module, 'failures')):,} | "
                       f"{spread(figure(scenario, module, 'median_us'), 1)} | "
                       f"{spread(figure(scenario, module, 'p99_us'), 1)} | "
                       f"{spread(figure(scenario, module, 'throughput_per_s'), 0)} |")
    out.append("")

    sync = floors.get("fdatasync", {}).get("median_us")
    rtt = (floors.get("unix_rtt_1cpu") or floors.get("unix_rtt") or {}).get("median_us")
    seq_floor = sync + 2 * rtt if sync and rtt else None

    # (met?, text) per target: the median of the rounds' ratios against the target.
    targets = []

    def judge(values, limit, above, text, digits=2):
        if not values:
            targets.append((None, f"{text}: not measured"))
            return
        q = statistics.median(values)
        met = q >= limit if above else q <= limit
        hits = sum(1 for v in values if (v >= limit if above else v <= limit))
        targets.append((met, f"{text}: {spread(values, digits)}; met in {hits} of {len(values)} rounds"))

    seq_ga = per_round(SEQ, "median_us", OURS, GA)
    judge(seq_ga, 0.6, False, "sequential median <= 0.6x google-authenticator's")
    if seq_floor:
        judge([m / seq_floor for m in figure(SEQ, OURS, "median_us")], 1.5, False,
              f"sequential median <= 1.5x the floor (fdatasync + 2 socket round trips, one CPU, at the start: "
              f"{seq_floor:,.1f} µs)")
    judge(per_round(TP32, "throughput_per_s", OURS, GA), 3.0, True,
          "32 clients throughput >= 3x google-authenticator's")
    judge([r["p99_us"] / r["median_us"] for r in (by.get((n, TP32, OURS)) for n in rounds) if r],
          2.0, False, "32 clients p99 <= 2x their median")
    judge(figure(NOCODE, OURS, "median_us"), 50, False, "no-code round trip median <= 50 µs, in µs", 1)
    if rtt:
        judge([m / rtt for m in figure(NOCODE, OURS, "median_us")], 2.0, False,
              f"no-code round trip median <= 2x one socket round trip (one CPU, at the start: {rtt:,.1f} µs)")
    out += ["Targets, by the median of the rounds' ratios (the least and the greatest round):", ""]
    for ok, text in targets:
        out.append(f"- {'not measured' if ok is None else ('MET' if ok else 'NOT MET')}: {text}")
    out.append("")

    # The daemons that do only I/O, by the same measures: how far any daemon
    # with this store and this audit trail gets here.
    out += ["The same ratios for the ideal daemons, round by round (median, least-greatest):", "",
            "| daemon | sequential / google-authenticator | sequential / floor | 32 clients / google-authenticator "
            "| 32 clients p99 / median | ours / it, sequential median | its rate / ours, 32 clients |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    for module in (IDEAL, IDEAL_LINES, IDEAL_LINE):
        seq = figure(SEQ, module, "median_us")
        out.append(f"| {module} | {spread(per_round(SEQ, 'median_us', module, GA))} | "
                   f"{spread([m / seq_floor for m in seq]) if seq_floor else '-'} | "
                   f"{spread(per_round(TP32, 'throughput_per_s', module, GA))} | "
                   f"{spread([r['p99_us'] / r['median_us'] for r in (by.get((n, TP32, module)) for n in rounds) if r])} | "
                   f"{spread(per_round(SEQ, 'median_us', OURS, module))} | "
                   f"{spread(per_round(TP32, 'throughput_per_s', module, OURS))} |")
    nocode = per_round(NOCODE, "median_us", OURS, IDEAL_NOCODE_LINE)
    if nocode:
        out.append("")
        out.append(f"No-code: ours / {IDEAL_NOCODE_LINE}, round by round: {spread(nocode)}; "
                   f"that daemon's median: {spread(figure(NOCODE, IDEAL_NOCODE_LINE, 'median_us'), 1)} µs.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
