#!/usr/bin/python3
"""41: mod_gateway with a device written from the specification alone
(tests/integration/mgwproto.py, not the SDK) and raw XMPP clients:
handshake and presence, a command becomes a COMMAND frame and its ACK a
XEP-0184 receipt, unauthorised senders get forbidden, unknown devices
item-not-found, offline commands arrive in order on reconnect, failure
results and expiry give message errors, uplinks reach the owners, bad
frames close only their own connection, silence closes it, a newer
connection replaces an older one, version negotiation."""

import socket
import struct
import time

from common import (Results, parse_args, online, check, child, closeall, error_condition,
                    expect_error, no_message, body_of)
from gwcommon import (gateway_server, provision, device, send_command, wait_accepted,
                      wait_receipt, ack_frame, dump, GW_DOMAIN, NS_GW)
import mgwproto as P

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def t01_handshake_and_presence(srv):
    a = online(srv, 'alice', 'pw-alice', 'r1')
    try:
        d = device(srv, 'vm-1', srv.secrets['vm-1'])
        check(d.heartbeat == 30 and d.max_body == 1024, (d.heartbeat, d.max_body))
        p = a.wait_for('presence', lambda e: e.get('from') == 'vm-1@' + GW_DOMAIN, timeout=5)
        check(p.get('type') is None, dump(p))
        d.send(P.frame(P.PING))
        check(d.read_until((P.PONG,)) == (P.PONG, b''), 'no PONG')
        d.send(P.frame(P.BYE, b'\x02'))
        check(d.closed(5), 'not closed after BYE')
        p = a.wait_for('presence', lambda e: e.get('from') == 'vm-1@' + GW_DOMAIN, timeout=5)
        check(p.get('type') == 'unavailable', dump(p))
    finally:
        closeall(a)


def t02_command_ack_receipt(srv):
    a = online(srv, 'alice', 'pw-alice', 'r2')
    d = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        send_command(a, 'vm-1', 'vend:slot=4', 'c1', ttl=300)
        cid = wait_accepted(a, 'c1')
        mid, ttl, payload = d.command()
        check(payload == b'vend:slot=4', payload)
        check(mid == cid & 0xffffffff, (mid, cid))
        check(298 <= ttl <= 300, ttl)
        d.send(ack_frame(mid, 0))
        r = wait_receipt(a, 'c1')
        check(r.get('from') == 'vm-1@' + GW_DOMAIN, dump(r))
        # an admin may command any device
        adm = online(srv, 'admin', 'pw-admin', 'x')
        try:
            send_command(adm, 'vm-1', 'admin-says', 'c2')
            mid, _, payload = d.command()
            check(payload == b'admin-says')
            d.send(ack_frame(mid))
            wait_receipt(adm, 'c2')
        finally:
            closeall(adm)
    finally:
        d.close()
        closeall(a)


def t03_forbidden_and_unknown(srv):
    b = online(srv, 'bob', 'pw-bob', 'r')
    d = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        send_command(b, 'vm-1', 'steal', 'f1')
        expect_error(b, 'message', 'forbidden', lambda e: e.get('id') == 'f1')
        send_command(b, 'no-such-device', 'x', 'f2')
        expect_error(b, 'message', 'item-not-found', lambda e: e.get('id') == 'f2')
        try:
            f = d.read(1.0)
        except TimeoutError:
            f = None
        check(f is None, 'the device got %r' % (f,))
    finally:
        d.close()
        closeall(b)


