#!/usr/bin/python3
"""61: XEP-0198 resumption (mod_sm).

A client with resumption enabled loses its TCP connection (a reset, no
</stream:stream>): its session stays bound and available (a contact sees
no unavailable presence), messages sent to it meanwhile wait; <resume/>
on a new authenticated stream gets <resumed previd h/> with the count of
the client's stanzas the server handled, then exactly the stanzas the
client's h does not cover, in order, once each, then the waiting ones, and
the session goes on (messages both ways, roster, carbons). A client that
claims to have received less gets the difference again. A wrong previd
gets <failed><item-not-found/></failed> and the stream stays usable (bind
works). A resume while the old connection is still open closes the old
one. The CSI state is reset on resume (the client is active again).
Run with --workers 2 as well (the new connection may land on the other
worker: the session moves there)."""

import time

from common import (Results, MagpieServer, parse_args, check, child, tostr, closeall, sync, local,
                    ns, online, RawClient)
from smhelp import (pw, send_msgs, SMClient, sm_login, resume, bodies, contacts, unavailable_from,
                    NS_SM, NS_STANZAS)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
MODULES = ['disco', 'ping', 'roster', 'offline', 'carbons', 'csi',
           '{ name = "sm"; resume_timeout = 60; request_every = 1000; }']
NS_CSI = 'urn:xmpp:csi:0'
NS_CARBONS = 'urn:xmpp:carbons:2'
NS_ROSTER = 'jabber:iq:roster'


def no_dupes(got, what):
    check(len(got) == len(set(got)), '%s delivered twice: %s' % (what, got))


def t_resume_after_reset(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'phone', presence=0)
    b = online(srv, 'bob', pw('bob'), 'desk')
    c = None
    try:
        contacts(a, 'alice', b, 'bob')
        send_msgs(b, 'alice@localhost/phone', ['m1', 'm2', 'm3'])
        a.wait_for('message', lambda e: child(e, 'body').text == 'm3')
        a.drain(0.2)
        h = a.h
        a.drop()
        time.sleep(0.3)
        send_msgs(b, 'alice@localhost/phone', ['m4', 'm5', 'm6'])
        send_msgs(b, 'alice@localhost', ['m7'])  # to the bare JID: the only resource is detached
        p = unavailable_from(b, 'alice@localhost/phone', 1.0)
        check(p is None, 'contact saw unavailable while detached: ' + (tostr(p) if p is not None else ''))
        c, el = resume(srv, 'alice', pw('alice'), a.sm_id, h)
        check(el.get('previd') == a.sm_id, 'previd: ' + tostr(el))
        handled = int(el.get('h'))
        # alice's stanzas since enable: presence, sync ping, 2 subscription
        # stanzas, presence, sync ping, drain/syncs... the server must not
        # claim more than she sent; compare with a fresh <r/> answer
        got = c.drain(1.0)
        b_got = bodies(got)
        check(b_got == ['m4', 'm5', 'm6', 'm7'], 'after resume got %s' % b_got)
        check(c.request() == handled, '<r/> after resume does not match <resumed h/>')
        # the session goes on: both ways, roster
        send_msgs(b, 'alice@localhost/phone', ['m8'])
        m = c.wait_for('message')
        check(child(m, 'body').text == 'm8', tostr(m))
        c.message('bob@localhost/desk', 'back')
        m = b.wait_for('message', lambda e: child(e, 'body') is not None)
        check(child(m, 'body').text == 'back' and m.get('from') == 'alice@localhost/phone', tostr(m))
        r = c.iq('get', None, "<query xmlns='%s'/>" % NS_ROSTER)
        check(r.get('type') == 'result' and 'bob@localhost' in tostr(r), tostr(r))
        more = bodies(c.drain(0.5))
        check(more == [], 'extra messages after resume: %s' % more)
        p = unavailable_from(b, 'alice@localhost/phone', 0.2)
        check(p is None, 'contact saw unavailable around the resume')
    finally:
        closeall(a, b, c)


def t_resend_unacked(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'tab', presence=None)
    b = online(srv, 'bob', pw('bob'), 'desk3')
    c = None
    try:
        send_msgs(b, 'alice@localhost/tab', ['u1', 'u2', 'u3', 'u4'])
        a.wait_for('message', lambda e: child(e, 'body').text == 'u4')
        h = a.h
        a.drop()
        time.sleep(0.2)
        send_msgs(b, 'alice@localhost/tab', ['u5'])
        # claim the last two were never received: they come again, first
        c, el = resume(srv, 'alice', pw('alice'), a.sm_id, h - 2)
        got = bodies(c.drain(1.0))
        check(got == ['u3', 'u4', 'u5'], 'resent %s, expected u3 u4 u5' % got)
        # and the server's count goes on from there: an exact ack is accepted
        c.ack()
        sync(c)
        check(c.stream_error is None, 'ack after resume refused: %r' % c.stream_error)
        check(c.request() >= 0, 'no answer')
    finally:
        closeall(a, b, c)


