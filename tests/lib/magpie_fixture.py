"""Test fixture for Magpie: run a real magpied, and talk raw XMPP to it.

Used by tests/integration/*.py and the conformance scripts in xep/.
Python standard library only (run with /usr/bin/python3).

    from magpie_fixture import MagpieServer, RawClient, Results

    with MagpieServer(builddir) as srv:          # temp dir, free ports, config
        srv.add_user('alice', 'secret')          # via magpiectl
        c = RawClient(srv.c2s_port)              # STARTTLS port
        c.login('alice', 'secret', resource='r1')
        c.send('<message to="bob@localhost" type="chat"><body>hi</body></message>')
        err = c.wait_for('message', lambda e: e.get('type') == 'error')

MagpieServer(builddir, workers=1, storage='sqlite', mysql=None,
             extra_config='', modules=None, limits=None, hosts=None,
             security=None, log_level='debug', log_file='-')
  builddir   the build tree holding magpied, magpiectl and modules/.libs
  storage    'sqlite' (a file in the temp state dir) or 'mysql'
  mysql      "host:port:user:password:database" (what tests/mariadb.sh
             prints) or a dict with those keys; default $MAGPIE_TEST_MYSQL
  modules    list of module names (default disco, ping, version, time, roster,
             offline, mam, carbons, blocking: the messaging part of the
             server's own default list) or
             preformatted libconfig entries (strings starting with '{')
  limits     dict merged into the limits group
             (default max_stanza_size 65536, negotiation_timeout 30)
  security   dict merged into the security group (default
             auth_failures_free 1000: the suites fail logins on purpose
             from one address, and throttled answers would outlast their
             timeouts; tests of throttling set it lower)
  hosts      domain names, or preformatted libconfig groups ('{ domain = ...; cert = ...; }')
  extra_config  text appended verbatim to the config file
  log_level, log_file  the log group ('-': standard error, which .log reads;
             sanitizer reports always go there)

Attributes/methods: .c2s_port .tls_port .host .state_dir .config_path
.add_user(user, password, domain='localhost') .ctl(*args) .start() .stop()
.restart() .log .sanitizer_reports() (new reports since the last call)
.pid .running

Environment: MAGPIE_KEEP_TMP=1 keeps the temp dir; MAGPIE_TEST_VERBOSE=1
prints the server log of failed tests.
"""

import base64
import hashlib
import hmac
import os
import re
import secrets
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from xml.sax.saxutils import escape as _xml_escape, quoteattr

NS_STREAMS = 'http://etherx.jabber.org/streams'
NS_CLIENT = 'jabber:client'
NS_TLS = 'urn:ietf:params:xml:ns:xmpp-tls'
NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl'
NS_BIND = 'urn:ietf:params:xml:ns:xmpp-bind'
NS_SESSION = 'urn:ietf:params:xml:ns:xmpp-session'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'
NS_STREAM_ERR = 'urn:ietf:params:xml:ns:xmpp-streams'

SANITIZER_PATTERNS = (
    'ERROR: AddressSanitizer',
    'ERROR: LeakSanitizer',
    'runtime error:',
    'WARNING: ThreadSanitizer',
    'ERROR: UndefinedBehaviorSanitizer',
)

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))


