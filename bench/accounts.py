#!/usr/bin/python3
"""bench/accounts.py - bulk-create benchmark accounts without the servers' tools.

  accounts.py prosody DATA_DIR DOMAIN FMT FIRST COUNT PASSWORD ITERATIONS
      writes Prosody 0.12 internal storage files (authentication
      "internal_hashed": SCRAM-SHA-1 stored_key/server_key in hex, a UUID salt),
      DATA_DIR/<host>/accounts/<user>.dat, exactly what `prosodyctl register`
      would write (prosodyctl takes ~0.5 s per account).
  accounts.py magpie DB_PATH DOMAIN FMT FIRST COUNT PASSWORD ITERATIONS
      inserts Magpie "v1" credentials (SCRAM-SHA-1 and SCRAM-SHA-256 salted
      keys, see src/auth/sasl.h mp_credentials_encode) into the SQLite keyval
      table (host, store 'accounts', key user).  The fast path for large runs;
      `magpiectl user add` is the supported way (about 10 ms per account).

  accounts.py prosody-roster DATA_DIR DOMAIN FMT FIRST COUNT K
  accounts.py magpie-roster DB_PATH DOMAIN FMT FIRST COUNT K
      gives every user i of FIRST..FIRST+COUNT-1 the K contacts i+-1 .. i+-K/2
      (a ring, so every contact is mutual), subscription "both", no groups:
      Prosody's roster files DATA_DIR/<host>/roster/<user>.dat (what
      rostermanager saves), Magpie's map rows (store 'roster', key user, field
      contact, value the item as mod_roster stores it; field '' the version).

Real PBKDF2 with a random salt per account, as the servers would do.
"""
import base64
import hashlib
import hmac
import os
import sqlite3
import sys
import uuid


def scram_keys(hname, password, salt, iterations):
    sp = hashlib.pbkdf2_hmac(hname, password, salt, iterations)
    ck = hmac.new(sp, b"Client Key", hname).digest()
    sk = hmac.new(sp, b"Server Key", hname).digest()
    return hashlib.new(hname, ck).digest(), sk


def prosody_encode(s):
    # util.datamanager encode(): every non-alphanumeric byte as %xx
    return "".join(c if (c.isascii() and c.isalnum()) else "%%%02x" % ord(c) for c in s)


def prosody(data_dir, domain, fmt, first, count, password, iterations):
    d = os.path.join(data_dir, prosody_encode(domain), "accounts")
    os.makedirs(d, exist_ok=True)
    for i in range(first, first + count):
        user = fmt % i
        salt = str(uuid.uuid4())
        stored, server = scram_keys("sha1", password, salt.encode(), iterations)
        with open(os.path.join(d, prosody_encode(user) + ".dat"), "w") as f:
            f.write('return {\n\t["iteration_count"] = %d;\n\t["salt"] = "%s";\n'
                    '\t["server_key"] = "%s";\n\t["stored_key"] = "%s";\n};\n'
                    % (iterations, salt, server.hex(), stored.hex()))


def magpie(db_path, domain, fmt, first, count, password, iterations):
    db = sqlite3.connect(db_path, timeout=30)
    n = db.execute("select count(*) from sqlite_master where name='keyval'").fetchone()[0]
    if n != 1:
        sys.exit("accounts.py: %s has no keyval table (start magpied once first)" % db_path)
    b64 = lambda b: base64.b64encode(b).decode()
    rows = []
    for i in range(first, first + count):
        salt = os.urandom(16)
        s1, v1 = scram_keys("sha1", password, salt, iterations)
        s256, v256 = scram_keys("sha256", password, salt, iterations)
        value = "v1 %d %s %s %s %s %s" % (iterations, b64(salt), b64(s1), b64(v1),
                                           b64(s256), b64(v256))
        rows.append((domain, "accounts", fmt % i, value.encode()))
        if len(rows) >= 5000:
            db.executemany("insert or replace into keyval (host, store, key, value) "
                           "values (?, ?, ?, ?)", rows)
            db.commit()
            rows = []
    db.executemany("insert or replace into keyval (host, store, key, value) "
                   "values (?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def ring(fmt, domain, first, count, k, i):
    """The bare JIDs of user i's contacts: k/2 on each side, wrapping."""
    out = []
    for d in range(1, k // 2 + 1):
        for j in (i + d, i - d):
            out.append("%s@%s" % (fmt % (first + (j - first) % count), domain))
    return out


def rosters(kind, path, domain, fmt, first, count, k):
    if k >= count:
        sys.exit("accounts.py: %d contacts need more than %d users" % (k, count))
    if kind == "prosody-roster":
        d = os.path.join(path, prosody_encode(domain), "roster")
        os.makedirs(d, exist_ok=True)
        for i in range(first, first + count):
            lines = ["return {", '\t[false] = {\n\t\t["version"] = 1;\n\t\t["pending"] = {};\n\t};']
            for c in ring(fmt, domain, first, count, k, i):
                lines.append('\t["%s"] = {\n\t\t["subscription"] = "both";\n'
                             '\t\t["groups"] = {};\n\t};' % c)
            lines.append("};\n")
            with open(os.path.join(d, prosody_encode(fmt % i) + ".dat"), "w") as f:
                f.write("\n".join(lines))
        return
    db = sqlite3.connect(path, timeout=30)
    rows = []
    for i in range(first, first + count):
        user = fmt % i
        rows.append((domain, "roster", user, "", b"1"))
        for c in ring(fmt, domain, first, count, k, i):
            item = "<item xmlns='jabber:iq:roster' jid='%s' subscription='both'/>" % c
            rows.append((domain, "roster", user, c, item.encode()))
        if len(rows) >= 20000:
            db.executemany("insert or replace into map (host, store, key, field, value) "
                           "values (?, ?, ?, ?, ?)", rows)
            rows = []
    db.executemany("insert or replace into map (host, store, key, field, value) "
                   "values (?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()


def main():
    if len(sys.argv) == 8 and sys.argv[1] in ("prosody-roster", "magpie-roster"):
        rosters(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]),
                int(sys.argv[6]), int(sys.argv[7]))
        return
    if len(sys.argv) != 9 or sys.argv[1] not in ("prosody", "magpie"):
        sys.exit(__doc__)
    kind, path, domain, fmt = sys.argv[1:5]
    first, count, iterations = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[8])
    password = sys.argv[7].encode()
    (prosody if kind == "prosody" else magpie)(path, domain, fmt, first, count, password,
                                               iterations)


if __name__ == "__main__":
    main()
