#!/usr/bin/python3
"""09: one client flooding cannot delay other clients or grow the server
without bound (fair scheduling, per-connection read rate, bounded output
buffers with backpressure), and TLS below 1.2 is refused."""

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


def flood(sock, seconds, blob, stop):
    """Writes blob to sock for up to seconds (never reads)."""
    end = time.time() + seconds
    sock.settimeout(0.5)
    while time.time() < end and not stop.is_set():
        try:
            sock.sendall(blob)
        except socket.timeout:
            continue
        except OSError:
            return


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
        stop = threading.Event()
        th = threading.Thread(target=flood, args=(f.sock, 8, blob, stop))
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
        stop.set()
        th.join()
        worst = max(rtts)
        check(worst < 1.0, 'a flood on another connection delayed delivery to %.2fs (rtts %s)'
              % (worst, ['%.3f' % r for r in rtts]))
        check(peak - base < 64 * 1024, 'server grew by %d KiB during the flood' % (peak - base))
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


srv = MagpieServer(args.builddir, workers=args.workers,
                   limits={'rate': 65536, 'burst': 131072, 'max_output_buffer': 262144})
with srv:
    for u in ('flooder', 'carol', 'dave'):
        srv.add_user(u, 'pw')
    R.run('09-1 a flooding client does not delay others; memory stays bounded', t01_flood_does_not_delay_others, srv, server=srv)
    R.run('09-2 TLS below 1.2 is refused by the server', t02_tls_below_1_2_refused, srv, server=srv)
R.exit()
