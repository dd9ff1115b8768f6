#!/usr/bin/python3
"""07: a libstrophe (C) client: logs in over STARTTLS and over direct TLS
(SCRAM-SHA-256 chosen by libstrophe), sends a message to a raw-client peer,
pings the server; and receives a message; a wrong password fails with a
SASL <not-authorized/>. Its sanitizer output fails the test."""

import os

from common import (MagpieServer, Results, parse_args, check, tostr, closeall,
                    online, body_of)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def strophe(srv, *extra, timeout=60):
    exe = os.path.join(srv.builddir, 'tests', 'integration', 'strophe_client')
    check(os.path.exists(exe), '%s not built (make tests/integration/strophe_client)' % exe)
    # its sanitizer output (it is built with the tree's flags) fails the test
    return srv.run_tool([exe, '--host', '127.0.0.1'] + list(extra), timeout=timeout)


def lines(p, key):
    return [l.split(' ', 1)[1] if ' ' in l else '' for l in p.stdout.splitlines() if l.split(' ')[0] == key]


def run_case(srv, direct):
    bob = online(srv, 'bob', 'bob-pw', 'peer')
    try:
        port = srv.tls_port if direct else srv.c2s_port
        res = 'strophe-tls' if direct else 'strophe-starttls'
        extra = ['--direct-tls'] if direct else []
        body = 'from libstrophe %s' % res
        p = strophe(srv, '--jid', 'alice@localhost/' + res, '--password', 'alice-pw',
                    '--port', str(port), '--to', 'bob@localhost/peer', '--body', body, '--ping', *extra)
        check(p.returncode == 0, 'strophe_client exit %d\nstdout: %s\nstderr: %s'
              % (p.returncode, p.stdout, p.stderr[-2000:]))
        check(lines(p, 'MECH') == ['SCRAM-SHA-256'], 'mechanism used: %s' % lines(p, 'MECH'))
        check(lines(p, 'BOUND') == ['alice@localhost/' + res], 'bound: %s' % lines(p, 'BOUND'))
        check(lines(p, 'PING') == ['ok'], 'ping: %s' % lines(p, 'PING'))
        m = bob.wait_for('message', lambda e: body_of(e) == body)
        check(m.get('from') == 'alice@localhost/' + res, tostr(m))
    finally:
        closeall(bob)


def t01_strophe_starttls(srv):
    run_case(srv, False)


def t02_strophe_direct_tls(srv):
    run_case(srv, True)


def t03_strophe_receives(srv):
    import threading
    out = {}

    def client():
        out['p'] = strophe(srv, '--jid', 'alice@localhost/recv', '--password', 'alice-pw',
                           '--port', str(srv.c2s_port), '--wait-message', '--timeout', '20')
    th = threading.Thread(target=client)
    th.start()
    bob = online(srv, 'bob', 'bob-pw', 'sender')
    try:
        # retry until the strophe session is bound
        import time
        deadline = time.time() + 20
        delivered = False
        while time.time() < deadline and not delivered:
            iid = bob.next_id()
            bob.message('alice@localhost/recv', 'to strophe', id_=iid)
            err = bob.wait_for('message', lambda e: e.get('id') == iid and e.get('type') == 'error',
                               timeout=0.5, raise_=False)
            delivered = err is None
        th.join(30)
        p = out.get('p')
        check(p is not None, 'strophe_client did not finish')
        check(p.returncode == 0, 'exit %d: %s %s' % (p.returncode, p.stdout, p.stderr[-2000:]))
        check(any(l.startswith('bob@localhost/sender to strophe') for l in lines(p, 'MESSAGE')),
              'received: %s' % lines(p, 'MESSAGE'))
    finally:
        closeall(bob)


def t04_strophe_wrong_password(srv):
    p = strophe(srv, '--jid', 'alice@localhost/bad', '--password', 'wrong', '--port', str(srv.c2s_port),
                '--ping', '--timeout', '20')
    check(p.returncode != 0, 'login with a wrong password succeeded: %s' % p.stdout)
    check(not lines(p, 'BOUND'), 'bound with a wrong password')
    # an authentication failure, not any failure (refused connection, TLS, timeout)
    # (libstrophe may try a second mechanism: every attempt must fail so)
    af = lines(p, 'AUTHFAIL')
    check(af and set(af) == {'not-authorized'},
          'expected a SASL <failure><not-authorized/>, got AUTHFAIL %s\nstdout: %s\nstderr: %s'
          % (lines(p, 'AUTHFAIL'), p.stdout, p.stderr[-1500:]))


TESTS = [t01_strophe_starttls, t02_strophe_direct_tls, t03_strophe_receives, t04_strophe_wrong_password]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers)
        srv.__enter__()
    except Exception as e:
        R.fail('07.00 strophe_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        for i, t in enumerate(TESTS, 1):
            R.run('07.%02d strophe_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('07.00 strophe_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('07.99 strophe_clean_shutdown', e)
    R.exit()


main()
