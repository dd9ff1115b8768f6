#!/usr/bin/python3
"""09: one client flooding cannot delay other clients or grow the server
without bound (fair scheduling, per-connection read rate, bounded output
buffers with backpressure), and TLS below 1.2 is refused."""

import os
import socket
import ssl
import threading
import warnings
import time

from common import MagpieServer, Results, parse_args, check, online, closeall, sync

warnings.filterwarnings("ignore", category=DeprecationWarning)
args = parse_args()
R = Results('[workers=%d]' % args.workers)


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def flood(sock, seconds, blob, stop, stats):
    """Writes blob to sock for up to seconds (never reads). stats gets
    'marks': (time, bytes accepted by the kernel so far) pairs, and 'cut':
    the error if the server closed the connection."""
    end = time.time() + seconds
    sock.settimeout(0.5)
    total, off = 0, 0
    stats['marks'] = [(time.time(), 0)]
    stats['cut'] = None
    while time.time() < end and not stop.is_set():
        try:
            n = sock.send(blob[off:])
        except (socket.timeout, ssl.SSLWantWriteError):
            continue
        except OSError as e:
            stats['cut'] = e
            return
        total += n
        off = (off + n) % len(blob)
        stats['marks'].append((time.time(), total))


def stanzas_in(srv):
    st = srv.ctl('status').stdout
    return int(dict(l.split(' ', 1) for l in st.splitlines() if ' ' in l).get('stanzas_in', '0'))


def flood_rate(stats, after):
    """Bytes per second the flooder got through from `after` seconds into
    the flood to its end: once the socket buffers are full, the rate at
    which the server reads it."""
    marks = stats['marks']
    t_start = marks[0][0] + after
    tail = [m for m in marks if m[0] >= t_start]
    base = [m for m in marks if m[0] < t_start]
    if not tail or not base:
        return 0.0
    t0, b0 = base[-1]
    t1, b1 = marks[-1]
    return (b1 - b0) / max(t1 - t0, 1e-3)


def t01_flood_does_not_delay_others(srv):
    f = online(srv, 'flooder', 'pw', 'f')
    c = online(srv, 'carol', 'pw', 'c')
    d = online(srv, 'dave', 'pw', 'd')
    try:
        base = rss_kib(srv.pid)
        # messages to its own bare JID: the server echoes them back to a
        # client that never reads, so both the read rate limit and the
        # output backpressure are exercised
        one = "<message to='flooder@localhost' type='chat'><body>%s</body></message>" % ('x' * 900)
        blob = (one * 64).encode()
        in0 = stanzas_in(srv)
        stop = threading.Event()
        stats = {}
        th = threading.Thread(target=flood, args=(f.sock, 8, blob, stop, stats))
        th.start()
        time.sleep(1.0)
        rtts = []
        for i in range(20):
            t0 = time.time()
            c.message('dave@localhost/d', 'probe %d' % i)
            m = d.wait_for('message', lambda e, i=i: any(
                (b.text or '') == 'probe %d' % i for b in e.iter('{jabber:client}body')), timeout=10)
            rtts.append(time.time() - t0)
            time.sleep(0.1)
        peak = rss_kib(srv.pid)
        th.join()           # the flood runs its 8 s
        peak = max(peak, rss_kib(srv.pid))
        worst = max(rtts)
        check(worst < 1.0, 'a flood on another connection delayed delivery to %.2fs (rtts %s)'
              % (worst, ['%.3f' % r for r in rtts]))
        check(peak - base < 64 * 1024, 'server grew by %d KiB during the flood' % (peak - base))
        # the flooder itself was slowed to about limits.rate (or cut off):
        # the server took in at most burst + rate x 8 s worth of its
        # stanzas (counted by the server, whatever the socket buffers
        # hold), and after 3 s (buffers full) the flooder got through only
        # what the server read
        stanzas = stanzas_in(srv) - in0
        if stats['cut'] is None:
            total = stats['marks'][-1][1]
            rate = flood_rate(stats, 3.0)
            allowed = (BURST + 8 * RATE) * 3 // 2 // len(one) + 100
            if os.environ.get('MAGPIE_TEST_VERBOSE'):
                print('    flooder: %.0f bytes/s after 3 s, %d bytes in all; server read %d stanzas'
                      ' (allowed %d)' % (rate, total, stanzas, allowed))
            check(stanzas <= allowed, 'the flooder was neither slowed nor cut off: the server read %d'
                  ' stanzas in 8 s, more than (burst + 8 s x rate) x 1.5 allows (%d)' % (stanzas, allowed))
            check(rate <= 3 * RATE, 'the flooder was neither slowed nor cut off: %.0f bytes/s in the'
                  ' last 5 s (limits.rate %d), %d bytes in all' % (rate, RATE, total))
        sync(c)
    finally:
        closeall(f, c, d)


def t02_tls_below_1_2_refused(srv):
    before = srv.ctl('status').stdout
    failures_before = int(dict(l.split(' ', 1) for l in before.splitlines() if ' ' in l).get('tls_failures', '0'))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as e:
        raise AssertionError('this OpenSSL cannot even offer TLS 1.1: %s' % e)
    s = socket.create_connection(('127.0.0.1', srv.tls_port), timeout=5)
    try:
        t = ctx.wrap_socket(s, server_hostname='localhost')
        t.close()
        raise AssertionError('a TLS 1.1 handshake succeeded')
    except ssl.SSLError:
        pass
    finally:
        s.close()
    # the server saw a handshake and refused it (not just our client failing)
    deadline = time.time() + 5
    while time.time() < deadline:
        st = srv.ctl('status').stdout
        n = int(dict(l.split(' ', 1) for l in st.splitlines() if ' ' in l).get('tls_failures', '0'))
        if n > failures_before:
            return
        time.sleep(0.1)
    raise AssertionError('server did not count a failed TLS handshake')


RATE = 65536
BURST = 131072
srv = MagpieServer(args.builddir, workers=args.workers,
                   limits={'rate': RATE, 'burst': BURST, 'max_output_buffer': 262144})
with srv:
    for u in ('flooder', 'carol', 'dave'):
        srv.add_user(u, 'pw')
    R.run('09-1 a flooding client does not delay others; memory stays bounded', t01_flood_does_not_delay_others, srv, server=srv)
    R.run('09-2 TLS below 1.2 is refused by the server', t02_tls_below_1_2_refused, srv, server=srv)
R.exit()
