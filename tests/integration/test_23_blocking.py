#!/usr/bin/python3
"""23: blocking (XEP-0191, mod_blocking): blocklist get, block and
unblock with pushes to every resource that asked for the list, what a
blocked contact can no longer send (messages and IQs get
service-unavailable, IQs to the bare JID the server answers for the user
too, presence is dropped), what the user can no longer send
to it (not-acceptable with <blocked/>), presence between subscribed
contacts stopping (and an unavailable at block time), unblock-all, the
list kept across a restart, and the same for a recipient with no session
(the list cached since the logout, or read from the store after a
restart): nothing from a blocked JID is stored offline, archived (MAM),
kept as a subscription request or notified by push (XEP-0357), the sender
gets service-unavailable, the others' messages arrive in their order, and
XEP-0198 acknowledgements still come. Run with --workers 2 as well (run-all.sh)."""

import time

from common import (RawClient, MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, sync, no_message, no_stanza, body_of, expect_error,
                    subscribe_both as common_subscribe_both, wait_until)
from mamhelp import query, bodies as mam_bodies
from smhelp import sm_login

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_B = 'urn:xmpp:blocking'
NS_R = 'jabber:iq:roster'
MODULES = ['disco', 'ping', 'version', 'time', 'roster', 'offline', 'carbons', 'blocking', 'mam', 'sm',
           '{ name = "push"; min_interval = 0; }']
NS_PUSH = 'urn:xmpp:push:0'
APP = 'pushsrv@localhost/app'


def pw(u):
    return u + '-pw'


def login(srv, user, res):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.presence()
    sync(c)
    c.drain(0.2)
    return c


def blocklist(c):
    r = c.iq('get', None, "<blocklist xmlns='%s'/>" % NS_B)
    check(r.get('type') == 'result', tostr(r))
    return sorted(i.get('jid') for i in child(r, 'blocklist', NS_B))


def block(c, *jids, what='block'):
    items = ''.join("<item jid='%s'/>" % j for j in jids)
    return c.iq('set', None, "<%s xmlns='%s'>%s</%s>" % (what, NS_B, items, what))


def push(c, what, jids):
    def pred(e):
        w = child(e, what, NS_B)
        return e.get('type') == 'set' and w is not None and \
            sorted(i.get('jid') for i in w) == sorted(jids)
    e = c.wait_for('iq', pred, timeout=5)
    c.send("<iq type='result' id='%s'/>" % e.get('id'))
    return e


def subscribe_both(x, xname, y, yname):
    """A mutual subscription between two online clients, backlogs emptied."""
    common_subscribe_both(x, xname, y, yname)
    x.drain(0.3)
    y.drain(0.3)


def t01_disco_and_empty_list(srv):
    a = login(srv, 'alice', 'd')
    try:
        r = a.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        check(NS_B in {f.get('var') for f in child(r, 'query')}, tostr(r))
        check(blocklist(a) == [], 'fresh blocklist')
        r = block(a)
        check(error_condition(r) == 'bad-request', 'empty block: %s' % tostr(r))
        r = a.iq('set', None, "<block xmlns='%s'><item jid='@@'/></block>" % NS_B)
        check(error_condition(r) == 'jid-malformed', tostr(r))
    finally:
        closeall(a)