def t04_offline_in_order(srv):
    a = online(srv, 'alice', 'pw-alice', 'r4')
    try:
        for i in range(5):
            send_command(a, 'vm-2', 'cmd-%d' % i, 'o%d' % i)
        for i in range(5):
            wait_accepted(a, 'o%d' % i)
        d = device(srv, 'vm-2', srv.secrets['vm-2'])
        got = []
        for i in range(5):
            mid, _, payload = d.command()
            got.append((mid, payload))
        check([p for _, p in got] == [b'cmd-%d' % i for i in range(5)], got)
        check([m for m, _ in got] == sorted(m for m, _ in got), got)
        for m, _ in got:
            d.send(ack_frame(m))
        for i in range(5):
            wait_receipt(a, 'o%d' % i)
        d.close()
        # nothing is sent again after they were ACKed
        d = device(srv, 'vm-2', srv.secrets['vm-2'])
        try:
            f = d.read(1.0)
        except TimeoutError:
            f = None
        check(f is None, 'ACKed command sent again: %r' % (f,))
        d.close()
    finally:
        closeall(a)


def t05_failure_results(srv):
    a = online(srv, 'alice', 'pw-alice', 'r5')
    d = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        for i, (result, cond) in enumerate([(1, 'not-acceptable'), (2, 'undefined-condition'),
                                            (3, 'feature-not-implemented')]):
            send_command(a, 'vm-1', 'will-fail', 'e%d' % i)
            mid, _, _ = d.command()
            d.send(ack_frame(mid, result))
            expect_error(a, 'message', cond, lambda e, i=i: e.get('id') == 'e%d' % i)
    finally:
        d.close()
        closeall(a)


def t06_expiry(srv):
    a = online(srv, 'alice', 'pw-alice', 'r6')
    try:
        send_command(a, 'vm-3', 'too-late', 'x1', ttl=1)
        wait_accepted(a, 'x1')
        e = expect_error(a, 'message', 'remote-server-timeout', lambda e: e.get('id') == 'x1',
                         timeout=5)
        check(e.get('from') == 'vm-3@' + GW_DOMAIN, dump(e))
        d = device(srv, 'vm-3', srv.secrets['vm-3'])
        try:
            f = d.read(1.0)
        except TimeoutError:
            f = None
        check(f is None, 'an expired command was delivered: %r' % (f,))
        d.close()
    finally:
        closeall(a)


def t07_uplink(srv):
    a = online(srv, 'alice', 'pw-alice', 'r7')
    d = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        d.uplink(77, b'temp=4.5')
        check(d.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 77, 0)), 'no uplink ACK')
        m = a.wait_for('message', lambda e: e.get('from') == 'vm-1@' + GW_DOMAIN and
                       body_of(e) == 'temp=4.5', timeout=5)
        check(child(m, 'uplink', NS_GW).get('id') == '77', dump(m))
        # the same uplink again: ACKed, not routed twice
        d.uplink(77, b'temp=4.5')
        check(d.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 77, 0)), 'no second ACK')
        no_message(a, 1.0, lambda e: body_of(e) == 'temp=4.5')
        # binary payloads arrive base64-encoded
        d.uplink(78, b'\x00\x01\xff')
        d.read_until((P.ACK,))
        m = a.wait_for('message', lambda e: child(e, 'uplink', NS_GW) is not None and
                       child(e, 'uplink', NS_GW).get('id') == '78', timeout=5)
        u = child(m, 'uplink', NS_GW)
        check(u.get('encoding') == 'base64' and u.text == 'AAH/', dump(m))
    finally:
        d.close()
        closeall(a)


def bad(srv, data, code, login=True, dev='vm-4'):
    if login:
        d = device(srv, dev, srv.secrets[dev])
    else:
        d = P.RawDevice(srv.gw_port, dev, srv.secrets[dev])
    d.send(data)
    f = d.read_until((P.ERROR,), 5)
    check(f is not None and f[0] == P.ERROR and f[1][0] == code,
          'sent %s: expected ERROR %d, got %r' % (data.hex(), code, f))
    check(d.closed(5), 'connection not closed after ERROR')


