#!/usr/bin/python3
"""11: hostile memory (issue 5). Each case starts its own magpied, lets a
canary pair of logged-in users exchange messages the whole time (in a
separate process, so this script's own work cannot delay it), resets the
server's peak RSS (VmHWM, via /proc/PID/clear_refs) after warm-up and then
attacks. Every case has an explicit budget for the growth of VmHWM over the
RSS at the reset; the canary must lose nothing and every one of its round
trips must stay fast.

Attacks are sent in paced chunks: the next chunk goes out only when the
server has read the previous one (its socket queues, /proc/net/tcp, are
empty), and sending stops as soon as the server's peak passes ABORT_KIB, so
that the unfixed code (+1.2 GB and +7.6 GB for cases 1 and 2) fails the test
without taking the machine down.

Cases:
  11-1  text in pieces before authentication (64 KiB of 'A' + 16,384 newlines)
  11-2  the same after authentication: a legal 256 KiB body as 65,536 lines
  11-3  element trees: wide pre-auth <auth/>, deep+wide and many attributes
        after authentication
  11-4  1,000 unauthenticated connections holding an unfinished stanza just
        under the pre-auth limit, from 8 loopback addresses
  11-5  per-address connection limit and per-address connection rate
  11-6  a burst of 250 KB messages from 6 senders to one slow reader
        (rate = 0; workers = 1 and 2): nothing lost, reader kept, senders paused
  11-7  a reader that reads nothing for longer than output_stall_timeout is
        disconnected (resource-constraint), the senders are unharmed

Under a sanitizer build (detected in the binary) the budgets get a factor
and a constant for redzones, shadow memory and allocator caches, the
canary's limit is looser, and ASan's quarantine is made small.

  /usr/bin/python3 tests/integration/test_11_hostile_memory.py BUILDDIR [--only 1,4]
"""

import multiprocessing
import os
import socket
import struct
import threading
import time

from common import (MagpieServer, Results, RawClient, XMPPError, parse_args, check, tostr,
                    closeall, sync, body_of, wait_until)

def _extra(ap):
    ap.add_argument('--only', default='', help='comma-separated case numbers, e.g. 1,4')
    ap.add_argument('--per-sender', type=int, default=8, help='11-6: messages per sender')


args = parse_args(_extra)
ONLY = set(x.strip() for x in args.only.split(',') if x.strip())
R = Results()