def t02_block_enforced_both_ways(srv):
    a1, a2 = login(srv, 'alice', 'a1'), login(srv, 'alice', 'a2')
    b = login(srv, 'bob', 'b')
    try:
        subscribe_both(a1, 'alice', b, 'bob')
        a2.drain(0.3)
        blocklist(a1)
        blocklist(a2)
        r = block(a1, 'bob@localhost')
        check(r.get('type') == 'result', tostr(r))
        push(a1, 'block', ['bob@localhost'])
        push(a2, 'block', ['bob@localhost'])
        check(blocklist(a1) == ['bob@localhost'], 'list')
        # bob sees alice's resources go offline (§3.3)
        for res in ('a1', 'a2'):
            b.wait_for('presence', lambda e: e.get('from') == 'alice@localhost/' + res
                       and e.get('type') == 'unavailable')
        # bob -> alice: message bounced, IQ bounced, presence dropped
        i = b.message('alice@localhost/a1', 'blocked?')
        e = expect_error(b, 'message', 'service-unavailable', lambda e: e.get('id') == i)
        i = b.message('alice@localhost', 'blocked bare?')
        expect_error(b, 'message', 'service-unavailable', lambda e: e.get('id') == i)
        no_message(b, 0.5, lambda e: e.get('type') == 'error')  # one error, not one per resource
        r = b.iq('get', 'alice@localhost/a1', "<ping xmlns='urn:xmpp:ping'/>")
        check(error_condition(r) == 'service-unavailable', tostr(r))
        b.send("<presence><show>away</show></presence>")
        for a in (a1, a2):
            no_stanza(a, 'message', 0.3, lambda e: body_of(e) in ('blocked?', 'blocked bare?'))
            no_stanza(a, 'presence', 0.3, lambda e: e.get('from', '').startswith('bob@'))
        # alice -> bob: not-acceptable + <blocked/>; her presence does not reach him
        i = a1.message('bob@localhost', 'to a blocked contact')
        e = expect_error(a1, 'message', 'not-acceptable', lambda e: e.get('id') == i)
        check(child(child(e, 'error'), 'blocked', 'urn:xmpp:blocking:errors') is not None, tostr(e))
        a1.send("<presence><show>dnd</show></presence>")
        no_stanza(b, 'presence', 0.6, lambda e: e.get('from', '').startswith('alice@'))
        no_message(b, 0.3, lambda e: body_of(e) == 'to a blocked contact')
        # unblock: pushes, and messages flow again
        r = block(a1, 'bob@localhost', what='unblock')
        check(r.get('type') == 'result', tostr(r))
        push(a1, 'unblock', ['bob@localhost'])
        push(a2, 'unblock', ['bob@localhost'])
        b.message('alice@localhost/a1', 'free again')
        a1.wait_for('message', lambda e: body_of(e) == 'free again')
        a1.message('bob@localhost', 'me too')
        b.wait_for('message', lambda e: body_of(e) == 'me too')
    finally:
        closeall(a1, a2, b)


def t03_domain_and_unblock_all(srv):
    a = login(srv, 'alice', 'u')
    c = login(srv, 'carol', 'c')
    try:
        blocklist(a)
        block(a, 'localhost/c', 'dave@localhost')
        push(a, 'block', ['dave@localhost', 'localhost/c'])
        # domain/resource matches carol@localhost/c (XEP-0016 matching)
        i = c.message('alice@localhost/u', 'via domain/resource')
        expect_error(c, 'message', 'service-unavailable', lambda e: e.get('id') == i)
        r = a.iq('set', None, "<unblock xmlns='%s'/>" % NS_B)
        check(r.get('type') == 'result', tostr(r))
        e = a.wait_for('iq', lambda e: e.get('type') == 'set' and child(e, 'unblock', NS_B) is not None)
        check(len(list(child(e, 'unblock', NS_B))) == 0, 'unblock-all push: %s' % tostr(e))
        check(blocklist(a) == [], 'after unblock all')
        c.message('alice@localhost/u', 'hello again')
        a.wait_for('message', lambda e: body_of(e) == 'hello again')
    finally:
        closeall(a, c)


def t04_kept_across_restart(srv):
    a = login(srv, 'alice', 'r')
    block(a, 'eve@localhost')
    closeall(a)
    srv.restart()
    a = login(srv, 'alice', 'r2')
    e = login(srv, 'eve', 'e')
    try:
        check(blocklist(a) == ['eve@localhost'], 'list after restart')
        i = e.message('alice@localhost/r2', 'after restart')
        expect_error(e, 'message', 'service-unavailable', lambda x: x.get('id') == i)
    finally:
        closeall(a, e)


def t05_enforced_from_the_first_stanza(srv):
    """The blocklist loads when a session starts; what the client sends
    right after binding waits for it (mp_session_hold), so it cannot slip
    through."""
    a = login(srv, 'alice', 'setup')
    r = block(a, 'eve@localhost')
    check(r.get('type') == 'result', tostr(r))
    closeall(a)
    for n in range(8):
        c = RawClient(srv.c2s_port)
        try:
            c.login('alice', pw('alice'), resource='fast%d' % n)
            c.send("<message to='eve@localhost' type='chat' id='x%d'><body>quick</body></message>" % n)
            e = expect_error(c, 'message', 'not-acceptable', lambda x, n=n: x.get('id') == 'x%d' % n)
            check(child(child(e, 'error'), 'blocked', 'urn:xmpp:blocking:errors') is not None, tostr(e))
        finally:
            closeall(c)