def t08_bad_frames(srv):
    a = online(srv, 'alice', 'pw-alice', 'r8')
    good = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        bad(srv, b'\x00\x00', P.E_MALFORMED)
        bad(srv, b'\x00\x01\x42', P.E_UNKNOWN_TYPE)
        bad(srv, b'\x00\x02\x05\x00', P.E_MALFORMED)
        bad(srv, b'\x00\x05\x08\x00\x00\x00\x07', P.E_MALFORMED)
        bad(srv, b'\x04\x02\x09' + b'\x00' * 1025, P.E_OVERSIZE)
        bad(srv, P.frame(P.COMMAND, b'\x00' * 6), P.E_STATE)
        bad(srv, P.frame(P.UPLINK, b'\x00\x00\x00\x01x'), P.E_STATE, login=False)
        bad(srv, b'\x00\x82\x01' + b'\x00' * 129, P.E_OVERSIZE, login=False)
        bad(srv, P.frame(P.HELLO, b'XX\x01\x01' + b'\x00' * 16 + b'\x04vm-4'), P.E_MALFORMED,
            login=False)
        # a wrong secret: AUTH_FAILED
        d = P.RawDevice(srv.gw_port, 'vm-4', b'wrong secret')
        try:
            d.login()
            check(False, 'logged in with a wrong secret')
        except RuntimeError as e:
            check('ERROR' in str(e) or "(10, b'\\x03" in str(e), str(e))
        d.close()
        # an unknown device: also AUTH_FAILED (after a normal CHALLENGE)
        d = P.RawDevice(srv.gw_port, 'nobody', b'x' * 32)
        try:
            d.login()
            check(False, 'unknown device logged in')
        except RuntimeError as e:
            check("(10, b'\\x03" in str(e), str(e))
        d.close()
        # the good connection is unaffected
        good.send(P.frame(P.PING))
        check(good.read_until((P.PONG,)) == (P.PONG, b''), 'good connection broken')
        send_command(a, 'vm-1', 'still-works', 'g1')
        mid, _, payload = good.command()
        check(payload == b'still-works')
        good.send(ack_frame(mid))
        wait_receipt(a, 'g1')
        st = srv.ctl('status', check=True).stdout
        check('gateway_bad_frames' in st, st)
    finally:
        good.close()
        closeall(a)


def t09_version_negotiation(srv):
    d = P.RawDevice(srv.gw_port, 'vm-1', srv.secrets['vm-1'])
    d.hello(vmin=2, vmax=3)
    f = d.read()
    check(f == (P.ERROR, bytes([P.E_VERSION]) + b'1-1'), f)
    check(d.closed(5))
    d = P.RawDevice(srv.gw_port, 'vm-1', srv.secrets['vm-1'])
    d.hello(vmin=1, vmax=9)
    f = d.read()
    check(f[0] == P.CHALLENGE and f[1][0] == 1 and len(f[1]) == 17, f)
    d.close()


def t10_replaced(srv):
    a = online(srv, 'alice', 'pw-alice', 'r10')
    d1 = device(srv, 'vm-1', srv.secrets['vm-1'])
    try:
        d2 = device(srv, 'vm-1', srv.secrets['vm-1'])
        f = d1.read_until((P.ERROR,), 5)
        check(f is not None and f[1][0] == P.E_REPLACED, f)
        check(d1.closed(5))
        send_command(a, 'vm-1', 'to-the-new-one', 'n1')
        mid, _, payload = d2.command()
        check(payload == b'to-the-new-one')
        d2.send(ack_frame(mid))
        wait_receipt(a, 'n1')
        d2.close()
    finally:
        d1.close()
        closeall(a)


