#!/usr/bin/python3
"""02: RFC 6121 section 8 routing between local users, with raw clients.
Run with --workers 1 and --workers 2 (run-all.sh does both); with two
workers, 02.16 proves from the server log that the two sessions it routes
between sit on different workers (with one it is skipped)."""

import re

from common import (MagpieServer, Results, RawClient, parse_args, online, sync,
                    no_message, no_stanza, Skip, body_of, expect_error, closeall, check, child,
                    error_condition, local, ns, tostr, wait_until)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
PW = {u: 'pw-' + u for u in ('alice', 'bob', 'carol', 'dave')}


def t01_message_full_jid(srv):
    a = online(srv, 'alice', PW['alice'], 'r1')
    b = online(srv, 'bob', PW['bob'], 'r1')
    try:
        a.message('bob@localhost/r1', 'to full jid', id_='m-full')
        m = b.wait_for('message', lambda e: e.get('id') == 'm-full')
        check(body_of(m) == 'to full jid', tostr(m))
        check(m.get('from') == 'alice@localhost/r1', 'from not stamped: %s' % tostr(m))
        check(m.get('to') == 'bob@localhost/r1', tostr(m))
        check(m.get('type') == 'chat', tostr(m))
    finally:
        closeall(a, b)


def t02_message_bare_jid(srv):
    a = online(srv, 'alice', PW['alice'], 'r2')
    b = online(srv, 'bob', PW['bob'], 'r2')
    try:
        a.message('bob@localhost', 'to bare jid', id_='m-bare')
        m = b.wait_for('message', lambda e: e.get('id') == 'm-bare')
        check(body_of(m) == 'to bare jid', tostr(m))
        check(m.get('from') == 'alice@localhost/r2', tostr(m))
        # and back, to the bare JID of the sender
        b.message('alice@localhost', 'reply', id_='m-reply')
        m = a.wait_for('message', lambda e: e.get('id') == 'm-reply')
        check(m.get('from') == 'bob@localhost/r2', tostr(m))
    finally:
        closeall(a, b)


def t03_bare_jid_highest_priority(srv):
    a = online(srv, 'alice', PW['alice'], 'r3')
    hi = online(srv, 'bob', PW['bob'], 'high', priority=5)
    lo = online(srv, 'bob', PW['bob'], 'low', priority=1)
    try:
        for i in range(3):
            a.message('bob@localhost', 'prio %d' % i, id_='m-prio-%d' % i)
            m = hi.wait_for('message', lambda e, i=i: e.get('id') == 'm-prio-%d' % i)
            check(body_of(m) == 'prio %d' % i, tostr(m))
        no_message(lo, 1.0, lambda e: (e.get('id') or '').startswith('m-prio'))
        # the low one raises its priority above: now it gets them
        lo.presence(priority=10)
        sync(lo)
        a.message('bob@localhost', 'now low', id_='m-prio-x')
        lo.wait_for('message', lambda e: e.get('id') == 'm-prio-x')
        no_message(hi, 1.0, lambda e: e.get('id') == 'm-prio-x')
    finally:
        closeall(a, hi, lo)


def t04_bare_jid_equal_priority(srv):
    a = online(srv, 'alice', PW['alice'], 'r4')
    x = online(srv, 'bob', PW['bob'], 'eqx', priority=3)
    y = online(srv, 'bob', PW['bob'], 'eqy', priority=3)
    try:
        a.message('bob@localhost', 'equal', id_='m-eq')
        got = [c for c in (x, y)
               if c.wait_for('message', lambda e: e.get('id') == 'm-eq', timeout=2, raise_=False) is not None]
        check(len(got) >= 1, 'no resource received the message')
    finally:
        closeall(a, x, y)


def t05_negative_priority_not_delivered(srv):
    a = online(srv, 'alice', PW['alice'], 'r5')
    n = online(srv, 'bob', PW['bob'], 'neg', priority=-1)
    try:
        a.message('bob@localhost', 'to neg', id_='m-neg')
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'm-neg')
        no_message(n, 0.5, lambda e: e.get('id') == 'm-neg')
        # but a full-JID message reaches it
        a.message('bob@localhost/neg', 'full to neg', id_='m-neg-full')
        n.wait_for('message', lambda e: e.get('id') == 'm-neg-full')
    finally:
        closeall(a, n)


