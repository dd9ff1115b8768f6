#!/usr/bin/python3
"""16: a module serves its own listener with its own framing on the same
worker/event model as the client ports: mod_linetest reads lines
"JID text" on its port and routes each as a message; a logged-in client
receives them. Partial lines wait for the rest; a bad line gets an error
line and the connection stays; "quit" closes; the server shuts down
cleanly with module connections open."""

import socket
import ssl
import time

from common import (MagpieServer, Results, parse_args, online, body_of, check, closeall,
                    tostr)
from magpie_fixture import free_port

args = parse_args()
R = Results('[workers=%d]' % args.workers)
PORT = free_port()


def line_conn():
    s = socket.create_connection(('127.0.0.1', PORT), timeout=5)
    return s, s.makefile('rb')


def t01_lines_become_messages(srv):
    a = online(srv, 'alice', 'pw-alice', 'desk')
    s, f = line_conn()
    try:
        s.sendall(b'alice@localhost/desk hello from a line\n')
        check(f.readline() == b'ok\n', 'no ok for the line')
        m = a.wait_for('message', lambda e: body_of(e) == 'hello from a line', timeout=5)
        check(m.get('from') == 'localhost', tostr(m))
        # a line in pieces, and two lines in one packet, in order
        s.sendall(b'alice@localhost/desk one')
        time.sleep(0.2)
        s.sendall(b' piece\nalice@localhost/desk second\n')
        check(f.readline() == b'ok\n' and f.readline() == b'ok\n', 'no ok for the lines')
        m1 = a.wait_for('message', lambda e: body_of(e) in ('one piece', 'second'), timeout=5)
        m2 = a.wait_for('message', lambda e: body_of(e) in ('one piece', 'second'), timeout=5)
        check((body_of(m1), body_of(m2)) == ('one piece', 'second'),
              'out of order: %s, %s' % (body_of(m1), body_of(m2)))
        # a bad line is answered, and the connection stays usable
        s.sendall(b'not-a-line\n')
        check(f.readline().startswith(b'error:'), 'no error line')
        s.sendall(b'quit\n')
        check(f.readline() == b'bye\n', 'no bye')
        check(f.readline() == b'', 'the connection stayed open after quit')
    finally:
        s.close()
        closeall(a)


def t02_many_connections_across_workers(srv):
    a = online(srv, 'alice', 'pw-alice', 'many')
    conns = [line_conn() for _ in range(8)]
    try:
        for i, (s, _) in enumerate(conns):
            s.sendall(b'alice@localhost/many n%d\n' % i)
        for s, f in conns:
            check(f.readline() == b'ok\n', 'no ok')
        got = set()
        for _ in conns:
            m = a.wait_for('message', lambda e: (body_of(e) or '').startswith('n'), timeout=5)
            got.add(body_of(m))
        check(got == {'n%d' % i for i in range(8)}, 'got %s' % sorted(got))
    finally:
        for s, _ in conns:
            s.close()
        closeall(a)


def t03_shutdown_with_open_connections(srv):
    # left open on purpose: the server must end them at SIGTERM (checked by
    # the clean shutdown below, under the sanitizers)
    srv.kept = [line_conn() for _ in range(3)]
    for s, f in srv.kept:
        s.sendall(b'alice@localhost/nobody x\n')
        check(f.readline() == b'ok\n', 'no ok')


TESTS = [t01_lines_become_messages, t02_many_connections_across_workers,
         t03_shutdown_with_open_connections]


def t04_tls_listener_and_address_limits():
    """A module listener with TLS from the first byte, and the per-address
    connection limit applied to module listeners too."""
    port = free_port()
    mod = '{ name = "linetest"; port = %d; tls = true; }' % port
    with MagpieServer(args.builddir, workers=args.workers, modules=['disco', 'ping', mod],
                      limits={'max_connections_per_address': 3}) as srv:
        srv.add_user('alice', 'pw-alice')
        a = online(srv, 'alice', 'pw-alice', 'tls')  # one of the address's 3
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conns = []
        try:
            s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=5))
            conns.append(s)
            check(s.version() is not None and s.version().startswith('TLS'), 'no TLS')
            f = s.makefile('rb')
            s.sendall(b'alice@localhost/tls over tls\n')
            check(f.readline() == b'ok\n', 'no ok over TLS')
            m = a.wait_for('message', lambda e: body_of(e) == 'over tls', timeout=5)
            check(m is not None, 'no message')
            # a plain-text client gets no answer from a TLS port
            p = socket.create_connection(('127.0.0.1', port), timeout=3)
            conns.append(p)
            p.sendall(b'alice@localhost/tls plain\n')
            try:
                got = p.recv(100)
            except socket.timeout:
                got = b''
            check(b'ok' not in got, 'plain text accepted on a TLS port: %r' % got)
            p.close()
            conns.remove(p)
            time.sleep(0.3)
            # the address now holds 2 (client + TLS line); one more is allowed,
            # the next is closed before the module sees it
            s2 = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=5))
            conns.append(s2)
            refused = False
            try:
                s3 = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=5))
                conns.append(s3)
                s3.sendall(b'alice@localhost/tls over the limit\n')
                refused = s3.makefile('rb').readline() == b''
            except (ssl.SSLError, OSError):
                refused = True
            check(refused, 'a 4th connection from the address was served')
            out = srv.ctl('status', check=True).stdout
            st = dict(line.split(' ', 1) for line in out.splitlines() if ' ' in line)
            check(int(st.get('connections_refused_address', 0)) >= 1, 'not counted: %s' % out)
        finally:
            for c in conns:
                c.close()
            closeall(a)


def main():
    mod = '{ name = "linetest"; port = %d; }' % PORT
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', mod])
        srv.__enter__()
    except Exception as e:
        R.fail('16.00 module_listener_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'pw-alice')
        for i, t in enumerate(TESTS, 1):
            R.run('16.%02d module_listener_%s' % (i, t.__name__.split('_', 1)[1]), t, srv,
                  server=srv)
    except Exception as e:
        R.fail('16.00 module_listener_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('16.99 module_listener_clean_shutdown', e)
    for s, _ in getattr(srv, 'kept', []):
        s.close()
    R.run('16.04 module_listener_tls_and_address_limits', t04_tls_listener_and_address_limits)
    R.exit()


main()
