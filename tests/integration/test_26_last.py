#!/usr/bin/python3
"""26: last activity (XEP-0012, mod_last): the server's uptime; a user's
last activity asked at the bare JID: 0 seconds while a resource is
available (also when another resource went offline), the seconds since the
last resource went offline and the status text of its unavailable
presence, a dropped connection counted as going offline (no status); who
may ask: the user and contacts with a 'from'/'both' subscription in the
user's roster, not a contact the user is only subscribed to, nor a
stranger (forbidden); the record kept across a restart; a deleted account
answers no more. Run with --workers 2 as well (run-all.sh)."""

import time

from common import (RawClient, MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, sync)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_L = 'jabber:iq:last'
NS_INFO = 'http://jabber.org/protocol/disco#info'
MODULES = ['disco', 'ping', 'roster', 'offline', 'vcard', 'private', 'last']


def pw(u):
    return u + '-pw'


def login(srv, user, res):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.presence()
    sync(c)
    c.drain(0.2)
    return c


def last(c, to):
    """(seconds, status text) of a result, or raises with the stanza."""
    r = c.iq('get', to, "<query xmlns='%s'/>" % NS_L)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', NS_L)
    check(q is not None and q.get('seconds', '').isdigit(), tostr(r))
    return int(q.get('seconds')), (q.text or '')


def last_error(c, to):
    r = c.iq('get', to, "<query xmlns='%s'/>" % NS_L)
    check(r.get('type') == 'error', 'expected an error: %s' % tostr(r))
    return error_condition(r)


def subscribe(x, xj, y, yj):
    """x subscribes to y's presence (y approves): y's roster has x with 'from'."""
    x.send("<presence to='%s' type='subscribe'/>" % yj)
    y.wait_for('presence', lambda e: e.get('type') == 'subscribe' and e.get('from') == xj)
    y.send("<presence to='%s' type='subscribed'/>" % xj)
    x.wait_for('presence', lambda e: e.get('type') == 'subscribed' and e.get('from') == yj)
    x.drain(0.3)
    y.drain(0.3)


def t01_server_uptime_and_disco(srv):
    a = login(srv, 'alice', 'u')
    try:
        r = a.iq('get', 'localhost', "<query xmlns='%s'/>" % NS_INFO)
        check(NS_L in {f.get('var') for f in child(r, 'query', NS_INFO)}, tostr(r))
        s1, text = last(a, 'localhost')
        check(0 <= s1 < 600 and text == '', 'uptime %d %r' % (s1, text))
        time.sleep(1.2)
        s2, _ = last(a, 'localhost')
        check(s2 >= s1 + 1, 'uptime does not advance: %d then %d' % (s1, s2))
    finally:
        closeall(a)


def t02_offline_online_and_status(srv):
    """bob is subscribed to alice (both ways); carol only has alice
    subscribed to her (carol's roster: alice 'from'; alice's: carol 'to')."""
    a1, a2 = login(srv, 'alice', 'a1'), login(srv, 'alice', 'a2')
    b, c = login(srv, 'bob', 'b'), login(srv, 'carol', 'c')
    try:
        subscribe(b, 'bob@localhost', a1, 'alice@localhost')
        subscribe(a1, 'alice@localhost', b, 'bob@localhost')
        subscribe(a1, 'alice@localhost', c, 'carol@localhost')
        a2.drain(0.3)
        # online: 0 seconds, for bob and for alice herself (no 'to': her own account)
        check(last(b, 'alice@localhost') == (0, ''), 'online alice')
        check(last(a1, None)[0] == 0, 'own query while online')
        check(last(a1, 'alice@localhost')[0] == 0, 'own bare JID while online')
        # carol: alice's roster has her with 'to' only -> forbidden;
        # alice may ask carol (carol's roster has alice with 'from')
        check(last_error(c, 'alice@localhost') == 'forbidden', 'carol may not see alice')
        check(last(a1, 'carol@localhost')[0] == 0, 'alice asks carol')
        # one resource leaves: still online
        a2.send("<presence type='unavailable'><status>not this one</status></presence>")
        sync(a2)
        check(last(b, 'alice@localhost')[0] == 0, 'alice still has a1')
        # the last resource leaves with a status
        a1.send("<presence type='unavailable'><status>gone fishing</status></presence>")
        sync(a1)
        time.sleep(1.3)
        secs, text = last(b, 'alice@localhost')
        check(secs >= 1 and secs < 60, 'seconds %d' % secs)
        check(text == 'gone fishing', 'status %r' % text)
        check(last_error(c, 'alice@localhost') == 'forbidden', 'carol, alice offline')
    finally:
        closeall(a1, a2, b, c)


def t03_dropped_connection(srv):
    b = login(srv, 'bob', 'd')
    a = login(srv, 'alice', 'drop')
    try:
        check(last(b, 'alice@localhost')[0] == 0, 'alice online')
        a.close()  # no unavailable, no </stream:stream>: the TCP connection drops
        b.wait_for('presence', lambda e: e.get('from') == 'alice@localhost/drop'
                   and e.get('type') == 'unavailable', timeout=10)
        time.sleep(1.2)
        secs, text = last(b, 'alice@localhost')
        check(1 <= secs < 60 and text == '', 'after a drop: %d %r' % (secs, text))
    finally:
        closeall(a, b)


def t04_strangers(srv):
    d = login(srv, 'dave', 'x')
    try:
        check(last_error(d, 'alice@localhost') == 'forbidden', 'stranger')
        check(last_error(d, 'nobody@localhost') == 'service-unavailable', 'no such account')
    finally:
        closeall(d)


def t05_restart_and_account_deleted(srv):
    b = login(srv, 'bob', 'r')
    a = login(srv, 'alice', 'r')
    a.send("<presence type='unavailable'><status>back after the restart</status></presence>")
    sync(a)
    closeall(a, b)
    srv.restart()
    time.sleep(1.1)
    b = login(srv, 'bob', 'r2')
    try:
        secs, text = last(b, 'alice@localhost')
        check(secs >= 1 and text == 'back after the restart', 'after restart: %d %r' % (secs, text))
        p = srv.ctl('user', 'del', 'alice@localhost')
        check(p.returncode == 0, 'user del: %s %s' % (p.stdout, p.stderr))
        check(last_error(b, 'alice@localhost') == 'service-unavailable', 'deleted account')
    finally:
        closeall(b)


TESTS = [t01_server_uptime_and_disco, t02_offline_online_and_status, t03_dropped_connection,
         t04_strangers, t05_restart_and_account_deleted]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('26.00 last_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'carol', 'dave'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('26.%02d last_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('26.00 last_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('26.99 last_clean_shutdown', e)
    R.exit()


main()