HEADER = ("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' "
          "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
NS_SASL = 'urn:ietf:params:xml:ns:xmpp-sasl'
KIB = 1024
MIB = 1024 * 1024
ABORT_KIB = 1536 * 1024          # stop an attack once the server's peak grew by 1.5 GiB
PREAUTH_LIMIT = 10240            # limits.preauth_max_stanza_size default (issue 5)
PREAUTH_ELEMENTS = 32            # limits.preauth_max_elements default


def _is_sanitizer_build(builddir):
    for p in (os.path.join(builddir, 'magpied'), os.path.join(builddir, '.libs', 'magpied'),
              os.path.join(builddir, '.libs', 'lt-magpied')):
        try:
            with open(p, 'rb') as f:
                data = f.read()
        except OSError:
            continue
        if b'libasan' in data or b'__asan_init' in data:
            return True
    return False


ASAN = _is_sanitizer_build(args.builddir)
CANARY_LIMIT = 0.6 if ASAN else 0.2      # seconds per canary round trip


def budget(normal_kib):
    """The budget in KiB for this build: under ASan every byte costs its
    redzone and 1/8 shadow, and the allocator keeps per-thread caches."""
    return int(normal_kib * 1.25 + 4 * KIB) if ASAN else normal_kib


# ---------------------------------------------------------------------------
# memory of the server

def proc_status(pid):
    out = {}
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith(('VmHWM:', 'VmRSS:')):
                out[line.split(':')[0]] = int(line.split()[1])
    return out


class Mem:
    """Peak RSS of a process from a reset point on (KiB)."""

    def __init__(self, pid):
        self.pid = pid
        self.reset()

    def reset(self):
        try:
            with open('/proc/%d/clear_refs' % self.pid, 'w') as f:
                f.write('5')           # resets VmHWM to the current RSS
            self.resettable = True
        except OSError:
            self.resettable = False    # then VmHWM is the peak since start
        st = proc_status(self.pid)
        self.base = st['VmRSS']
        self.base_hwm = st['VmHWM']

    def growth(self):
        """Peak RSS since the reset minus the RSS at the reset."""
        return proc_status(self.pid)['VmHWM'] - self.base

    def rss(self):
        return proc_status(self.pid)['VmRSS']

    def __str__(self):
        st = proc_status(self.pid)
        return 'VmHWM +%d KiB (RSS %d -> %d KiB, peak %d KiB)' % (
            st['VmHWM'] - self.base, self.base, st['VmRSS'], st['VmHWM'])


class MemServer(MagpieServer):
    """magpied with ASan's quarantine kept small: freed memory held for
    use-after-free detection would otherwise count as growth."""

    def _env(self):
        env = MagpieServer._env(self)
        if ASAN:
            env['ASAN_OPTIONS'] = env.get('ASAN_OPTIONS', '') + \
                ':quarantine_size_mb=4:thread_local_quarantine_size_kb=64'
        return env


# ---------------------------------------------------------------------------
# sockets

def _hexaddr(hexs):
    ip, port = hexs.split(':')
    return socket.inet_ntoa(struct.pack('<I', int(ip, 16))), int(port, 16)


def tcp_table():
    """{(local, remote): (tx_queue, rx_queue)} of the IPv4 TCP sockets."""
    out = {}
    with open('/proc/net/tcp') as f:
        next(f)
        for line in f:
            p = line.split()
            tx, rx = p[4].split(':')
            out[(_hexaddr(p[1]), _hexaddr(p[2]))] = (int(tx, 16), int(rx, 16))
    return out


def unread(server_port, socks):
    """Bytes the server has not read yet from our sockets: what waits in our
    send queues plus what waits in the server's receive queues."""
    tab = tcp_table()
    total = 0
    for s in socks:
        try:
            me = s.getsockname()
            peer = s.getpeername()
        except OSError:
            continue
        if peer[1] != server_port:
            continue
        total += tab.get((me, peer), (0, 0))[0]
        total += tab.get((peer, me), (0, 0))[1]
    return total


def wait_read(server_port, socks, timeout=20.0):
    """Waits until the server has read everything we sent on socks (or they
    closed). Returns False on timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if unread(server_port, socks) == 0:
            time.sleep(0.005)      # let the read callback finish parsing
            return True
        time.sleep(0.002)
    return False


def raw_socket(port, src='127.0.0.1', rcvbuf=None, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(('127.0.0.1', port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class SrcClient(RawClient):
    """RawClient from a chosen loopback source address, optionally with a
    small receive buffer (set before connecting, so the kernel does not
    grow it)."""

    def __init__(self, port, src='127.0.0.1', rcvbuf=None, **kw):
        self.src = src
        self.rcvbuf = rcvbuf
        RawClient.__init__(self, port, **kw)

    def connect(self):
        self.sock = raw_socket(self.port, self.src, self.rcvbuf, self.timeout)
        if self.direct_tls:
            self._wrap_tls(alpn=['xmpp-client'])
        self._new_parser()
        return self


def paced_send(srv, mem, client, chunks, what, timeout=20.0):
    """Sends chunks one by one on client (a RawClient), each after the server
    has read the previous one. Stops early when the server answers with a
    stream error or closes, or when its peak grew by ABORT_KIB. Returns
    (bytes sent, aborted_for_memory, peak growth KiB)."""
    sent = 0
    sock = client.sock

    def answered():
        try:
            client.pump(0.0)
        except XMPPError:
            return True
        return client.closed or client.stream_closed or client.stream_error is not None

    for ch in chunks:
        try:
            sock.sendall(ch)
        except OSError:
            break
        sent += len(ch)
        deadline = time.time() + timeout
        while unread(srv.c2s_port, [sock]) > 0:
            if answered():
                return sent, False, mem.growth()
            if time.time() > deadline:
                raise AssertionError('%s: the server stopped reading after %d bytes (%s)'
                                     % (what, sent, mem))
            time.sleep(0.002)
        time.sleep(0.005)          # let the read callback finish parsing
        g = mem.growth()
        if g > ABORT_KIB:
            return sent, True, g
        if answered():
            break
    return sent, False, mem.growth()


# ---------------------------------------------------------------------------
# the canary: two logged-in users exchanging messages, in a child process

def _canary_main(port, users, conn):
    import sys
    try:
        sys.stdout.flush()
        a = online_at(port, users[0], 'canary')
        b = online_at(port, users[1], 'canary')
    except Exception as e:
        conn.send(('error', 'login: %s' % e))
        os._exit(0)
    conn.send(('ready', None))
    n = lost = 0
    rtts = []
    slow = []
    err = None
    start = time.time()
    try:
        while not conn.poll(0):
            n += 1
            mid = 'cn%d' % n
            t0 = time.time()
            a.message('%s@localhost/canary' % users[1], 'ping %d' % n, id_=mid)
            m = b.wait_for('message', lambda e: e.get('id') == mid, timeout=10, raise_=False)
            if m is None or body_of(m) != 'ping %d' % n:
                lost += 1
                if b.closed or b.stream_closed:
                    err = 'canary receiver disconnected (%s)' % b.stream_error
                    break
                continue
            b.message('%s@localhost/canary' % users[0], 'pong %d' % n, id_=mid + 'r')
            m = a.wait_for('message', lambda e: e.get('id') == mid + 'r', timeout=10, raise_=False)
            if m is None:
                lost += 1
                if a.closed or a.stream_closed:
                    err = 'canary sender disconnected (%s)' % a.stream_error
                    break
                continue
            rtt = time.time() - t0
            rtts.append(rtt)
            if rtt > 0.1:
                slow.append((round(t0 - start, 2), round(rtt, 3)))
            time.sleep(0.02)
    except Exception as e:
        err = '%s: %s' % (type(e).__name__, e)
    conn.send(('stats', {'n': n, 'lost': lost, 'max': max(rtts) if rtts else None,
                         'rtts': sorted(rtts)[-5:], 'slow': slow[:12], 'error': err}))
    closeall(a, b)
    os._exit(0)


def online_at(port, user, resource):
    c = RawClient(port)
    c.login(user, 'pw', resource=resource, presence=0)
    sync(c)
    c.drain(0.05)
    return c


class Canary:
    USERS = ('canary-a', 'canary-b')

    def __init__(self, srv):
        ctx = multiprocessing.get_context('fork')
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=_canary_main, args=(srv.c2s_port, self.USERS, child),
                                daemon=True)
        self.proc.start()
        self.stats = None
        if not self.pipe.poll(30):
            self.kill()
            raise AssertionError('canary did not log in within 30s')
        kind, val = self.pipe.recv()
        if kind != 'ready':
            self.kill()
            raise AssertionError('canary: %s' % val)

    def kill(self):
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)

    def stop(self):
        if self.stats is None:
            try:
                self.pipe.send('stop')
                if self.pipe.poll(30):
                    self.stats = self.pipe.recv()[1]
            except (OSError, EOFError):
                pass
            self.kill()
        return self.stats

    def check(self, min_rounds=3):
        st = self.stop()
        check(st is not None, 'canary did not report')
        check(st['error'] is None, 'canary: %s' % st['error'])
        check(st['lost'] == 0, 'canary lost %d of %d messages' % (st['lost'], st['n']))
        check(st['n'] >= min_rounds, 'canary made only %d round trips' % st['n'])
        check(st['max'] < CANARY_LIMIT, 'canary round trip took up to %.3fs (limit %.1fs; slow '
              '(t, rtt): %s)' % (st['max'], CANARY_LIMIT, st['slow']))
        return st


def start_server(workers=1, limits=None, users=()):
    srv = MemServer(args.builddir, workers=workers, limits=limits, modules=['ping'])
    srv.start()
    try:
        for u in Canary.USERS + tuple(users):
            srv.add_user(u, 'pw')
    except Exception:
        srv.kill()
        raise
    return srv


class Case:
    """A server + canary for one test; note() collects measurements."""

    def __init__(self, workers=1, limits=None, users=()):
        self.srv = None
        self.canary = None
        self.notes = []
        self.workers = workers
        self.limits = limits
        self.users = users

    def __enter__(self):
        try:
            self.srv = start_server(self.workers, self.limits, self.users)
        except Exception as e:
            lines = [l for l in str(e).splitlines() if l.strip()]
            raise AssertionError('server with limits %s did not start: %s' % (
                self.limits, ' / '.join(lines[:1] + lines[-1:]) if lines else repr(e)))
        try:
            self.canary = Canary(self.srv)
        except BaseException:
            self.srv.kill()
            self.srv.cleanup(force_keep=True)
            raise
        time.sleep(0.3)           # warm-up: canary round trips
        self.mem = Mem(self.srv.pid)
        return self

    def note(self, s):
        self.notes.append(s)

    def __exit__(self, et, ev, tb):
        if self.canary is not None:
            st = self.canary.stop()
            if st is not None:
                self.note('canary: %d round trips, %d lost, slowest %s%s' % (
                    st['n'], st['lost'], '%.3fs' % st['max'] if st['max'] is not None else '-',
                    ', error %s' % st['error'] if st['error'] else ''))
        if self.srv is not None:
            died = not self.srv.running
            reps = self.srv.sanitizer_reports()
            try:
                self.srv.stop(expect_code=None)
            except Exception:
                self.srv.kill()
            self.srv.cleanup(force_keep=bool(et or died or reps))
            if et is None and died:
                raise AssertionError('magpied died; log:\n' + self.srv.log_tail(20))
            if et is None and reps:
                raise AssertionError('sanitizer report:\n' + '\n'.join(reps))
        if self.notes:
            print('    # ' + '; '.join(self.notes), flush=True)
        return False


def expect_bounded(case, growth, limit_kib, what):
    case.note('%s: VmHWM +%d KiB (budget %d KiB)' % (what, growth, limit_kib))
    check(growth <= limit_kib, '%s: the server peak grew by %d KiB, budget %d KiB'
          % (what, growth, limit_kib))


def chunked(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


# ---------------------------------------------------------------------------
# 11-1 / 11-2: text in pieces

TEXT_BUDGET_KIB = 4 * KIB


def t01_text_pieces_preauth():
    # the production default stanza size (the fixture's 64 KiB would stop
    # this attack before its newlines on the old code as well)
    with Case(limits={'max_stanza_size': 262144, 'max_text_length': 262144}) as case:
        c = RawClient(case.srv.c2s_port)
        try:
            c.open_stream()
            chunks = [b"<message to='victim@localhost'><body>"]
            chunks += chunked(b'A' * 65536, 4096)
            chunks += chunked(b'\n' * 16384, 1024)
            total = sum(len(x) for x in chunks)
            sent, aborted, g = paced_send(case.srv, case.mem, c, chunks, 'pre-auth text')
            time.sleep(0.3)
            try:
                c.pump(0.2)
            except XMPPError:
                pass
            g = case.mem.growth()
            case.note('sent %d of %d bytes, stream error %s, %s'
                      % (sent, total, c.stream_error, case.mem))
            check(not aborted, 'pre-auth text in pieces: the server peak passed +%d MiB after %d '
                  'bytes; attack stopped' % (g // KIB, sent))
            expect_bounded(case, g, budget(TEXT_BUDGET_KIB), '64 KiB + 16,384 newlines pre-auth')
        finally:
            closeall(c)
        case.canary.check()


def t02_text_pieces_postauth():
    lines = 65536
    body = b'xyz\n' * lines                  # 256 KiB of text in 65,536 pieces
    limits = {'max_stanza_size': 1048576, 'max_text_length': 1048576}
    with Case(limits=limits, users=('sender', 'rcpt')) as case:
        s = online_at(case.srv.c2s_port, 'sender', 's')
        r = online_at(case.srv.c2s_port, 'rcpt', 'r')
        try:
            case.mem.reset()
            chunks = [b"<message to='rcpt@localhost/r' type='chat' id='lines'><body>"]
            chunks += chunked(body, 4096)
            chunks.append(b'</body></message>')
            sent, aborted, g = paced_send(case.srv, case.mem, s, chunks, 'post-auth text')
            check(not aborted, 'post-auth text in pieces: the server peak passed +%d MiB after %d '
                  'of %d bytes; attack stopped' % (g // KIB, sent, len(body)))
            m = r.wait_for('message', lambda e: e.get('id') == 'lines', timeout=20)
            got = body_of(m) or ''
            check(got == body.decode(), 'the 65,536-line body arrived altered (%d chars, %d lines)'
                  % (len(got), got.count('\n')))
            sync(s)
            g = case.mem.growth()
            case.note(str(case.mem))
            expect_bounded(case, g, budget(TEXT_BUDGET_KIB), '256 KiB body in 65,536 lines')
        finally:
            closeall(s, r)
        case.canary.check()


# ---------------------------------------------------------------------------
# 11-3: element trees and attributes

def _attack_parallel(case, clients, payload_chunks, what):
    """Sends the same chunk list on all clients, interleaved, paced."""
    rsocks = [c.sock for c in clients]
    sent = 0
    try:
        for ch in payload_chunks:
            for c in clients:
                if c.closed or c.stream_error:
                    continue
                try:
                    c.sock.sendall(ch)
                except OSError:
                    c.closed = True
            sent += len(ch)
            if not wait_read(case.srv.c2s_port, rsocks, timeout=10):
                for c in clients:
                    try:
                        if not c.closed:
                            c.pump(0.2)
                    except XMPPError:
                        pass
                if not all(c.closed or c.stream_error for c in clients):
                    raise AssertionError('%s: the server stopped reading (%s)' % (what, case.mem))
            for c in clients:
                try:
                    if not c.closed:
                        c.pump(0.0)
                except XMPPError:
                    pass
            if case.mem.growth() > ABORT_KIB:
                raise AssertionError('%s: server peak passed +1.5 GiB' % what)
            if all(c.closed or c.stream_error for c in clients):
                break
    finally:
        pass
    time.sleep(0.2)
    for c in clients:
        try:
            c.pump(0.1)
        except XMPPError:
            pass
    errs = [c.stream_error for c in clients]
    return sent, errs


TREE_LIMITS = {'max_stanza_size': 262144, 'max_text_length': 262144}   # production defaults
N_TREE = 4


def t03a_wide_preauth():
    n = N_TREE
    with Case(limits=TREE_LIMITS) as case:
        pre = [RawClient(case.srv.c2s_port) for _ in range(n)]
        try:
            for c in pre:
                c.open_stream()
            case.mem.reset()
            chunks = [("<auth xmlns='%s' mechanism='PLAIN'>" % NS_SASL).encode()]
            chunks += chunked(b'<a/>' * 65000, 8192)
            sent, errs = _attack_parallel(case, pre, chunks, 'wide <auth>')
            g = case.mem.growth()
            case.note('%d x %d bytes, stream errors %s, %s' % (n, sent, errs, case.mem))
            # the pre-auth limit is ~10 KiB and 32 elements: 4 connections
            # may hold ~4 x (10 KiB + 32 elements); 2 MiB is generous
            expect_bounded(case, g, budget(2 * KIB), '%d x 260 KB of <a/> in <auth>' % n)
        finally:
            closeall(*pre)
        case.canary.check()


def _postauth_tree(head, chunks, what):
    n = N_TREE
    with Case(limits=TREE_LIMITS, users=('tree',)) as case:
        post = []
        try:
            post = [online_at(case.srv.c2s_port, 'tree', 't%d' % i) for i in range(n)]
            case.mem.reset()
            sent, errs = _attack_parallel(case, post, [head] + chunks, what)
            g = case.mem.growth()
            case.note('%d x %d bytes, stream errors %s, %s' % (n, sent, errs, case.mem))
            # limits.max_stanza_memory defaults to 1 MiB per stanza, plus
            # 2 MiB for buffers
            expect_bounded(case, g, budget(n * KIB + 2 * KIB), '%d x %s' % (n, what))
        finally:
            closeall(*post)
        case.canary.check()


def t03b_deep_wide_postauth():
    block = b'<b>' * 30 + b'</b>' * 30        # 30 levels deep, 210 bytes
    _postauth_tree(b"<message to='tree@localhost/t0' id='deep'><body>x</body>",
                   chunked(block * 1200, 8192),  # 36,000 elements, 252 KB
                   '36,000 nested elements after auth')


LONG_NS_P = 'urn:p:' + 'p' * 2000
LONG_NS_Q = 'urn:q:' + 'q' * 2000


def t03c_attributes_postauth():
    # namespaced elements and attributes: a parser that copies the namespace
    # name into every node pays 2 KB for each 10 bytes on the wire
    attrs = b' '.join(b"q:a%d=''" % i for i in range(40))
    el = b'<p:c ' + attrs + b'/>'               # 41 names in long namespaces, ~370 bytes
    head = ("<message to='tree@localhost/t0' id='attrs' xmlns:p='%s' xmlns:q='%s'><body>x</body>"
            % (LONG_NS_P, LONG_NS_Q)).encode()
    _postauth_tree(head, chunked(el * 650, 8192),  # 26,000 attributes, 240 KB
                   '26,000 namespaced attributes after auth')


# ---------------------------------------------------------------------------
# 11-4: 1,000 unauthenticated connections at the pre-auth limit

def _preauth_payloads(limit):
    """Three unfinished stanzas just under limit bytes and within
    PREAUTH_ELEMENTS elements: text in 1-byte pieces, 31 elements with long
    attribute values, and 31 elements full of attributes in a long
    namespace (a server may refuse that one for the memory it would build)."""
    room = limit - 300
    msg = b"<message to='x@localhost'><body>"
    msg += b'A\n' * ((room - len(msg)) // 2)

    def elements(head, attr, value):
        per = (room - len(head)) // 29
        el = b'<e' + b''.join(b" " + attr % i + b"='" + value + b"'" for i in range(100))
        el = el[:per - 3]
        el = el[:el.rfind(b' ')] + b'/>'
        return head + el * 29
    # a few attributes with long values (29 x 4 x ~80 bytes)
    iq = elements(b"<iq type='set' id='x'><query xmlns='jabber:iq:private'>", b'a%d', b'v' * 76)
    # many short attributes in a namespace with a 1.5 KB name
    iqns = elements(("<iq type='set' id='y' xmlns:p='urn:p:%s'><query xmlns='jabber:iq:private'>"
                     % ('p' * 1500)).encode(), b'p:a%d', b'b')
    return [msg, iq, iqns]


def t04_thousand_preauth():
    conns = 1000
    srcs = ['127.0.0.%d' % i for i in range(2, 10)]   # 125 per address: under the defaults
    per_conn = PREAUTH_LIMIT + 30 * KIB
    with Case() as case:
        payloads = _preauth_payloads(PREAUTH_LIMIT)
        socks = []
        refused = 0
        aborted = False
        try:
            case.mem.reset()
            batch = 25
            for start in range(0, conns, batch):
                new = []
                for i in range(start, min(conns, start + batch)):
                    try:
                        s = raw_socket(case.srv.c2s_port, srcs[i % len(srcs)])
                        s.sendall(HEADER.encode())
                        new.append(s)
                    except OSError:
                        refused += 1
                for i, s in enumerate(new):
                    try:
                        s.sendall(payloads[(start + i) % len(payloads)])
                    except OSError:
                        refused += 1
                socks.extend(new)
                wait_read(case.srv.c2s_port, new, timeout=20)
                if case.mem.growth() > ABORT_KIB:
                    aborted = True
                    break
            time.sleep(0.5)
            g = case.mem.growth()
            # how many the server still holds open
            closed = [0] * len(payloads)
            conds = set()
            for i, s in enumerate(socks):
                s.setblocking(False)
                got = b''
                try:
                    while True:
                        d = s.recv(65536)
                        if not d:
                            closed[i % len(payloads)] += 1
                            break
                        got += d
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    closed[i % len(payloads)] += 1
                if b'<stream:error>' in got:
                    conds.add(got.split(b'<stream:error><', 1)[1].split(b' ', 1)[0].decode())
            case.note('%d connections opened, %d refused, closed by the server (text, '
                      'attributes, namespaced attributes): %s, stream errors %s, %s'
                      % (len(socks), refused, closed, sorted(conds), case.mem))
            check(not aborted, 'the server peak passed +1.5 GiB after %d connections' % len(socks))
            check(len(socks) == conns, 'only %d of %d connections could be opened'
                  % (len(socks), conns))
            expect_bounded(case, g, budget(conns * per_conn // KIB),
                           '%d pre-auth connections holding ~%d bytes each'
                           % (conns, PREAUTH_LIMIT - 300))
        finally:
            for s in socks:
                s.close()
        case.canary.check()


# ---------------------------------------------------------------------------
# 11-5: per-address connection limits

def try_stream(port, src):
    """('ok', client) when the server answers our header with features,
    else ('refused', why)."""
    try:
        c = SrcClient(port, src=src, timeout=5)
    except OSError as e:
        return 'refused', 'connect: %s' % e
    try:
        c.open_stream()
        return 'ok', c
    except (XMPPError, OSError) as e:
        closeall(c)
        return 'refused', str(e)[:80]


def t05a_connections_per_address():
    with Case(limits={'max_connections_per_address': 10}) as case:
        port = case.srv.c2s_port
        held = []
        try:
            for i in range(10):
                res, c = try_stream(port, '127.0.0.20')
                check(res == 'ok', 'connection %d of 10 from one address refused: %s' % (i + 1, c))
                held.append(c)
            res, c = try_stream(port, '127.0.0.20')
            if res == 'ok':
                held.append(c)
            check(res == 'refused', 'an 11th connection from 127.0.0.20 was accepted '
                  '(max_connections_per_address = 10)')
            res, c = try_stream(port, '127.0.0.21')
            check(res == 'ok', 'a connection from another address was refused: %s' % c)
            held.append(c)
            # a slot freed is a slot again
            closeall(held.pop(0))
            ok = [None]

            def again():
                r, cc = try_stream(port, '127.0.0.20')
                if r == 'ok':
                    ok[0] = cc
                return r == 'ok'
            check(wait_until(again, 5, 0.3), 'after one of the 10 closed, 127.0.0.20 still '
                  'could not connect')
            held.append(ok[0])
        finally:
            closeall(*held)
        case.canary.check()


def t05b_connection_rate_per_address():
    limits = {'connection_rate_per_address': 2, 'connection_burst_per_address': 4,
              'max_connections_per_address': 1000}
    with Case(limits=limits) as case:
        port = case.srv.c2s_port
        held = []
        try:
            t0 = time.time()
            results = []
            for i in range(12):
                res, c = try_stream(port, '127.0.0.30')
                results.append(res)
                if res == 'ok':
                    held.append(c)
            dt = time.time() - t0
            ok = results.count('ok')
            allowed = 4 + int(2 * dt) + 1
            case.note('12 connections in %.2fs from one address: %d accepted' % (dt, ok))
            check(ok <= allowed, '%d of 12 connections in %.2fs from one address were accepted '
                  '(rate 2/s, burst 4: at most %d)' % (ok, dt, allowed))
            check(ok >= 4, 'only %d connections accepted, burst is 4' % ok)
            res, c = try_stream(port, '127.0.0.31')
            check(res == 'ok', 'a connection from another address was refused: %s' % c)
            held.append(c)
            time.sleep(1.2)
            res, c = try_stream(port, '127.0.0.30')
            check(res == 'ok', 'after 1.2s at 2/s the address still may not connect: %s' % c)
            held.append(c)
        finally:
            closeall(*held)
        case.canary.check()


# ---------------------------------------------------------------------------
# 11-6 / 11-7: a burst of large messages to a slow reader

MSG_BODY = 250000
N_SENDERS = 6


def _sender(c, sid, count, t0, out):
    try:
        for k in range(count):
            c.send("<message to='reader@localhost/slow' type='chat' id='%s-%d'><body>%s:%d:%s"
                   "</body></message>" % (sid, k, sid, k, 'x' * MSG_BODY))
        out['sent'] = time.time() - t0
        sync(c)
        out['synced'] = time.time() - t0
    except Exception as e:
        out['error'] = '%s: %s' % (type(e).__name__, e)


def _burst(workers):
    per_sender = args.per_sender   # 6 x 8 x 250 KB = 12 MB, well beyond the kernel's buffers
    stall = 4.0
    limits = {'max_stanza_size': 300000, 'max_text_length': 300000, 'rate': 0}
    senders = ['s%d' % i for i in range(N_SENDERS)]
    with Case(workers=workers, limits=limits, users=tuple(senders) + ('reader',)) as case:
        port = case.srv.c2s_port
        reader = SrcClient(port, rcvbuf=32768, timeout=20)
        cl = []
        try:
            reader.login('reader', 'pw', resource='slow', presence=0)
            sync(reader)
            reader.drain(0.05)
            cl = [online_at(port, u, 'r') for u in senders]
            case.mem.reset()
            t0 = time.time()
            outs = [{} for _ in senders]
            ths = [threading.Thread(target=_sender, args=(c, u, per_sender, t0, o))
                   for c, u, o in zip(cl, senders, outs)]
            for th in ths:
                th.start()
            peak_rss, peak_t = 0, 0.0
            while time.time() - t0 < stall:     # the reader reads nothing meanwhile
                r = case.mem.rss()
                if r > peak_rss:
                    peak_rss, peak_t = r, time.time() - t0
                time.sleep(0.05)
            resumed = time.time() - t0
            stall_rss = case.mem.rss()
            want = N_SENDERS * per_sender
            got = []
            deadline = time.time() + 60
            while len(got) < want and time.time() < deadline:
                m = reader.wait_for('message', timeout=max(0.1, deadline - time.time()),
                                    raise_=False)
                if m is None:
                    break
                if m.get('type') == 'chat' and (m.get('id') or '').startswith('s'):
                    got.append(m)
            for th in ths:
                th.join(30)
            g = case.mem.growth()
            st = status(case.srv)
            case.note('RSS during the stall: highest +%d KiB at %.2fs, +%d KiB at its end; '
                      'senders_paused %s' % (peak_rss - case.mem.base, peak_t,
                                             stall_rss - case.mem.base,
                                             st.get('senders_paused', 'n/a')))
            case.note('workers=%d: reader resumed at %.2fs; senders sent/synced at %s; '
                      'reader got %d/%d; %s' % (
                          workers, resumed,
                          ['%.2f/%s' % (o.get('sent', -1), '%.2f' % o['synced'] if 'synced' in o
                                        else o.get('error', '?')[:60]) for o in outs],
                          len(got), want, case.mem))
            check(not reader.closed and reader.stream_error is None,
                  'the slow reader was disconnected (stream error %s) after %d of %d messages'
                  % (reader.stream_error, len(got), want))
            check(len(got) == want, 'the reader received %d of %d messages' % (len(got), want))
            for u in senders:
                seq = [int(m.get('id').split('-')[1]) for m in got if m.get('id').split('-')[0] == u]
                check(seq == list(range(per_sender)), 'messages from %s arrived as %s' % (u, seq))
            for m in got:
                b = body_of(m) or ''
                check(len(b) == MSG_BODY + len(m.get('id')) + 1, 'message %s altered' % m.get('id'))
            errs = [o.get('error') for o in outs if 'synced' not in o]
            check(not errs, 'senders failed: %s' % errs)
            slowed = [o['synced'] for o in outs if o['synced'] >= resumed - 0.3]
            check(slowed, 'no sender was paused while the reader was not reading (all synced '
                  'by %.2fs, reader resumed at %.2fs): the server buffered everything'
                  % (max(o['synced'] for o in outs), resumed))
            # max_output_buffer (1 MiB) + per paused sender one stanza in
            # input, tree and serialised form (~3 x 250 KB) + TLS buffers
            expect_bounded(case, g, budget(1024 + N_SENDERS * 1024 + 4 * KIB),
                           '%d x %d x 250 KB to a slow reader' % (N_SENDERS, per_sender))
            for c in cl:
                sync(c)
            sync(reader)
        finally:
            closeall(reader, *cl)
        case.canary.check()


def status(srv):
    st = srv.ctl('status').stdout
    return dict(l.split(' ', 1) for l in st.splitlines() if ' ' in l)


def sessions(srv):
    return int(status(srv).get('sessions', '-1'))


def t07_stall_timeout():
    limits = {'max_stanza_size': 300000, 'max_text_length': 300000, 'rate': 0,
              'output_stall_timeout': 3}
    senders = ['s%d' % i for i in range(3)]
    with Case(limits=limits, users=tuple(senders) + ('reader',)) as case:
        port = case.srv.c2s_port
        reader = SrcClient(port, rcvbuf=32768, timeout=20)
        cl = []
        try:
            reader.login('reader', 'pw', resource='slow', presence=0)
            sync(reader)
            reader.drain(0.05)
            cl = [online_at(port, u, 'r') for u in senders]
            before = sessions(case.srv)
            t0 = time.time()
            outs = [{} for _ in senders]
            ths = [threading.Thread(target=_sender, args=(c, u, 8, t0, o))
                   for c, u, o in zip(cl, senders, outs)]
            for th in ths:
                th.start()
            time.sleep(1.5)
            mid = sessions(case.srv)
            check(mid == before, 'the reader was cut off after 1.5s, before the 3s stall '
                  'timeout (sessions %d -> %d)' % (before, mid))
            gone = wait_until(lambda: sessions(case.srv) == before - 1, 12, 0.2)
            t_gone = time.time() - t0
            check(gone, 'the reader that read nothing was still connected %.1fs later '
                  '(output_stall_timeout = 3)' % t_gone)
            for th in ths:
                th.join(20)
            # the reader now reads what it was sent: the end must be the
            # stream error (or EOF if the server dropped its queued output)
            reader.timeout = 10
            end = time.time() + 15
            while not reader.closed and time.time() < end:
                try:
                    reader.pump(1.0)
                except XMPPError:
                    break
            case.note('reader cut off after ~%.1fs, its stream error %s, closed %s'
                      % (t_gone, reader.stream_error, reader.closed))
            check(reader.closed or reader.stream_closed, 'the reader\'s connection stayed open')
            check(reader.stream_error in (None, 'resource-constraint'),
                  'the reader got stream error %s' % reader.stream_error)
            errs = [o.get('error') for o in outs if 'synced' not in o]
            check(not errs, 'senders were harmed: %s' % errs)
            for c in cl:
                check(not c.closed and c.stream_error is None, 'a sender was disconnected')
                sync(c)
            cl[0].message('s1@localhost/r', 'after', id_='after')
            m = cl[1].wait_for('message', lambda e: e.get('id') == 'after', timeout=5)
            check(body_of(m) == 'after', tostr(m))
            check(sessions(case.srv) == before - 1, 'sessions %d, expected %d'
                  % (sessions(case.srv), before - 1))
        finally:
            closeall(reader, *cl)
        case.canary.check()


CASES = [
    ('1', '11-1 text in 16,384 pieces before authentication: memory bounded',
     t01_text_pieces_preauth),
    ('2', '11-2 a 256 KiB body in 65,536 lines after authentication: memory bounded',
     t02_text_pieces_postauth),
    ('3a', '11-3a 260 KB of <a/> in <auth> before authentication: memory bounded',
     t03a_wide_preauth),
    ('3b', '11-3b 36,000 elements 30 deep after authentication: memory bounded',
     t03b_deep_wide_postauth),
    ('3c', '11-3c 26,000 attributes in long namespaces after authentication: memory bounded',
     t03c_attributes_postauth),
    ('4', '11-4 1,000 pre-auth connections at the pre-auth stanza limit: memory bounded',
     t04_thousand_preauth),
    ('5a', '11-5a max_connections_per_address refuses the 11th connection of an address',
     t05a_connections_per_address),
    ('5b', '11-5b connection_rate_per_address refuses a burst beyond it',
     t05b_connection_rate_per_address),
    ('6a', '11-6a 6 senders x 8 x 250 KB to a slow reader, workers=1: nothing lost, senders paused',
     lambda: _burst(1)),
    ('6b', '11-6b 6 senders x 8 x 250 KB to a slow reader, workers=2: nothing lost, senders paused',
     lambda: _burst(2)),
    ('7', '11-7 a reader that reads nothing past output_stall_timeout is cut off, senders unharmed',
     t07_stall_timeout),
]

print('# %s build, canary limit %.1fs' % ('sanitizer' if ASAN else 'normal', CANARY_LIMIT),
      flush=True)
for key, name, fn in CASES:
    if ONLY and key not in ONLY and key.rstrip('abc') not in ONLY:
        continue
    R.run(name, fn)
R.exit()
