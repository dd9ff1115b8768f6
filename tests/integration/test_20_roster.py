#!/usr/bin/python3
"""20: rosters and presence subscriptions (RFC 6121, mod_roster): roster
get/set/remove with pushes to every interested resource, roster
versioning (XEP-0237), the subscription handshake both ways ending in
'both', presence between contacts, probes answered on login, unavailable
when a client's TCP connection is killed, subscription requests kept for
an offline contact, directed presence, unsubscribe, pre-approval, and two
slixmpp clients subscribing to each other. Run with --workers 2 as well
(run-all.sh does): then one test checks that the two sessions it uses sit
on different workers."""

import asyncio
import re
import time

from common import (MagpieServer, RawClient, Results, Skip, parse_args, check, child, error_condition,
                    tostr, closeall, online, sync, no_stanza, wait_until)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_ROSTER = 'jabber:iq:roster'
MODULES = ['disco', 'ping', 'version', 'time', 'roster']
USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivan', 'judy']


def pw(u):
    return u + '-pw'


def login(srv, user, res, presence=True):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    if presence:
        c.presence()
    sync(c)
    return c


def roster(c, ver=None):
    """(ver, {jid: item element}) of a roster get; ver None in the answer
    means an empty result (unchanged)."""
    q = "<query xmlns='%s'%s/>" % (NS_ROSTER, '' if ver is None else " ver='%s'" % ver)
    r = c.iq('get', None, q)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', NS_ROSTER)
    if q is None:
        return None, None
    return q.get('ver'), {i.get('jid'): i for i in q if i.tag == '{%s}item' % NS_ROSTER}


def is_push(jid, pred=None):
    def p(e):
        if e.get('type') != 'set':
            return False
        q = child(e, 'query', NS_ROSTER)
        if q is None:
            return False
        it = child(q, 'item', NS_ROSTER)
        return it is not None and it.get('jid') == jid and (pred is None or pred(it))
    return p


def push(c, jid, pred=None, timeout=5):
    """Waits for a roster push about jid (matching pred on the item),
    answers it, and returns the item."""
    e = c.wait_for('iq', is_push(jid, pred), timeout=timeout)
    check(e.get('from') in (None, c.jid.split('/')[0]), 'push from %s: %s' % (e.get('from'), tostr(e)))
    c.send("<iq type='result' id='%s'/>" % e.get('id'))
    return child(child(e, 'query', NS_ROSTER), 'item', NS_ROSTER)


def sub(state, ask=None):
    return lambda it: it.get('subscription') == state and it.get('ask') == ask


def presence_from(c, frm, type_=None, timeout=5, pred=None):
    return c.wait_for('presence', lambda e: e.get('from') == frm and e.get('type') == type_
                      and (pred is None or pred(e)), timeout=timeout)


def set_item(c, jid, name=None, groups=(), remove=False):
    attrs = "jid='%s'" % jid
    if name:
        attrs += " name='%s'" % name
    if remove:
        attrs += " subscription='remove'"
    g = ''.join('<group>%s</group>' % x for x in groups)
    return c.iq('set', None, "<query xmlns='%s'><item %s>%s</item></query>" % (NS_ROSTER, attrs, g))


# ---- tests

def t01_versioning(srv):
    a = login(srv, 'alice', 'v1')
    try:
        ver, items = roster(a)
        check(ver is not None and items == {}, 'fresh roster: ver=%r items=%r' % (ver, items))
        again, _ = roster(a, ver)
        check(again is None, 'unchanged roster with ver=%s must be an empty result, got ver %r' % (ver, again))
        r = set_item(a, 'zed@localhost', name='Zed')
        check(r.get('type') == 'result', tostr(r))
        it = push(a, 'zed@localhost')
        newver, items = roster(a, ver)
        check(newver is not None and newver != ver, 'changed roster: ver %r -> %r' % (ver, newver))
        check('zed@localhost' in items and items['zed@localhost'].get('name') == 'Zed', items)
        check(it.get('subscription') == 'none', tostr(it))
        r = set_item(a, 'zed@localhost', remove=True)
        check(r.get('type') == 'result', tostr(r))
        push(a, 'zed@localhost', lambda i: i.get('subscription') == 'remove')
        _, items = roster(a)
        check(items == {}, 'after remove: %s' % items)
    finally:
        closeall(a)


