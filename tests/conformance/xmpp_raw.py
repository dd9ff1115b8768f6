"""A raw XMPP client for conformance tests (Python stdlib only).

It speaks exactly what a script tells it to: it opens TCP (optionally direct
TLS, XEP-0368), writes raw bytes, and parses whatever the server sends into
events with an incremental expat parser. Helpers do the common negotiation
steps (STARTTLS, SASL SCRAM-SHA-1/256 and PLAIN, resource binding) so that a
script only spells out the part of the protocol it is testing.

Events returned by Connection.next_event():
  ET.Element  a depth-1 element of the server's stream (a stanza, features,
              errors, ...); the server's stream header itself is delivered as
              a pseudo element tagged STREAM_TAG carrying the header attributes
  CLOSE       the server sent </stream:stream>
  EOF         the server closed the TCP connection (or TLS was torn down)
  ParseError  the server sent XML we cannot parse (a server bug)
"""

import base64
import hashlib
import hmac
import os
import select
import socket
import ssl
import time
import xml.etree.ElementTree as ET
import xml.parsers.expat

NS_STREAM = 'http://etherx.jabber.org/streams'
NS_CLIENT = 'jabber:client'
NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls'
NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl'
NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind'
NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session'
NS_STREAM_ERRORS = 'urn:ietf:params:xml:ns:xmpp-streams'
NS_XML = 'http://www.w3.org/XML/1998/namespace'

STREAM_TAG = '{%s}stream' % NS_STREAM
FEATURES_TAG = '{%s}features' % NS_STREAM
ERROR_TAG = '{%s}error' % NS_STREAM


class _Marker:
    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return '<%s>' % self.name


CLOSE = _Marker('stream closed by server (</stream:stream>)')
EOF = _Marker('connection closed by server (EOF)')


class ParseError:
    def __init__(self, msg):
        self.msg = msg

    def __repr__(self):
        return '<unparseable data from server: %s>' % self.msg


class XmppError(Exception):
    """A negotiation helper got something it did not expect."""


def stream_header(to='localhost', version='1.0', extra=''):
    """The initial stream header a well-behaved client sends."""
    v = " version='%s'" % version if version is not None else ''
    return ("<?xml version='1.0'?><stream:stream to='%s'%s xml:lang='en' "
            "xmlns='jabber:client' xmlns:stream='%s'%s>" % (to, v, NS_STREAM, extra))


def tostring(el):
    """Serialise an event for messages (namespaces shown as {ns}name)."""
    if isinstance(el, ET.Element):
        return ET.tostring(el, encoding='unicode')
    return repr(el)


