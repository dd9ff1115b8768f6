#!/usr/bin/python3
"""73: a room archive's age limit (mod_muc option mam_retention_days): a
persistent archiving room logs messages; with the server stopped, some
of them are aged by three days in the SQLite archive; after the restart
the next message makes the room drop what is older than the limit (one
day) and keep the rest, which XEP-0313 queries then show (count too)."""

import os
import sqlite3

from common import MagpieServer, Results, parse_args, check, closeall, online, body_of, wait_until
from muchelp import create, groupchat, wait_body, mam_query, join_ok, room_sid

args = parse_args()
R = Results('[workers=%d]' % args.workers)
DAY_US = 86400 * 1000000


def bodies(msgs):
    return [body_of(m) for m in msgs]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time',
                                    '{ name = "muc"; mam_retention_days = 1; }'])
        srv.__enter__()
    except Exception as e:
        R.fail('73.00 muc_mam_retention_server_start', e)
        R.exit()
    a = None
    try:
        srv.add_user('alice', 'alice-pw')
        a = online(srv, 'alice', 'alice-pw', 'p')
        sids = {}

        def before():
            create(a, 'old', 'Alice', {'muc#roomconfig_persistentroom': '1'})
            for i in range(5):
                groupchat(a, 'old', 'o%d' % i)
                sids['o%d' % i] = room_sid(wait_body(a, 'o%d' % i), 'old')
            r, msgs, _ = mam_query(a, 'old')
            check(bodies(msgs) == ['o0', 'o1', 'o2', 'o3', 'o4'], bodies(msgs))
        R.run('73.01 muc_mam_retention_logged', before, server=srv)
        closeall(a)
        a = None
        srv.stop()
        # three of them three days old
        db = sqlite3.connect(os.path.join(srv.state_dir, 'magpie.db'))
        rows = db.execute("SELECT id FROM archive WHERE store = 'muc_log' AND \"key\" = 'old'"
                          " ORDER BY id").fetchall()
        check(len(rows) == 5, rows)
        db.execute("UPDATE archive SET ts = ts - ? WHERE store = 'muc_log' AND \"key\" = 'old'"
                   " AND id <= ?", (3 * DAY_US, rows[2][0]))
        db.commit()
        db.close()
        srv.start()
        a = online(srv, 'alice', 'alice-pw', 'p')

        def after():
            join_ok(a, 'old', 'Alice')
            groupchat(a, 'old', 'new')
            wait_body(a, 'new')

            def trimmed():
                r, msgs, _ = mam_query(a, 'old')
                return bodies(msgs) == ['o3', 'o4', 'new']
            check(wait_until(trimmed, timeout=10), bodies(mam_query(a, 'old')[1]))
            # what is left is whole: its ids are still found
            r, msgs, _ = mam_query(a, 'old', form={'after-id': sids['o3']})
            check(bodies(msgs) == ['o4', 'new'], bodies(msgs))
        R.run('73.02 muc_mam_retention_dropped', after, server=srv)
    except Exception as e:
        R.fail('73.00 muc_mam_retention_setup', e)
    closeall(a)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('73.99 muc_mam_retention_clean_shutdown', e)
    R.exit()


main()