def t02_push_to_second_resource(srv):
    a1 = login(srv, 'alice', 'p1')
    a2 = login(srv, 'alice', 'p2')
    a3 = login(srv, 'alice', 'p3')  # never asks for the roster: gets no push
    try:
        roster(a1)
        roster(a2)
        r = set_item(a1, 'carol@localhost', name='Carol', groups=['Friends', 'Work'])
        check(r.get('type') == 'result', tostr(r))
        for c in (a1, a2):
            it = push(c, 'carol@localhost')
            groups = sorted(g.text for g in it if g.tag == '{%s}group' % NS_ROSTER)
            check(it.get('name') == 'Carol' and groups == ['Friends', 'Work'], tostr(it))
        no_stanza(a3, 'iq', 0.5, is_push('carol@localhost'))
        # errors: duplicate group, two items, remove of an unknown item
        r = set_item(a1, 'x@localhost', groups=['A', 'A'])
        check(error_condition(r) == 'bad-request', tostr(r))
        r = a1.iq('set', None, "<query xmlns='%s'><item jid='x@localhost'/><item jid='y@localhost'/></query>"
                  % NS_ROSTER)
        check(error_condition(r) == 'bad-request', tostr(r))
        r = set_item(a1, 'nobody@localhost', remove=True)
        check(error_condition(r) == 'item-not-found', tostr(r))
        set_item(a1, 'carol@localhost', remove=True)
        for c in (a1, a2):
            push(c, 'carol@localhost', lambda i: i.get('subscription') == 'remove')
    finally:
        closeall(a1, a2, a3)


def t03_not_your_roster(srv):
    b = login(srv, 'bob', 'nr')
    try:
        r = b.iq('get', 'alice@localhost', "<query xmlns='%s'/>" % NS_ROSTER)
        check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    finally:
        closeall(b)


def handshake(x, xname, y, yname):
    """x subscribes to y, y approves; asserts every stanza of RFC 6121 §3.1."""
    xj, yj = xname + '@localhost', yname + '@localhost'
    x.send("<presence to='%s' type='subscribe'><status>let me in</status></presence>" % yj)
    it = push(x, yj)
    check(it.get('ask') == 'subscribe', 'pending out: %s' % tostr(it))
    req = y.wait_for('presence', lambda e: e.get('type') == 'subscribe' and e.get('from') == xj)
    check(child(req, 'status') is not None and child(req, 'status').text == 'let me in', tostr(req))
    y.send("<presence to='%s' type='subscribed'/>" % xj)
    return xj, yj


def t04_handshake_both_ways(srv):
    a = login(srv, 'alice', 'h')
    b = login(srv, 'bob', 'h')
    try:
        roster(a)
        roster(b)
        aj, bj = handshake(a, 'alice', b, 'bob')
        it = push(b, aj)
        check(it.get('subscription') == 'from', 'bob has from: %s' % tostr(it))
        it = push(a, bj)
        check(it.get('subscription') == 'to' and it.get('ask') is None, 'alice has to: %s' % tostr(it))
        presence_from(a, bj, 'subscribed')
        # alice now sees bob's presence (RFC 6121 §3.1.5)
        presence_from(a, bj + '/h')
        # the other way round
        handshake(b, 'bob', a, 'alice')
        push(a, bj, sub('both'))
        push(b, aj, sub('both'))
        presence_from(b, aj + '/h')
        _, ia = roster(a)
        _, ib = roster(b)
        check(ia[bj].get('subscription') == 'both' and ib[aj].get('subscription') == 'both',
              'rosters: %s / %s' % (tostr(ia[bj]), tostr(ib[aj])))
        # presence of a contact after subscription
        b.send("<presence><show>away</show><status>lunch</status></presence>")
        p = presence_from(a, bj + '/h')
        check(child(p, 'show') is not None and child(p, 'show').text == 'away', tostr(p))
        a.send("<presence><show>dnd</show></presence>")
        p = presence_from(b, aj + '/h')
        check(child(p, 'show').text == 'dnd', tostr(p))
        # a subscribe to an existing subscription is answered by bob's
        # server, not bob (the answer changes nothing, so alice's server
        # does not deliver it: RFC 6121 Appendix A.3.2)
        a.send("<presence to='%s' type='subscribe'/>" % bj)
        no_stanza(b, 'presence', 0.5, lambda e: e.get('type') == 'subscribe')
        no_stanza(a, 'iq', 0.3, is_push(bj))
    finally:
        closeall(a, b)