def t06_many_users_online(srv):
    """More users online than the first size of the module's table of
    blocklists (256 buckets, doubled when full): every user's list is still
    found after the table grew — a block by every 37th user is enforced,
    the others get the message."""
    n = 300
    users = ['many%d' % i for i in range(n)]
    for u in users:
        srv.add_user(u, pw(u))
    cs = []
    e = None
    try:
        for u in users:
            c = RawClient(srv.c2s_port)
            cs.append(c)
            c.login(u, pw(u), resource='m')
            c.presence()
        blockers = set(range(0, n, 37))
        for i in sorted(blockers):
            r = block(cs[i], 'eve@localhost')
            check(r.get('type') == 'result', tostr(r))
        e = login(srv, 'eve', 'e')
        for i in sorted(blockers | set(range(5, n, 23))):
            mid = e.message('many%d@localhost/m' % i, 'hello %d' % i)
            if i in blockers:
                expect_error(e, 'message', 'service-unavailable', lambda x, mid=mid: x.get('id') == mid)
            else:
                cs[i].wait_for('message', lambda x, i=i: body_of(x) == 'hello %d' % i)
        no_message(e, 0.3, lambda x: x.get('type') == 'error')
    finally:
        closeall(*cs)
        if e:
            closeall(e)


def login_keep(srv, user, res):
    """Logged in with initial presence, nothing read yet (offline messages
    and waiting subscription requests stay in the backlog)."""
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.presence()
    return c


def until_body(c, body, timeout=10):
    """Everything c receives up to and including the message with body,
    then for one more second, in order."""
    out = []
    deadline = time.time() + timeout
    while not any(e.tag.endswith('}message') and body_of(e) == body for e in out):
        e = c.recv(timeout=max(0.1, deadline - time.time()))
        check(e is not None, 'no message %r; got %s' % (body, [tostr(x) for x in out]))
        out.append(e)
    return out + c.drain(1.0)


def logout_gone(c, full, observer):
    """Ends c's stream and waits until the server has no session for full
    (an IQ to it gets service-unavailable)."""
    c.end_stream()
    c.wait_stream_end(3)
    closeall(c)

    def gone():
        try:
            r = observer.iq('get', full, "<ping xmlns='urn:xmpp:ping'/>", timeout=1)
        except Exception:
            return False
        return error_condition(r) == 'service-unavailable'
    check(wait_until(gone, 8, 0.2), '%s still has a session' % full)


def check_offline_result(f, msgs, hb, tag):
    got = [body_of(e) for e in msgs if e.tag.endswith('}message') and body_of(e)]
    check(not any(b.startswith('g' + tag) for b in got), 'blocked messages delivered: %s' % got)
    check([b for b in got if b.startswith('h' + tag)] == hb, 'offline order: %s, want %s' % (got, hb))
    subs = [e.get('from') for e in msgs if e.tag.endswith('}presence') and e.get('type') == 'subscribe']
    check('gina@localhost' not in subs, 'blocked subscription request kept: %s' % subs)
    check('hank@localhost' in subs, 'subscription request lost: %s' % subs)
    # nothing from gina in the archive; hank's in order
    r, ms, _, _ = query(f, form={'with': 'gina@localhost'})
    check(r.get('type') == 'result', tostr(r))
    gb = [b for b in mam_bodies(ms) if b and b.startswith('g' + tag)]
    check(not gb, 'blocked messages archived: %s' % gb)
    r, ms, _, _ = query(f, form={'with': 'hank@localhost'})
    check([b for b in mam_bodies(ms) if b and b.startswith('h' + tag)] == hb,
          'archive: %s' % mam_bodies(ms))


def push_senders(app, n, timeout=10):
    """The last-message-sender of each push notification (XEP-0357) the
    app server gets until n came and a second passed without more."""
    out = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        e = app.wait_for('iq', lambda e: e.get('type') == 'set' and
                         child(e, 'pubsub', 'http://jabber.org/protocol/pubsub') is not None,
                         timeout=1.0 if len(out) >= n else max(0.1, deadline - time.time()),
                         raise_=False)
        if e is None:
            if len(out) >= n:
                break
            continue
        app.send("<iq type='result' id='%s' to='%s'/>" % (e.get('id'), e.get('from')))
        for f in e.iter('{jabber:x:data}field'):
            if f.get('var') == 'last-message-sender':
                out.append(child(f, 'value').text)
    return out


def counters(srv):
    """mod_blocking's counters from magpiectl status."""
    out = {}
    for line in srv.ctl('status', check=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].startswith('blocking_'):
            out[parts[0]] = int(parts[1])
    check('blocking_list_reads' in out, 'no blocking counters in status: %s' % out)
    return out


