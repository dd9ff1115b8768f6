#!/usr/bin/python3
"""10: TLS per virtual host: SNI picks each host's certificate (direct TLS
and STARTTLS), SIGHUP reloads certificates for new connections, and TLS
renegotiation is refused."""

import hashlib
import os
import signal
import socket
import ssl
import subprocess
import time

from common import MagpieServer, Results, RawClient, parse_args, check, closeall

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


srv = MagpieServer(args.builddir, workers=args.workers)
with srv:
    srv.add_user('alice', 'pw')
    R.run('10-1 SNI selects the host certificate (direct TLS)', t01_sni_direct_tls, srv, server=srv)
    R.run('10-2 SNI selects the host certificate (STARTTLS)', t02_sni_starttls, srv, server=srv)
    R.run('10-3 SIGHUP reloads certificates; open streams keep working', t03_sighup_reloads_certificates, srv, server=srv)
    R.run('10-4 TLS renegotiation is refused', t04_renegotiation_refused, srv, server=srv)
R.exit()