class Connection:
    """One TCP (+TLS) connection to the server and the parser on its input."""

    def __init__(self, host, port, direct_tls=False, server_name='localhost',
                 log=None, connect_timeout=5.0):
        self.host = host
        self.port = port
        self.server_name = server_name
        self.log = log
        self.sock = socket.create_connection((host, port), timeout=connect_timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.tls = False
        self.tls_info = None
        self.events = []
        self.closed = False          # EOF seen
        self.whitespace = 0          # whitespace bytes seen between stanzas
        self.stream_header = None    # last server stream header attributes
        self.last_sasl_event = None  # last reply of the server during SASL
        self._new_parser()
        if direct_tls:
            self.start_tls(alpn=['xmpp-client'])

    # ---- parsing -------------------------------------------------------
    def _new_parser(self):
        """Start parsing a new server stream (at connect and at every restart)."""
        p = xml.parsers.expat.ParserCreate(namespace_separator='}')
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._chars
        self.parser = p
        self.depth = 0
        self.stack = []
        self.parse_failed = False

    @staticmethod
    def _qname(name):
        return '{' + name if '}' in name else name

    def _start(self, name, attrs):
        tag = self._qname(name)
        attrs = {self._qname(k): v for k, v in attrs.items()}
        if self.depth == 0:
            self.stream_header = attrs
            self.events.append(ET.Element(tag, attrs))
        elif self.depth == 1:
            self.stack = [ET.Element(tag, attrs)]
        else:
            el = ET.SubElement(self.stack[-1], tag, attrs)
            self.stack.append(el)
        self.depth += 1

    def _end(self, name):
        self.depth -= 1
        if self.depth == 0:
            self.events.append(CLOSE)
        elif self.depth == 1:
            self.events.append(self.stack[0])
            self.stack = []
        else:
            self.stack.pop()

    def _chars(self, data):
        if self.depth <= 1:
            self.whitespace += len(data)
            return
        cur = self.stack[-1]
        if len(cur):
            cur[-1].tail = (cur[-1].tail or '') + data
        else:
            cur.text = (cur.text or '') + data

    def _feed(self, data):
        if self.log:
            self.log('RECV', data)
        if self.parse_failed:
            return
        try:
            self.parser.Parse(data, False)
        except xml.parsers.expat.ExpatError as e:
            self.parse_failed = True
            self.events.append(ParseError(str(e)))

    # ---- I/O -------------------------------------------------------------
    def _read_some(self, timeout):
        """Wait up to timeout seconds for bytes; feed them. False on timeout."""
        if self.closed:
            return False
        if not (self.tls and self.sock.pending()):
            r, _, _ = select.select([self.sock], [], [], max(timeout, 0))
            if not r:
                return False
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except (ConnectionResetError, ssl.SSLError, OSError):
            data = b''
        if not data:
            self.closed = True
            self.events.append(EOF)
            return True
        self._feed(data)
        return True

    def next_event(self, timeout=5.0):
        """The next event, or None if nothing came within timeout seconds."""
        deadline = time.monotonic() + timeout
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                if not self.events:
                    return None
                break
            self._read_some(left)
        return self.events.pop(0)

    def next_element(self, timeout=5.0, skip_header=True):
        """Next event, skipping the server's stream header pseudo element."""
        while True:
            ev = self.next_event(timeout)
            if skip_header and isinstance(ev, ET.Element) and ev.tag == STREAM_TAG:
                continue
            return ev

    def send(self, data):
        """Write all of data (str or bytes). Returns False if the peer is gone."""
        if isinstance(data, str):
            data = data.encode('utf-8')
        if self.log:
            self.log('SEND', data)
        view = memoryview(data)
        deadline = time.monotonic() + 10
        while view:
            try:
                n = self.sock.send(view)
                view = view[n:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                if time.monotonic() > deadline:
                    return False
                select.select([], [self.sock], [], 0.5)
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
        self.closed = True

    def start_tls(self, alpn=None):
        """TLS handshake on the socket (self-signed certificate accepted)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.sock.setblocking(True)
        self.sock.settimeout(10)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.server_name)
        self.sock.setblocking(False)
        self.tls = True
        self.tls_info = {'version': self.sock.version(),
                         'alpn': self.sock.selected_alpn_protocol(),
                         'cipher': self.sock.cipher()}
        self._new_parser()

    # ---- negotiation helpers -----------------------------------------------
    def open_stream(self, to='localhost', version='1.0'):
        """Send a stream header; return the server's features element."""
        self._new_parser()
        self.send(stream_header(to, version))
        return self.expect_features()

    def expect_features(self, timeout=5.0):
        ev = self.next_element(timeout)
        if not (isinstance(ev, ET.Element) and ev.tag == FEATURES_TAG):
            raise XmppError('expected <stream:features/>, got %s' % tostring(ev))
        return ev

    def starttls(self, features=None):
        """STARTTLS (RFC 6120 section 5) on an open plain-text stream."""
        if features is not None and features.find('{%s}starttls' % NS_TLS) is None:
            raise XmppError('server does not offer STARTTLS')
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        ev = self.next_element()
        if not (isinstance(ev, ET.Element) and ev.tag == '{%s}proceed' % NS_TLS):
            raise XmppError('STARTTLS: expected <proceed/>, got %s' % tostring(ev))
        self.start_tls()

    def sasl(self, user, password, mechanism=None, features=None):
        """SASL authentication (RFC 6120 section 6); raises XmppError on failure."""
        offered = []
        if features is not None:
            mechs = features.find('{%s}mechanisms' % NS_SASL)
            if mechs is not None:
                offered = [m.text for m in mechs.findall('{%s}mechanism' % NS_SASL)]
        if mechanism is None:
            for m in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'):
                if m in offered:
                    mechanism = m
                    break
            else:
                raise XmppError('no usable SASL mechanism offered: %r' % offered)
        if mechanism == 'PLAIN':
            self._sasl_plain(user, password)
        elif mechanism in ('SCRAM-SHA-256', 'SCRAM-SHA-1'):
            self._sasl_scram(user, password, mechanism)
        else:
            raise XmppError('mechanism %s not supported by the test client' % mechanism)
        return mechanism

    def _sasl_result(self):
        ev = self.last_sasl_event = self.next_element()
        if isinstance(ev, ET.Element) and ev.tag == '{%s}success' % NS_SASL:
            return ev
        raise XmppError('SASL: expected <success/>, got %s' % tostring(ev))

    def _sasl_plain(self, user, password):
        blob = base64.b64encode(('\0%s\0%s' % (user, password)).encode()).decode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, blob))
        self._sasl_result()

    def _sasl_scram(self, user, password, mechanism):
        hname = 'sha256' if mechanism == 'SCRAM-SHA-256' else 'sha1'
        H = lambda d: hashlib.new(hname, d).digest()
        HMAC = lambda k, d: hmac.new(k, d, hname).digest()
        cnonce = base64.b64encode(os.urandom(18)).decode()
        uname = user.replace('=', '=3D').replace(',', '=2C')
        gs2 = 'n,,'
        client_first_bare = 'n=%s,r=%s' % (uname, cnonce)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>" % (
            NS_SASL, mechanism,
            base64.b64encode((gs2 + client_first_bare).encode()).decode()))
        ev = self.last_sasl_event = self.next_element()
        if not (isinstance(ev, ET.Element) and ev.tag == '{%s}challenge' % NS_SASL):
            raise XmppError('SCRAM: expected <challenge/>, got %s' % tostring(ev))
        server_first = base64.b64decode(ev.text or '').decode()
        attrs = dict(kv.split('=', 1) for kv in server_first.split(','))
        nonce, salt, iters = attrs['r'], base64.b64decode(attrs['s']), int(attrs['i'])
        if not nonce.startswith(cnonce):
            raise XmppError('SCRAM: server nonce does not extend ours')
        salted = hashlib.pbkdf2_hmac(hname, password.encode(), salt, iters)
        client_key = HMAC(salted, b'Client Key')
        stored_key = H(client_key)
        without_proof = 'c=%s,r=%s' % (base64.b64encode(gs2.encode()).decode(), nonce)
        auth_message = ','.join([client_first_bare, server_first, without_proof]).encode()
        signature = HMAC(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        final = without_proof + ',p=' + base64.b64encode(proof).decode()
        self.send("<response xmlns='%s'>%s</response>" % (
            NS_SASL, base64.b64encode(final.encode()).decode()))
        ev = self._sasl_result()
        server_sig = HMAC(HMAC(salted, b'Server Key'), auth_message)
        final_msg = base64.b64decode(ev.text or '').decode()
        if final_msg != 'v=' + base64.b64encode(server_sig).decode():
            raise XmppError('SCRAM: bad server signature %r' % final_msg)

    def bind(self, resource=None, features=None):
        """Resource binding (RFC 6120 section 7); returns the bound full JID."""
        if features is not None and features.find('{%s}bind' % NS_BIND) is None:
            raise XmppError('server does not offer resource binding')
        res = '<resource>%s</resource>' % resource if resource else ''
        self.send("<iq type='set' id='bind_1'><bind xmlns='%s'>%s</bind></iq>" % (NS_BIND, res))
        ev = self.next_element()
        if not (isinstance(ev, ET.Element) and ev.get('type') == 'result'
                and ev.get('id') == 'bind_1'):
            raise XmppError('bind: expected a result, got %s' % tostring(ev))
        jid = ev.find('{%s}bind/{%s}jid' % (NS_BIND, NS_BIND))
        if jid is None or not jid.text:
            raise XmppError('bind: result carries no <jid/>')
        # RFC 6121 legacy session: only if the server says it is not optional
        if features is not None:
            sess = features.find('{%s}session' % NS_SESSION)
            if sess is not None and sess.find('{%s}optional' % NS_SESSION) is None:
                self.send("<iq type='set' id='sess_1'><session xmlns='%s'/></iq>" % NS_SESSION)
                ev = self.next_element()
                if not (isinstance(ev, ET.Element) and ev.get('type') == 'result'):
                    raise XmppError('session: expected a result, got %s' % tostring(ev))
        return jid.text

    def login(self, user, password, resource=None, domain='localhost',
              mechanism=None, direct_tls=False):
        """Full negotiation: [STARTTLS,] SASL, restart, bind. Returns full JID."""
        if not direct_tls:
            f = self.open_stream(domain)
            self.starttls(f)
        f = self.open_stream(domain)
        self.sasl(user, password, mechanism, f)
        f = self.open_stream(domain)
        return self.bind(resource, f)
