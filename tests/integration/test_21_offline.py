#!/usr/bin/python3
"""21: offline messages (XEP-0160, mod_offline): messages to an account
with no available resource are stored, delivered at the next available
presence (non-negative priority) in order with a XEP-0203 delay stamp,
never delivered twice, kept across a server restart; the per-user quota
gives the sender resource-constraint; a nonexistent account gets
service-unavailable; headline, groupchat and chat-state-only messages are
not stored; a slixmpp client sees the delay stamps. Run with --workers 2
as well (run-all.sh does)."""

import datetime
import time

from common import (MagpieServer, RawClient, Results, parse_args, check, child, error_condition,
                    tostr, closeall, online, sync, no_stanza, no_message, body_of, expect_error)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_DELAY = 'urn:xmpp:delay'
QUOTA = 30
MODULES = ['disco', 'ping', 'version', 'time', 'roster',
           '{ name = "offline"; quota = %d; }' % QUOTA]
USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'kim', 'judy']


def pw(u):
    return u + '-pw'


def login(srv, user, res, presence=True):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    if presence is not None and presence is not False:
        c.presence(priority=None if presence is True else presence)
    sync(c)
    return c


def parse_stamp(s):
    s = s.rstrip('Z')
    fmt = '%Y-%m-%dT%H:%M:%S.%f' if '.' in s else '%Y-%m-%dT%H:%M:%S'
    return datetime.datetime.strptime(s, fmt).replace(tzinfo=datetime.timezone.utc)


def offline_batch(c, n, timeout=5):
    """The next n messages c receives, checked for a delay stamp."""
    out = []
    for _ in range(n):
        m = c.wait_for('message', timeout=timeout)
        d = child(m, 'delay', NS_DELAY)
        check(d is not None, 'no delay stamp: %s' % tostr(m))
        check(d.get('from') == 'localhost', 'delay from %r: %s' % (d.get('from'), tostr(m)))
        age = (datetime.datetime.now(datetime.timezone.utc) - parse_stamp(d.get('stamp'))).total_seconds()
        check(-5 < age < 300, 'stamp %s is %ss old' % (d.get('stamp'), age))
        check(m.get('to') == c.jid, 'to %s, want %s' % (m.get('to'), c.jid))
        out.append(m)
    return out


def t01_stored_and_delivered_in_order(srv):
    a = login(srv, 'alice', 'a')
    try:
        a.message('bob@localhost', 'one')
        a.message('bob@localhost', 'two', type_='normal')
        a.message('bob@localhost/nowhere', 'three')  # an absent resource: to the bare JID
        a.send("<message to='bob@localhost'><body>four</body></message>")  # no type: normal
        no_message(a, 0.5, lambda e: e.get('type') == 'error')
        b = login(srv, 'bob', 'b')
        try:
            got = offline_batch(b, 4)
            check([body_of(m) for m in got] == ['one', 'two', 'three', 'four'],
                  'order: %s' % [body_of(m) for m in got])
            check(all(m.get('from') == 'alice@localhost/a' for m in got), [tostr(m) for m in got])
            stamps = [parse_stamp(child(m, 'delay', NS_DELAY).get('stamp')) for m in got]
            check(stamps == sorted(stamps), 'stamps out of order: %s' % stamps)
            no_message(b, 0.5)
        finally:
            closeall(b)
        # a second login gets nothing again
        b = login(srv, 'bob', 'b2')
        try:
            no_message(b, 1.0)
        finally:
            closeall(b)
    finally:
        closeall(a)


def t02_online_messages_have_no_delay(srv):
    a = login(srv, 'alice', 'a')
    b = login(srv, 'bob', 'b')
    try:
        a.message('bob@localhost', 'live')
        m = b.wait_for('message', lambda e: body_of(e) == 'live')
        check(child(m, 'delay', NS_DELAY) is None, tostr(m))
    finally:
        closeall(a, b)


def t03_quota(srv):
    a = login(srv, 'alice', 'q')
    try:
        ids = [a.message('carol@localhost', 'q%d' % i) for i in range(QUOTA + 1)]
        e = expect_error(a, 'message', 'resource-constraint')
        check(e.get('id') == ids[-1] and e.get('from') == 'carol@localhost', tostr(e))
        err = child(e, 'error')
        check(err.get('type') == 'wait', tostr(e))
        no_message(a, 0.5, lambda e: e.get('type') == 'error')
        c = login(srv, 'carol', 'c')
        try:
            got = offline_batch(c, QUOTA)
            check([body_of(m) for m in got] == ['q%d' % i for i in range(QUOTA)], [body_of(m) for m in got])
            no_message(c, 0.5)
        finally:
            closeall(c)
        # delivered: the quota is free again
        a.message('carol@localhost', 'again')
        no_message(a, 0.5, lambda e: e.get('type') == 'error')
        c = login(srv, 'carol', 'c2')
        try:
            check([body_of(m) for m in offline_batch(c, 1)] == ['again'])
        finally:
            closeall(c)
    finally:
        closeall(a)