def t06_message_offline_user(srv):
    a = online(srv, 'alice', PW['alice'], 'r6')
    try:
        a.message('carol@localhost', 'are you there', id_='m-off')
        e = expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'm-off')
        check(e.get('from') in ('carol@localhost', None), 'error from: %s' % tostr(e))
        a.message('carol@localhost/phone', 'full jid offline', id_='m-off-full')
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'm-off-full')
    finally:
        closeall(a)


def t07_message_nonexistent_user(srv):
    a = online(srv, 'alice', PW['alice'], 'r7')
    try:
        a.message('nobody@localhost', 'hello?', id_='m-none')
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'm-none')
        a.message('nobody@example.test/x', 'hello?', id_='m-none2')
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'm-none2')
    finally:
        closeall(a)


def t08_message_remote_domain(srv):
    a = online(srv, 'alice', PW['alice'], 'r8')
    try:
        a.message('someone@elsewhere.invalid', 'far away', id_='m-remote')
        expect_error(a, 'message', 'remote-server-not-found', lambda e: e.get('id') == 'm-remote')
        r = a.iq('get', 'elsewhere.invalid', "<ping xmlns='urn:xmpp:ping'/>")
        check(r.get('type') == 'error' and error_condition(r) == 'remote-server-not-found', tostr(r))
    finally:
        closeall(a)


def t09_iq_bare_jid_unknown_namespace(srv):
    a = online(srv, 'alice', PW['alice'], 'r9')
    b = online(srv, 'bob', PW['bob'], 'r9')
    try:
        r = a.iq('get', 'bob@localhost', "<query xmlns='urn:example:unknown'/>")
        check(r.get('type') == 'error', tostr(r))
        check(error_condition(r) == 'service-unavailable', tostr(r))
        check(r.get('from') in ('bob@localhost', None), tostr(r))
        # IQs to a bare JID are handled by the server, never by a resource
        no_stanza(b, 'iq', 0.5, lambda e: e.get('type') == 'get')
        # a set with unknown payload to the server itself
        r = a.iq('set', 'localhost', "<query xmlns='urn:example:unknown'/>")
        check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
        # an IQ to a nonexistent user
        r = a.iq('get', 'nobody@localhost', "<query xmlns='urn:example:unknown'/>")
        check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
    finally:
        closeall(a, b)


def t10_iq_full_jid_roundtrip(srv):
    a = online(srv, 'alice', PW['alice'], 'r10')
    b = online(srv, 'bob', PW['bob'], 'r10')
    try:
        a.send("<iq type='get' id='q1' to='bob@localhost/r10'><query xmlns='urn:example:custom'/></iq>")
        q = b.wait_for('iq', lambda e: e.get('id') == 'q1')
        check(q.get('from') == 'alice@localhost/r10', tostr(q))
        check(child(q, 'query', 'urn:example:custom') is not None, tostr(q))
        b.send("<iq type='result' id='q1' to='alice@localhost/r10'><query xmlns='urn:example:custom'><x>1</x></query></iq>")
        r = a.wait_for('iq', lambda e: e.get('id') == 'q1')
        check(r.get('type') == 'result' and r.get('from') == 'bob@localhost/r10', tostr(r))
        # a full JID that is not online
        r = a.iq('get', 'bob@localhost/nothere', "<query xmlns='urn:example:custom'/>")
        check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
    finally:
        closeall(a, b)


def t11_resource_conflict(srv):
    a = online(srv, 'alice', PW['alice'], 'r11')
    old = online(srv, 'bob', PW['bob'], 'same')
    new = None
    try:
        new = RawClient(srv.c2s_port)
        jid = new.login('bob', PW['bob'], resource='same', presence=0)
        check(jid == 'bob@localhost/same', 'new session bound %s' % jid)
        check(old.wait_stream_end(10), 'old session not closed')
        check(old.stream_error == 'conflict', 'old session got stream error %r: %s'
              % (old.stream_error, old.raw_in[-300:]))
        sync(new)
        a.message('bob@localhost/same', 'to the new one', id_='m-conf')
        new.wait_for('message', lambda e: e.get('id') == 'm-conf')
    finally:
        closeall(a, old, new)