def run_offline_case(srv, tag, restart):
    f = login(srv, 'frank', 'f0')
    r = block(f, 'gina@localhost')
    check(r.get('type') == 'result', tostr(r))
    r = f.iq('set', None, "<enable xmlns='%s' jid='%s' node='n%s'/>" % (NS_PUSH, APP, tag))
    check(r.get('type') == 'result', tostr(r))
    h = login(srv, 'hank', 'h')
    g = f2 = app = None
    try:
        logout_gone(f, 'frank@localhost/f0', h)
        if restart:  # nothing in memory: the list is read while the stanzas wait
            closeall(h)
            h = None
            srv.restart()
            h = login(srv, 'hank', 'h')
        app = login(srv, 'pushsrv', 'app')
        g = login(srv, 'gina', 'g')
        before = counters(srv)
        gids, hb = [], []
        for k in range(4):
            gids.append(g.message('frank@localhost', 'g%s%d' % (tag, k)))
            hb.append('h%s%d' % (tag, k))
            h.message('frank@localhost', hb[-1])
        gids.append(g.message('frank@localhost/f0', 'g%s-full' % tag))
        g.send("<message to='frank@localhost' type='normal' id='g%snormal'><body>g%s-normal</body>"
               "</message>" % (tag, tag))
        gids.append('g%snormal' % tag)
        hb.append('h%s-full' % tag)
        h.message('frank@localhost/f0', hb[-1])
        g.send("<presence to='frank@localhost' type='subscribe'/>")
        h.send("<presence to='frank@localhost' type='subscribe'/>")
        for i in gids:
            e = expect_error(g, 'message', 'service-unavailable', lambda e, i=i: e.get('id') == i)
            check(e.get('from', '').startswith('frank@localhost'), tostr(e))
        no_message(g, 0.3, lambda e: e.get('type') == 'error')
        no_message(h, 0.5, lambda e: e.get('type') == 'error')
        after = counters(srv)
        d = {k: after[k] - before.get(k, 0) for k in after}
        # cached: no store read at all; else one read for all of frank's stanzas
        check(d['blocking_list_reads'] == (1 if restart else 0), 'store reads: %s' % d)
        check(d['blocking_refused'] >= len(gids) + 1, 'refused: %s' % d)
        check((d['blocking_held'] > 0) == restart, 'held: %s' % d)
        # push notifications for hank's messages only (mod_push never sees gina's)
        senders = push_senders(app, len(hb))
        check(senders and all(x == 'hank@localhost' for x in senders),
              'push senders: %s' % senders)
        # frank logs in: hank's messages, in order; nothing of gina's
        f2 = login_keep(srv, 'frank', 'f2')
        msgs = until_body(f2, hb[-1])
        check_offline_result(f2, msgs, hb, tag)
        r = f2.iq('set', None, "<disable xmlns='%s' jid='%s'/>" % (NS_PUSH, APP))
        check(r.get('type') == 'result', tostr(r))
    finally:
        closeall(f2, g, h, app)


def t07_offline_recipient_cached_list(srv):
    """The recipient logged out after blocking: its list is cached."""
    run_offline_case(srv, 'c', restart=False)


def t08_offline_recipient_list_from_store(srv):
    """After a restart nothing is in memory: the stanzas wait while the
    list is read, then go on in their order."""
    run_offline_case(srv, 's', restart=True)


def t09_offline_recipient_acks(srv):
    """Stanzas held while the list loads are acknowledged (XEP-0198) once
    routed or refused: both senders' <a/> count them."""
    f = login(srv, 'frank', 'fa')
    block(f, 'gina@localhost')
    closeall(f)
    srv.restart()
    g = sm_login(srv, 'gina', pw('gina'), 'ga')
    h = sm_login(srv, 'hank', pw('hank'), 'ha')
    f = None
    try:
        base_g, base_h = g.request(), h.request()
        ids = []
        for k in range(3):
            ids.append(g.message('frank@localhost', 'ack-g%d' % k))
            h.message('frank@localhost', 'ack-h%d' % k)
        check(g.request() == base_g + 3, 'gina: three messages handled')
        check(h.request() == base_h + 3, 'hank: three messages handled')
        for i in ids:
            expect_error(g, 'message', 'service-unavailable', lambda e, i=i: e.get('id') == i)
        f = login_keep(srv, 'frank', 'fb')
        got = [body_of(e) for e in until_body(f, 'ack-h2') if e.tag.endswith('}message')]
        check([b for b in got if b and b.startswith('ack-')] == ['ack-h0', 'ack-h1', 'ack-h2'],
              'delivered: %s' % got)
    finally:
        closeall(g, h, f)