def t_wrong_previd(srv):
    c, el = resume(srv, 'alice', pw('alice'), 'no-such-previd', 0, expect='failed')
    try:
        check(child(el, 'item-not-found', NS_STANZAS) is not None, tostr(el))
        c.bind('after-failed')
        sync(c)
    finally:
        closeall(c)


def t_resume_while_open(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'laptop', presence=None)
    b = online(srv, 'bob', pw('bob'), 'desk4')
    c = None
    try:
        send_msgs(b, 'alice@localhost/laptop', ['o1'])
        a.wait_for('message')
        c, el = resume(srv, 'alice', pw('alice'), a.sm_id, a.h)
        check(a.wait_closed(5), 'the old connection is still open after the resume')
        send_msgs(b, 'alice@localhost/laptop', ['o2'])
        m = c.wait_for('message')
        check(child(m, 'body').text == 'o2', tostr(m))
        check(bodies(c.drain(0.5)) == [], 'extra messages')
    finally:
        closeall(a, b, c)


def t_csi_reset(srv):
    a = sm_login(srv, 'carol', pw('carol'), 'phone', presence=0)
    b = online(srv, 'dave', pw('dave'), 'desk')
    c = None
    try:
        contacts(a, 'carol', b, 'dave')
        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(a)
        b.send('<presence><status>held</status></presence>')
        sync(b)
        time.sleep(0.3)
        held = [e for e in a.drain(0.3) if local(e.tag) == 'presence']
        check(held == [], 'presence not held while inactive')
        h = a.h
        a.drop()
        time.sleep(0.2)
        c, el = resume(srv, 'carol', pw('carol'), a.sm_id, h)
        # active again: what was held comes, and new presence flows at once
        p = c.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/desk', timeout=3)
        check(child(p, 'status').text == 'held', tostr(p))
        b.send('<presence><status>live</status></presence>')
        sync(b)
        p = c.wait_for('presence', lambda e: e.get('from') == 'dave@localhost/desk', timeout=3)
        check(child(p, 'status').text == 'live', 'presence held after resume: ' + tostr(p))
    finally:
        closeall(a, b, c)


def t_carbons_after_resume(srv):
    a = sm_login(srv, 'erin', pw('erin'), 'phone', presence=0)
    d = online(srv, 'erin', pw('erin'), 'desk')
    b = online(srv, 'bob', pw('bob'), 'desk5')
    c = None
    try:
        r = a.iq('set', None, "<enable xmlns='%s'/>" % NS_CARBONS)
        check(r.get('type') == 'result', tostr(r))
        a.drain(0.2)
        h = a.h
        a.drop()
        time.sleep(0.2)
        c, el = resume(srv, 'erin', pw('erin'), a.sm_id, h)
        c.drain(0.3)
        d.message('bob@localhost/desk5', 'from desk')
        m = c.wait_for('message', timeout=3)
        check(child(m, 'sent', NS_CARBONS) is not None, 'no sent carbon after resume: ' + tostr(m))
    finally:
        closeall(a, b, c, d)


def t_resumed_waits_for_durable(srv):
    """A message to an offline user still being stored when the resume
    comes: <resumed h/> covers it (it waits for the store), so the client
    does not send it again, and the recipient gets it once."""
    a = sm_login(srv, 'alice', pw('alice'), 'dur', presence=None)
    n = o = None
    try:
        n = SMClient(srv.c2s_port)
        n.open_stream()
        n.starttls()
        check(n.auth('alice', pw('alice')), 'auth')
        n.open_stream()
        before = a.request()
        a.message('olga@localhost', 'stored once')
        n.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, a.sm_id, a.h))
        el = n.wait_for('resumed', lambda e: ns(e.tag) == NS_SM)
        check(int(el.get('h')) == before + 1,
              '<resumed h=%s/> does not cover the message being stored (expected %d)'
              % (el.get('h'), before + 1))
        o = RawClient(srv.c2s_port)
        o.login('olga', pw('olga'), resource='x', presence=0)
        got = bodies([e for e in o.drain(1.5) if local(e.tag) == 'message'])
        check(got == ['stored once'], 'olga got %s' % got)
    finally:
        closeall(a, n, o)


with MagpieServer(args.builddir, workers=args.workers, modules=MODULES) as srv:
    for u in ('alice', 'bob', 'carol', 'dave', 'erin', 'olga'):
        srv.add_user(u, pw(u))
    R.run('61-1 resume after a reset: queued messages once, in order; no unavailable', t_resume_after_reset,
          srv, server=srv)
    R.run('61-2 what the client did not acknowledge is sent again, in order', t_resend_unacked, srv,
          server=srv)
    R.run('61-3 wrong previd: failed item-not-found, stream usable', t_wrong_previd, srv, server=srv)
    R.run('61-4 resume while the old connection is open closes it', t_resume_while_open, srv, server=srv)
    R.run('61-5 CSI state reset on resume', t_csi_reset, srv, server=srv)
    R.run('61-6 carbons after resume', t_carbons_after_resume, srv, server=srv)
    R.run('61-7 <resumed/> waits for a message still being stored', t_resumed_waits_for_durable, srv,
          server=srv)
R.exit()
