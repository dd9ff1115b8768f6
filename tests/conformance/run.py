#!/usr/bin/python3
"""Magpie conformance runner: plays the stanza conversations in xep/*/*.conv
against a live server and prints one line per test:

    PASS <spec> <test-id> <title>
    FAIL <spec> <test-id> <title>: <reason>
    SKIP <spec> <test-id> <title>: <why>

then a count; exit status 1 if anything failed. The script format is
documented in xep/README.md.

Usage: run.py [options] [SCRIPT-or-SPEC ...]
  --builddir DIR   the build tree holding magpied/magpiectl (default: the
                   source tree, or $MAGPIE_BUILDDIR)
  --server magpie|prosody
                   prosody: check the scripts against Prosody on loopback
                   (throwaway config in a temp dir) instead of magpied
  -v               print the conversation and server log tail of failed tests
  -vv              print every conversation
  -k               keep the servers' temp dirs (MAGPIE_KEEP_TMP=1)
Each test stops at its first failed step; the next test starts afresh (the
server is shared by the tests of one script file).
Positional arguments select scripts: a path to a .conv file, a spec folder
name (xep-0199), or SPEC:TEST-ID to run a single test.

Python standard library only; run with /usr/bin/python3.
"""

import argparse
import base64
import codecs
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRCDIR, 'tests', 'lib'))

import xmpp_raw                      # noqa: E402
from xmpp_raw import (Connection, XmppError, CLOSE, EOF, ParseError,  # noqa: E402
                      STREAM_TAG, FEATURES_TAG, ERROR_TAG, NS_STREAM,
                      NS_STREAM_ERRORS, NS_SASL, tostring)

try:
    import magpie_fixture            # tests/lib/magpie_fixture.py
except ImportError:                  # pragma: no cover
    magpie_fixture = None

XEPDIR = os.path.join(SRCDIR, 'xep')
sys.path.insert(0, XEPDIR)
from manifest import read_manifest  # noqa: E402  (xep/manifest.py, shared with gen-doap.py)
NS_TEST = 'urn:x-magpie:conformance'
NS_STANZAS = 'urn:ietf:params:xml:ns:xmpp-stanzas'

# test accounts every server gets (localpart -> password)
USERS = {'alice': 'alice-secret', 'bob': 'bob-secret', 'carol': 'carol-secret'}

DEFAULT_TIMEOUT = 5.0


class StepFailed(Exception):
    pass


class SkipTest(Exception):
    pass


class ScriptError(Exception):
    """The script itself is broken (syntax); reported as a failure too."""


# ---------------------------------------------------------------------------
# script parsing

TEST_RE = re.compile(r'^#\s*([0-9][A-Za-z0-9_.]*-[A-Za-z0-9_.-]+):\s+(.+?)\s*$')
HEADER_RE = re.compile(r'^([a-z][a-z-]*):\s*(.*)$')
CLIENT_RE = re.compile(r'^([A-Za-z_][A-Za-z0-9_]*):\s+(.*)$')
HEADERS = ('config', 'only', 'timeout', 'users', 'prosody-config', 'http')


class Test:
    def __init__(self, spec, tid, title, path, lineno):
        self.spec, self.id, self.title = spec, tid, title
        self.path, self.lineno = path, lineno
        self.steps = []              # (lineno, client-or-None, command, argument)


class Script:
    def __init__(self, path):
        self.path = path
        self.spec = os.path.basename(os.path.dirname(path))
        self.headers = {}            # name -> list of values
        self.tests = []


def parse_script(path):
    """Reads a .conv file into a Script (headers, tests, steps)."""
    sc = Script(path)
    lines = []
    with open(path, encoding='utf-8') as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip('\n')
            if line[:1] in (' ', '\t') and line.strip() and lines and not \
                    lines[-1][1].startswith('#'):
                # continuation of the previous command
                lines[-1] = (lines[-1][0], lines[-1][1] + ' ' + line.strip())
                continue
            lines.append((n, line.strip()))
    cur = None
    for n, line in lines:
        if not line:
            continue
        m = TEST_RE.match(line)
        if m:
            cur = Test(sc.spec, m.group(1), m.group(2), path, n)
            sc.tests.append(cur)
            continue
        if line.startswith('#'):
            continue
        if cur is None:
            m = HEADER_RE.match(line)
            if not m or m.group(1) not in HEADERS:
                raise ScriptError('%s:%d: expected a header (%s) or a test line '
                                  '"# ID: title", got %r' % (path, n, ', '.join(HEADERS), line))
            sc.headers.setdefault(m.group(1), []).append(m.group(2))
            continue
        client = None
        m = CLIENT_RE.match(line)
        if m and not line.startswith('<'):
            client, line = m.group(1), m.group(2)
        parts = line.split(None, 1)
        cmd = parts[0]
        arg = parts[1] if len(parts) > 1 else ''
        if cmd not in COMMANDS:
            raise ScriptError('%s:%d: unknown command %r' % (path, n, cmd))
        cur.steps.append((n, client, cmd, arg))
    for t in sc.tests:
        if not t.steps:
            raise ScriptError('%s:%d: test %s has no steps' % (path, t.lineno, t.id))
    ids = [t.id for t in sc.tests]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ScriptError('%s: duplicate test ids %s' % (path, ', '.join(dups)))
    return sc


