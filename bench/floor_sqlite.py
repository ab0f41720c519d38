#!/usr/bin/env python3
"""The SQLite floor under a login: one WAL commit of one row.

usage: floor_sqlite.py DIR [ITERATIONS]

A database in DIR (the run's scratch directory) with mfad's pragmas
(journal_mode=WAL, synchronous=FULL: one fsync of the WAL per commit; see
mfad/src/store/sqlite.rs, `setup`) and mfad's users table (name TEXT PRIMARY
KEY, record TEXT), holding one row. Times ITERATIONS (2,000)
single-row UPDATEs in autocommit mode, each its own transaction, committed
when the statement ends; a tenth as many first, untimed. Prints one JSON
line {"kind": "floor", "floor": "sqlite_commit", ...} like bench_floor's.

Python's sqlite3 module adds a few microseconds of its own per statement
(its SQLite may also be another version than the one built into mfad); next
to an fsync that is noise.
"""
import json
import os
import sqlite3
import sys
import time


def percentile_us(sorted_ns, p):
    rank = max(1, -(-len(sorted_ns) * p // 100))
    return round(sorted_ns[min(rank, len(sorted_ns)) - 1] / 1000, 1)


def main() -> None:
    directory = sys.argv[1]
    iterations = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    path = os.path.join(directory, "floor-sqlite.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE users (name TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL)")
    # About the size of a record of mfad's (JSON with the sealed secret).
    record = '{"type":"hotp","secret":"%s","counter":%d,"failures":0}'
    conn.execute("INSERT INTO users VALUES ('seq1', ?)", (record % ("A" * 300, 0),))

    counter = 0

    def commit():
        nonlocal counter
        counter += 1
        conn.execute("UPDATE users SET record = ? WHERE name = 'seq1'", (record % ("A" * 300, counter),))

    for _ in range(-(-iterations // 10)):
        commit()
    ns = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        commit()
        ns.append(time.perf_counter_ns() - start)
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    ns.sort()
    print(json.dumps({
        "kind": "floor",
        "floor": "sqlite_commit",
        "what": f"one-row UPDATE committed (WAL, synchronous=FULL), Python sqlite3, SQLite {sqlite3.sqlite_version}",
        "iterations": len(ns),
        "median_us": percentile_us(ns, 50),
        "p99_us": percentile_us(ns, 99),
    }))


if __name__ == "__main__":
    main()