def default_builddir():
    """The build tree: $MAGPIE_BUILDDIR, argv[1] or the source tree."""
    if os.environ.get('MAGPIE_BUILDDIR'):
        return os.environ['MAGPIE_BUILDDIR']
    if len(sys.argv) > 1 and os.path.isdir(sys.argv[1]):
        return sys.argv[1]
    return SRCDIR


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago, chosen below the
    kernel's ephemeral range (32768-60999 on Linux): a port the kernel hands
    out can be taken again, between this check and the server's bind, as
    the source port of any outgoing connection on the machine (a load test
    next door holding thousands of loopback connections made that
    happen)."""
    import random
    for _ in range(200):
        port = random.randrange(20000, 32000)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(('127.0.0.1', port))
        except OSError:
            continue
        finally:
            s.close()
        return port
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def parse_mysql(spec):
    """'host:port:user:password:database' or a dict -> dict."""
    if spec is None:
        spec = os.environ.get('MAGPIE_TEST_MYSQL')
    if spec is None:
        raise ValueError('storage=mysql needs mysql= or $MAGPIE_TEST_MYSQL')
    if isinstance(spec, dict):
        d = dict(spec)
    else:
        parts = spec.strip().split(':')
        if len(parts) < 5:
            raise ValueError('bad mysql spec %r (host:port:user:password:database)' % spec)
        # a password may contain ':'; the database name may not
        d = {'host': parts[0], 'port': int(parts[1]), 'user': parts[2],
             'password': ':'.join(parts[3:-1]), 'database': parts[-1]}
    d['port'] = int(d.get('port', 3306))
    return d


def _cfgstr(s):
    """A libconfig string literal."""
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


def _cfgval(v):
    """A libconfig scalar."""
    if isinstance(v, bool):
        return 'true' if v else 'false'
    if isinstance(v, str):
        return _cfgstr(v)
    return str(v)


class ServerError(Exception):
    pass


class MagpieServer:
    """One magpied process with its own temp dir, ports and config."""

    def __init__(self, builddir=None, workers=1, storage='sqlite', mysql=None,
                 extra_config='', modules=None, limits=None, hosts=None,
                 log_level='debug', start_timeout=None, security=None, log_file='-',
                 http=False):
        self.builddir = os.path.abspath(builddir or default_builddir())
        self.workers = workers
        self.storage = storage
        self.mysql = parse_mysql(mysql) if storage == 'mysql' else None
        self.extra_config = extra_config
        self.modules = (['disco', 'ping', 'version', 'time', 'roster', 'offline', 'mam', 'carbons',
                         'blocking']
                        if modules is None else list(modules))
        self.limits = {'max_stanza_size': 65536, 'negotiation_timeout': 30}
        if limits:
            self.limits.update(limits)
        self.security = {'auth_failures_free': 1000}
        if security:
            self.security.update(security)
        self.hosts = hosts or ['localhost', 'example.test']
        self.log_level = log_level
        self.log_file = log_file
        self.start_timeout = start_timeout or float(os.environ.get('MAGPIE_START_TIMEOUT', '60'))
        self.host = '127.0.0.1'
        self.magpied = os.path.join(self.builddir, 'magpied')
        self.magpiectl = os.path.join(self.builddir, 'magpiectl')
        self.module_dir = os.path.join(self.builddir, 'modules', '.libs')
        self.tmp = tempfile.mkdtemp(prefix='mpfix-')
        self.state_dir = os.path.join(self.tmp, 'state')
        os.makedirs(self.state_dir)
        self.config_path = os.path.join(self.tmp, 'magpie.conf')
        self.log_path = os.path.join(self.tmp, 'magpied.log')
        self.c2s_port = free_port()
        self.tls_port = free_port()
        # the HTTP listener (type "http"), when asked for: http=True, or
        # 'tls' for HTTPS
        self.http = http
        self.http_port = free_port() if http else None
        self.proc = None
        self.last_exit = None
        self._log_checked = 0      # offset up to which sanitizer reports were collected
        self._ctl_reports = []
        self.failed = False
        self.write_config()

    # ---- configuration
    def config_text(self):
        hosts = ', '.join(h if h.lstrip().startswith('{') else '{ domain = %s; }' % _cfgstr(h)
                          for h in self.hosts)
        if self.storage == 'sqlite':
            storage = 'storage = { driver = "sqlite"; sqlite = { path = %s; }; };' % \
                _cfgstr(os.path.join(self.state_dir, 'magpie.db'))
        elif self.storage == 'mysql':
            m = self.mysql
            storage = ('storage = { driver = "mysql"; mysql = { host = %s; port = %d; '
                       'user = %s; password = %s; database = %s; }; };') % (
                _cfgstr(m['host']), m['port'], _cfgstr(m['user']),
                _cfgstr(m['password']), _cfgstr(m['database']))
        else:
            raise ValueError('unknown storage %r' % self.storage)
        mods = []
        for m in self.modules:
            mods.append(m if m.lstrip().startswith('{') else _cfgstr(m))
        limits = ' '.join('%s = %s;' % (k, v if not isinstance(v, str) else _cfgstr(v))
                          for k, v in self.limits.items())
        security = ' '.join('%s = %s;' % (k, _cfgval(v)) for k, v in self.security.items())
        return '\n'.join([
            '# written by tests/lib/magpie_fixture.py',
            'state_dir = %s;' % _cfgstr(self.state_dir),
            'module_dir = %s;' % _cfgstr(self.module_dir),
            'workers = %d;' % self.workers,
            'log = { level = %s; file = %s; };' % (_cfgstr(self.log_level), _cfgstr(self.log_file)),
            'hosts = ( %s );' % hosts,
            'listeners = ( { type = "c2s"; address = "127.0.0.1"; port = %d; },' % self.c2s_port,
            '              { type = "c2s_tls"; address = "127.0.0.1"; port = %d; }' % self.tls_port,
            (',            { type = "http"; address = "127.0.0.1"; port = %d; tls = %s; }'
             % (self.http_port, 'true' if self.http == 'tls' else 'false')) if self.http else '',
            '            );',
            storage,
            'limits = { %s };' % limits,
            'security = { %s };' % security,
            'modules = ( %s );' % ', '.join(mods),
            self.extra_config,
            '',
        ])

    def write_config(self):
        with open(self.config_path, 'w') as f:
            f.write(self.config_text())

    # ---- process control
    def _env(self):
        env = dict(os.environ)
        env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0')
        env.setdefault('UBSAN_OPTIONS', 'print_stacktrace=1')
        env.setdefault('LSAN_OPTIONS', 'report_objects=0')
        return env

    def start(self):
        """Starts magpied and waits until both listeners accept."""
        if self.proc is not None and self.proc.poll() is None:
            raise ServerError('already running')
        if not os.path.exists(self.magpied):
            raise ServerError('no magpied at %s' % self.magpied)
        logf = open(self.log_path, 'ab')
        self.proc = subprocess.Popen([self.magpied, '-c', self.config_path],
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self._env(),
                                     cwd=self.tmp)
        logf.close()
        deadline = time.time() + self.start_timeout
        pending = [self.c2s_port, self.tls_port] + ([self.http_port] if self.http else [])
        while pending:
            if self.proc.poll() is not None:
                self.last_exit = self.proc.returncode
                raise ServerError('magpied exited with %s during start-up; log:\n%s'
                                  % (self.proc.returncode, self.log_tail()))
            port = pending[0]
            try:
                s = socket.create_connection((self.host, port), timeout=1)
                s.close()
                pending.pop(0)
                continue
            except OSError:
                pass
            if time.time() > deadline:
                self.kill()
                raise ServerError('magpied did not listen on %s within %ss; log:\n%s'
                                  % (port, self.start_timeout, self.log_tail()))
            time.sleep(0.05)
        return self

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30, expect_code=0):
        """SIGTERM, wait, and assert the exit code (default 0)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise ServerError('magpied did not exit within %ss of SIGTERM; log:\n%s'
                                  % (timeout, self.log_tail()))
        code = self.proc.returncode
        self.last_exit = code
        self.proc = None
        if expect_code is not None and code != expect_code:
            raise ServerError('magpied exited with %s (expected %s); log:\n%s'
                              % (code, expect_code, self.log_tail()))
        return code

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.last_exit = self.proc.returncode
        self.proc = None

    def restart(self):
        self.stop()
        return self.start()

    def __enter__(self):
        try:
            self.start()
        except Exception:
            self.cleanup(force_keep=True)
            raise
        return self

    def __exit__(self, etype, evalue, tb):
        err = None
        try:
            if self.proc is not None:
                self.stop()
        except ServerError as e:
            err = e
        reports = self.sanitizer_reports()
        self.cleanup(force_keep=bool(etype or err or reports or self.failed))
        if etype is None:
            if err:
                raise err
            if reports:
                raise ServerError('sanitizer report in magpied log:\n' + '\n'.join(reports))
        return False

    def cleanup(self, force_keep=False):
        if force_keep or os.environ.get('MAGPIE_KEEP_TMP'):
            sys.stderr.write('magpie_fixture: kept %s\n' % self.tmp)
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- logs
    @property
    def log(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except FileNotFoundError:
            return ''

    def log_tail(self, n=60):
        return '\n'.join(self.log.splitlines()[-n:])

    def sanitizer_reports(self):
        """New sanitizer reports in the server log (and magpiectl stderr)
        since the last call, as a list of excerpts."""
        text = self.log
        new = text[self._log_checked:]
        self._log_checked = len(text)
        out = list(self._ctl_reports)
        self._ctl_reports = []
        out.extend(find_sanitizer_reports(new))
        return out

    # ---- administration
    def ctl(self, *args, check=False, timeout=60, input=None):
        """Runs magpiectl -c CONFIG ARGS...; returns CompletedProcess (text)."""
        cmd = [self.magpiectl, '-c', self.config_path] + [str(a) for a in args]
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout, env=self._env(), input=input)
        reps = find_sanitizer_reports(p.stderr)
        if reps:
            self._ctl_reports.extend('magpiectl %s: %s' % (' '.join(args), r) for r in reps)
        if check and p.returncode != 0:
            raise ServerError('magpiectl %s failed (%d): %s%s'
                              % (' '.join(cmd[3:]), p.returncode, p.stdout, p.stderr))
        return p

    def run_tool(self, cmd, timeout=60, **kw):
        """Runs another program a test needs (magpied --check-config, a test
        client such as tests/integration/strophe_client) with the sanitizer
        environment; returns CompletedProcess (text, stdout and stderr
        captured). A sanitizer report in its output is kept like one of
        magpied's: Results.run then fails the test."""
        kw.setdefault('stdout', subprocess.PIPE)
        kw.setdefault('stderr', subprocess.PIPE)
        kw.setdefault('env', self._env())
        p = subprocess.run([str(a) for a in cmd], text=True, timeout=timeout, **kw)
        name = os.path.basename(str(cmd[0]))
        for out in (p.stdout, p.stderr):
            for r in find_sanitizer_reports(out or ''):
                self._ctl_reports.append('%s: %s' % (name, r))
        return p

    def wait_log(self, pattern, timeout=10.0, start=0):
        """Waits until the server log (from offset start) matches the regular
        expression pattern; returns the match or None."""
        deadline = time.time() + timeout
        while True:
            m = re.search(pattern, self.log[start:])
            if m or time.time() >= deadline:
                return m
            time.sleep(0.05)

    def add_user(self, user, password, domain='localhost'):
        jid = user if '@' in user else '%s@%s' % (user, domain)
        self.ctl('user', 'add', jid, '--password', password, check=True)
        return jid