def t12_presence_own_resources(srv):
    p1 = online(srv, 'dave', PW['dave'], 'p1', priority=1)
    p2 = None
    try:
        p2 = RawClient(srv.c2s_port)
        p2.login('dave', PW['dave'], resource='p2', presence=2)
        pr = p1.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/p2')
        check(pr.get('type') in (None, 'available'), tostr(pr))
        prio = child(pr, 'priority')
        check(prio is not None and prio.text == '2', 'priority not broadcast: %s' % tostr(pr))
        # p2 hears its own presence and p1's current presence
        p2.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/p2')
        p2.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/p1')
        # a presence change is broadcast too
        p2.presence(priority=2, show='away')
        pr = p1.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/p2'
                         and child(e, 'show') is not None)
        check(child(pr, 'show').text == 'away', tostr(pr))
        # going offline produces unavailable presence
        p2.presence(type_='unavailable')
        p1.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/p2'
                    and e.get('type') == 'unavailable')
        p2.end_stream()
        p2.wait_stream_end(5)
    finally:
        closeall(p1, p2)


def t13_abrupt_disconnect_cleans_session(srv):
    a = online(srv, 'alice', PW['alice'], 'r13')
    b = online(srv, 'bob', PW['bob'], 'gone')
    try:
        b.sock.close()          # no </stream:stream>
        deadline_ok = wait_until(lambda: _full_jid_gone(a, 'bob@localhost/gone'), timeout=10, step=0.2)
        check(deadline_ok, 'messages to a dropped session were not bounced within 10s')
    finally:
        closeall(a)


def _full_jid_gone(a, jid):
    iid = a.next_id()
    a.message(jid, 'anyone?', id_=iid)
    e = a.wait_for('message', lambda e: e.get('id') == iid and e.get('type') == 'error',
                   timeout=0.5, raise_=False)
    return e is not None and error_condition(e) == 'service-unavailable'


def t14_message_ring_many_sessions(srv):
    """Sessions spread over workers: every one sends to the next."""
    n = 8
    users = ['ring%d' % i for i in range(n)]
    for u in users:
        if u not in srv.ring_users:
            srv.add_user(u, 'pw-' + u)
            srv.ring_users.add(u)
    cs = [online(srv, u, 'pw-' + u, 'ring') for u in users]
    try:
        for i, c in enumerate(cs):
            c.message('%s@localhost/ring' % users[(i + 1) % n], 'ring %d' % i, id_='ring-%d' % i)
        for i, c in enumerate(cs):
            j = (i - 1) % n
            m = c.wait_for('message', lambda e, j=j: e.get('id') == 'ring-%d' % j)
            check(m.get('from') == '%s@localhost/ring' % users[j], tostr(m))
            check(body_of(m) == 'ring %d' % j, tostr(m))
        # and a burst from one to another arrives complete and in order
        for k in range(50):
            cs[0].message('ring1@localhost', 'burst %d' % k, id_='burst-%d' % k)
        for k in range(50):
            m = cs[1].wait_for('message', lambda e: (e.get('id') or '').startswith('burst-'))
            check(m.get('id') == 'burst-%d' % k, 'out of order: got %s expected burst-%d' % (m.get('id'), k))
    finally:
        closeall(*cs)


def t15_message_to_self_and_other_host(srv):
    """Two virtual hosts on one server route to each other."""
    if 'eve@example.test' not in srv.ring_users:
        srv.add_user('eve', 'pw-eve', domain='example.test')
        srv.ring_users.add('eve@example.test')
    a = online(srv, 'alice', PW['alice'], 'r15')
    e = online(srv, 'eve', 'pw-eve', 'r15', domain='example.test')
    try:
        check(e.jid == 'eve@example.test/r15', e.jid)
        a.message('eve@example.test', 'cross host', id_='m-x')
        m = e.wait_for('message', lambda x: x.get('id') == 'm-x')
        check(m.get('from') == 'alice@localhost/r15', tostr(m))
        e.message('alice@localhost/r15', 'back', id_='m-y')
        a.wait_for('message', lambda x: x.get('id') == 'm-y')
    finally:
        closeall(a, e)


