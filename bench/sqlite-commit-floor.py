#!/usr/bin/python3
"""sqlite-commit-floor.py FILE [N=2000]: N one-row transactions (BEGIN
IMMEDIATE / INSERT / COMMIT) in WAL mode with synchronous=FULL, as Magpie's
SQLite storage commits them; p50/p90/p99/p99.9/max of one commit in ms
(bench/RESULTS.md, the gateway latency section). FILE and its -wal/-shm are
removed before and after."""
import os
import sqlite3
import sys
import time


def rm(path):
    for f in (path, path + '-wal', path + '-shm'):
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass


def main():
    path = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    rm(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute('PRAGMA journal_mode=WAL')
    db.execute('PRAGMA synchronous=FULL')
    db.execute('CREATE TABLE q(id INTEGER PRIMARY KEY, k TEXT, v BLOB)')
    v = []
    for i in range(n):
        t = time.perf_counter()
        db.execute('BEGIN IMMEDIATE')
        db.execute('INSERT INTO q(k, v) VALUES (?, ?)', ('dev%d' % (i % 200), b'x' * 64))
        db.execute('COMMIT')
        v.append((time.perf_counter() - t) * 1e3)
    db.close()
    rm(path)
    v.sort()
    print('%s sqlite WAL FULL 1-row commit n=%d: p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f ms'
          % (path, n, v[n // 2], v[n * 9 // 10], v[n * 99 // 100], v[n * 999 // 1000], v[-1]))


main()
