#!/usr/bin/python3
"""27: stream elements ("nonzas") handled by modules
(mp_stream_element_add) and client state indication (XEP-0352, mod_csi).

Stream elements (mod_test_echo): a module's element comes back answered on
the same stream, as a serialised non-stanza element with its own namespace;
an element its handler declines, and one no module handles, close the
stream with unsupported-stanza-type (RFC 6120 4.9.3.22); elements are
handled on bound streams only.
CSI: the <csi/> stream feature after authentication; while alice's client
is inactive, her contacts' presence changes are held back and folded (only
the latest per contact resource, an unavailable included), messages and
IQs arrive at once; <active/> delivers the folded presences in the order
their latest versions arrived, and presence flows directly again; a
session that ends while holding presences frees them (ASan/LSan checks).
Run with --workers 2 as well (run-all.sh does)."""

import time

from common import (RawClient, Results, MagpieServer, parse_args, check, child, tostr, closeall,
                    sync, no_stanza, body_of, PING, subscribe_both)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_CSI = 'urn:xmpp:csi:0'
NS_ECHO = 'urn:magpie:test:echo'
MODULES = ['disco', 'ping', 'version', 'time', 'roster', 'offline', 'muc', 'csi', 'test_echo']
NS_MUC = 'http://jabber.org/protocol/muc'
NS_MUC_USER = NS_MUC + '#user'
ROOM = 'csi@conference.localhost'
STEP = 1.0  # seconds between stanzas of different senders, so their order is known


def pw(u):
    return u + '-pw'


def login(srv, user, res, priority=0):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res, presence=priority)
    sync(c)
    return c


def status(c, text, show='away'):
    c.send('<presence><show>%s</show><status>%s</status></presence>' % (show, text))
    sync(c)


def status_of(p):
    s = child(p, 'status')
    return None if s is None else s.text


def presences(c, timeout=1.0):
    """Every presence c receives within timeout (after a sync round trip,
    so what the server had queued for c is in); other elements stay."""
    sync(c)
    got = [e for e in c.drain(timeout)]
    keep = [e for e in got if not e.tag.endswith('}presence')]
    c.backlog.extend(keep)
    return [e for e in got if e.tag.endswith('}presence')]


def stream_error_after(c, xml):
    c.send(xml)
    c.wait_stream_end(timeout=5)
    check(c.stream_error == 'unsupported-stanza-type',
          '%s: expected unsupported-stanza-type, got %r (%s)' % (xml, c.stream_error,
                                                                  tostr(c.stream_error_el)))


# ---- the element API (mod_test_echo) ----

def t01_element_answered(srv):
    a = login(srv, 'alice', 'el')
    try:
        check(child(a.features, 'echo', NS_ECHO) is not None,
              'post-auth features lack the module feature: %s' % tostr(a.features))
        a.send("<echo xmlns='%s' n='1'><x>payload</x></echo>" % NS_ECHO)
        e = a.wait_for('echo', timeout=5)
        check(e.tag == '{%s}echo' % NS_ECHO, 'answer in the wrong namespace: %s' % tostr(e))
        check(e.get('n') == '1' and child(e, 'x', NS_ECHO) is not None
              and child(e, 'x', NS_ECHO).text == 'payload', tostr(e))
        seen = child(e, 'seen', NS_ECHO)
        check(seen is not None and seen.get('jid') == a.jid, 'handler saw the session: %s' % tostr(e))
        r = a.iq('get', 'localhost', PING)  # the stream goes on
        check(r.get('type') == 'result', tostr(r))
    finally:
        closeall(a)


def t02_declined_and_unknown_close(srv):
    a = login(srv, 'alice', 'dec')
    b = login(srv, 'alice', 'unk')
    try:
        stream_error_after(a, "<decline xmlns='%s'/>" % NS_ECHO)
        stream_error_after(b, "<nobody-handles xmlns='urn:example:none'/>")
    finally:
        closeall(a, b)


