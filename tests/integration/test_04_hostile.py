#!/usr/bin/python3
"""04: hostile input. Every case opens its own connection and must end in the
right stream error (RFC 6120 4.9.3) and a closed connection, while a pair of
logged-in sessions keeps exchanging messages (checked after every case)."""

import os
import socket
import time

from common import (MagpieServer, Results, RawClient, parse_args, check, tostr,
                    closeall, online, sync, body_of, no_message)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NEG_TIMEOUT = 3
MAX_STANZA = 65536
HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
HEADER_NO_DECL = HEADER[len("<?xml version='1.0'?>"):]


class Watchers:
    """alice and bob, logged in for the whole file."""

    def __init__(self, srv):
        self.srv = srv
        self.a = online(srv, 'alice', 'alice-pw', 'watch')
        self.b = online(srv, 'bob', 'bob-pw', 'watch')
        self.n = 0

    def check_alive(self):
        self.n += 1
        mid = 'alive-%d' % self.n
        self.a.message('bob@localhost/watch', 'still here %d' % self.n, id_=mid)
        m = self.b.wait_for('message', lambda e: e.get('id') == mid, timeout=10)
        check(body_of(m) == 'still here %d' % self.n, tostr(m))
        self.b.message('alice@localhost', 'ack %d' % self.n, id_=mid + 'r')
        self.a.wait_for('message', lambda e: e.get('id') == mid + 'r', timeout=10)
        # and new logins still work
        c = RawClient(self.srv.c2s_port)
        try:
            c.login('carol', 'carol-pw', resource='probe-%d' % self.n)
            sync(c)
        finally:
            closeall(c)


def expect_stream_error(c, conds, what):
    if isinstance(conds, str):
        conds = (conds,)
    check(c.wait_stream_end(15), '%s: stream not closed within 15s' % what)
    check(c.stream_error in conds, '%s: stream error %r, expected %s; received: %s'
          % (what, c.stream_error, '/'.join(conds), bytes(c.raw_in[-400:]).decode('utf-8', 'replace')))
    check(c.wait_closed(10), '%s: TCP connection not closed after the stream error' % what)


def logged_in(srv, res):
    c = RawClient(srv.c2s_port)
    c.login('carol', 'carol-pw', resource=res)
    sync(c)
    return c


def t01_not_well_formed_after_login(srv, w):
    c = logged_in(srv, 'nwf')
    try:
        c.send("<message to='bob@localhost'><body>x</bod></message>")
        expect_stream_error(c, 'not-well-formed', 'mismatched end tag')
    finally:
        closeall(c)
    c = logged_in(srv, 'nwf2')
    try:
        c.send("<message to='bob@localhost' a='1' a='2'/>")
        expect_stream_error(c, 'not-well-formed', 'duplicate attribute')
    finally:
        closeall(c)


def t02_not_well_formed_before_auth(srv, w):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.send('<<<>>>')
        expect_stream_error(c, 'not-well-formed', 'garbage after header')
    finally:
        closeall(c)
    # inside TLS, before SASL
    c = RawClient(srv.tls_port, direct_tls=True)
    try:
        c.open_stream()
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'></a>")
        expect_stream_error(c, 'not-well-formed', 'mismatched tag in TLS before SASL')
    finally:
        closeall(c)


def t03_invalid_utf8(srv, w):
    c = logged_in(srv, 'utf8')
    try:
        c.send(b"<message to='bob@localhost/watch'><body>\xff\xfe\xc3\x28</body></message>")
        expect_stream_error(c, 'not-well-formed', 'invalid UTF-8')
    finally:
        closeall(c)
    msgs = w.b.drain(0.3)
    check(not any(m.get('to') == 'bob@localhost/watch' and (body_of(m) or '').startswith('\ufffd')
                  for m in msgs), 'invalid UTF-8 was delivered')


def t04_doctype_restricted(srv, w):
    c = RawClient(srv.c2s_port)
    try:
        c.send("<?xml version='1.0'?><!DOCTYPE stream:stream>" + HEADER_NO_DECL)
        expect_stream_error(c, 'restricted-xml', 'DOCTYPE in prolog')
    finally:
        closeall(c)


def t05_entity_declaration_restricted(srv, w):
    c = RawClient(srv.c2s_port)
    try:
        c.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY lol 'lol'>"
               "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>]>" + HEADER_NO_DECL)
        expect_stream_error(c, 'restricted-xml', 'ENTITY declaration')
    finally:
        closeall(c)
    # over TLS as well (after STARTTLS the stream restarts: a new prolog)
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        c.wait_for('proceed')
        c._wrap_tls()
        c._new_parser()
        c.send("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>" + HEADER_NO_DECL)
        expect_stream_error(c, 'restricted-xml', 'external ENTITY after STARTTLS')
    finally:
        closeall(c)


