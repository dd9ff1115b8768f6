#!/usr/bin/python3
"""35: a persistent room's discussion history (XEP-0045 §7.2.15)
survives a restart of magpied, bounded by the room's history size
(muc#maxhistoryfetch), with or without archiving: the newest messages
come back in order with their delay stamps and stanza ids, subject
changes are not history, the joiner's limits still apply, new stanza
ids keep increasing after the restart, a room that does not archive
keeps only about its history in the log (read in the SQLite file
itself), and a temporary room's history is gone."""

import os
import sqlite3
import time

from common import (MagpieServer, Results, parse_args, check, child, tostr, closeall, online,
                    body_of, wait_until, sync)
from muchelp import (NS_DELAY, room_jid, join_ok, create, groupchat, wait_body, room_sid, sid_time,
                     send_join, occ, codes)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol')
S = {}


def connect(srv):
    return {n: online(srv, n, n + '-pw', 'p') for n in USERS}


def history_of(c, room, nick, **hist):
    """Enters room and returns the history messages (those with a delay),
    in the order received."""
    send_join(c, room, nick, history=hist or None)
    c.wait_for('presence', lambda e: e.get('from') == occ(room, nick) and 110 in codes(e))
    c.wait_for('message', lambda e: e.get('from', '').startswith(room_jid(room)) and
               child(e, 'subject') is not None and body_of(e) is None)
    got = []
    while True:
        m = c.wait_for('message', lambda e: child(e, 'delay', NS_DELAY) is not None, timeout=0, raise_=False)
        if m is None:
            return got
        got.append(m)


def log_count(srv, room):
    db = None
    for root, _, files in os.walk(srv.state_dir):
        for f in files:
            if f.endswith('.db'):
                db = os.path.join(root, f)
    check(db, 'no sqlite file under %s' % srv.state_dir)
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM archive WHERE store = 'muc_log' AND \"key\" = ?",
                           (room,)).fetchone()[0]
    finally:
        con.close()


def t01_before(srv, u):
    a, b = u['alice'], u['bob']
    # history 5, archiving off: the log only serves history
    create(a, 'hist', 'Alice', {'muc#roomconfig_persistentroom': '1', 'muc#maxhistoryfetch': '5',
                                'muc#roomconfig_enablearchiving': '0'})
    # history 3, archiving on
    create(a, 'histmam', 'Alice', {'muc#roomconfig_persistentroom': '1', 'muc#maxhistoryfetch': '3'})
    create(a, 'tmp', 'Alice')
    join_ok(b, 'hist', 'Bob')
    sids = {}
    for i in range(8):
        groupchat(a if i % 2 else b, 'hist', 'h%d' % i)
        m = wait_body(b, 'h%d' % i)
        wait_body(a, 'h%d' % i)
        sids['h%d' % i] = room_sid(m, 'hist')
    for i in range(5):
        groupchat(a, 'histmam', 'k%d' % i)
        sids['k%d' % i] = room_sid(wait_body(a, 'k%d' % i), 'histmam')
    a.send("<message to='%s' type='groupchat'><subject>a topic</subject></message>" % room_jid('histmam'))
    a.wait_for('message', lambda e: child(e, 'subject') is not None and child(e, 'subject').text == 'a topic')
    groupchat(a, 'tmp', 'temporary words')
    wait_body(a, 'temporary words')
    S['sids'] = sids
    # before the restart, a newcomer gets the same history it will get after
    got = history_of(u['carol'], 'hist', 'Carol')
    check([body_of(m) for m in got] == ['h3', 'h4', 'h5', 'h6', 'h7'], [body_of(m) for m in got])


def t02_after(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    sids = S['sids']
    got = history_of(c, 'hist', 'Carol2')
    check([body_of(m) for m in got] == ['h3', 'h4', 'h5', 'h6', 'h7'], 'history after restart: %s'
          % [body_of(m) for m in got])
    for m in got:
        check(room_sid(m, 'hist') == sids[body_of(m)], 'stanza id changed: %s' % tostr(m))
        check(child(m, 'delay', NS_DELAY).get('from') == room_jid('hist'), tostr(m))
    check(got[0].get('from') == occ('hist', 'Alice') and got[1].get('from') == occ('hist', 'Bob'),
          [m.get('from') for m in got])
    # the joiner's limits apply to the restored history
    got = history_of(b, 'hist', 'Bob', maxstanzas='2')
    check([body_of(m) for m in got] == ['h6', 'h7'], [body_of(m) for m in got])
    # an archiving room: its 3 newest messages, not the subject change
    got = history_of(b, 'histmam', 'Bob')
    check([body_of(m) for m in got] == ['k2', 'k3', 'k4'], [body_of(m) for m in got])
    # new ids follow the old ones in time
    groupchat(b, 'hist', 'after restart')
    m = wait_body(b, 'after restart')
    check(sid_time(room_sid(m, 'hist')) > sid_time(sids['h7']), tostr(m))
    # the temporary room is gone, and so is its log
    r = c.iq('get', room_jid('tmp'), "<query xmlns='http://jabber.org/protocol/disco#info'/>")
    check(r.get('type') == 'error', tostr(r))
    check(log_count(srv, 'tmp') == 0, 'a temporary room left its log behind')


def t03_trim(srv, u):
    """Without archiving the log holds about the history, not every
    message: trimmed in batches of 16."""
    a = u['alice']
    join_ok(a, 'hist', 'Alice')
    join_ok(a, 'histmam', 'Alice')
    for i in range(60):
        groupchat(a, 'hist', 'n%d' % i)
    m = wait_body(a, 'n59')
    check(m.get('type') == 'groupchat', tostr(m))
    sync(a)
    time.sleep(0.5)
    n = log_count(srv, 'hist')
    check(5 <= n <= 5 + 16 + 1, 'log of a non-archiving room holds %d items' % n)
    # an archiving room keeps everything
    for i in range(30):
        groupchat(a, 'histmam', 'x%d' % i)
    wait_body(a, 'x29')
    # the log is written after the fan-out: give the storage a moment
    wait_until(lambda: log_count(srv, 'histmam') >= 36, timeout=5)
    check(log_count(srv, 'histmam') == 36, 'archive of histmam holds %d' % log_count(srv, 'histmam'))


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('35.00 muc_history_server_start', e)
        R.exit()
    u = {}
    try:
        for n in USERS:
            srv.add_user(n, n + '-pw')
        u = connect(srv)
        R.run('35.01 muc_history_before_restart', t01_before, srv, u, server=srv)
        closeall(*u.values())
        u = {}
        R.run('35.02 muc_history_clean_restart', srv.restart, server=srv)
        u = connect(srv)
        R.run('35.03 muc_history_after_restart', t02_after, srv, u, server=srv)
        R.run('35.04 muc_history_log_trimmed', t03_trim, srv, u, server=srv)
    except Exception as e:
        R.fail('35.00 muc_history_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('35.99 muc_history_clean_shutdown', e)
    R.exit()


main()