def t03_only_on_bound_streams(srv):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(c.auth('alice', pw('alice')), 'auth')
        c.open_stream()
        check(child(c.features, 'csi', NS_CSI) is not None,
              'no <csi/> in the post-auth features: %s' % tostr(c.features))
        c.send("<echo xmlns='%s'/>" % NS_ECHO)  # before bind: not handed to the module
        check(c.wait_stream_end(timeout=5), 'stream not closed')
        check(c.stream_error is not None, 'no stream error')
        check(not any(e.tag == '{%s}echo' % NS_ECHO for e in c.backlog),
              'element handled before bind: %s' % [tostr(e) for e in c.backlog])
    finally:
        closeall(c)


# ---- XEP-0352 ----

def t04_inactive_folds_presence(srv):
    a = login(srv, 'alice', 'phone')
    b1 = login(srv, 'bob', 'one')
    b2 = login(srv, 'bob', 'two')
    try:
        subscribe_both(a, 'alice', b1, 'bob')
        for c in (a, b1, b2):  # presence again, now that they are contacts
            c.send('<presence/>')
            sync(c)
        time.sleep(STEP)
        a.drain(0.3)

        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(a)  # processed in order: a is inactive from here on
        status(b2, 'two-X')
        time.sleep(STEP)
        status(b1, 'one-1')
        status(b1, 'one-2')
        time.sleep(STEP)
        closeall(b2)  # bob/two goes offline: unavailable, folded with two-X
        b2 = None
        time.sleep(STEP)
        status(b1, 'one-3')
        time.sleep(STEP)
        held = presences(a, 1.0)
        check(held == [], 'presence arrived while inactive: %s' % [tostr(p) for p in held])

        # a message and an IQ flow at once
        b1.message(a.jid, 'hello while inactive')
        m = a.wait_for('message', lambda e: body_of(e) == 'hello while inactive', timeout=3)
        check(m.get('from') == b1.jid, tostr(m))
        b1.send("<iq type='get' id='csi-ping' to='%s'>%s</iq>" % (a.jid, PING))
        q = a.wait_for('iq', lambda e: e.get('id') == 'csi-ping', timeout=3)
        a.send("<iq type='result' id='csi-ping' to='%s'/>" % q.get('from'))
        b1.wait_for('iq', lambda e: e.get('id') == 'csi-ping' and e.get('type') == 'result')
        early = [e for e in a.backlog if e.tag.endswith('}presence')]
        check(early == [], 'presence came with the message: %s' % [tostr(p) for p in early])

        # active: the latest presence of each contact resource, in order
        a.send("<active xmlns='%s'/>" % NS_CSI)
        got = presences(a, 1.0)
        summary = [(p.get('from'), p.get('type'), status_of(p)) for p in got]
        check(summary == [('bob@localhost/two', 'unavailable', None),
                          ('bob@localhost/one', None, 'one-3')],
              'flushed presences: %s' % summary)

        # active again: presence flows directly
        status(b1, 'one-4')
        p = a.wait_for('presence', lambda e: e.get('from') == b1.jid, timeout=3)
        check(status_of(p) == 'one-4', tostr(p))
        # and inactive/active with nothing held is quiet
        a.send("<inactive xmlns='%s'/><active xmlns='%s'/>" % (NS_CSI, NS_CSI))
        check(presences(a, 0.5) == [], 'presences after an empty flush')
        check(not a.closed and not a.stream_closed, 'stream closed: %r' % a.stream_error)
    finally:
        closeall(a, b1, b2)


def t05_subscription_requests_flow(srv):
    a = login(srv, 'carol', 'c')
    d = login(srv, 'dave', 'd')
    try:
        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(a)
        d.send("<presence to='carol@localhost' type='subscribe'/>")
        p = a.wait_for('presence', lambda e: e.get('type') == 'subscribe', timeout=3)
        check(p.get('from') == 'dave@localhost', tostr(p))
        # directed available presence is held while inactive
        d.send("<presence to='%s'><status>directed</status></presence>" % a.jid)
        sync(d)
        no_stanza(a, 'presence', timeout=1.0, pred=lambda e: e.get('from') == d.jid)
        a.send("<active xmlns='%s'/>" % NS_CSI)
        p = a.wait_for('presence', lambda e: e.get('from') == d.jid, timeout=3)
        check(status_of(p) == 'directed', tostr(p))
    finally:
        closeall(a, d)


