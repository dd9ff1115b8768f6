#!/usr/bin/python3
"""bench/devices.py - bulk-provision gateway devices without magpiectl.

  devices.py DB_PATH GWDOMAIN FMT FIRST COUNT OUT_FILE [OWNER ...]

Inserts COUNT device records into Magpie's SQLite keyval table (host
GWDOMAIN, store 'gateway_devices', key FMT % i, value
"1 <secret hex> [owner ...]": the record `magpiectl device add` writes, see
docs/gateway.md) with a random 256-bit secret each, and writes
"ID SECRETHEX" lines to OUT_FILE for `mgw-sim --devices`. The database must
exist (start magpied or run magpiectl once first). A running magpied reads
a record it has not seen at the device's first HELLO, so devices may be
added while it runs. `magpiectl device add` is the supported way (a process
start and one commit per device); this is the fast path for 10^4..10^5
devices and relies on the record format above.
"""
import os
import sqlite3
import sys


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    db_path, domain, fmt = sys.argv[1:4]
    first, count, out = int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    owners = sys.argv[7:]
    db = sqlite3.connect(db_path, timeout=30)
    n = db.execute("select count(*) from sqlite_master where name='keyval'").fetchone()[0]
    if n != 1:
        sys.exit("devices.py: %s has no keyval table (start magpied once first)" % db_path)
    rows = []
    with open(out, "w") as f:
        for i in range(first, first + count):
            dev = fmt % i
            secret = os.urandom(32).hex()
            value = " ".join(["1", secret] + owners)
            rows.append((domain, "gateway_devices", dev, value.encode()))
            f.write("%s %s\n" % (dev, secret))
            if len(rows) >= 5000:
                db.executemany("insert or replace into keyval (host, store, key, value) "
                               "values (?, ?, ?, ?)", rows)
                db.commit()
                rows = []
    db.executemany("insert or replace into keyval (host, store, key, value) "
                   "values (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


if __name__ == "__main__":
    main()