def t11_probe(srv):
    a = online(srv, 'alice', 'pw-alice', 'r11')
    try:
        a.send("<presence to='vm-5@%s' type='probe'/>" % GW_DOMAIN)
        p = a.wait_for('presence', lambda e: e.get('from') == 'vm-5@' + GW_DOMAIN, timeout=5)
        check(p.get('type') == 'unavailable', dump(p))
        d = device(srv, 'vm-5', srv.secrets['vm-5'])
        a.wait_for('presence', lambda e: e.get('from') == 'vm-5@' + GW_DOMAIN and
                   e.get('type') is None, timeout=5)
        a.send("<presence to='vm-5@%s' type='probe'/>" % GW_DOMAIN)
        p = a.wait_for('presence', lambda e: e.get('from') == 'vm-5@' + GW_DOMAIN, timeout=5)
        check(p.get('type') is None, dump(p))
        d.close()
    finally:
        closeall(a)


def t12_provisioned_while_running(srv):
    a = online(srv, 'alice', 'pw-alice', 'r12')
    try:
        secret = provision(srv, 'late-1', 'alice@localhost')
        send_command(a, 'late-1', 'hello-late', 'l1')
        wait_accepted(a, 'l1')
        d = device(srv, 'late-1', secret)
        mid, _, payload = d.command()
        check(payload == b'hello-late')
        d.send(ack_frame(mid))
        wait_receipt(a, 'l1')
        d.close()
    finally:
        closeall(a)


def t15_order_while_record_is_read(srv):
    """Commands to a device provisioned while running (its record is read
    from storage on the first one) keep their order even when the read
    completes in the middle of the burst: later commands wait behind it."""
    a = online(srv, 'alice', 'pw-alice', 'r15')
    try:
        secret = provision(srv, 'late-2', 'alice@localhost')
        # gaps from 0 to ~1 ms, around the time the record read takes
        for i in range(40):
            send_command(a, 'late-2', 'ord-%02d' % i, 'q%d' % i)
            time.sleep(0.00005 * (i % 20))
        for i in range(40):
            wait_accepted(a, 'q%d' % i)
        d = device(srv, 'late-2', secret)
        got = []
        for i in range(40):
            mid, _, payload = d.command()
            got.append(payload)
            d.send(ack_frame(mid))
        check(got == [b'ord-%02d' % i for i in range(40)], got)
        d.close()
    finally:
        closeall(a)


def t16_tls_listener(srv):
    """With tls = true the device listener speaks TLS from the first byte:
    a device logs in over TLS and gets its command; a plain-text HELLO gets
    nothing."""
    a = online(srv, 'alice', 'pw-alice', 'r16')
    try:
        d = P.RawDevice(srv.gw_port, 'vm-1', srv.secrets['vm-1'], tls=True)
        d.login()
        check(d.s.version().startswith('TLS'), d.s.version())
        send_command(a, 'vm-1', 'over-tls', 't16')
        mid, _, payload = d.command()
        check(payload == b'over-tls', payload)
        d.send(ack_frame(mid))
        wait_receipt(a, 't16')
        d.close()
        plain = P.RawDevice(srv.gw_port, 'vm-2', srv.secrets['vm-2'])
        try:
            plain.login()
            ok = True
        except Exception:
            ok = False
        check(not ok, 'a plain-text device logged in on the TLS listener')
    finally:
        closeall(a)


def t14_magpiectl_device(srv):
    p = srv.ctl('device', 'list', GW_DOMAIN, check=True)
    check(p.stdout.split() == ['late-1', 'late-2', 'vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5'],
          p.stdout)
    p = srv.ctl('device', 'show', 'vm-1@' + GW_DOMAIN, check=True)
    check(p.stdout.split() == ['vm-1@' + GW_DOMAIN, srv.secrets['vm-1'].hex(), 'alice@localhost'],
          p.stdout)
    p = srv.ctl('device', 'add', 'vm-1@' + GW_DOMAIN)
    check(p.returncode == 1 and 'already exists' in p.stderr, (p.returncode, p.stderr))
    p = srv.ctl('device', 'add', 'Bad!@' + GW_DOMAIN)
    check(p.returncode == 2, (p.returncode, p.stderr))
    p = srv.ctl('device', 'add', 'fixed-1@' + GW_DOMAIN, '--secret', '00' * 16, check=True)
    check(p.stdout.split() == ['fixed-1@' + GW_DOMAIN, '00' * 16], p.stdout)
    device(srv, 'fixed-1', bytes(16)).close()
    # a deleted device can no longer log in
    srv.ctl('device', 'del', 'late-1@' + GW_DOMAIN, check=True)
    d = P.RawDevice(srv.gw_port, 'late-1', b'x')
    try:
        d.login()
        check(False, 'a deleted device logged in')
    except RuntimeError as e:
        check("(10, b'\\x03" in str(e), str(e))
    d.close()
    p = srv.ctl('device', 'del', 'late-1@' + GW_DOMAIN)
    check(p.returncode == 1, p.returncode)


