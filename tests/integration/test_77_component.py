#!/usr/bin/python3
"""77: external components (XEP-0114, mod_component). A component connects
to the component port, opens a jabber:component:accept stream to its
domain and authenticates with the SHA-1 handshake; then stanzas to its
domain (and JIDs in it) are written to it, in the component namespace,
and what it sends with a 'from' in its domain is routed to users. Wrong
secrets, unknown domains, a 'from' outside the domain, a second
connection for a connected domain and broken XML end that component's
stream with the right stream error; stanzas for a component that is not
connected bounce with service-unavailable; a real slixmpp
ComponentXMPP answers a user's disco#info and echoes messages."""

import asyncio
import hashlib
import re
import socket
import time
import xml.etree.ElementTree as ET

from common import (MagpieServer, Results, parse_args, online, body_of, check, closeall, tostr,
                    expect_error, sync)
from magpie_fixture import free_port
import slixhelp
import slixmpp

args = parse_args()
R = Results('[workers=%d]' % args.workers)
PORT = free_port()
SECRET = 's3cr3t-component'
COMP = 'comp.localhost'
NS_ACCEPT = 'jabber:component:accept'
NS_STREAMS = 'http://etherx.jabber.org/streams'


class Comp:
    """A raw component connection."""

    def __init__(self, domain=COMP, ns=NS_ACCEPT, rcvbuf=None):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(5)
        self.s.connect(('127.0.0.1', PORT))
        self.buf = b''
        self.s.sendall(("<?xml version='1.0'?><stream:stream xmlns:stream='%s' xmlns='%s' "
                        "to='%s'>" % (NS_STREAMS, ns, domain)).encode())

    def read_until(self, pattern, timeout=5):
        deadline = time.time() + timeout
        while not re.search(pattern, self.buf):
            left = deadline - time.time()
            if left <= 0:
                raise AssertionError('timeout waiting for %r; got %r' % (pattern, self.buf[-500:]))
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            if not d:
                raise AssertionError('closed while waiting for %r; got %r' % (pattern, self.buf[-500:]))
            self.buf += d
        return re.search(pattern, self.buf)

    def closed(self, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.s.settimeout(max(0.01, deadline - time.time()))
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return True
            if not d:
                return True
            self.buf += d
        return False

    def handshake(self, secret=SECRET):
        sid = self.read_until(rb"<stream:stream[^>]*\bid='([^']+)'").group(1).decode()
        self.s.sendall(('<handshake>%s</handshake>' % hashlib.sha1((sid + secret).encode()).hexdigest()).encode())

    def send(self, s):
        self.s.sendall(s.encode())

    def next_stanza(self, name, timeout=5):
        """The next complete <name ...>...</name> or <name .../> in the stream."""
        m = self.read_until((r'<%s[ >].*?</%s>|<%s [^>]*/>' % (name, name, name)).encode(), timeout)
        self.buf = self.buf[m.end():]
        return m.group(0).decode()

    def close(self):
        self.s.close()


def connected(rcvbuf=None):
    c = Comp(rcvbuf=rcvbuf)
    c.handshake()
    c.read_until(rb'<handshake/>')
    return c


def stream_error(c, cond):
    c.read_until(('<%s xmlns=.urn:ietf:params:xml:ns:xmpp-streams.' % cond).encode())
    check(c.closed(), 'the stream stayed open after %s' % cond)


def t01_handshake_and_both_directions(srv):
    a = online(srv, 'alice', 'alice-pw', 'desk')
    c = connected()
    try:
        a.message('bot@%s/x' % COMP, 'to the component', id_='m1')
        st = c.next_stanza('message')
        el = ET.fromstring(st.replace('<message', "<message xmlns='%s'" % NS_ACCEPT, 1))
        check(el.get('from') == 'alice@localhost/desk' and el.get('to') == 'bot@%s/x' % COMP,
              'addresses: %s' % st)
        check('jabber:client' not in st, 'the component namespace leaks jabber:client: %s' % st)
        check(el.find('{%s}body' % NS_ACCEPT).text == 'to the component', st)
        c.send("<message from='bot@%s/x' to='alice@localhost/desk' type='chat' id='r1'>"
               "<body>from the component</body><x xmlns='urn:example'>y</x></message>" % COMP)
        m = a.wait_for('message', lambda e: body_of(e) == 'from the component', timeout=5)
        check(m.get('from') == 'bot@%s/x' % COMP, tostr(m))
        check(m.find('{urn:example}x') is not None, 'extension lost: %s' % tostr(m))
        # an IQ from a user answered by the component reaches the user
        a.send("<iq type='get' id='q1' to='%s'><query xmlns='jabber:iq:version'/></iq>" % COMP)
        st = c.next_stanza('iq')
        check("id='q1'" in st and "from='alice@localhost/desk'" in st, st)
        c.send("<iq type='result' id='q1' from='%s' to='alice@localhost/desk'>"
               "<query xmlns='jabber:iq:version'><name>comp</name></query></iq>" % COMP)
        r = a.wait_for('iq', lambda e: e.get('id') == 'q1', timeout=5)
        check(r.get('type') == 'result' and r.get('from') == COMP, tostr(r))
        # messages in order
        for i in range(20):
            c.send("<message from='%s' to='alice@localhost/desk'><body>n%d</body></message>" % (COMP, i))
        got = [body_of(a.wait_for('message', lambda e: (body_of(e) or '').startswith('n'), timeout=5))
               for _ in range(20)]
        check(got == ['n%d' % i for i in range(20)], 'order: %s' % got)
    finally:
        c.close()
        closeall(a)


def t02_wrong_secret_unknown_domain_wrong_namespace(srv):
    c = Comp()
    c.handshake('not the secret')
    stream_error(c, 'not-authorized')
    c.close()
    c = Comp(domain='nothere.localhost')
    stream_error(c, 'host-unknown')
    c.close()
    c = Comp(ns='jabber:client')
    stream_error(c, 'invalid-namespace')
    c.close()
    # a stanza before the handshake
    c = Comp()
    c.read_until(rb"<stream:stream[^>]*\bid=")
    c.send("<message from='%s' to='alice@localhost'><body>x</body></message>" % COMP)
    stream_error(c, 'not-authorized')
    c.close()


def t03_from_outside_the_domain(srv):
    a = online(srv, 'alice', 'alice-pw', 'spoof')
    c = connected()
    try:
        c.send("<message from='bob@localhost/x' to='alice@localhost/spoof'><body>spoof</body></message>")
        stream_error(c, 'invalid-from')
        m = a.wait_for('message', lambda e: body_of(e) == 'spoof', timeout=1, raise_=False)
        check(m is None, 'a spoofed message was delivered')
    finally:
        c.close()
        closeall(a)


def t04_conflict_then_reconnect(srv):
    c1 = connected()
    c2 = Comp()
    c2.handshake()
    stream_error(c2, 'conflict')
    c2.close()
    c1.send('</stream:stream>')
    check(c1.closed(), 'the server did not close after </stream:stream>')
    c1.close()
    time.sleep(0.2)
    c3 = connected()
    c3.close()


def t05_not_connected_bounces(srv):
    a = online(srv, 'alice', 'alice-pw', 'bounce')
    try:
        time.sleep(0.3)  # the previous test's connection is gone
        r = a.iq('get', 'bot@%s' % COMP, "<query xmlns='jabber:iq:version'/>")
        check(r.get('type') == 'error' and r.find('.//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable') is not None,
              tostr(r))
        a.message('bot@%s' % COMP, 'nobody home', id_='nb1')
        expect_error(a, 'message', 'service-unavailable', pred=lambda e: e.get('id') == 'nb1')
    finally:
        closeall(a)


def t06_broken_xml_only_ends_that_stream(srv):
    a = online(srv, 'alice', 'alice-pw', 'brk')
    c = connected()
    try:
        c.send('<message from="%s" to="alice@localhost/brk"><body>x</bdy></message>' % COMP)
        stream_error(c, 'not-well-formed')
        sync(a)
        c2 = connected()
        c2.send("<message from='%s' to='alice@localhost/brk'><body>after</body></message>" % COMP)
        a.wait_for('message', lambda e: body_of(e) == 'after', timeout=5)
        c2.close()
    finally:
        c.close()
        closeall(a)


def t08_component_that_does_not_read_is_cut_off(srv):
    """Its queue is bounded (max_queued_kib = 256 here): past it, the
    component gets policy-violation and what follows bounces."""
    a = online(srv, 'alice', 'alice-pw', 'flood')
    c = connected(rcvbuf=4096)
    try:
        big = 'x' * 20000
        cut = None
        for i in range(1500):
            a.sock.settimeout(10)  # wait_for below leaves a tiny timeout on the socket
            a.message('bot@%s' % COMP, big, id_='f%d' % i)
            if i % 10 == 9:
                sync(a)  # paced, so the queue that grows is the component's
            e = a.wait_for('message', lambda e: e.get('type') == 'error', timeout=0.001, raise_=False)
            if e is not None:
                cut = e
                break
        check(cut is not None, 'a component that does not read was never cut off')
        check(cut.find('.//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable') is not None, tostr(cut))
        # the component's side: a policy-violation at the end of what it got
        c.s.settimeout(5)
        data = b''
        while True:
            try:
                d = c.s.recv(1 << 20)
            except socket.timeout:
                break
            if not d:
                break
            data += d
        check(b'<policy-violation' in data[-300:], 'no policy-violation at the end of %d bytes: %r'
              % (len(data), data[-300:]))
        sync(a)
    finally:
        c.close()
        closeall(a)


class EchoComponent(slixmpp.ComponentXMPP):
    def __init__(self):
        super().__init__(COMP, SECRET, '127.0.0.1', PORT)
        self.register_plugin('xep_0030')
        self['xep_0030'].add_identity(category='gateway', itype='test', name='echo')
        self['xep_0030'].add_feature('urn:example:echo')
        self.add_event_handler('message', self.echo)
        self.started = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', lambda _: self.started.done() or self.started.set_result(True))

    def echo(self, msg):
        if msg['type'] in ('chat', 'normal') and msg['body']:
            msg.reply('echo: %s' % msg['body']).send()


def t07_slixmpp_component(srv):
    async def go():
        comp = EchoComponent()
        comp.connect()
        await asyncio.wait_for(comp.started, 10)
        u = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
        try:
            info = await u['xep_0030'].get_info(jid=COMP, timeout=10)
            ids = info['disco_info']['identities']
            check(any(i[0] == 'gateway' and i[1] == 'test' for i in ids), 'identities: %s' % ids)
            check('urn:example:echo' in info['disco_info']['features'], 'features')
            u.send_message(mto='echo@%s' % COMP, mbody='hello', mtype='chat')
            m = await slixhelp.next_message(u, pred=lambda m: m['body'] == 'echo: hello')
            check(str(m['from']) == 'echo@%s' % COMP, 'from %s' % m['from'])
        finally:
            comp.disconnect()
            await slixhelp.close(u)
    slixhelp.run(go)


TESTS = [t01_handshake_and_both_directions, t02_wrong_secret_unknown_domain_wrong_namespace,
         t03_from_outside_the_domain, t04_conflict_then_reconnect, t05_not_connected_bounces,
         t06_broken_xml_only_ends_that_stream, t07_slixmpp_component,
         t08_component_that_does_not_read_is_cut_off]


def main():
    mod = '{ name = "component"; port = %d; components = "%s=%s other.localhost=another-secret"; ' \
        'max_queued_kib = 256; }' \
        % (PORT, COMP, SECRET)
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'roster', 'offline', mod],
                           limits={'rate': 0})  # 77.08 floods on purpose
        srv.__enter__()
    except Exception as e:
        R.fail('77.00 component_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        for i, t in enumerate(TESTS, 1):
            R.run('77.%02d component_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('77.00 component_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('77.99 component_clean_shutdown', e)
    R.exit()


main()