# ---------------------------------------------------------------------------
# substitution and matching

VAR_RE = re.compile(r'\$\{([A-Za-z0-9_.]+)\}')
B64_RE = re.compile(r'\$b64\{((?:[^}\\]|\\.)*)\}')
REPEAT_RE = re.compile(r'\$repeat\{(\d+),((?:[^}\\]|\\.)*)\}')


def unescape(s):
    """Backslash escapes (\\n, \\0, \\xHH, \\\\ ...) of send-raw/$b64 text."""
    return codecs.decode(s.encode('latin-1', 'backslashreplace'), 'unicode_escape')


def substitute(text, vars_):
    """Expands ${var}, $b64{text} and $repeat{N,text} in a script argument."""
    def var(m):
        if m.group(1) not in vars_:
            raise ScriptError('unknown variable ${%s}' % m.group(1))
        return vars_[m.group(1)]
    text = VAR_RE.sub(var, text)
    text = B64_RE.sub(lambda m: base64.b64encode(unescape(m.group(1)).encode('utf-8')).decode(), text)
    text = REPEAT_RE.sub(lambda m: unescape(m.group(2)) * int(m.group(1)), text)
    return text


def parse_fragment(xml):
    """An expectation/send fragment in the jabber:client stream context."""
    wrapped = ("<wrap xmlns='jabber:client' xmlns:stream='%s' xmlns:t='%s'>%s</wrap>"
               % (NS_STREAM, NS_TEST, xml))
    try:
        root = ET.fromstring(wrapped)
    except ET.ParseError as e:
        raise ScriptError('not well-formed XML in script: %s: %s' % (e, xml))
    if len(root) != 1:
        raise ScriptError('expected exactly one element: %s' % xml)
    return root[0]


def match_value(pattern, actual, caps):
    """Matches one attribute value or text against a pattern:
    literal, {any}, {re:REGEX}, {var:NAME} (captures), {absent},
    {optional:VALUE} (absent or VALUE), {not:VALUE} (present, not VALUE)."""
    if pattern == '{any}':
        return actual is not None
    if pattern == '{absent}':
        return actual is None
    if pattern.startswith('{optional:') and pattern.endswith('}'):
        return actual is None or actual == pattern[10:-1]
    if pattern.startswith('{not:') and pattern.endswith('}'):
        return actual is not None and actual != pattern[5:-1]
    if actual is None:
        return False
    if pattern.startswith('{re:') and pattern.endswith('}'):
        return re.fullmatch(pattern[4:-1], actual, re.S) is not None
    if pattern.startswith('{var:') and pattern.endswith('}'):
        caps[pattern[5:-1]] = actual
        return True
    return pattern == actual


def local(tag):
    return tag.rsplit('}', 1)[-1]


def match(exp, act, caps):
    """Structural match of expected element exp against actual element act.
    Returns None on success (captures added to caps) or a reason string."""
    if exp.tag != act.tag:
        return 'element %s, expected %s' % (act.tag, exp.tag)
    for k, v in exp.attrib.items():
        if not match_value(v, act.get(k), caps):
            return '%s: attribute %s=%r, expected %r' % (local(act.tag), k, act.get(k), v)
    text = (exp.text or '').strip()
    atext = (act.text or '').strip()
    if text == '{empty}':
        if len(act) or atext:
            return '%s: expected to be empty, has content' % local(act.tag)
    elif text:
        if not match_value(text, atext, caps):
            return '%s: text %r, expected %r' % (local(act.tag), atext, text)
    positives = [c for c in exp if c.tag != '{%s}absent' % NS_TEST]
    negatives = [g for c in exp if c.tag == '{%s}absent' % NS_TEST for g in c]
    reason = _match_children(positives, list(act), caps)
    if reason:
        return '%s: %s' % (local(act.tag), reason)
    for neg in negatives:
        for a in act:
            if match(neg, a, {}) is None:
                return '%s: has %s, which must be absent' % (local(act.tag), tostring(a))
    return None