def t13_silence(srv2):
    a = online(srv2, 'alice', 'pw-alice', 'r13')
    try:
        d = device(srv2, 'vm-1', srv2.secrets['vm-1'])
        check(d.heartbeat == 1, d.heartbeat)
        a.wait_for('presence', lambda e: e.get('from') == 'vm-1@' + GW_DOMAIN and
                   e.get('type') is None, timeout=5)
        t0 = time.time()
        f = d.read_until((P.ERROR,), 6)  # answers PINGs but sends none itself
        dt = time.time() - t0
        check(f is not None and f[1][0] == P.E_TIMEOUT, f)
        check(2.0 <= dt <= 4.5, 'closed after %.1fs (heartbeat 1 s: 2.5-3 s expected)' % dt)
        check(d.closed(3))
        a.wait_for('presence', lambda e: e.get('from') == 'vm-1@' + GW_DOMAIN and
                   e.get('type') == 'unavailable', timeout=5)
        # a device that keeps pinging stays
        d = device(srv2, 'vm-1', srv2.secrets['vm-1'])
        for _ in range(5):
            time.sleep(0.8)
            d.send(P.frame(P.PING))
            check(d.read_until((P.PONG,), 3) == (P.PONG, b''), 'closed although it pinged')
        d.close()
        # a connection that never authenticates is closed too (handshake_timeout 2)
        s = socket.create_connection(('127.0.0.1', srv2.gw_port))
        c = P.Conn(s)
        f = c.read(5)
        check(f is not None and f[0] == P.ERROR and f[1][0] == P.E_TIMEOUT, f)
        c.close()
    finally:
        closeall(a)


def setup(srv):
    srv.add_user('alice', 'pw-alice')
    srv.add_user('bob', 'pw-bob')
    srv.add_user('admin', 'pw-admin')
    srv.secrets = {}
    for dev in ('vm-1', 'vm-2', 'vm-3', 'vm-4', 'vm-5'):
        srv.secrets[dev] = provision(srv, dev, 'alice@localhost')


TESTS = [t01_handshake_and_presence, t02_command_ack_receipt, t03_forbidden_and_unknown,
         t04_offline_in_order, t05_failure_results, t06_expiry, t07_uplink, t08_bad_frames,
         t09_version_negotiation, t10_replaced, t11_probe, t12_provisioned_while_running,
         t15_order_while_record_is_read, t14_magpiectl_device]


def run(name, heartbeat, extra, tests, first):
    try:
        srv = gateway_server(args, heartbeat=heartbeat, extra=extra)
        srv.__enter__()
    except Exception as e:
        R.fail('41.00 gateway_%s_server_start' % name, e)
        return
    try:
        setup(srv)
        for i, t in enumerate(tests, first):
            n = int(t.__name__[1:3])
            R.run('41.%02d gateway_raw_%s' % (n, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('41.00 gateway_%s_setup' % name, e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('41.99 gateway_%s_clean_shutdown' % name, e)


run('main', 30, '', TESTS, 1)
run('silence', 1, 'handshake_timeout = 2;', [t13_silence], 13)
run('tls', 30, 'tls = true;', [t16_tls_listener], 16)
R.exit()