def t06_undefined_entity_reference(srv, w):
    c = logged_in(srv, 'ent')
    try:
        c.send("<message to='bob@localhost/watch'><body>&xxe;</body></message>")
        expect_stream_error(c, ('restricted-xml', 'not-well-formed'), 'undefined entity reference')
    finally:
        closeall(c)


def t07_processing_instruction_restricted(srv, w):
    c = logged_in(srv, 'pi')
    try:
        c.send("<?evil instruction?>")
        expect_stream_error(c, 'restricted-xml', 'processing instruction')
    finally:
        closeall(c)


def t08_comment_restricted(srv, w):
    c = logged_in(srv, 'comment')
    try:
        c.send("<message to='bob@localhost/watch'><!-- hidden --><body>x</body></message>")
        expect_stream_error(c, 'restricted-xml', 'comment')
    finally:
        closeall(c)


def _send_oversized(c, total):
    """Sends a message of about total bytes in 4 KiB chunks, stopping as soon
    as the server answers (so its stream error is not lost to a reset)."""
    c.send("<message to='bob@localhost/watch' id='big'><body>")
    chunk = b'A' * 4096
    sent = 0
    while sent < total:
        try:
            c.sock.sendall(chunk)
        except OSError:
            break
        sent += len(chunk)
        if not c.pump(0.0) or c.backlog or c.stream_closed:
            break
    c.send('</body></message>', ignore_errors=True)


def t09_oversized_stanza_policy_violation(srv, w):
    c = logged_in(srv, 'big')
    try:
        _send_oversized(c, MAX_STANZA * 2)
        expect_stream_error(c, 'policy-violation', 'stanza of %d bytes' % (MAX_STANZA * 2))
    finally:
        closeall(c)
    no_message(w.b, 0.5, lambda e: e.get('id') == 'big')
    # a stanza just under the limit is fine
    c = logged_in(srv, 'almost')
    try:
        body = 'B' * (MAX_STANZA - 1024)
        c.message('bob@localhost/watch', body, id_='almost-big')
        m = w.b.wait_for('message', lambda e: e.get('id') == 'almost-big', timeout=10, raise_=False)
        if m is None:
            c.pump(0.1)
            raise AssertionError('a %d-byte stanza (limit %d) was not delivered within 10s; sender: '
                                 'stream error %r, closed %s' % (len(body) + 60, MAX_STANZA, c.stream_error,
                                                                 c.closed or c.stream_closed))
        check(body_of(m) == body, 'large stanza body changed')
    finally:
        closeall(c)


def t10_deep_nesting(srv, w):
    c = logged_in(srv, 'deep')
    try:
        c.send("<message to='bob@localhost/watch'>" + '<a>' * 5000)
        expect_stream_error(c, 'policy-violation', '5000 nested elements')
    finally:
        closeall(c)


def t11_many_attributes(srv, w):
    c = logged_in(srv, 'attrs')
    try:
        attrs = ' '.join("a%d='x'" % i for i in range(2000))
        c.send("<message to='bob@localhost/watch' %s><body>x</body></message>" % attrs)
        expect_stream_error(c, 'policy-violation', '2000 attributes')
    finally:
        closeall(c)


def t12_binary_garbage(srv, w):
    for port, direct in ((srv.c2s_port, False), (srv.tls_port, True)):
        s = socket.create_connection(('127.0.0.1', port), timeout=10)
        try:
            s.sendall(os.urandom(2048) if not direct else b'\x16\x03\x01\x00\x05hello' + os.urandom(512))
            s.settimeout(10)
            t0 = time.time()
            try:
                while time.time() - t0 < 10 and s.recv(4096):
                    pass
            except OSError:
                pass
            check(time.time() - t0 < 10, 'garbage connection not closed (direct_tls=%s)' % direct)
        finally:
            s.close()


def t13_negotiation_timeout_idle_tcp(srv, w):
    s = socket.create_connection(('127.0.0.1', srv.c2s_port), timeout=NEG_TIMEOUT + 10)
    t0 = time.time()
    got = b''
    try:
        try:
            while True:
                d = s.recv(4096)
                if not d:
                    break
                got += d
        except socket.timeout:
            raise AssertionError('idle connection still open after %ss' % (NEG_TIMEOUT + 10))
        except OSError:
            pass
        dt = time.time() - t0
        check(dt >= NEG_TIMEOUT - 1, 'closed after %.1fs, before the %ss timeout' % (dt, NEG_TIMEOUT))
        check(dt <= NEG_TIMEOUT + 3, 'closed after %.1fs, %ss after the %ss timeout'
              % (dt, dt - NEG_TIMEOUT, NEG_TIMEOUT))
        check(b'<connection-timeout' in got, 'no connection-timeout stream error: %r' % got[-300:])
    finally:
        s.close()