def t10_offline_cache_follows_changes(srv):
    """The cached list of a user with no session is the one that user's
    blocking commands change, and it goes with the account: a new account
    of the same name blocks nobody."""
    srv.add_user('ivy', pw('ivy'))
    h = login(srv, 'hank', 'h')
    g = v = None
    try:
        v = login(srv, 'ivy', 'v1')
        block(v, 'gina@localhost')
        logout_gone(v, 'ivy@localhost/v1', h)
        g = login(srv, 'gina', 'g')
        i = g.message('ivy@localhost', 'while blocked')
        expect_error(g, 'message', 'service-unavailable', lambda e: e.get('id') == i)
        v = login(srv, 'ivy', 'v2')
        check(blocklist(v) == ['gina@localhost'], 'list')
        r = block(v, 'gina@localhost', what='unblock')
        check(r.get('type') == 'result', tostr(r))
        logout_gone(v, 'ivy@localhost/v2', h)
        g.message('ivy@localhost', 'after unblock')
        no_message(g, 0.5, lambda e: e.get('type') == 'error')
        v = login_keep(srv, 'ivy', 'v3')
        got = [body_of(e) for e in until_body(v, 'after unblock') if e.tag.endswith('}message')]
        check('while blocked' not in got, 'blocked message delivered: %s' % got)
        block(v, 'gina@localhost')
        logout_gone(v, 'ivy@localhost/v3', h)
        v = None
        p = srv.ctl('user', 'del', 'ivy@localhost')
        check(p.returncode == 0, 'magpiectl user del: %s %s' % (p.stdout, p.stderr))
        srv.add_user('ivy', pw('ivy'))
        g.message('ivy@localhost', 'to the new account')
        no_message(g, 0.5, lambda e: e.get('type') == 'error')
        v = login_keep(srv, 'ivy', 'v4')
        until_body(v, 'to the new account')
        check(blocklist(v) == [], 'new account list')
    finally:
        closeall(h, g, v)


def t11_iqs_to_the_bare_jid(srv):
    """An IQ request to a user's bare JID, which the server answers for the
    user (here disco#info, RFC 6120 §10.3.3), from a JID the user blocked
    gets service-unavailable (§3.5): with the user online, offline with the
    list cached, and offline after a restart (the IQ waits while the list is
    read); another contact's gets its answer."""
    srv.add_user('kate', pw('kate'))
    disco = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
    k = login(srv, 'kate', 'k')
    b = login(srv, 'bob', 'b11')
    c = login(srv, 'carol', 'c11')
    try:
        r = b.iq('get', 'kate@localhost', disco)
        check(r.get('type') == 'result', 'before blocking: %s' % tostr(r))
        r = block(k, 'bob@localhost')
        check(r.get('type') == 'result', tostr(r))

        def judged(tag):
            r = b.iq('get', 'kate@localhost', disco)
            check(error_condition(r) == 'service-unavailable', '%s, blocked: %s' % (tag, tostr(r)))
            check(r.get('from') == 'kate@localhost', tostr(r))
            r = c.iq('get', 'kate@localhost', disco)
            check(r.get('type') == 'result', '%s, not blocked: %s' % (tag, tostr(r)))
        judged('online')
        logout_gone(k, 'kate@localhost/k', c)
        k = None
        judged('offline, cached')
        closeall(b, c)
        b = c = None
        srv.restart()
        b = login(srv, 'bob', 'b11')
        c = login(srv, 'carol', 'c11')
        judged('offline, from the store')
    finally:
        closeall(k, b, c)


TESTS = [t01_disco_and_empty_list, t02_block_enforced_both_ways, t03_domain_and_unblock_all,
         t04_kept_across_restart, t05_enforced_from_the_first_stanza, t06_many_users_online,
         t07_offline_recipient_cached_list, t08_offline_recipient_list_from_store,
         t09_offline_recipient_acks, t10_offline_cache_follows_changes, t11_iqs_to_the_bare_jid]


def main():
    try:
        # t06 holds 300 connections from 127.0.0.1 (default limit 256)
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES,
                           limits={'max_connections_per_address': 1000,
                                   'connection_burst_per_address': 1000})
        srv.__enter__()
    except Exception as e:
        R.fail('23.00 blocking_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'carol', 'eve', 'frank', 'gina', 'hank', 'pushsrv'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('23.%02d blocking_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('23.00 blocking_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('23.99 blocking_clean_shutdown', e)
    R.exit()


main()