def _worker_of(srv, jid):
    m = srv.wait_log(r'c2s \S+: bound %s on worker (\d+)' % re.escape(jid), timeout=5)
    check(m is not None, 'no "bound %s on worker N" line in the server log' % jid)
    return int(m.group(1))


def t16_routing_across_workers(srv):
    """Logs sessions in until alice and bob sit on different workers (the
    server's log says which worker bound each), then routes between them
    both ways: full-JID messages, bare-JID message, an IQ round trip."""
    if srv.workers < 2:
        raise Skip('one worker: no routing across workers to test')
    alices, bobs, cs = {}, {}, []
    pair = None
    try:
        for i in range(20):
            a = online(srv, 'alice', PW['alice'], 'xw%d' % i)
            cs.append(a)
            alices[_worker_of(srv, a.jid)] = a
            b = online(srv, 'bob', PW['bob'], 'xw%d' % i)
            cs.append(b)
            bobs[_worker_of(srv, b.jid)] = b
            pair = next(((alices[x], bobs[y], x, y) for x in alices for y in bobs if x != y), None)
            if pair:
                break
        check(pair is not None, 'after %d logins every session is on one worker: alice on %s, bob on %s'
              % (len(cs), sorted(alices), sorted(bobs)))
        a, b, wa, wb = pair
        # only these two stay online, so that bare-JID routing must cross too
        for c in cs:
            if c is not a and c is not b:
                closeall(c)
        cs = [a, b]
        sync(a)
        sync(b)
        a.message(b.jid, 'w%d to w%d' % (wa, wb), id_='xw-ab')
        m = b.wait_for('message', lambda e: e.get('id') == 'xw-ab')
        check(m.get('from') == a.jid and body_of(m) == 'w%d to w%d' % (wa, wb), tostr(m))
        b.message(a.jid, 'w%d to w%d' % (wb, wa), id_='xw-ba')
        m = a.wait_for('message', lambda e: e.get('id') == 'xw-ba')
        check(m.get('from') == b.jid and body_of(m) == 'w%d to w%d' % (wb, wa), tostr(m))
        b.presence(priority=1)
        sync(b)
        a.message('bob@localhost', 'bare across', id_='xw-bare')
        m = b.wait_for('message', lambda e: e.get('id') == 'xw-bare')
        check(m.get('from') == a.jid, tostr(m))
        a.send("<iq type='get' id='xw-q' to='%s'><query xmlns='urn:example:xw'/></iq>" % b.jid)
        q = b.wait_for('iq', lambda e: e.get('id') == 'xw-q')
        check(q.get('from') == a.jid, tostr(q))
        b.send("<iq type='result' id='xw-q' to='%s'/>" % a.jid)
        r = a.wait_for('iq', lambda e: e.get('id') == 'xw-q')
        check(r.get('type') == 'result' and r.get('from') == b.jid, tostr(r))
    finally:
        closeall(*cs)


TESTS = [t01_message_full_jid, t02_message_bare_jid, t03_bare_jid_highest_priority,
         t04_bare_jid_equal_priority, t05_negative_priority_not_delivered,
         t06_message_offline_user, t07_message_nonexistent_user, t08_message_remote_domain,
         t09_iq_bare_jid_unknown_namespace, t10_iq_full_jid_roundtrip, t11_resource_conflict,
         t12_presence_own_resources, t13_abrupt_disconnect_cleans_session,
         t14_message_ring_many_sessions, t15_message_to_self_and_other_host,
         t16_routing_across_workers]


def main():
    try:
        # the core's own rules: no offline storage (mod_offline would store
        # what 02.05, 02.06 and 02.13 expect to be bounced; test_21 covers it)
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'roster'])
        srv.__enter__()
    except Exception as e:
        R.fail('02.00 routing_server_start', e)
        R.exit()
    srv.ring_users = set()
    try:
        for u, pw in PW.items():
            srv.add_user(u, pw)
        for i, t in enumerate(TESTS, 1):
            R.run('02.%02d routing_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('02.00 routing_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('02.99 routing_clean_shutdown', e)
    R.exit()


main()
