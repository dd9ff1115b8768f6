#!/usr/bin/python3
"""10: TLS per virtual host: SNI picks each host's certificate (direct TLS
and STARTTLS), SIGHUP reloads certificates for new connections, and TLS
renegotiation is refused."""

import base64
import hashlib
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import time

from common import MagpieServer, Results, RawClient, parse_args, check, closeall
from magpie_fixture import Scram

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def peer_cert(port, sni, starttls=False, domain=None):
    """DER certificate the server presents for sni."""
    s = socket.create_connection(('127.0.0.1', port), timeout=10)
    try:
        if starttls:
            s.sendall(("<?xml version='1.0'?><stream:stream to='%s' version='1.0' xmlns='jabber:client' "
                       "xmlns:stream='http://etherx.jabber.org/streams'>"
                       "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>" % (domain or sni)).encode())
            buf = b''
            while b'<proceed' not in buf:
                d = s.recv(4096)
                check(d, 'no <proceed/> from the server: %r' % buf)
                buf += d
            while not buf.rstrip().endswith(b'/>'):
                buf += s.recv(4096)
        t = client_ctx().wrap_socket(s, server_hostname=sni)
        der = t.getpeercert(binary_form=True)
        t.close()
        return der
    finally:
        s.close()


def subject_cn(der):
    p = subprocess.run(['openssl', 'x509', '-inform', 'DER', '-noout', '-subject'],
                       input=der, capture_output=True)
    return p.stdout.decode().strip()


def t01_sni_direct_tls(srv):
    for host in ('localhost', 'example.test'):
        cn = subject_cn(peer_cert(srv.tls_port, host))
        check(cn.endswith('CN = %s' % host), 'SNI %s got certificate %s' % (host, cn))


def t02_sni_starttls(srv):
    cn = subject_cn(peer_cert(srv.c2s_port, 'example.test', starttls=True))
    check(cn.endswith('CN = example.test'), 'STARTTLS with SNI example.test got %s' % cn)


def t03_sighup_reloads_certificates(srv):
    before = hashlib.sha256(peer_cert(srv.tls_port, 'localhost')).hexdigest()
    crt = os.path.join(srv.state_dir, 'localhost.crt')
    key = os.path.join(srv.state_dir, 'localhost.key')
    p = subprocess.run(['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256',
                        '-nodes', '-days', '30', '-subj', '/CN=localhost', '-addext',
                        'subjectAltName=DNS:localhost', '-keyout', key + '.new', '-out', crt + '.new'],
                       capture_output=True, text=True)
    check(p.returncode == 0, 'openssl req failed: %s' % p.stderr)
    os.replace(key + '.new', key)
    os.replace(crt + '.new', crt)
    # a stream opened before the reload keeps working
    c = RawClient(srv.tls_port, direct_tls=True)
    try:
        c.login('alice', 'pw', 'keep')
        srv.signal(signal.SIGHUP)
        deadline = time.time() + 10
        after = before
        while time.time() < deadline and after == before:
            time.sleep(0.2)
            after = hashlib.sha256(peer_cert(srv.tls_port, 'localhost')).hexdigest()
        check(after != before, 'certificate not reloaded on SIGHUP')
        with open(crt, 'rb') as f:
            pem = f.read()
        der = ssl.PEM_cert_to_DER_cert(pem.decode())
        check(after == hashlib.sha256(der).hexdigest(), 'server presents neither old nor new certificate')
        r = c.iq('get', 'localhost', "<ping xmlns='urn:xmpp:ping'/>")
        check(r is not None and r.get('type') == 'result', 'old stream broken by reload')
    finally:
        closeall(c)