def t05_probe_answered_on_login(srv):
    b = login(srv, 'bob', 'pb')
    b.send("<presence><show>chat</show></presence>")
    sync(b)
    a = None
    try:
        a = RawClient(srv.c2s_port)
        a.login('alice', pw('alice'), resource='late')
        a.presence()
        p = presence_from(a, 'bob@localhost/pb')
        check(child(p, 'show') is not None and child(p, 'show').text == 'chat', tostr(p))
        # and bob sees alice arrive
        presence_from(b, 'alice@localhost/late')
    finally:
        closeall(a, b)


def t06_unavailable_on_killed_connection(srv):
    b = login(srv, 'bob', 'watch')
    a = login(srv, 'alice', 'doomed')
    try:
        presence_from(b, 'alice@localhost/doomed')
        # kill alice's TCP connection: no unavailable, no closing tag
        a.sock.close()
        a.sock = None
        p = presence_from(b, 'alice@localhost/doomed', 'unavailable', timeout=10)
        check(p is not None, 'no unavailable')
    finally:
        closeall(b)


def t07_unavailable_on_clean_close(srv):
    b = login(srv, 'bob', 'watch2')
    a = login(srv, 'alice', 'leaving')
    try:
        presence_from(b, 'alice@localhost/leaving')
        a.end_stream()
        presence_from(b, 'alice@localhost/leaving', 'unavailable', timeout=10)
    finally:
        closeall(a, b)


def t08_request_kept_while_offline(srv):
    c = login(srv, 'carol', 'c')
    try:
        roster(c)
        c.send("<presence to='dave@localhost' type='subscribe'><status>hi dave</status></presence>")
        push(c, 'dave@localhost', sub('none', 'subscribe'))
        sync(c)
        for round_ in (1, 2):
            # delivered at each login until answered
            d = RawClient(srv.c2s_port)
            d.login('dave', pw('dave'), resource='d%d' % round_)
            _, items = roster(d)
            check('carol@localhost' not in items, 'a pending request is no roster item: %s' % items)
            d.presence()
            req = presence_from(d, 'carol@localhost', 'subscribe')
            check(child(req, 'status').text == 'hi dave', tostr(req))
            if round_ == 2:
                d.send("<presence to='carol@localhost' type='unsubscribed'/>")
                sync(d)
            closeall(d)
        push(c, 'dave@localhost', sub('none'))
        presence_from(c, 'dave@localhost', 'unsubscribed')
        d = login(srv, 'dave', 'd3')
        no_stanza(d, 'presence', 0.7, lambda e: e.get('type') == 'subscribe')
        closeall(d)
    finally:
        closeall(c)


def t09_directed_presence(srv):
    e = login(srv, 'erin', 'e')
    f = login(srv, 'frank', 'f')
    try:
        f.send("<presence to='erin@localhost/e'><status>psst</status></presence>")
        presence_from(e, 'frank@localhost/f')
        f.sock.close()
        f.sock = None
        presence_from(e, 'frank@localhost/f', 'unavailable', timeout=10)
    finally:
        closeall(e)


def t10_unsubscribe(srv):
    g = login(srv, 'gina', 'g')
    h = login(srv, 'hank', 'h')
    try:
        roster(g)
        roster(h)
        handshake(g, 'gina', h, 'hank')
        push(g, 'hank@localhost', sub('to'))
        push(h, 'gina@localhost', sub('from'))
        presence_from(g, 'hank@localhost', 'subscribed')
        presence_from(g, 'hank@localhost/h')
        g.send("<presence to='hank@localhost' type='unsubscribe'/>")
        push(g, 'hank@localhost', sub('none'))
        push(h, 'gina@localhost', sub('none'))
        presence_from(h, 'gina@localhost', 'unsubscribe')
        # RFC 6121 §3.3.3: hank's resources go unavailable for gina
        presence_from(g, 'hank@localhost/h', 'unavailable')
        # no more presence from hank
        h.send("<presence><show>xa</show></presence>")
        no_stanza(g, 'presence', 0.7, lambda e: e.get('from', '').startswith('hank@'))
    finally:
        closeall(g, h)


def t11_pre_approval(srv):
    i = login(srv, 'ivan', 'i')
    j = login(srv, 'judy', 'j')
    try:
        check(i.feature('sub') is not None and i.feature('ver') is not None,
              'pre-approval and roster versioning features: %s' % tostr(i.features))
        roster(i)
        roster(j)
        i.send("<presence to='judy@localhost' type='subscribed'/>")
        it = push(i, 'judy@localhost')
        check(it.get('approved') == 'true' and it.get('subscription') == 'none', tostr(it))
        no_stanza(j, 'presence', 0.5, lambda e: e.get('type') == 'subscribed')
        j.send("<presence to='ivan@localhost' type='subscribe'/>")
        # approved at once by ivan's server, without asking ivan
        presence_from(j, 'ivan@localhost', 'subscribed')
        push(j, 'ivan@localhost', sub('to'))
        push(i, 'judy@localhost', sub('from'))
        no_stanza(i, 'presence', 0.5, lambda e: e.get('type') == 'subscribe')
    finally:
        closeall(i, j)


