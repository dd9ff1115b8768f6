#!/usr/bin/python3
"""60: XEP-0198 stream management, acknowledgements (mod_sm).

The <sm xmlns='urn:xmpp:sm:3'/> feature after authentication (not before);
<enable/> before binding is refused with <failed><unexpected-request/>;
<enable/> answers <enabled/> (with id, resume and max when resumption is
asked for, max the smaller of the client's and the server's); the server
counts the client's stanzas from <enable/> on (iq, message, presence,
errors included) and answers <r/> with that count; it counts what it sends
and asks for acks (<r/>) every request_every stanzas; an <a/> covering more
than was sent ends the stream with undefined-condition; <r/> and <a/>
without <enable/> get <failed><unexpected-request/>.
Run with --workers 2 as well."""

from common import (Results, MagpieServer, parse_args, check, child, tostr, closeall,
                    sync, ns, online, PING)
from smhelp import pw, SMClient, sm_login, NS_SM, NS_STANZAS

args = parse_args()
R = Results('[workers=%d]' % args.workers)
MODULES = ['disco', 'ping', 'roster', 'offline', 'csi',
           '{ name = "sm"; resume_timeout = 120; request_every = 3; }']


def t_feature(srv):
    c = SMClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(c.feature('sm') is None, 'sm offered before authentication: ' + tostr(c.features))
        check(c.auth('alice', pw('alice')), 'auth failed')
        c.open_stream()
        f = c.feature('sm')
        check(f is not None and ns(f.tag) == NS_SM, 'no urn:xmpp:sm:3 feature: ' + tostr(c.features))
        # before binding: <enable/> is refused, the stream stays usable
        c.send("<enable xmlns='%s'/>" % NS_SM)
        el = c.wait_for('failed', lambda e: ns(e.tag) == NS_SM)
        check(child(el, 'unexpected-request', NS_STANZAS) is not None, tostr(el))
        c.bind('early')
        sync(c)
    finally:
        closeall(c)


def t_enable(srv):
    c = SMClient(srv.c2s_port)
    d = SMClient(srv.c2s_port)
    try:
        c.login('alice', pw('alice'), resource='plain')
        en = c.enable(resume=False)
        check(en.get('id') is None and en.get('resume') is None, 'no resumption asked: ' + tostr(en))
        d.login('alice', pw('alice'), resource='res')
        en = d.enable(resume=True, max_=60)
        check(en.get('resume') in ('true', '1') and en.get('id'), 'no resumption id: ' + tostr(en))
        check(en.get('max') == '60', 'max is not min(60, 120): ' + tostr(en))
        # a second <enable/> is an unexpected request
        d.send("<enable xmlns='%s'/>" % NS_SM)
        el = d.wait_for('failed', lambda e: ns(e.tag) == NS_SM)
        check(child(el, 'unexpected-request', NS_STANZAS) is not None, tostr(el))
        e = SMClient(srv.c2s_port)
        e.login('alice', pw('alice'), resource='big')
        en = e.enable(resume=True, max_=100000)
        check(en.get('max') == '120', 'max not capped by resume_timeout: ' + tostr(en))
        closeall(e)
    finally:
        closeall(c, d)


def t_inbound_count(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'count', presence=None)
    b = online(srv, 'bob', pw('bob'), 'desk')
    try:
        check(a.request() == 1, 'h after one sync iq')  # sm_login's sync ping
        a.message('bob@localhost/desk', 'one')
        a.message('bob@localhost/desk', 'two')
        a.send("<presence/>")
        a.send("<iq type='get' id='p1' to='localhost'>%s</iq>" % PING)
        # an invalid iq (two children) is answered with an error: still counted
        a.send("<iq type='get' id='bad' to='localhost'>%s%s</iq>" % (PING, PING))
        check(a.request() == 6, 'h should count 6 stanzas')
        got = [child(m, 'body').text for m in (b.wait_for('message'), b.wait_for('message'))]
        check(got == ['one', 'two'], got)
        # <r/> twice in a row: same answer
        check(a.request() == 6, 'h changed without stanzas')
    finally:
        closeall(a, b)


def t_outbound_count(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'out', presence=None)
    b = online(srv, 'bob', pw('bob'), 'desk2')
    try:
        a.h = 0
        a.got = []
        a.drain(0.2)
        base = a.h  # stanzas since enable (the sync result)
        for i in range(7):
            b.message('alice@localhost/out', 'n%d' % i)
        sync(b)
        # request_every = 3: the server asks after the 3rd and the 6th
        rs = []
        for _ in range(2):
            rs.append(a.wait_for('r', lambda e: ns(e.tag) == NS_SM))
        a.drain(0.5)
        check(a.h - base == 7, 'got %d stanzas, not 7' % (a.h - base))
        # acknowledging what was received is accepted; more than that is not
        a.ack()
        sync(a)
        a.ack(a.h + 1 + 2)
        check(a.wait_stream_end(5), 'stream not ended after an <a/> beyond what was sent')
        check(a.stream_error == 'undefined-condition', 'stream error %r' % a.stream_error)
    finally:
        closeall(a, b)


def t_without_enable(srv):
    c = online(srv, 'alice', pw('alice'), 'noenable')
    try:
        for el in ("<r xmlns='%s'/>" % NS_SM, "<a xmlns='%s' h='0'/>" % NS_SM):
            c.send(el)
            f = c.wait_for('failed', lambda e: ns(e.tag) == NS_SM)
            check(child(f, 'unexpected-request', NS_STANZAS) is not None, tostr(f))
        sync(c)
    finally:
        closeall(c)


def t_disco_unaffected(srv):
    """Stanzas answered by the server on the session's behalf are counted
    once each on the way out too: h from <r/> equals what the client saw."""
    a = sm_login(srv, 'alice', pw('alice'), 'echo', presence=0)
    try:
        a.drain(0.3)
        a.send("<r xmlns='%s'/>" % NS_SM)
        a.wait_for('a', lambda e: ns(e.tag) == NS_SM)
        # the server's own count of what it sent is what we acknowledge
        a.ack()
        sync(a)
        check(not a.closed and a.stream_error is None, 'exact ack refused: %r' % a.stream_error)
    finally:
        closeall(a)


with MagpieServer(args.builddir, workers=args.workers, modules=MODULES) as srv:
    for u in ('alice', 'bob'):
        srv.add_user(u, pw(u))
    R.run('60-1 sm feature after auth only; enable before bind refused', t_feature, srv, server=srv)
    R.run('60-2 enable / enabled (id, resume, max capped)', t_enable, srv, server=srv)
    R.run('60-3 <r/> answered with the count of the client stanzas', t_inbound_count, srv, server=srv)
    R.run('60-4 server counts, asks every request_every, rejects a too high h', t_outbound_count, srv,
          server=srv)
    R.run('60-5 r/a without enable get failed unexpected-request', t_without_enable, srv, server=srv)
    R.run('60-6 an exact ack of everything is accepted', t_disco_unaffected, srv, server=srv)
R.exit()