def _match_children(expected, actual, caps):
    """Each expected child must match a distinct actual child (any order)."""
    if not expected:
        return None
    first, rest = expected[0], expected[1:]
    why = None
    for i, a in enumerate(actual):
        trial = dict(caps)
        r = match(first, a, trial)
        if r is None:
            r2 = _match_children(rest, actual[:i] + actual[i + 1:], trial)
            if r2 is None:
                caps.update(trial)
                return None
            why = why or r2
        elif a.tag == first.tag:
            why = why or r
    return why or 'no child %s' % local(first.tag)


# ---------------------------------------------------------------------------
# servers

def _free_port():
    """A free port below the kernel's ephemeral range (see free_port in
    tests/lib/magpie_fixture.py)."""
    import random
    for _ in range(200):
        p = random.randrange(20000, 32000)
        s = socket.socket()
        try:
            s.bind(('127.0.0.1', p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    p = s.getsockname()[1]
    s.close()
    return p


class MagpieTarget:
    """magpied started through tests/lib/magpie_fixture.py."""
    name = 'magpie'

    def __init__(self, builddir, config_lines, workers=1, http=False):
        if magpie_fixture is None:
            raise RuntimeError('tests/lib/magpie_fixture.py not importable')
        self.overrides = []
        for line in config_lines:
            key = line.split('=', 1)[0].strip()
            if not key or '=' not in line:
                raise ScriptError('config: expects "key = value;": %r' % line)
            self.overrides.append((key, line.strip()))
        overrides = self.overrides

        class Server(magpie_fixture.MagpieServer):
            def config_text(self):
                return apply_overrides(super().config_text(), overrides)

        self.srv = Server(builddir, workers=workers, http=http)
        self.host, self.domain = '127.0.0.1', 'localhost'

    def start(self):
        self.srv.start()
        for u, p in USERS.items():
            self.srv.add_user(u, p)
        self.c2s_port, self.tls_port = self.srv.c2s_port, self.srv.tls_port

    def stop(self):
        """Stops the server; returns a problem description or None."""
        problems = []
        try:
            self.srv.stop()
        except Exception as e:   # noqa: BLE001
            problems.append(str(e))
        reps = self.srv.sanitizer_reports()
        if reps:
            problems.append('sanitizer report:\n' + '\n'.join(reps))
        self.srv.cleanup(force_keep=bool(problems) or self.srv.failed)
        return '; '.join(problems) or None

    def alive(self):
        return self.srv.running

    def log_tail(self, n=40):
        return self.srv.log_tail(n)

    def mark_failed(self):
        self.srv.failed = True


def apply_overrides(text, overrides):
    """Replaces top-level settings of a generated libconfig file: each
    override "key = value;" replaces the statement(s) starting with "key ="."""
    if not overrides:
        return text
    keys = {k for k, _ in overrides}
    out, skipping = [], False
    for line in text.split('\n'):
        m = re.match(r'^([A-Za-z_][A-Za-z0-9_-]*)\s*=', line)
        if m:
            skipping = m.group(1) in keys
        elif line[:1] not in (' ', '\t'):
            skipping = False
        if not skipping:
            out.append(line)
    out.extend(v for _, v in overrides)
    return '\n'.join(out) + '\n'


class ProsodyTarget:
    """Prosody on loopback, to check that the scripts expect RFC behaviour."""
    name = 'prosody'

    def __init__(self, builddir, config_lines):
        self.tmp = tempfile.mkdtemp(prefix='conv-prosody-')
        self.host, self.domain = '127.0.0.1', 'localhost'
        self.c2s_port, self.tls_port = _free_port(), _free_port()
        self.extra = '\n'.join(config_lines)
        self.proc = None
        self.failed = False
        self.cfg = os.path.join(self.tmp, 'prosody.cfg.lua')

    def _certs(self):
        for d in ('localhost', 'example.test'):
            subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
                            '-days', '2', '-subj', '/CN=%s' % d,
                            '-keyout', os.path.join(self.tmp, d + '.key'),
                            '-out', os.path.join(self.tmp, d + '.crt')],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start(self):
        self._certs()
        os.makedirs(os.path.join(self.tmp, 'data'))
        t = self.tmp
        with open(self.cfg, 'w') as f:
            f.write('''
run_as_root = true
pidfile = "%(t)s/prosody.pid"
data_path = "%(t)s/data"
plugin_paths = { }
interfaces = { "127.0.0.1" }
c2s_ports = { %(c2s)d }
c2s_direct_tls_ports = { %(tls)d }
s2s_ports = { %(s2s)d }
http_ports = { }
https_ports = { }
component_ports = { }
admin_socket = "%(t)s/admin.sock"
modules_enabled = { "roster", "saslauth", "tls", "disco", "ping", "version", "time", "uptime", "posix" }
modules_disabled = { "s2s" }
c2s_require_encryption = true
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
storage = "internal"
log = { debug = "%(t)s/prosody.log" }
certificates = "%(t)s"
ssl = { certificate = "%(t)s/localhost.crt", key = "%(t)s/localhost.key" }
%(extra)s
VirtualHost "localhost"
VirtualHost "example.test"
''' % {'t': t, 'c2s': self.c2s_port, 'tls': self.tls_port, 's2s': _free_port(),
                'extra': self.extra})
        for u, p in USERS.items():
            subprocess.run(['prosodyctl', '--config', self.cfg, 'register', u, 'localhost', p],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        logf = open(os.path.join(t, 'stdout.log'), 'ab')
        self.proc = subprocess.Popen(['prosody', '-F', '--config', self.cfg],
                                     stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        logf.close()
        deadline = time.time() + 20
        for port in (self.c2s_port, self.tls_port):
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError('prosody exited: ' + self.log_tail())
                try:
                    socket.create_connection((self.host, port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise RuntimeError('prosody does not listen on %d' % port)
                    time.sleep(0.1)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.environ.get('MAGPIE_KEEP_TMP') or self.failed:
            sys.stderr.write('prosody temp dir kept: %s\n' % self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=40):
        try:
            with open(os.path.join(self.tmp, 'prosody.log'), errors='replace') as f:
                return '\n'.join(f.read().splitlines()[-n:])
        except OSError:
            return ''

    def mark_failed(self):
        self.failed = True


# ---------------------------------------------------------------------------
# executing a test

class Client:
    def __init__(self, name, conn):
        self.name = name
        self.conn = conn
        self.features = None         # last <stream:features/> seen
        self.jid = None


class Player:
    """Plays one Test against a running target."""

    def __init__(self, target, timeout=DEFAULT_TIMEOUT):
        self.target = target
        self.default_timeout = timeout
        self.transcript = []

    def log(self, name):
        def f(direction, data):
            if isinstance(data, bytes):
                data = data.decode('utf-8', 'replace')
            if len(data) > 1500:
                data = data[:1000] + ' [... %d bytes ...] ' % (len(data) - 1500) + data[-500:]
            self.transcript.append('%7.3f %s %s %s' % (
                time.monotonic() - self.t0, name, '->' if direction == 'SEND' else '<-', data))
        return f

    def run(self, test):
        """Returns None on success or a failure reason."""
        self.t0 = time.monotonic()
        self.skipped = None
        self.clients = {}
        self.current = None
        self.timeout = self.default_timeout
        self.vars = {'domain': self.target.domain}
        try:
            for lineno, cname, cmd, arg in test.steps:
                self.lineno = lineno
                self.transcript.append('        line %d: %s%s %s' % (
                    lineno, cname + ': ' if cname else '', cmd, arg))
                try:
                    COMMANDS[cmd](self, self.client(cname, cmd), substitute(arg, self.vars))
                except SkipTest as e:
                    self.skipped = str(e)
                    return None
                except StepFailed as e:
                    return 'line %d (%s): %s' % (lineno, cmd, e)
                except ScriptError as e:
                    return 'line %d: script error: %s' % (lineno, e)
                except XmppError as e:
                    return 'line %d (%s): %s' % (lineno, cmd, e)
                except (OSError, ValueError, KeyError) as e:
                    return 'line %d (%s): %s: %s' % (lineno, cmd, type(e).__name__, e)
            return None
        finally:
            self.teardown()

    def teardown(self):
        """Closes every client politely so the next test starts clean."""
        for c in self.clients.values():
            if not c.conn.closed:
                c.conn.send('</stream:stream>')
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and not c.conn.closed:
                    ev = c.conn.next_event(deadline - time.monotonic())
                    if ev is CLOSE or ev is None:
                        break
            c.conn.close()

    def client(self, name, cmd):
        if cmd in ('login', 'connect', 'sleep', 'timeout', 'only'):
            return name
        if name is None:
            name = self.current
        if name is None or name not in self.clients:
            raise ScriptError('no client %r (connect or login first)' % name)
        self.current = name
        return self.clients[name]

    # ---- helpers
    def _connect(self, name, mode, domain, port=None):
        if port is None:
            port = 'tls' if mode == 'tls' else 'c2s'
        port = self.target.tls_port if port == 'tls' else self.target.c2s_port
        conn = Connection(self.target.host, port, direct_tls=(mode == 'tls'),
                          server_name=domain, log=self.log(name))
        c = Client(name, conn)
        if name in self.clients:
            self.clients[name].conn.close()
        self.clients[name] = c
        self.current = name
        return c

    def _next(self, c, timeout=None, skip_header=True):
        ev = c.conn.next_element(self.timeout if timeout is None else timeout,
                                 skip_header=skip_header)
        if isinstance(ev, ET.Element) and ev.tag == FEATURES_TAG:
            c.features = ev
        return ev

    def _pending_features(self, c):
        """Consumes a queued stream header + features if the script did not."""
        while c.conn.events:
            ev = c.conn.events[0]
            if isinstance(ev, ET.Element) and ev.tag in (STREAM_TAG, FEATURES_TAG):
                c.conn.events.pop(0)
                if ev.tag == FEATURES_TAG:
                    c.features = ev
            else:
                break
        return c.features

    def _set_vars(self, c):
        jid = c.jid
        bare, _, res = jid.partition('/')
        self.vars.update({c.name + '.jid': jid, c.name + '.bare': bare,
                          c.name + '.resource': res,
                          c.name + '.user': bare.split('@')[0]})


def _opts(arg, allowed):
    """'word word key=value' -> (words, {key: value})."""
    words, kv = [], {}
    for w in arg.split():
        if '=' in w:
            k, v = w.split('=', 1)
            if k not in allowed:
                raise ScriptError('unknown option %s' % k)
            kv[k] = v
        else:
            words.append(w)
    return words, kv


def cmd_login(p, name, arg):
    """login USER[/RESOURCE] [as NAME] [via=starttls|tls] [mech=M] [domain=D]"""
    words, kv = _opts(arg, ('via', 'mech', 'domain'))
    if not words:
        raise ScriptError('login needs a user')
    user, _, res = words[0].partition('/')
    cname = user
    if len(words) >= 3 and words[1] == 'as':
        cname = words[2]
    elif len(words) != 1:
        raise ScriptError('login USER[/RES] [as NAME] [options]')
    if name:
        cname = name
    domain = kv.get('domain', p.target.domain)
    via = kv.get('via', 'starttls')
    c = p._connect(cname, via, domain)
    if user not in USERS:
        raise ScriptError('unknown test user %s' % user)
    c.jid = c.conn.login(user, USERS[user], res or None, domain, kv.get('mech'),
                         direct_tls=(via == 'tls'))
    p._set_vars(c)


def cmd_connect(p, name, arg):
    """connect plain|starttls|tls [as NAME] [domain=D] [port=c2s|tls]: a raw
    connection; starttls also opens a stream and negotiates TLS (no header
    sent after); port picks the listener (default: tls for tls, else c2s)."""
    words, kv = _opts(arg, ('domain', 'port'))
    if not words or words[0] not in ('plain', 'starttls', 'tls'):
        raise ScriptError('connect plain|starttls|tls [as NAME]')
    cname = name or (words[2] if len(words) >= 3 and words[1] == 'as' else 'c')
    domain = kv.get('domain', p.target.domain)
    if kv.get('port', 'c2s') not in ('c2s', 'tls'):
        raise ScriptError('port=c2s|tls')
    c = p._connect(cname, words[0], domain, kv.get('port'))
    if words[0] == 'starttls':
        f = c.conn.open_stream(domain)
        c.conn.starttls(f)


def cmd_open(p, c, arg):
    """open [to=D] [version=V|none]: sends a standard stream header."""
    _, kv = _opts(arg, ('to', 'version'))
    c.conn._new_parser()
    version = kv.get('version', '1.0')
    c.conn.send(xmpp_raw.stream_header(kv.get('to', p.target.domain),
                                       None if version == 'none' else version))


def cmd_starttls(p, c, arg):
    """starttls: send <starttls/>, expect <proceed/>, handshake."""
    p._pending_features(c)
    if c.features is None:
        ev = p._next(c)
        if not (isinstance(ev, ET.Element) and ev.tag == FEATURES_TAG):
            raise StepFailed('expected stream features, got %s' % tostring(ev))
    c.conn.starttls()


def cmd_auth(p, c, arg):
    """auth USER [mech=M] [password=P]: SASL, then stream restart + features."""
    words, kv = _opts(arg, ('mech', 'password'))
    user = words[0]
    f = p._pending_features(c)
    if f is None:
        f = p._next(c)
        if not (isinstance(f, ET.Element) and f.tag == FEATURES_TAG):
            raise StepFailed('expected stream features, got %s' % tostring(f))
    c.conn.sasl(user, kv.get('password', USERS.get(user, '')), kv.get('mech'), f)
    c.features = c.conn.open_stream(p.target.domain)


def cmd_auth_fail(p, c, arg):
    """auth-fail USER CONDITION [mech=M] [password=P]: SASL must fail with
    <failure><CONDITION/></failure>."""
    words, kv = _opts(arg, ('mech', 'password'))
    if len(words) != 2:
        raise ScriptError('auth-fail USER CONDITION [mech=M] [password=P]')
    user, cond = words
    f = p._pending_features(c)
    if f is None:
        f = p._next(c)
    try:
        c.conn.sasl(user, kv.get('password', USERS.get(user, '')), kv.get('mech'), f)
    except XmppError as e:
        ev = c.conn.last_sasl_event
        if isinstance(ev, ET.Element) and ev.tag == '{%s}failure' % NS_SASL:
            if ev.find('{%s}%s' % (NS_SASL, cond)) is None:
                raise StepFailed('SASL failed with %s, expected condition %s'
                                 % (tostring(ev), cond))
            return
        raise StepFailed('expected SASL <failure><%s/></failure>: %s' % (cond, e))
    raise StepFailed('SASL succeeded, expected failure %s' % cond)


def cmd_bind(p, c, arg):
    """bind [RESOURCE]: resource binding with the last features."""
    p._pending_features(c)
    c.jid = c.conn.bind(arg.strip() or None, c.features)
    p._set_vars(c)


def cmd_send(p, c, arg):
    """send XML: one well-formed element (checked), written as is."""
    parse_fragment(arg)
    if not c.conn.send(arg):
        raise StepFailed('connection closed while sending')


def cmd_send_raw(p, c, arg):
    """send-raw TEXT: UTF-8 text with backslash escapes (\\n, \\0, \\xHH
    gives the raw byte HH), sent as is, not checked."""
    data = codecs.escape_decode(arg.encode('utf-8'))[0]
    c.conn.send(data)         # the peer may have closed already: not an error


def cmd_expect(p, c, arg):
    """expect XML: the next element must match structurally."""
    exp = parse_fragment(arg)
    ev = p._next(c, skip_header=(exp.tag != STREAM_TAG))
    if ev is None:
        raise StepFailed('timeout (%.1fs) waiting for %s' % (p.timeout, arg))
    if not isinstance(ev, ET.Element):
        raise StepFailed('got %r, expected %s' % (ev, arg))
    caps = {}
    why = match(exp, ev, caps)
    if why:
        raise StepFailed('%s\n    got:      %s\n    expected: %s' % (why, tostring(ev), arg))
    p.vars.update(caps)


def cmd_expect_not(p, c, arg):
    """expect-not XML: something arrives (element or end of stream) and it
    does not match XML (e.g. a refusal in any of its RFC-allowed forms)."""
    exp = parse_fragment(arg)
    ev = p._next(c)
    if ev is None:
        raise StepFailed('timeout: the server answered nothing (expected a reply other than %s)' % arg)
    if isinstance(ev, ET.Element) and match(exp, ev, {}) is None:
        raise StepFailed('got %s, which must not happen' % tostring(ev))


def cmd_await(p, c, arg):
    """await XML: skip elements until one matches (within the timeout)."""
    exp = parse_fragment(arg)
    deadline = time.monotonic() + p.timeout
    seen = []
    while True:
        ev = p._next(c, timeout=max(0, deadline - time.monotonic()))
        if ev is None:
            raise StepFailed('timeout waiting for %s; skipped: %s'
                             % (arg, ' '.join(tostring(e) for e in seen[-5:])))
        if not isinstance(ev, ET.Element):
            raise StepFailed('got %r waiting for %s' % (ev, arg))
        caps = {}
        if match(exp, ev, caps) is None:
            p.vars.update(caps)
            return
        seen.append(ev)


def _expect_end(p, c, what):
    """After a stream error or close: </stream:stream> must follow (RFC 6120
    4.4, 4.9.1.1); a bare TCP close without it is a failure."""
    ev = p._next(c)
    if ev is CLOSE:
        return
    if ev is EOF:
        raise StepFailed('%s: connection closed without </stream:stream>' % what)
    raise StepFailed('%s: expected </stream:stream>, got %s'
                     % (what, 'nothing (timeout)' if ev is None else tostring(ev)))


def cmd_expect_stream_error(p, c, arg):
    """expect-stream-error CONDITION[|CONDITION...]: <stream:error> with that
    defined condition (one of them, where the RFC allows several), then the
    stream is closed."""
    cond = arg.strip()
    allowed = cond.split('|')
    ev = p._next(c)
    if ev is None:
        raise StepFailed('timeout waiting for stream error %s' % cond)
    if not (isinstance(ev, ET.Element) and ev.tag == ERROR_TAG):
        raise StepFailed('expected stream error %s, got %s' % (cond, tostring(ev)))
    conds = [local(x.tag) for x in ev if x.tag.startswith('{%s}' % NS_STREAM_ERRORS)
             and local(x.tag) != 'text']
    if len(conds) != 1 or conds[0] not in allowed:
        raise StepFailed('stream error %s, expected %s' % (tostring(ev), cond))
    _expect_end(p, c, 'stream error')


def cmd_expect_close(p, c, arg):
    """expect-close: the server closes the stream (</stream:stream> or EOF)."""
    _expect_end(p, c, 'expect-close')


def cmd_expect_nothing(p, c, arg):
    """expect-nothing SECONDS: no element arrives and the stream stays open."""
    secs = float(arg or '1')
    ev = p._next(c, timeout=secs)
    if ev is not None:
        raise StepFailed('expected nothing for %ss, got %s' % (secs, tostring(ev)))


def cmd_expect_tls(p, c, arg):
    """expect-tls [alpn=X] [version=TLSv1.3]: TLS is active (with these values)."""
    _, kv = _opts(arg, ('alpn', 'version'))
    if not c.conn.tls:
        raise StepFailed('connection is not encrypted')
    for k, v in kv.items():
        if c.conn.tls_info.get(k) != v:
            raise StepFailed('TLS %s is %r, expected %r' % (k, c.conn.tls_info.get(k), v))


def cmd_expect_whitespace(p, c, arg):
    """expect-whitespace SECONDS: whitespace keepalive bytes arrive within."""
    before = c.conn.whitespace
    deadline = time.monotonic() + float(arg or '5')
    while c.conn.whitespace == before:
        left = deadline - time.monotonic()
        if left <= 0:
            raise StepFailed('no whitespace keepalive within %ss' % arg)
        if c.conn.events:
            raise StepFailed('got %s while waiting for whitespace' % tostring(c.conn.events[0]))
        c.conn._read_some(left)


def cmd_expect_eof(p, c, arg):
    """expect-eof: the server closes the TCP connection (a </stream:stream>
    before it is skipped)."""
    ev = p._next(c)
    if ev is CLOSE:
        ev = p._next(c)
    if ev is not EOF:
        raise StepFailed('expected the connection to be closed, got %s'
                         % ('nothing (timeout)' if ev is None else tostring(ev)))


def cmd_drain(p, c, arg):
    """drain [SECONDS]: discard whatever elements arrive for SECONDS (0.5);
    the stream must stay open."""
    deadline = time.monotonic() + float(arg or '0.5')
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ev = p._next(c, timeout=left)
        if ev is CLOSE or ev is EOF or isinstance(ev, ParseError):
            raise StepFailed('stream ended while draining: %r' % ev)


def cmd_only(p, c, arg):
    """only SERVER...: skip this test unless running against one of them."""
    if p.target.name not in arg.split():
        raise SkipTest('only for ' + arg)


def cmd_close(p, c, arg):
    """close: send </stream:stream>."""
    c.conn.send('</stream:stream>')


def cmd_disconnect(p, c, arg):
    """disconnect: drop the TCP connection without closing the stream."""
    c.conn.close()


def cmd_sleep(p, c, arg):
    time.sleep(float(arg))


def cmd_timeout(p, c, arg):
    """timeout SECONDS: per-expectation timeout for the rest of the test."""
    p.timeout = float(arg)


COMMANDS = {
    'login': cmd_login, 'connect': cmd_connect, 'open': cmd_open,
    'starttls': cmd_starttls, 'auth': cmd_auth, 'auth-fail': cmd_auth_fail,
    'bind': cmd_bind, 'send': cmd_send, 'send-raw': cmd_send_raw,
    'expect': cmd_expect, 'await': cmd_await, 'expect-not': cmd_expect_not,
    'expect-stream-error': cmd_expect_stream_error, 'expect-close': cmd_expect_close,
    'expect-nothing': cmd_expect_nothing, 'expect-tls': cmd_expect_tls,
    'expect-whitespace': cmd_expect_whitespace,
    'expect-eof': cmd_expect_eof, 'drain': cmd_drain, 'only': cmd_only,
    'close': cmd_close, 'disconnect': cmd_disconnect, 'sleep': cmd_sleep,
    'timeout': cmd_timeout,
}


# ---------------------------------------------------------------------------
# manifests

def check_manifests():
    """Every spec folder has a valid manifest and at least one script.
    Returns a list of (spec, reason) problems."""
    problems = []
    for d in sorted(glob.glob(os.path.join(XEPDIR, '*/'))):
        spec = os.path.basename(d.rstrip('/'))
        man = os.path.join(d, 'manifest')
        convs = glob.glob(os.path.join(d, '*.conv'))
        if not os.path.exists(man):
            if convs:
                problems.append((spec, 'scripts but no manifest'))
            continue
        try:
            read_manifest(man)
        except ValueError as e:
            problems.append((spec, str(e)))
        if not convs:
            problems.append((spec, 'manifest without any conformance script (*.conv)'))
    return problems


# ---------------------------------------------------------------------------
# main

def select_scripts(args):
    all_scripts = sorted(glob.glob(os.path.join(XEPDIR, '*', '*.conv')))
    if not args:
        return all_scripts, None
    chosen, only_ids = [], set()
    for a in args:
        if a.endswith('.conv') and os.path.exists(a):
            chosen.append(os.path.abspath(a))
            continue
        spec, _, tid = a.partition(':')
        hits = [s for s in all_scripts if os.path.basename(os.path.dirname(s)) == spec]
        if not hits:
            sys.exit('run.py: no scripts for %r' % a)
        chosen.extend(hits)
        if tid:
            only_ids.add(tid)
    return sorted(set(chosen)), (only_ids or None)


def main():
    ap = argparse.ArgumentParser(description='Magpie conformance runner')
    ap.add_argument('--builddir', default=os.environ.get('MAGPIE_BUILDDIR', SRCDIR))
    ap.add_argument('--server', choices=('magpie', 'prosody'), default='magpie')
    ap.add_argument('--workers', type=int, default=1,
                    help='magpied worker threads (a script\'s config: header may override)')
    ap.add_argument('-v', action='count', default=0)
    ap.add_argument('-k', action='store_true', help='keep temp dirs')
    ap.add_argument('scripts', nargs='*')
    a = ap.parse_args()
    if a.k:
        os.environ['MAGPIE_KEEP_TMP'] = '1'
    counts = {'PASS': 0, 'FAIL': 0, 'SKIP': 0}

    def report(kind, test_spec, tid, title, reason=None):
        counts[kind] += 1
        line = '%s %s %s %s' % (kind, test_spec, tid, title)
        if reason:
            line += ': ' + reason
        print(line, flush=True)

    for spec, why in check_manifests():
        report('FAIL', spec, 'manifest', 'manifest and scripts', why)

    scripts, only_ids = select_scripts(a.scripts)
    for path in scripts:
        try:
            sc = parse_script(path)
        except ScriptError as e:
            report('FAIL', os.path.basename(os.path.dirname(path)), os.path.basename(path),
                   'script', str(e))
            continue
        tests = [t for t in sc.tests if only_ids is None or t.id in only_ids]
        if not tests:
            continue
        only = ' '.join(sc.headers.get('only', [])).split()
        if only and a.server not in only:
            for t in tests:
                report('SKIP', t.spec, t.id, t.title, 'only for ' + ', '.join(only))
            continue
        cfg = sc.headers.get('config', []) if a.server == 'magpie' else \
            sc.headers.get('prosody-config', [])
        Target = MagpieTarget if a.server == 'magpie' else ProsodyTarget
        try:
            kw = {}
            if a.server == 'magpie':
                kw = {'workers': a.workers,
                      'http': sc.headers.get('http', ['false'])[0].strip() == 'true'}
            target = Target(a.builddir, cfg, **kw)
            target.start()
        except Exception as e:   # noqa: BLE001
            for t in tests:
                report('FAIL', t.spec, t.id, t.title, 'server did not start: %s' % e)
            continue
        file_timeout = float(sc.headers.get('timeout', [DEFAULT_TIMEOUT])[0])
        for t in tests:
            if not target.alive():
                report('FAIL', t.spec, t.id, t.title, 'server is not running (crashed earlier?)')
                continue
            player = Player(target, file_timeout)
            try:
                reason = player.run(t)
            except Exception:   # noqa: BLE001
                reason = 'runner error: ' + traceback.format_exc()
            if reason is None and not target.alive():
                reason = 'server died during the test'
            if reason is None and player.skipped:
                report('SKIP', t.spec, t.id, t.title, player.skipped)
                continue
            if reason:
                target.mark_failed()
                report('FAIL', t.spec, t.id, t.title, reason)
                if a.v:
                    print('    ' + '\n    '.join(player.transcript[-60:]))
                    print('    --- server log tail ---\n    '
                          + target.log_tail(25).replace('\n', '\n    '))
            else:
                report('PASS', t.spec, t.id, t.title)
                if a.v > 1:
                    print('    ' + '\n    '.join(player.transcript))
        problem = target.stop()
        if problem:
            report('FAIL', sc.spec, os.path.basename(path), 'server shutdown', problem)
    print('%d passed, %d failed, %d skipped' % (counts['PASS'], counts['FAIL'], counts['SKIP']))
    return 1 if counts['FAIL'] else 0


if __name__ == '__main__':
    sys.exit(main())
