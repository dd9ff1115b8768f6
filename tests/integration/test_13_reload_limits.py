#!/usr/bin/python3
"""13: what docs/admin-guide.md promises, line by line.

- the reload matrix (SIGHUP): log.level is applied, log.file is reopened
  (after rotation), a broken configuration keeps the running one (nothing
  of it applied), a certificate that cannot be loaded keeps the old one;
- limits.max_connections refuses connections beyond it (and counts them);
- an idle stream's parser is released after 10 s and rebuilt by the next
  bytes: the server logs the release with the memory before and after, and
  the stream keeps working in both directions."""

import os
import re
import signal
import socket
import ssl
import time

from common import (MagpieServer, Results, RawClient, parse_args, check, tostr,
                    closeall, online, sync, body_of, wait_until)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

DEBUG_LINE = re.compile(r'^\S+ debug ', re.M)


def read(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        return ''


def status(srv):
    p = srv.ctl('status')
    check(p.returncode == 0, 'magpiectl status: rc %d %s' % (p.returncode, p.stderr))
    return dict(l.split(' ', 1) for l in p.stdout.splitlines() if ' ' in l)


def server_cert(srv):
    """DER of the certificate a new direct-TLS connection gets for localhost."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(('127.0.0.1', srv.tls_port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname='localhost') as t:
            return t.getpeercert(binary_form=True)


def reload_and_wait(srv, path, expect, timeout=10):
    """Sends SIGHUP and waits until the text expect (a regex) appears in
    the log file path after what was there before."""
    start = len(read(path))
    srv.signal(signal.SIGHUP)
    ok = wait_until(lambda: re.search(expect, read(path)[start:]) is not None, timeout)
    check(ok, 'after SIGHUP no line matching %r in %s; log tail:\n%s'
          % (expect, path, read(path)[-1500:]))


def probe_login(srv, resource):
    """A login (which logs debug and info lines) that is then closed."""
    c = online(srv, 'alice', 'alice-pw', resource)
    closeall(c)
    time.sleep(0.3)


# ---- reload matrix

def t01_reload_log_level(srv):
    path = srv.log_file
    start = len(read(path))
    probe_login(srv, 'lvl-info')
    text = read(path)[start:]
    check('bound alice@localhost/lvl-info' in text, 'the probe login is not in the log:\n%s' % text[-800:])
    check(not DEBUG_LINE.search(text), 'debug lines logged at level info:\n%s' % text[-800:])
    srv.log_level = 'debug'
    srv.write_config()
    reload_and_wait(srv, path, r'reloaded log settings')
    start = len(read(path))
    probe_login(srv, 'lvl-debug')
    text = read(path)[start:]
    check(DEBUG_LINE.search(text), 'no debug line after SIGHUP set log.level = "debug":\n%s' % text[-800:])
    srv.log_level = 'warn'
    srv.write_config()
    srv.signal(signal.SIGHUP)       # the reload notice itself is below warn
    time.sleep(1.0)
    start = len(read(path))
    probe_login(srv, 'lvl-warn')
    text = read(path)[start:]
    check('lvl-warn' not in text, 'info line logged after SIGHUP set log.level = "warn":\n%s' % text[-800:])
    srv.log_level = 'info'
    srv.write_config()
    reload_and_wait(srv, path, r'reloaded log settings')


def t02_reload_reopens_log_file(srv):
    path = srv.log_file
    rotated = path + '.1'
    os.rename(path, rotated)
    probe_login(srv, 'rot-before')
    check('rot-before' in read(rotated), 'before SIGHUP the server does not write to the renamed file')
    check(not os.path.exists(path), 'the log file reappeared before SIGHUP')
    srv.signal(signal.SIGHUP)
    check(wait_until(lambda: os.path.exists(path), 10), 'SIGHUP did not reopen (recreate) %s' % path)
    check(wait_until(lambda: 'reloaded log settings' in read(path), 10),
          'the reload notice is not in the reopened file:\n%s' % read(path))
    size_rotated = len(read(rotated))
    probe_login(srv, 'rot-after')
    check('rot-after' in read(path), 'after SIGHUP new lines do not go to the reopened file')
    check(len(read(rotated)) == size_rotated and 'rot-after' not in read(rotated),
          'after SIGHUP the server still writes to the rotated file')


def t03_broken_config_keeps_running_one(srv):
    path = srv.log_file
    good = srv.config_text()
    cases = [
        ('syntax error', good.replace('workers = ', 'workers = = ', 1)),
        ('unknown key, with log.level = "error"',
         good.replace('level = "info"', 'level = "error"').replace('workers = ', 'no_such_key = 1;\nworkers = ', 1)),
        ('file missing', None),
    ]
    for what, text in cases:
        if text is None:
            os.rename(srv.config_path, srv.config_path + '.away')
        else:
            check(text != good, 'test bug: %s config equals the good one' % what)
            with open(srv.config_path, 'w') as f:
                f.write(text)
        try:
            reload_and_wait(srv, path, r'reload failed, keeping the running configuration')
            check(srv.running, 'magpied exited on SIGHUP with a broken config (%s)' % what)
            # the running configuration, log level info included, stays in force
            start = len(read(path))
            probe_login(srv, 'broken')
            text_now = read(path)[start:]
            check('bound alice@localhost/broken' in text_now,
                  '%s: after the failed reload the info lines are gone (level changed?):\n%s'
                  % (what, text_now[-800:]))
            c = online(srv, 'alice', 'alice-pw', 'broken-tls', direct_tls=True)
            closeall(c)
        finally:
            if text is None:
                os.rename(srv.config_path + '.away', srv.config_path)
            else:
                srv.write_config()


def t04_unloadable_certificate_keeps_old(srv):
    path = srv.log_file
    before = server_cert(srv)
    bad_crt = os.path.join(srv.tmp, 'broken.crt')
    bad_key = os.path.join(srv.tmp, 'broken.key')
    with open(bad_crt, 'w') as f:
        f.write('-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n')
    with open(bad_key, 'w') as f:
        f.write('not a key\n')
    hosts = srv.hosts
    srv.hosts = ['{ domain = "localhost"; cert = "%s"; key = "%s"; }' % (bad_crt, bad_key)] + hosts[1:]
    try:
        srv.write_config()
        reload_and_wait(srv, path, r'certificates not reloaded, keeping the old ones')
        check(srv.running, 'magpied exited on SIGHUP with an unloadable certificate')
        after = server_cert(srv)
        check(after == before, 'a new TLS connection got another certificate after a failed reload')
        c = online(srv, 'alice', 'alice-pw', 'cert-old', direct_tls=True)
        closeall(c)
        c = online(srv, 'alice', 'alice-pw', 'cert-old-starttls')
        closeall(c)
    finally:
        srv.hosts = hosts
        srv.write_config()


# ---- limits.max_connections

MAXCONN = 4


def t05_max_connections(srv):
    refused0 = int(status(srv).get('connections_refused', '0'))
    held = []
    try:
        for i in range(MAXCONN):
            c = RawClient(srv.c2s_port)
            c.open_stream()
            held.append(c)
        extra = RawClient(srv.c2s_port, timeout=5)
        held.append(extra)
        check(extra.wait_closed(5), 'connection %d (max_connections = %d) was not closed' % (MAXCONN + 1, MAXCONN))
        check(not extra.raw_in, 'the refused connection got bytes: %r' % bytes(extra.raw_in[:200]))
        try:
            extra.open_stream()
            raise AssertionError('connection %d got stream features' % (MAXCONN + 1))
        except Exception as e:   # noqa: BLE001
            if isinstance(e, AssertionError):
                raise
        refused = int(status(srv).get('connections_refused', '0'))
        check(refused >= refused0 + 1, 'connections_refused %d -> %d' % (refused0, refused))
        # the ones within the limit are served
        for c in held[:MAXCONN]:
            check(c.feature('starttls') is not None, 'an accepted connection is not served: %s'
                  % tostr(c.features))
        # one leaves: a new connection is accepted again
        closeall(held[0])
        held[0] = None
        ok = wait_until(lambda: int(status(srv).get('connections', '99')) < MAXCONN, 10)
        check(ok, 'the server still counts %s connections' % status(srv).get('connections'))
        c = RawClient(srv.c2s_port)
        held.append(c)
        c.open_stream()
        c.starttls()
        check(c.auth('alice', 'alice-pw'), 'login below the limit failed: %s' % c.sasl_failure)
    finally:
        closeall(*held)


# ---- idle parser release and rebuild

def t06_idle_parser_release_and_rebuild(srv):
    a = online(srv, 'alice', 'alice-pw', 'idle')
    b = online(srv, 'bob', 'bob-pw', 'peer')
    try:
        ip, port = a.sock.getsockname()[:2]
        peer = '%s:%d' % (ip, port)
        # something non-trivial through the parser first
        a.send("<message to='bob@localhost/peer' id='pre' xmlns:x='urn:example:x'>"
               "<body>before</body><x:data a='1'>payload</x:data></message>")
        b.wait_for('message', lambda e: e.get('id') == 'pre')
        start = len(srv.log)
        t0 = time.time()
        m = srv.wait_log(r'c2s %s: idle parser released, (\d+) -> (\d+) bytes' % re.escape(peer),
                         timeout=25, start=start)
        check(m is not None, 'no "idle parser released" line for %s within 25 s of idling' % peer)
        dt = time.time() - t0
        check(dt >= 9, 'parser released after %.1f s, before 10 s of idleness' % dt)
        before, after = int(m.group(1)), int(m.group(2))
        check(after < before, 'parser memory not reduced: %d -> %d bytes' % (before, after))
        # the released stream still receives ...
        b.message('alice@localhost/idle', 'to the idle one', id_='in1')
        got = a.wait_for('message', lambda e: e.get('id') == 'in1')
        check(body_of(got) == 'to the idle one', tostr(got))
        # ... and its next bytes rebuild the parser, prefixes and all
        a.send("<message to='bob@localhost/peer' id='post'><body>after</body>"
               "<x:data xmlns:x='urn:example:x' a='2'>again</x:data></message>")
        got = b.wait_for('message', lambda e: e.get('id') == 'post')
        check(body_of(got) == 'after', tostr(got))
        check(got.find('{urn:example:x}data') is not None, 'namespaced child lost: %s' % tostr(got))
        sync(a)
        check(not a.closed and not a.stream_closed, 'the idle stream was closed')
        # and the rebuilt parser is released again when idle again
        start = len(srv.log)
        m = srv.wait_log(r'c2s %s: idle parser released' % re.escape(peer), timeout=25, start=start)
        check(m is not None, 'the rebuilt parser was not released on the next idle period')
        sync(a)
    finally:
        closeall(a, b)


def main():
    srv = None
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, log_level='info')
        srv.log_file = os.path.join(srv.tmp, 'magpied-file.log')
        srv.write_config()
        srv.__enter__()
        srv.add_user('alice', 'alice-pw')
    except Exception as e:
        R.fail('13.00 reload_server_start', e)
        R.exit()
    for i, t in enumerate([t01_reload_log_level, t02_reload_reopens_log_file,
                           t03_broken_config_keeps_running_one,
                           t04_unloadable_certificate_keeps_old], 1):
        R.run('13.%02d %s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('13.09 reload_clean_shutdown', e)

    try:
        with MagpieServer(args.builddir, workers=args.workers,
                          limits={'max_connections': MAXCONN}) as srv:
            srv.add_user('alice', 'alice-pw')
            R.run('13.05 max_connections', t05_max_connections, srv, server=srv)
    except Exception as e:
        R.fail('13.05 max_connections_server', e)

    try:
        with MagpieServer(args.builddir, workers=args.workers) as srv:
            srv.add_user('alice', 'alice-pw')
            srv.add_user('bob', 'bob-pw')
            R.run('13.06 idle_parser_release_and_rebuild', t06_idle_parser_release_and_rebuild,
                  srv, server=srv)
    except Exception as e:
        R.fail('13.06 idle_parser_server', e)
    R.exit()


main()
