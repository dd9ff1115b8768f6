"""XEP-0198 helpers for the stream management tests (test_60 .. test_64):
a RawClient that counts the stanzas it receives (its h), enables stream
management, acknowledges, drops its TCP connection abruptly and resumes."""

import socket
import struct

from common import RawClient, check, child, local, ns, tostr, NS_CLIENT, sync, subscribe_both

NS_SM = 'urn:xmpp:sm:3'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
STANZAS = ('message', 'presence', 'iq')


class SMClient(RawClient):
    """Counts every stanza (message, presence, iq) it receives, from the
    moment stream management is enabled (self.h), and keeps them in order
    in self.got (for duplicate/order checks)."""

    def __init__(self, *a, **kw):
        self.counting = False
        self.h = 0
        self.got = []
        super().__init__(*a, **kw)

    def _feed(self, data):
        before = len(self.backlog)
        super()._feed(data)
        if self.counting:
            for el in self.backlog[before:]:
                if ns(el.tag) == NS_CLIENT and local(el.tag) in STANZAS:
                    self.h = (self.h + 1) % (1 << 32)
                    self.got.append(el)

    def enable(self, resume=True, max_=None):
        attrs = " resume='true'" if resume else ''
        if max_ is not None:
            attrs += " max='%d'" % max_
        self.send("<enable xmlns='%s'%s/>" % (NS_SM, attrs))
        el = self.wait_for(None, lambda e: ns(e.tag) == NS_SM and local(e.tag) in ('enabled', 'failed'))
        check(local(el.tag) == 'enabled', 'enable refused: ' + tostr(el))
        self.counting = True
        self.sm_id = el.get('id')
        return el

    def request(self):
        """Sends <r/> and returns the server's h from its <a/>."""
        self.send("<r xmlns='%s'/>" % NS_SM)
        a = self.wait_for('a', lambda e: ns(e.tag) == NS_SM)
        return int(a.get('h'))

    def ack(self, h=None):
        self.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.h if h is None else h))

    def drop(self):
        """Ends the TCP connection with a reset, without </stream:stream>."""
        try:
            raw = self.sock
            if hasattr(raw, 'unwrap'):
                raw = socket.socket(fileno=raw.detach())
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            raw.close()
        except OSError:
            pass
        self.sock = None
        self.closed = True


def sm_login(srv, user, password, resource, resume=True, presence=0, max_=None):
    """A bound client with stream management enabled, then initial presence
    (if presence is not None) processed."""
    c = SMClient(srv.c2s_port)
    c.login(user, password, resource=resource)
    c.enable(resume=resume, max_=max_)
    if presence is not None:
        c.presence(priority=presence)
    sync(c)
    return c


def resume(srv, user, password, previd, h, expect='resumed'):
    """A new connection that authenticates and sends <resume/>: returns
    (client, answer element). The client counts from h on."""
    c = SMClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    check(c.auth(user, password), 'authentication failed')
    c.open_stream()
    check(c.feature('sm') is not None, 'no <sm/> feature after authentication')
    c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, previd, h))
    el = c.wait_for(None, lambda e: ns(e.tag) == NS_SM and local(e.tag) in ('resumed', 'failed'))
    if local(el.tag) == 'resumed':
        c.counting = True
        c.h = h
    if expect:
        check(local(el.tag) == expect, 'expected <%s/>, got %s' % (expect, tostr(el)))
    return c, el


def bodies(els):
    return [child(e, 'body').text for e in els
            if local(e.tag) == 'message' and child(e, 'body') is not None]


def contacts(a, aname, b, bname):
    """Makes two online clients mutual contacts, both available again
    (so each has the other's presence), and empties their backlogs."""
    subscribe_both(a, aname, b, bname)
    for c in (a, b):
        c.presence(priority=0)
    for c in (a, b):
        sync(c)
    for c in (a, b):
        c.drain(0.3)


def unavailable_from(c, full, timeout):
    """The unavailable presence from full that c receives within timeout, or None."""
    return c.wait_for('presence', lambda e: e.get('type') == 'unavailable' and e.get('from') == full,
                      timeout=timeout, raise_=False)


def pw(u):
    """The tests' password for user u."""
    return u + '-pw'


def send_msgs(b, to, names):
    """b sends one chat message per body in names to `to`, then syncs."""
    for n in names:
        b.message(to, n)
    sync(b)