def t06_ended_while_holding(srv):
    a = login(srv, 'erin', 'e')
    f = login(srv, 'frank', 'f')
    try:
        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(a)
        for i in range(3):
            f.send("<presence to='%s'><status>s%d</status></presence>" % (a.jid, i))
        sync(f)
        time.sleep(0.5)
        a.close()  # TCP drop with held presences: freed when the session ends
        a = None
        time.sleep(0.5)
        r = f.iq('get', 'localhost', PING)
        check(r.get('type') == 'result', 'server still serving: %s' % tostr(r))
    finally:
        closeall(a, f)


def is_self(p):
    x = child(p, 'x', NS_MUC_USER)
    return x is not None and any(c.get('code') == '110' for c in x if c.tag.endswith('}status'))


def t07_muc_self_presence_flows(srv):
    a = login(srv, 'alice', 'muc')
    b = login(srv, 'bob', 'muc')
    try:
        b.send("<presence to='%s/bob'/>" % ROOM)  # no <x/>: an instant, unlocked room
        b.wait_for('presence', lambda e: e.get('from') == ROOM + '/bob' and is_self(e), timeout=5)
        b.drain(0.3)
        a.send("<inactive xmlns='%s'/>" % NS_CSI)
        sync(a)
        # joining while inactive: bob's occupant presence is held, alice's own
        # (status 110, the answer to her join) arrives at once
        a.send("<presence to='%s/alice'><x xmlns='%s'/></presence>" % (ROOM, NS_MUC))
        p = a.wait_for('presence', lambda e: e.get('from') == ROOM + '/alice', timeout=5)
        check(is_self(p), 'self-presence without status 110: %s' % tostr(p))
        early = [e for e in a.backlog if e.tag.endswith('}presence') and e.get('from') == ROOM + '/bob']
        check(early == [], 'occupant presence not held: %s' % [tostr(e) for e in early])
        b.send("<presence to='%s/bob'><show>away</show></presence>" % ROOM)
        sync(b)
        time.sleep(STEP)
        check([e for e in presences(a, 0.5) if e.get('from') == ROOM + '/bob'] == [],
              'occupant presence arrived while inactive')
        a.send("<active xmlns='%s'/>" % NS_CSI)
        got = [e for e in presences(a, 1.0) if e.get('from') == ROOM + '/bob']
        check(len(got) == 1 and child(got[0], 'show') is not None and child(got[0], 'show').text == 'away',
              'flushed occupant presence: %s' % [tostr(e) for e in got])
    finally:
        closeall(a, b)


def t08_counters(srv):
    out = srv.ctl('status', check=True).stdout
    held = folded = None
    for line in out.splitlines():
        parts = line.replace(':', ' ').replace('=', ' ').split()
        if len(parts) >= 2 and parts[0] == 'csi_presences_held':
            held = int(parts[-1])
        if len(parts) >= 2 and parts[0] == 'csi_presences_folded':
            folded = int(parts[-1])
    check(held is not None and folded is not None, 'counters missing from status:\n%s' % out)
    check(held >= 9 and folded >= 4, 'held %s folded %s' % (held, folded))


TESTS = [t01_element_answered, t02_declined_and_unknown_close, t03_only_on_bound_streams,
         t04_inactive_folds_presence, t05_subscription_requests_flow, t06_ended_while_holding,
         t07_muc_self_presence_flows, t08_counters]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('27.00 csi_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'carol', 'dave', 'erin', 'frank'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('27.%02d csi_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('27.00 csi_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('27.99 csi_clean_shutdown', e)
    R.exit()


main()