def find_sanitizer_reports(text):
    out = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if any(p in line for p in SANITIZER_PATTERNS):
            out.append('\n'.join(lines[i:i + 25]))
    return out


# ---------------------------------------------------------------------------
# SASL

def _saslname(s):
    return s.replace('=', '=3D').replace(',', '=2C')


class Scram:
    """Client side of SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, 7677). With
    cb_name and cb_data (the -PLUS variants) the gs2 header is
    'p=<cb_name>,,' and the channel binding data goes into c=."""

    def __init__(self, user, password, mech='SCRAM-SHA-256', nonce=None, cb_name=None,
                 cb_data=b''):
        self.hname = {'SCRAM-SHA-1': 'sha1', 'SCRAM-SHA-256': 'sha256',
                      'SCRAM-SHA-512': 'sha512'}[mech[:-5] if mech.endswith('-PLUS') else mech]
        self.user = user
        self.password = password.encode('utf-8')
        self.cnonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self.gs2 = 'p=%s,,' % cb_name if cb_name else 'n,,'
        self.cb_data = cb_data if cb_name else b''
        self.client_first_bare = 'n=%s,r=%s' % (_saslname(user), self.cnonce)
        self.server_signature = None

    def _hmac(self, key, msg):
        return hmac.new(key, msg, self.hname).digest()

    def first(self):
        return (self.gs2 + self.client_first_bare).encode()

    def final(self, server_first):
        sf = server_first.decode()
        attrs = dict(kv.split('=', 1) for kv in sf.split(','))
        nonce, salt, it = attrs['r'], base64.b64decode(attrs['s']), int(attrs['i'])
        if not nonce.startswith(self.cnonce):
            raise ValueError('server nonce does not extend client nonce')
        salted = hashlib.pbkdf2_hmac(self.hname, self.password, salt, it)
        client_key = self._hmac(salted, b'Client Key')
        stored_key = hashlib.new(self.hname, client_key).digest()
        without_proof = 'c=%s,r=%s' % (base64.b64encode(self.gs2.encode() + self.cb_data).decode(),
                                       nonce)
        auth_msg = ','.join([self.client_first_bare, sf, without_proof]).encode()
        sig = self._hmac(stored_key, auth_msg)
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = self._hmac(salted, b'Server Key')
        self.server_signature = base64.b64encode(self._hmac(server_key, auth_msg)).decode()
        return ('%s,p=%s' % (without_proof, base64.b64encode(proof).decode())).encode()

    def verify(self, server_final):
        sf = server_final.decode()
        attrs = dict(kv.split('=', 1) for kv in sf.split(','))
        if 'e' in attrs:
            raise ValueError('server-final error: ' + attrs['e'])
        return attrs.get('v') == self.server_signature


