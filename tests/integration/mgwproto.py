"""The MGW device gateway protocol (xep/x-gateway/spec.md) written from the
specification alone, in plain Python (no SDK): a raw device for the
integration tests, and a minimal fake gateway to test the simulator."""

import hashlib
import hmac
import os
import socket
import struct
import time

HELLO, CHALLENGE, AUTH, WELCOME, PING, PONG, COMMAND, ACK, UPLINK, ERROR, BYE = range(1, 12)
E_MALFORMED, E_UNKNOWN_TYPE, E_AUTH_FAILED, E_OVERSIZE, E_VERSION, E_STATE, E_TIMEOUT, \
    E_REPLACED, E_UNAVAILABLE = range(1, 10)


def frame(t, body=b''):
    return struct.pack('>HB', 1 + len(body), t) + body


def mac(secret, tag, version, n1, n2, dev_id):
    d = dev_id.encode()
    msg = tag + bytes([version]) + n1 + n2 + bytes([len(d)]) + d
    return hmac.new(secret, msg, hashlib.sha256).digest()


class Conn:
    """A socket that reads whole frames: (type, body), or None on EOF."""

    def __init__(self, sock):
        self.s = sock
        self.buf = b''

    def send(self, data):
        self.s.sendall(data)

    def _fill(self, n, timeout):
        deadline = time.time() + timeout
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError('no frame within %ss' % timeout)
            self.s.settimeout(left)
            try:
                d = self.s.recv(65536)
            except socket.timeout:
                raise TimeoutError('no frame within %ss' % timeout)
            except ConnectionResetError:
                d = b''
            if not d:
                return False
            self.buf += d
        return True

    def read(self, timeout=5.0):
        if not self._fill(2, timeout):
            return None
        n = struct.unpack('>H', self.buf[:2])[0]
        if not self._fill(2 + n, timeout):
            return None
        f, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
        return f[0], f[1:]

    def read_until(self, types, timeout=5.0):
        """Skips PING (answering it) and PONG until a frame of one of types."""
        deadline = time.time() + timeout
        while True:
            f = self.read(max(0.01, deadline - time.time()))
            if f is None or f[0] in types:
                return f
            if f[0] == PING:
                self.send(frame(PONG))

    def closed(self, timeout=5.0):
        """True when the peer closes within timeout (frames are skipped)."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if self.read(max(0.01, deadline - time.time())) is None:
                    return True
        except (TimeoutError, OSError):
            return False
        return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


class RawDevice(Conn):
    """A device speaking MGW over a plain socket, frame by frame."""

    def __init__(self, port, dev_id, secret, host='127.0.0.1', tls=False):
        s = socket.create_connection((host, port), timeout=5)
        if tls:  # the spec's TLS option: TLS from the first byte
            import ssl
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            s = ctx.wrap_socket(s)
        super().__init__(s)
        self.id = dev_id
        self.secret = secret
        self.heartbeat = None
        self.max_body = None

    def hello(self, vmin=1, vmax=1, cnonce=None):
        self.cnonce = cnonce or os.urandom(16)
        d = self.id.encode()
        self.send(frame(HELLO, b'MG' + bytes([vmin, vmax]) + self.cnonce + bytes([len(d)]) + d))

    def login(self, secret=None):
        """Full handshake; returns the WELCOME frame's (heartbeat, max_body),
        or raises with the ERROR the server sent."""
        self.hello()
        f = self.read()
        if f is None or f[0] != CHALLENGE:
            raise RuntimeError('expected CHALLENGE, got %r' % (f,))
        version, snonce = f[1][0], f[1][1:17]
        self.send(frame(AUTH, mac(secret or self.secret, b'D', version, snonce, self.cnonce, self.id)))
        f = self.read()
        if f is None or f[0] != WELCOME:
            raise RuntimeError('expected WELCOME, got %r' % (f,))
        hb, mb = struct.unpack('>HH', f[1][:4])
        want = mac(self.secret, b'S', version, self.cnonce, snonce, self.id)
        if not hmac.compare_digest(want, f[1][4:36]):
            raise RuntimeError('server proof does not match')
        self.heartbeat, self.max_body = hb, mb
        return hb, mb

    def command(self, timeout=5.0):
        """The next COMMAND as (msg_id, ttl, payload), or None on close."""
        f = self.read_until((COMMAND, ERROR, BYE), timeout)
        if f is None or f[0] != COMMAND:
            return None if f is None else ('closed', f)
        mid, ttl = struct.unpack('>IH', f[1][:6])
        return mid, ttl, f[1][6:]

    def ack(self, mid, result=0):
        self.send(frame(ACK, struct.pack('>IB', mid, result)))

    def uplink(self, mid, payload):
        self.send(frame(UPLINK, struct.pack('>I', mid) + payload))


class FakeGateway:
    """The server side of the handshake, for testing the SDK/simulator
    without magpied: accepts one connection at a time."""

    def __init__(self, secrets, heartbeat=30, max_body=1024, check_mac=True):
        self.secrets = secrets
        self.check_mac = check_mac
        self.heartbeat = heartbeat
        self.max_body = max_body
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]

    def accept(self, timeout=10):
        """Accepts and authenticates one device: returns (Conn, device id)."""
        self.ls.settimeout(timeout)
        s, _ = self.ls.accept()
        c = Conn(s)
        t, b = c.read()
        assert t == HELLO and b[:2] == b'MG', (t, b)
        vmin, vmax, cnonce, idl = b[2], b[3], b[4:20], b[20]
        dev = b[21:21 + idl].decode()
        assert vmin <= 1 <= vmax
        snonce = os.urandom(16)
        c.send(frame(CHALLENGE, bytes([1]) + snonce))
        t, b = c.read()
        assert t == AUTH
        secret = self.secrets[dev]
        if self.check_mac:
            assert hmac.compare_digest(b, mac(secret, b'D', 1, snonce, cnonce, dev)), 'bad mac'
        c.send(frame(WELCOME, struct.pack('>HH', self.heartbeat, self.max_body) +
                     mac(secret, b'S', 1, cnonce, snonce, dev)))
        return c, dev

    def close(self):
        self.ls.close()
