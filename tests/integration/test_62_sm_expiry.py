#!/usr/bin/python3
"""62: XEP-0198, the end of a managed session (mod_sm, mod_offline).

A resumable session whose client never comes back ends after
resume_timeout: only then do contacts see it unavailable, and the
messages it had not acknowledged (delivered to the lost connection or
queued while detached) go to offline storage: the next login gets each
once, in order, with a delay stamp, and a second login gets none. A late
<resume/> gets <failed><item-not-found/></failed> with the h the server had
handled. A session with acks only (no resumption) that closes its stream
leaves its unacknowledged messages in offline storage too, acknowledged
ones not. Unacknowledged messages that were sent to the bare JID are not
delivered again to another available resource (it had them); ones sent to
the lost resource's full JID go to the other resource, once.
Run with --workers 2 as well."""

import time

from common import (Results, MagpieServer, parse_args, check, child, tostr, closeall, local, online, sync,
                    RawClient)
from smhelp import (pw, send_msgs, sm_login, resume, bodies, contacts, unavailable_from, NS_STANZAS)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
TIMEOUT = 2
MODULES = ['disco', 'ping', 'roster', 'offline', 'carbons', 'csi',
           '{ name = "sm"; resume_timeout = %d; request_every = 1000; }' % TIMEOUT]
NS_DELAY = 'urn:xmpp:delay'


def offline_login(srv, user, res):
    """Logs in with presence and returns the bodies of what arrives."""
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res, presence=0)
    got = c.drain(1.5)
    return c, [e for e in got if local(e.tag) == 'message']


def t_expiry(srv):
    a = sm_login(srv, 'alice', pw('alice'), 'phone', presence=0)
    b = online(srv, 'bob', pw('bob'), 'desk')
    n = None
    try:
        contacts(a, 'alice', b, 'bob')
        send_msgs(b, 'alice@localhost/phone', ['e1', 'e2'])
        a.wait_for('message', lambda e: child(e, 'body').text == 'e2')
        # e1 is acknowledged; e2 is received but never acknowledged
        a.ack(a.h - 1)
        sync(a)
        handled = a.request()
        a.drop()
        t0 = time.time()
        send_msgs(b, 'alice@localhost/phone', ['e3'])
        send_msgs(b, 'alice@localhost', ['e4'])
        p = unavailable_from(b, 'alice@localhost/phone', TIMEOUT - 0.8)
        check(p is None, 'unavailable before the session expired')
        p = unavailable_from(b, 'alice@localhost/phone', TIMEOUT + 3)
        check(p is not None, 'no unavailable presence at expiry')
        check(time.time() - t0 >= TIMEOUT - 0.3, 'expired too early')
        # a late resume: item-not-found, with the h the server handled
        c, el = resume(srv, 'alice', pw('alice'), a.sm_id, 0, expect='failed')
        check(child(el, 'item-not-found', NS_STANZAS) is not None, tostr(el))
        check(el.get('h') == str(handled), 'failed h=%r, expected %d' % (el.get('h'), handled))
        closeall(c)
        time.sleep(0.3)
        n, msgs = offline_login(srv, 'alice', 'again')
        got = bodies(msgs)
        check(got == ['e2', 'e3', 'e4'], 'offline delivery after expiry: %s' % got)
        for m in msgs:
            check(child(m, 'delay', NS_DELAY) is not None, 'no delay stamp: ' + tostr(m))
        closeall(n)
        n, msgs = offline_login(srv, 'alice', 'third')
        check(bodies(msgs) == [], 'delivered again: %s' % bodies(msgs))
    finally:
        closeall(a, b, n)


def t_acks_only_close(srv):
    a = sm_login(srv, 'carol', pw('carol'), 'phone', resume=False, presence=0)
    b = online(srv, 'bob', pw('bob'), 'desk2')
    n = None
    try:
        send_msgs(b, 'carol@localhost/phone', ['k1', 'k2', 'k3'])
        a.wait_for('message', lambda e: child(e, 'body').text == 'k3')
        a.drain(0.2)
        a.ack(a.h - 2)  # k1 acknowledged, k2 and k3 not
        sync(a)
        a.end_stream()
        check(a.wait_closed(5), 'stream not closed')
        time.sleep(0.3)
        n, msgs = offline_login(srv, 'carol', 'again')
        check(bodies(msgs) == ['k2', 'k3'], 'after close: %s' % bodies(msgs))
    finally:
        closeall(a, b, n)


def t_dropped_no_resume(srv):
    """A reset on a session with acks only ends it at once (not resumable):
    its unacknowledged messages are stored."""
    a = sm_login(srv, 'dave', pw('dave'), 'phone', resume=False, presence=0)
    b = online(srv, 'bob', pw('bob'), 'desk3')
    n = None
    try:
        send_msgs(b, 'dave@localhost/phone', ['d1'])
        a.wait_for('message')
        a.drop()
        time.sleep(0.5)
        n, msgs = offline_login(srv, 'dave', 'again')
        check(bodies(msgs) == ['d1'], 'after reset: %s' % bodies(msgs))
    finally:
        closeall(a, b, n)


def t_other_resource(srv):
    a = sm_login(srv, 'erin', pw('erin'), 'phone', presence=0)
    d = online(srv, 'erin', pw('erin'), 'desk')
    b = online(srv, 'bob', pw('bob'), 'desk4')
    n = None
    try:
        sync(a)
        a.drain(0.3)
        d.drain(0.3)
        send_msgs(b, 'erin@localhost', ['bare1'])          # both resources get it
        send_msgs(b, 'erin@localhost/phone', ['full1'])    # only the phone
        a.wait_for('message', lambda e: child(e, 'body').text == 'full1')
        m = d.wait_for('message')
        check(child(m, 'body').text == 'bare1', tostr(m))
        a.drop()
        time.sleep(TIMEOUT + 1.5)
        got = bodies(d.drain(1.0))
        check(got == ['full1'], 'other resource got %s, expected only full1 once' % got)
        n, msgs = offline_login(srv, 'erin', 'later')
        check(bodies(msgs) == [], 'stored although another resource had them: %s' % bodies(msgs))
    finally:
        closeall(a, b, d, n)


with MagpieServer(args.builddir, workers=args.workers, modules=MODULES) as srv:
    for u in ('alice', 'bob', 'carol', 'dave', 'erin'):
        srv.add_user(u, pw(u))
    R.run('62-1 expiry: unavailable only then, unacked messages stored once, late resume failed h',
          t_expiry, srv, server=srv)
    R.run('62-2 acks without resumption: closing stores the unacknowledged', t_acks_only_close, srv,
          server=srv)
    R.run('62-3 acks without resumption: a reset stores the unacknowledged', t_dropped_no_resume, srv,
          server=srv)
    R.run('62-4 unacked to the bare JID not repeated to another resource; to the full JID once',
          t_other_resource, srv, server=srv)
R.exit()