def t04_nonexistent_account(srv):
    a = login(srv, 'alice', 'n')
    try:
        i = a.message('nobody@localhost', 'hello?')
        e = expect_error(a, 'message', 'service-unavailable')
        check(e.get('id') == i, tostr(e))
    finally:
        closeall(a)


def t05_not_stored(srv):
    a = login(srv, 'alice', 'ns')
    try:
        a.send("<message to='dave@localhost' type='headline'><body>news</body></message>")
        a.send("<message to='dave@localhost' type='chat'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        no_message(a, 0.5, lambda e: e.get('type') == 'error')
        a.send("<message to='dave@localhost' type='groupchat' id='gc'><body>x</body></message>")
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'gc')
        d = login(srv, 'dave', 'd')
        try:
            no_message(d, 1.0)
        finally:
            closeall(d)
    finally:
        closeall(a)


def t06_negative_priority_waits(srv):
    a = login(srv, 'alice', 'np')
    try:
        a.message('erin@localhost', 'for later')
        sync(a)
        time.sleep(0.3)
        e = login(srv, 'erin', 'e', presence=-1)
        try:
            no_message(e, 0.8)
            e.presence(priority=1)
            got = offline_batch(e, 1)
            check(body_of(got[0]) == 'for later', tostr(got[0]))
        finally:
            closeall(e)
    finally:
        closeall(a)


def t07_kept_across_restart(srv):
    a = login(srv, 'alice', 'r')
    a.message('frank@localhost', 'durable 1')
    a.message('frank@localhost', 'durable 2')
    no_message(a, 0.5, lambda e: e.get('type') == 'error')
    closeall(a)
    srv.restart()
    f = login(srv, 'frank', 'f')
    try:
        got = offline_batch(f, 2)
        check([body_of(m) for m in got] == ['durable 1', 'durable 2'], [body_of(m) for m in got])
    finally:
        closeall(f)


def t08_two_resources_one_delivery(srv):
    a = login(srv, 'alice', 't')
    try:
        for i in range(3):
            a.message('gina@localhost', 'g%d' % i)
        no_message(a, 0.5, lambda e: e.get('type') == 'error')
        g1 = RawClient(srv.c2s_port)
        g1.login('gina', pw('gina'), resource='g1')
        g2 = RawClient(srv.c2s_port)
        g2.login('gina', pw('gina'), resource='g2')
        g1.presence()
        g2.presence()
        try:
            got1 = g1.drain(1.5)
            got2 = g2.drain(0.3)
            bodies = [body_of(m) for m in got1 + got2 if m.tag.endswith('message')]
            check(sorted(bodies) == ['g0', 'g1', 'g2'], 'delivered %s' % bodies)
        finally:
            closeall(g1, g2)
    finally:
        closeall(a)


def t09_slixmpp_sees_delay(srv):
    from slixhelp import run, login as slogin, close as sclose, next_message

    a = login(srv, 'alice', 's')
    a.message('kim@localhost', 'hello kim')
    no_message(a, 0.5, lambda e: e.get('type') == 'error')
    closeall(a)

    async def scenario():
        k = await slogin(srv.c2s_port, 'kim@localhost/s', pw('kim'))
        k.register_plugin('xep_0203')
        try:
            m = await next_message(k, timeout=10)
            check(m['body'] == 'hello kim', str(m))
            stamp = m['delay']['stamp']
            check(stamp is not None and m['delay']['from'] == 'localhost', str(m))
        finally:
            await sclose(k)
    run(scenario, timeout=30)


def t10_burst_while_logging_in(srv):
    """Messages still being stored when the recipient becomes available
    are delivered now, each once (not left for the next login)."""
    a = login(srv, 'alice', 'burst')
    j = RawClient(srv.c2s_port)
    j.login('judy', pw('judy'), resource='j')   # bound, not available yet
    try:
        n = 20
        for i in range(n):
            a.message('judy@localhost', 'b%02d' % i)
        j.presence()
        got = []
        deadline = time.time() + 8
        while len(got) < n and time.time() < deadline:
            m = j.wait_for('message', timeout=max(0.1, deadline - time.time()), raise_=False)
            if m is not None:
                got.append(body_of(m))
        check(sorted(got) == ['b%02d' % i for i in range(n)], 'got %d: %s' % (len(got), got))
        no_message(j, 0.7)
        no_message(a, 0.2, lambda e: e.get('type') == 'error')
    finally:
        closeall(a, j)
    j = login(srv, 'judy', 'j2')
    try:
        no_message(j, 1.0)
    finally:
        closeall(j)


TESTS = [t01_stored_and_delivered_in_order, t02_online_messages_have_no_delay, t03_quota,
         t04_nonexistent_account, t05_not_stored, t06_negative_priority_waits,
         t07_kept_across_restart, t08_two_resources_one_delivery, t09_slixmpp_sees_delay,
         t10_burst_while_logging_in]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('21.00 offline_server_start', e)
        R.exit()
    try:
        for u in USERS:
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('21.%02d offline_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('21.00 offline_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('21.99 offline_clean_shutdown', e)
    R.exit()


main()