# ---------------------------------------------------------------------------
# raw XMPP client

def local(tag):
    """'{ns}name' -> 'name'."""
    return tag.rsplit('}', 1)[-1]


def ns(tag):
    return tag[1:].split('}', 1)[0] if tag.startswith('{') else ''


def tostr(el):
    return ET.tostring(el, encoding='unicode')


def esc(s):
    return _xml_escape(s)


def child(el, name, namespace=None):
    """First child with local name (and namespace if given), or None."""
    for c in el:
        if local(c.tag) == name and (namespace is None or ns(c.tag) == namespace):
            return c
    return None


def error_condition(el):
    """Defined condition of a stanza error or stream error element
    (the <error/> child of a stanza, or a <stream:error/> itself)."""
    err = el if local(el.tag) == 'error' and ns(el.tag) == NS_STREAMS else child(el, 'error')
    if err is None:
        return None
    for c in err:
        if ns(c.tag) in (NS_STANZAS, NS_STREAM_ERR) and local(c.tag) != 'text':
            return local(c.tag)
    return None


class XMPPError(Exception):
    pass


class RawClient:
    """A minimal blocking XMPP c2s client for tests that need control over
    the bytes on the wire.  Elements received at depth 1 are parsed into
    ElementTree elements ('{jabber:client}message' ...)."""

    def __init__(self, port, host='127.0.0.1', domain='localhost', direct_tls=False,
                 timeout=10, connect=True):
        self.host, self.port, self.domain = host, port, domain
        self.direct_tls = direct_tls
        self.timeout = timeout
        self.sock = None
        self.tls = False
        self.closed = False           # the server closed the TCP connection
        self.stream_closed = False    # we received </stream:stream>
        self.stream_error = None      # condition of a received <stream:error/>
        self.stream_error_el = None
        self.stream_header = None
        self.features = None
        self.jid = None
        self.raw_in = bytearray()
        self.backlog = []
        self._idc = 0
        self.mechanism = None
        if connect:
            self.connect()

    # ---- transport
    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.direct_tls:
            self._wrap_tls(alpn=['xmpp-client'])
        self._new_parser()
        return self

    def _wrap_tls(self, alpn=None):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if alpn:
            ctx.set_alpn_protocols(alpn)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.domain)
        self.tls = True

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=('start', 'end'))
        self.depth = 0
        self.root = None

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()
        return False

    def send(self, data, ignore_errors=False):
        """Sends str (utf-8) or bytes as they are."""
        if isinstance(data, str):
            data = data.encode('utf-8')
        try:
            self.sock.sendall(data)
        except (OSError, ssl.SSLError):
            if not ignore_errors:
                raise

    def _recv_some(self, timeout):
        """Reads what is available (waiting up to timeout). Returns bytes,
        b'' on EOF, None on timeout."""
        if self.sock is None:
            return b''
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            timeout = 0
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        except ssl.SSLWantReadError:
            return None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b''
        except ssl.SSLError as e:
            if 'timed out' in str(e):
                return None
            return b''
        except OSError:
            return b''
        return data

    def _feed(self, data):
        self.raw_in += data
        try:
            self.parser.feed(data)
            events = list(self.parser.read_events())
        except ET.ParseError as e:
            self.closed = True
            raise XMPPError('the server sent XML that does not parse (%s); last bytes received: %s'
                            % (e, bytes(self.raw_in[-600:]).decode('utf-8', 'replace')))
        for ev, el in events:
            if ev == 'start':
                self.depth += 1
                if self.depth == 1:
                    self.root = el
                    self.stream_header = el
            else:
                self.depth -= 1
                if self.depth == 0:
                    self.stream_closed = True
                elif self.depth == 1:
                    if self.root is not None:
                        try:
                            self.root.remove(el)
                        except ValueError:
                            pass
                    if local(el.tag) == 'error' and ns(el.tag) == NS_STREAMS:
                        self.stream_error_el = el
                        self.stream_error = error_condition(el)
                    self.backlog.append(el)

    def pump(self, timeout):
        """Reads once (up to timeout) and parses. Returns False on EOF."""
        data = self._recv_some(timeout)
        if data is None:
            return True
        if data == b'':
            self.closed = True
            return False
        self._feed(data)
        return True

    # ---- receiving
    def recv(self, timeout=None):
        """Next depth-1 element, or None on timeout/EOF."""
        return self.wait_for(None, timeout=timeout, raise_=False)

    def wait_for(self, name=None, pred=None, timeout=None, raise_=True):
        """The first received element (from the backlog or the wire) whose
        local name is name (any if None) and for which pred(el) is true.
        Other elements stay in the backlog. Raises XMPPError on timeout/EOF
        unless raise_ is False (then returns None)."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.time() + timeout
        while True:
            for i, el in enumerate(self.backlog):
                if (name is None or local(el.tag) == name) and (pred is None or pred(el)):
                    return self.backlog.pop(i)
            if self.closed or self.stream_closed:
                break
            left = deadline - time.time()
            if left <= 0:
                break
            self.pump(left)
        if raise_:
            why = 'stream error %s' % self.stream_error if self.stream_error else \
                ('connection closed' if (self.closed or self.stream_closed) else 'timeout')
            raise XMPPError('waiting for <%s>: %s; got so far: %s' % (
                name or '*', why, bytes(self.raw_in[-800:]).decode('utf-8', 'replace')))
        return None

    def drain(self, timeout=0.3):
        """Reads for timeout seconds; returns and clears the backlog."""
        deadline = time.time() + timeout
        while not self.closed and time.time() < deadline:
            self.pump(max(0.01, deadline - time.time()))
        out, self.backlog = self.backlog, []
        return out

    def wait_closed(self, timeout=None):
        """Waits until the server closes the TCP connection. Returns True if
        it did within timeout."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.time() + timeout
        while not self.closed:
            left = deadline - time.time()
            if left <= 0:
                return False
            self.pump(left)
        return True

    def wait_stream_end(self, timeout=None):
        """Waits for </stream:stream> or EOF; returns True if seen."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.time() + timeout
        while not self.closed and not self.stream_closed:
            left = deadline - time.time()
            if left <= 0:
                return False
            self.pump(left)
        return True

    # ---- negotiation
    def open_stream(self, to=None, header=None):
        """Sends a stream header and waits for the server's header and features."""
        self._new_parser()
        self.features = None
        if header is None:
            header = ("<?xml version='1.0'?><stream:stream to=%s version='1.0' "
                      "xml:lang='en' xmlns='jabber:client' "
                      "xmlns:stream='http://etherx.jabber.org/streams'>"
                      % quoteattr(to or self.domain))
        self.send(header)
        self.features = self.wait_for('features')
        return self.features

    def feature(self, name):
        return None if self.features is None else child(self.features, name)

    def mechanisms(self):
        m = self.feature('mechanisms')
        return [] if m is None else [c.text for c in m if local(c.tag) == 'mechanism']

    def starttls(self):
        if self.feature('starttls') is None:
            raise XMPPError('no starttls feature: ' + tostr(self.features))
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        el = self.wait_for(pred=lambda e: ns(e.tag) == NS_TLS)
        if local(el.tag) != 'proceed':
            raise XMPPError('starttls refused: ' + tostr(el))
        self.backlog = []
        self._wrap_tls()
        return self.open_stream()

    def tls_server_end_point(self):
        """RFC 5929 channel binding data of this TLS connection: the hash of
        the server certificate (SHA-256 unless its signature uses a
        stronger hash)."""
        der = self.sock.getpeercert(binary_form=True)
        out = subprocess.run(['openssl', 'x509', '-inform', 'DER', '-noout', '-text'],
                             input=der, capture_output=True).stdout.decode()
        algo = 'sha256'
        for h in ('sha384', 'sha512'):
            if ('ecdsa-with-%s' % h.upper()) in out or ('%sWithRSAEncryption' % h) in out:
                algo = h
        return hashlib.new(algo, der).digest()

    def auth(self, user, password, mechanism='SCRAM-SHA-256', authzid=None, cb_name=None,
             cb_data=None):
        """SASL authentication. Returns True on success; on failure returns
        False and sets self.sasl_failure to the condition. For -PLUS
        mechanisms cb_name defaults to tls-server-end-point with the data of
        this connection (cb_data overrides it, e.g. to tamper with it)."""
        self.sasl_failure = None
        self.mechanism = mechanism
        if mechanism == 'PLAIN':
            payload = ('%s\0%s\0%s' % (authzid or '', user, password)).encode('utf-8')
            self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                      % base64.b64encode(payload).decode())
            el = self.wait_for(pred=lambda e: ns(e.tag) == NS_SASL)
            return self._sasl_outcome(el)
        if mechanism.endswith('-PLUS'):
            cb_name = cb_name or 'tls-server-end-point'
            if cb_data is None:
                cb_data = self.tls_server_end_point()
        scram = Scram(user, password, mechanism, cb_name=cb_name, cb_data=cb_data or b'')
        self.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>"
                  % (mechanism, base64.b64encode(scram.first()).decode()))
        el = self.wait_for(pred=lambda e: ns(e.tag) == NS_SASL)
        if local(el.tag) != 'challenge':
            return self._sasl_outcome(el)
        server_first = base64.b64decode(el.text or '')
        self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>"
                  % base64.b64encode(scram.final(server_first)).decode())
        el = self.wait_for(pred=lambda e: ns(e.tag) == NS_SASL)
        if local(el.tag) == 'challenge':
            # server-final sent as a challenge: verify, answer empty
            if not scram.verify(base64.b64decode(el.text or '')):
                raise XMPPError('bad server signature')
            self.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            el = self.wait_for(pred=lambda e: ns(e.tag) == NS_SASL)
            return self._sasl_outcome(el)
        if local(el.tag) == 'success':
            data = base64.b64decode(el.text or '')
            if not data:
                raise XMPPError('SCRAM success without server-final message')
            if not scram.verify(data):
                raise XMPPError('bad server signature in <success/>')
        return self._sasl_outcome(el)

    def _sasl_outcome(self, el):
        if local(el.tag) == 'success':
            return True
        if local(el.tag) == 'failure':
            for c in el:
                if local(c.tag) != 'text':
                    self.sasl_failure = local(c.tag)
                    break
            return False
        raise XMPPError('unexpected SASL reply: ' + tostr(el))

    def next_id(self):
        self._idc += 1
        return 'r%d' % self._idc

    def bind(self, resource=None):
        iid = self.next_id()
        res = '<resource>%s</resource>' % esc(resource) if resource else ''
        self.send("<iq type='set' id='%s'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>%s</bind></iq>"
                  % (iid, res))
        el = self.wait_for('iq', lambda e: e.get('id') == iid)
        if el.get('type') != 'result':
            raise XMPPError('bind failed: ' + tostr(el))
        b = child(el, 'bind', NS_BIND)
        j = child(b, 'jid') if b is not None else None
        if j is None or not j.text:
            raise XMPPError('bind result without jid: ' + tostr(el))
        self.jid = j.text
        sess = self.feature('session')
        if sess is not None and child(sess, 'optional') is None:
            iid = self.next_id()
            self.send("<iq type='set' id='%s'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>" % iid)
            el = self.wait_for('iq', lambda e: e.get('id') == iid)
            if el.get('type') != 'result':
                raise XMPPError('session failed: ' + tostr(el))
        return self.jid

    def login(self, user, password, resource=None, mechanism='SCRAM-SHA-256', presence=None):
        """Full negotiation: stream, STARTTLS (unless direct TLS), SASL,
        restart, bind. presence: None (send none) or a priority/True to
        send initial presence. Returns the bound full JID."""
        self.open_stream()
        if not self.tls:
            self.starttls()
        if mechanism not in self.mechanisms():
            raise XMPPError('%s not offered: %s' % (mechanism, self.mechanisms()))
        if not self.auth(user, password, mechanism):
            raise XMPPError('authentication failed: %s' % self.sasl_failure)
        self.open_stream()
        if self.feature('bind') is None:
            raise XMPPError('no bind feature after SASL: ' + tostr(self.features))
        self.bind(resource)
        if presence is not None:
            self.presence(priority=None if presence is True else presence)
        return self.jid

    # ---- stanzas
    def presence(self, priority=None, show=None, to=None, type_=None):
        attrs = ''
        if to:
            attrs += ' to=%s' % quoteattr(to)
        if type_:
            attrs += ' type=%s' % quoteattr(type_)
        body = ''
        if show:
            body += '<show>%s</show>' % esc(show)
        if priority is not None:
            body += '<priority>%d</priority>' % priority
        self.send('<presence%s>%s</presence>' % (attrs, body))

    def message(self, to, body, type_='chat', id_=None):
        id_ = id_ or self.next_id()
        self.send('<message to=%s type=%s id=%s><body>%s</body></message>'
                  % (quoteattr(to), quoteattr(type_), quoteattr(id_), esc(body)))
        return id_

    def iq(self, type_, to, payload, timeout=None):
        """Sends an IQ and returns the response (result or error) element."""
        iid = self.next_id()
        to_attr = ' to=%s' % quoteattr(to) if to else ''
        self.send("<iq type='%s' id='%s'%s>%s</iq>" % (type_, iid, to_attr, payload))
        return self.wait_for('iq', lambda e: e.get('id') == iid and e.get('type') in ('result', 'error'),
                             timeout=timeout)

    def end_stream(self):
        self.send('</stream:stream>', ignore_errors=True)