def worker_of(srv, jid, start):
    m = None
    for m in re.finditer(r'bound %s on worker (\d+)' % re.escape(jid), srv.log[start:]):
        pass
    return int(m.group(1)) if m else None


def t12_contacts_on_two_workers(srv):
    if args.workers < 2:
        raise Skip('needs --workers 2')
    # alice and bob are 'both' since t04
    b = login(srv, 'bob', 'w')
    bw = worker_of(srv, 'bob@localhost/w', 0)
    a = None
    for n in range(12):
        mark = len(srv.log)
        a = login(srv, 'alice', 'w%d' % n)
        if worker_of(srv, 'alice@localhost/w%d' % n, mark) not in (None, bw):
            break
        closeall(a)
        a = None
    try:
        check(a is not None, 'could not get alice onto a worker other than bob\'s (%s)' % bw)
        presence_from(a, 'bob@localhost/w')          # probe answered across workers
        presence_from(b, a.jid)                      # broadcast across workers
        a.sock.close()
        a.sock = None
        presence_from(b, a.jid, 'unavailable', timeout=10)
    finally:
        closeall(a, b)


def t13_slixmpp_subscribe_both(srv):
    from slixhelp import run, login as slogin, close as sclose

    async def scenario():
        k = await slogin(srv.c2s_port, 'kim@localhost/s', pw('kim'))
        l_ = await slogin(srv.c2s_port, 'lee@localhost/s', pw('lee'))
        try:
            await k.get_roster()
            await l_.get_roster()
            # slixmpp authorizes and subscribes back by default
            k.send_presence_subscription(pto='lee@localhost')
            loop = asyncio.get_event_loop()
            deadline = loop.time() + 10
            while loop.time() < deadline:
                if (k.client_roster['lee@localhost']['subscription'] == 'both' and
                        l_.client_roster['kim@localhost']['subscription'] == 'both'):
                    break
                await asyncio.sleep(0.1)
            ks = k.client_roster['lee@localhost']['subscription']
            ls = l_.client_roster['kim@localhost']['subscription']
            check(ks == 'both' and ls == 'both', 'kim sees %s, lee sees %s' % (ks, ls))
            # each sees the other online
            deadline = loop.time() + 5
            while loop.time() < deadline and not (
                    k.client_roster['lee@localhost'].resources and l_.client_roster['kim@localhost'].resources):
                await asyncio.sleep(0.1)
            check('s' in k.client_roster['lee@localhost'].resources, 'kim does not see lee online')
            check('s' in l_.client_roster['kim@localhost'].resources, 'lee does not see kim online')
        finally:
            await sclose(k, l_)
    run(scenario, timeout=40)


def t14_roster_survives_restart(srv):
    a = login(srv, 'alice', 'before')
    ver, items = roster(a)
    closeall(a)
    srv.restart()
    a = login(srv, 'alice', 'after')
    b = login(srv, 'bob', 'after')
    try:
        ver2, items2 = roster(a)
        check(ver2 == ver, 'version changed across a restart: %s -> %s' % (ver, ver2))
        check(items2['bob@localhost'].get('subscription') == 'both', tostr(items2['bob@localhost']))
        again, _ = roster(a, ver)
        check(again is None, 'unchanged roster after restart must be an empty result')
        presence_from(a, 'bob@localhost/after')
    finally:
        closeall(a, b)


TESTS = [t01_versioning, t02_push_to_second_resource, t03_not_your_roster, t04_handshake_both_ways,
         t05_probe_answered_on_login, t06_unavailable_on_killed_connection,
         t07_unavailable_on_clean_close, t08_request_kept_while_offline, t09_directed_presence,
         t10_unsubscribe, t11_pre_approval, t12_contacts_on_two_workers, t13_slixmpp_subscribe_both,
         t14_roster_survives_restart]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('20.00 roster_server_start', e)
        R.exit()
    try:
        for u in USERS + ['kim', 'lee']:
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('20.%02d roster_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('20.00 roster_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('20.99 roster_clean_shutdown', e)
    R.exit()


main()