def t04_renegotiation_refused(srv):
    """TLS 1.2 client asks to renegotiate ('R' command of openssl s_client)."""
    p = subprocess.Popen(['openssl', 's_client', '-connect', '127.0.0.1:%d' % srv.tls_port,
                          '-tls1_2', '-servername', 'localhost'],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(1.0)
        p.stdin.write(b'R\n')
        p.stdin.flush()
        time.sleep(1.5)
        p.stdin.close()
        p.wait(timeout=10)
        out = p.stdout.read().decode(errors='replace')
    finally:
        if p.poll() is None:
            p.kill()
    check('RENEGOTIATING' in out, 'renegotiation was not attempted: %s' % out[-500:])
    check('no renegotiation' in out,
          'server did not refuse renegotiation: %s' % out[-800:])


def t05_scram_plus_tls_server_end_point(srv):
    """SCRAM-*-PLUS with real tls-server-end-point data of the connection,
    over STARTTLS and direct TLS; tampered binding data is refused."""
    for mech in ('SCRAM-SHA-256-PLUS', 'SCRAM-SHA-1-PLUS'):
        for direct in (False, True):
            c = RawClient(srv.tls_port if direct else srv.c2s_port, direct_tls=direct)
            try:
                c.open_stream()
                if not direct:
                    c.starttls()
                check(mech in c.mechanisms(), '%s not offered: %s' % (mech, c.mechanisms()))
                ok = c.auth('alice', 'pw', mech)
                check(ok, '%s (direct TLS %s) failed: %s' % (mech, direct, c.sasl_failure))
                c.open_stream()
                c.bind('plus')
            finally:
                closeall(c)
    c = RawClient(srv.tls_port, direct_tls=True)
    try:
        c.open_stream()
        good = c.tls_server_end_point()
        bad = bytes([good[0] ^ 1]) + good[1:]
        ok = c.auth('alice', 'pw', 'SCRAM-SHA-256-PLUS', cb_data=bad)
        check(not ok and c.sasl_failure == 'not-authorized',
              'tampered channel binding: ok=%s failure=%s' % (ok, c.sasl_failure))
    finally:
        closeall(c)


def read_until(p, needle, timeout=10):
    """Reads p's stdout until needle (bytes, or a tuple of alternatives)
    appears; returns all read."""
    buf = b''
    deadline = time.time() + timeout
    fd = p.stdout.fileno()
    needles = needle if isinstance(needle, tuple) else (needle,)
    while not any(n in buf for n in needles):
        left = deadline - time.time()
        check(left > 0, 'timeout waiting for %r; got %r' % (needle, buf[-400:]))
        r, _, _ = select.select([fd], [], [], left)
        if r:
            d = os.read(fd, 65536)
            check(d, 'EOF waiting for %r; got %r' % (needle, buf[-400:]))
            buf += d
    return buf


def t06_scram_plus_tls_exporter(srv):
    """SCRAM-SHA-256-PLUS with tls-exporter (RFC 9266) on TLS 1.3: the
    exporter value comes from OpenSSL's s_client on the same connection."""
    p = subprocess.Popen(['openssl', 's_client', '-connect', '127.0.0.1:%d' % srv.tls_port,
                          '-servername', 'localhost', '-tls1_3', '-ign_eof',
                          '-keymatexport', 'EXPORTER-Channel-Binding', '-keymatexportlen', '32'],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        out = read_until(p, b'Keying material:')
        while b'\n' not in out.split(b'Keying material:')[1]:
            out += read_until(p, b'\n')
        hexval = out.split(b'Keying material:')[1].split()[0].decode()
        exporter = bytes.fromhex(hexval)
        check(len(exporter) == 32, 'bad exporter %r' % hexval)

        def send(x):
            p.stdin.write(x.encode())
            p.stdin.flush()
        send("<?xml version='1.0'?><stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
             "xmlns:stream='http://etherx.jabber.org/streams'>")
        feats = read_until(p, b'</stream:features>').decode(errors='replace')
        check('SCRAM-SHA-256-PLUS' in feats and "type='tls-exporter'" in feats,
              'no -PLUS / tls-exporter offered: %s' % feats[-600:])
        sc = Scram('alice', 'pw', 'SCRAM-SHA-256-PLUS', cb_name='tls-exporter', cb_data=exporter)
        send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>%s</auth>"
             % base64.b64encode(sc.first()).decode())
        ch = read_until(p, b'</challenge>').decode()
        server_first = base64.b64decode(re.search(r'<challenge[^>]*>([^<]*)</challenge>', ch).group(1))
        send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>"
             % base64.b64encode(sc.final(server_first)).decode())
        text = read_until(p, (b'</success>', b'</failure>')).decode(errors='replace')
        m = re.search(r'<success[^>]*>([^<]*)</success>', text)
        check(m is not None, 'tls-exporter SCRAM-PLUS failed: %s' % text[-300:])
        check(sc.verify(base64.b64decode(m.group(1))), 'bad server signature')
    finally:
        p.kill()
        p.wait()


srv = MagpieServer(args.builddir, workers=args.workers)
with srv:
    srv.add_user('alice', 'pw')
    R.run('10-1 SNI selects the host certificate (direct TLS)', t01_sni_direct_tls, srv, server=srv)
    R.run('10-2 SNI selects the host certificate (STARTTLS)', t02_sni_starttls, srv, server=srv)
    R.run('10-3 SIGHUP reloads certificates; open streams keep working', t03_sighup_reloads_certificates, srv, server=srv)
    R.run('10-4 TLS renegotiation is refused', t04_renegotiation_refused, srv, server=srv)
    R.run('10-5 SCRAM -PLUS with tls-server-end-point; tampered binding refused',
          t05_scram_plus_tls_server_end_point, srv, server=srv)
    R.run('10-6 SCRAM-SHA-256-PLUS with tls-exporter (TLS 1.3)', t06_scram_plus_tls_exporter, srv, server=srv)
R.exit()