# ---------------------------------------------------------------------------
# result reporting shared by the integration scripts

class Skip(Exception):
    """Raised by a test that does not apply in this run (e.g. cross-worker
    routing with one worker): reported as 'SKIP <name>: <reason>'."""


class Results:
    """Collects PASS/FAIL/SKIP lines: one line per test, 'PASS <name>',
    'FAIL <name>: <reason>' or 'SKIP <name>: <reason>'. run-all.sh counts
    lines starting with PASS/FAIL/SKIP."""

    def __init__(self, suffix=''):
        self.passed = 0
        self.failed = 0
        self.skipped = 0
        self.suffix = suffix

    def run(self, name, fn, *args, server=None, **kw):
        """Runs fn(*args, **kw); an exception or a new sanitizer report in
        server's log makes the test fail."""
        full = name + (' ' + self.suffix if self.suffix else '')
        t0 = time.time()
        reason = None
        skipped = None
        try:
            fn(*args, **kw)
        except Skip as e:
            skipped = str(e) or 'not applicable'
        except AssertionError as e:
            reason = 'assertion failed: %s' % (e or traceback.format_exc().strip().splitlines()[-2])
        except Exception as e:
            reason = '%s: %s' % (type(e).__name__, e)
        if server is not None:
            reps = server.sanitizer_reports()
            if reps:
                reason = (reason + '; ' if reason else '') + 'sanitizer report:\n' + '\n'.join(reps)
            if server.proc is not None and server.proc.poll() is not None:
                reason = (reason + '; ' if reason else '') + \
                    'magpied died (exit %s); log tail:\n%s' % (server.proc.returncode, server.log_tail(30))
        dt = time.time() - t0
        if reason is None and skipped is not None:
            self.skipped += 1
            print('SKIP %s: %s' % (full, skipped), flush=True)
            return True
        if reason is None:
            self.passed += 1
            print('PASS %s (%.1fs)' % (full, dt), flush=True)
            return True
        self.failed += 1
        if server is not None:
            server.failed = True
        print('FAIL %s: %s' % (full, reason.replace('\n', '\n    ')), flush=True)
        if server is not None and os.environ.get('MAGPIE_TEST_VERBOSE'):
            print('    --- magpied log tail ---\n    ' + server.log_tail(40).replace('\n', '\n    '), flush=True)
        return False

    def fail(self, name, reason):
        full = name + (' ' + self.suffix if self.suffix else '')
        self.failed += 1
        print('FAIL %s: %s' % (full, str(reason).replace('\n', '\n    ')), flush=True)

    def exit(self):
        sys.stdout.flush()
        sys.exit(1 if self.failed else 0)


def check(cond, msg=''):
    """assert that survives python -O and carries a message."""
    if not cond:
        raise AssertionError(msg)