def t14_negotiation_timeout_before_auth(srv, w):
    # the limit runs from the TCP connect to a bound resource: a client that
    # keeps sending (whitespace keepalives) but never authenticates is cut too
    c = RawClient(srv.c2s_port)
    t0 = time.time()
    try:
        c.open_stream()
        c.starttls()
        while time.time() - t0 < NEG_TIMEOUT + 10 and not (c.closed or c.stream_closed):
            c.send(' ', ignore_errors=True)
            c.pump(0.5)
        dt = time.time() - t0
        check(c.closed or c.stream_closed, 'pre-auth stream not closed within %ss' % (NEG_TIMEOUT + 10))
        check(dt >= NEG_TIMEOUT - 1, 'closed after %.1fs, before the %ss timeout' % (dt, NEG_TIMEOUT))
        check(dt <= NEG_TIMEOUT + 3, 'closed after %.1fs, long after the %ss timeout' % (dt, NEG_TIMEOUT))
        check(c.stream_error == 'connection-timeout', 'stream error %r' % c.stream_error)
    finally:
        closeall(c)
    # also on the direct TLS port with nothing sent after the handshake
    c = RawClient(srv.tls_port, direct_tls=True)
    t0 = time.time()
    try:
        check(c.wait_closed(NEG_TIMEOUT + 10), 'direct TLS pre-auth not closed')
        check(time.time() - t0 <= NEG_TIMEOUT + 3, 'direct TLS pre-auth closed late')
        check(b'<connection-timeout' in bytes(c.raw_in), 'no connection-timeout stream error: %r'
              % bytes(c.raw_in[-300:]))
    finally:
        closeall(c)


def t15_no_timeout_after_login(srv, w):
    c = logged_in(srv, 'idle')
    try:
        time.sleep(NEG_TIMEOUT + 2)
        check(not c.closed and not c.stream_closed, 'logged-in session closed by negotiation timeout')
        sync(c)
    finally:
        closeall(c)


def t16_many_hostile_at_once(srv, w):
    cs = []
    for i in range(20):
        c = RawClient(srv.c2s_port)
        c.open_stream()
        cs.append(c)
    try:
        for i, c in enumerate(cs):
            c.send(['<<<', '<?pi x?>', '<!-- c -->', '</x>'][i % 4])
        for i, c in enumerate(cs):
            check(c.wait_stream_end(15), 'connection %d not closed' % i)
            check(c.stream_error in ('not-well-formed', 'restricted-xml'), 'connection %d: %r' % (i, c.stream_error))
    finally:
        closeall(*cs)


def t17_stanza_before_auth(srv, w):
    c = RawClient(srv.tls_port, direct_tls=True)
    try:
        c.open_stream()
        c.send("<message to='bob@localhost/watch' id='unauth'><body>sneaky</body></message>")
        check(c.wait_stream_end(10), 'stanza before auth: stream not closed')
        check(c.stream_error == 'not-authorized', 'stream error %r' % c.stream_error)
    finally:
        closeall(c)
    no_message(w.b, 0.5, lambda e: e.get('id') == 'unauth')


TESTS = [t01_not_well_formed_after_login, t02_not_well_formed_before_auth, t03_invalid_utf8,
         t04_doctype_restricted, t05_entity_declaration_restricted, t06_undefined_entity_reference,
         t07_processing_instruction_restricted, t08_comment_restricted,
         t09_oversized_stanza_policy_violation, t10_deep_nesting, t11_many_attributes,
         t12_binary_garbage, t13_negotiation_timeout_idle_tcp, t14_negotiation_timeout_before_auth,
         t15_no_timeout_after_login, t16_many_hostile_at_once, t17_stanza_before_auth]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           limits={'max_stanza_size': MAX_STANZA, 'negotiation_timeout': NEG_TIMEOUT})
        srv.__enter__()
    except Exception as e:
        R.fail('04.00 hostile_server_start', e)
        R.exit()
    w = None
    try:
        for u in ('alice', 'bob', 'carol'):
            srv.add_user(u, u + '-pw')
        w = Watchers(srv)

        def case(t):
            t(srv, w)
            w.check_alive()
        for i, t in enumerate(TESTS, 1):
            R.run('04.%02d hostile_%s' % (i, t.__name__.split('_', 1)[1]), case, t, server=srv)
    except Exception as e:
        R.fail('04.00 hostile_setup', e)
    if w is not None:
        closeall(w.a, w.b)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('04.99 hostile_clean_shutdown', e)
    R.exit()


main()
