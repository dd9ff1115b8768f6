#!/usr/bin/python3
"""45: the gateway's HTTP trigger API on the server's HTTP listener:
the same idempotency key three times (one after the other, then two at
once) gives one command id and the device gets one COMMAND; bearer token
and HMAC signature, wrong ones 401; bad JSON and bad fields 400; unknown
device and command 404; wrong method 405; the lifecycle (queued -> sent ->
acked / failed) through GET and `magpiectl device command`; accepted
commands survive a restart with their idempotency key."""

import base64
import hashlib
import hmac
import json
import re
import threading

import socket
import time

from common import Results, parse_args, check
from gwcommon import (gateway_server, provision, device, request, post, status, GW_DOMAIN,
                      TOKEN, HKEY)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

def no_command(d, timeout=1.5):
    """True if no COMMAND arrives within timeout."""
    try:
        return d.command(timeout=timeout) is None
    except TimeoutError:
        return True


def t01_idempotent(srv):
    secret = provision(srv, 'pay-1', 'alice@localhost')
    d = device(srv, 'pay-1', secret)
    body = {'payload': 'vend:slot=4', 'ttl': 60, 'idempotency_key': 'order-8812'}
    st, r1, hd = post(srv, 'pay-1', body)
    check(st == 201 and r1['duplicate'] is False, (st, r1))
    check(hd.get('Location') == '/gateway/v1/commands/%s' % r1['id'], hd)
    st, r2, _ = post(srv, 'pay-1', body)
    check(st == 200 and r2['id'] == r1['id'] and r2['duplicate'] is True, (st, r2))
    st, r3, _ = post(srv, 'pay-1', body)
    check(st == 200 and r3['id'] == r1['id'], (st, r3))
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'vend:slot=4', cmd)
    check(cmd[0] == int(r1['id']) & 0xffffffff, (cmd, r1))
    d.ack(cmd[0])
    check(no_command(d), 'a second COMMAND arrived')
    # two at once with a new key: both get the same id, one command
    body2 = {'payload': base64.b64encode(b'\x00\x01bin').decode(), 'encoding': 'base64',
             'idempotency_key': 'order-8813'}
    out = []
    ths = [threading.Thread(target=lambda: out.append(post(srv, 'pay-1', body2)))
           for _ in range(2)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    ids = set(o[1]['id'] for o in out)
    codes = sorted(o[0] for o in out)
    check(len(ids) == 1 and codes == [200, 201], out)
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'\x00\x01bin', cmd)
    d.ack(cmd[0])
    check(no_command(d), 'a second COMMAND arrived (concurrent keys)')
    d.close()
    # the key is tied to its device
    provision(srv, 'pay-2', 'alice@localhost')
    st, r, _ = post(srv, 'pay-2', body)
    check(st == 409, (st, r))


def t02_auth(srv):
    provision(srv, 'auth-1')
    body = json.dumps({'payload': 'x'})
    st, r, hd = post(srv, 'auth-1', body, token='wrong-token-0123456789')
    check(st == 401 and r['error'] == 'unauthorized', (st, r))
    check('Bearer' in hd.get('WWW-Authenticate', ''), hd)
    st, r, _ = post(srv, 'auth-1', body, token=None)
    check(st == 401, (st, r))
    sig = 'sha256=' + hmac.new(HKEY.encode(), body.encode(), hashlib.sha256).hexdigest()
    st, r, _ = post(srv, 'auth-1', body, token=None, headers={'X-Magpie-Signature': sig})
    check(st == 201, (st, r))
    bad = 'sha256=' + hmac.new(b'other', body.encode(), hashlib.sha256).hexdigest()
    st, r, _ = post(srv, 'auth-1', body, token=None, headers={'X-Magpie-Signature': bad})
    check(st == 401, (st, r))
    # a signature of another body does not pass
    st, r, _ = post(srv, 'auth-1', json.dumps({'payload': 'y'}), token=None,
                    headers={'X-Magpie-Signature': sig})
    check(st == 401, (st, r))
    st, r, _ = request(srv, 'GET', '/gateway/v1/commands/1', token='nope-nope-nope-nope')
    check(st == 401, (st, r))


def t03_bad_requests(srv):
    provision(srv, 'bad-1')
    for body, what in [('{not json', 'bad-json'), ('[1,2]', 'bad-json'), ('', 'bad-json'),
                       ('{"ttl": 5}', 'bad-request'),
                       ('{"payload": 5}', 'bad-request'),
                       ('{"payload": "x", "ttl": "soon"}', 'bad-request'),
                       ('{"payload": "x", "ttl": -1}', 'bad-request'),
                       ('{"payload": "!!!", "encoding": "base64"}', 'bad-request'),
                       ('{"payload": "x", "encoding": "rot13"}', 'bad-request'),
                       ('{"payload": "x", "idempotency_key": ""}', 'bad-request')]:
        st, r, _ = post(srv, 'bad-1', body)
        check(st == 400 and isinstance(r, dict) and r.get('error') == what, (body, st, r))
    st, r, _ = post(srv, 'bad-1', {'payload': 'x' * 5000})
    check(st == 413, (st, r))


def t04_not_found(srv):
    st, r, _ = post(srv, 'no-such-device', {'payload': 'x'})
    check(st == 404 and r['error'] == 'no-such-device', (st, r))
    st, r, _ = request(srv, 'GET', '/gateway/v1/commands/999999999')
    check(st == 404, (st, r))
    st, r, _ = request(srv, 'GET', '/gateway/v1/commands/abc')
    check(st == 404, (st, r))
    st, r, _ = request(srv, 'GET', '/gateway/v1/devices/x/commands')
    check(st == 405, (st, r))
    st, r, _ = request(srv, 'GET', '/gateway/v1/elsewhere')
    check(st == 404, (st, r))
    st, r, _ = request(srv, 'GET', '/not-a-route')
    check(st == 404, (st, r))


def t05_lifecycle(srv):
    secret = provision(srv, 'life-1')
    st, r, _ = post(srv, 'life-1', {'payload': 'first', 'ttl': 120})
    check(st == 201, (st, r))
    cid = r['id']
    s = status(srv, cid)
    check(s['state'] == 'queued' and s['device'] == 'life-1' and s['queued_at'] and
          s['sent_at'] is None and s['ended_at'] is None and s['result'] is None, s)
    p = srv.ctl('device', 'command', GW_DOMAIN, cid, check=True).stdout
    check(re.search(r'command %s device life-1@%s state pending' % (cid, GW_DOMAIN), p), p)
    d = device(srv, 'life-1', secret)
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'first', cmd)
    s = status(srv, cid)
    check(s['state'] == 'sent' and s['sent_at'] and s['ended_at'] is None, s)
    d.ack(cmd[0])
    for _ in range(50):
        s = status(srv, cid)
        if s['state'] != 'sent':
            break
    check(s['state'] == 'acked' and s['result'] == 0 and s['ended_at'] and s['sent_at'], s)
    p = srv.ctl('device', 'command', GW_DOMAIN, cid, check=True).stdout
    check(re.search(r'command %s device life-1@%s state acked result 0 queued \S+Z sent \S+Z '
                    r'ended \S+Z' % (cid, GW_DOMAIN), p), p)
    # a failure result
    st, r, _ = post(srv, 'life-1', {'payload': 'second'})
    cmd = d.command()
    d.ack(cmd[0], 2)
    for _ in range(50):
        s = status(srv, r['id'])
        if s['state'] != 'sent':
            break
    check(s['state'] == 'failed' and s['result'] == 2, s)
    d.close()
    p = srv.ctl('device', 'command', GW_DOMAIN, '424242424')
    check(p.returncode == 1 and 'no such command' in p.stderr, (p.returncode, p.stderr))


def t06_restart(srv):
    provision(srv, 'rs-1')
    st, r, _ = post(srv, 'rs-1', {'payload': 'kept', 'idempotency_key': 'rs-key'})
    check(st == 201, (st, r))
    srv.restart()
    st, r2, _ = post(srv, 'rs-1', {'payload': 'kept', 'idempotency_key': 'rs-key'})
    check(st == 200 and r2['id'] == r['id'], (st, r2))
    check(status(srv, r['id'])['state'] == 'queued', 'lost after restart')


TESTS = [t01_idempotent, t02_auth, t03_bad_requests, t04_not_found, t05_lifecycle, t06_restart]


def t07_address_limits():
    """The HTTP listener counts against the per-address connection limit:
    with 2 allowed, a third simultaneous connection is closed unanswered,
    and connections that end give their place back."""
    with gateway_server(args, extra='api_tokens = "%s";' % TOKEN, http=True,
                        limits={'max_connections_per_address': 2}) as srv:
        time.sleep(1.0)  # the fixture's own readiness probes have closed by now
        req = b'GET /gateway/v1/commands/1 HTTP/1.1\r\nHost: x\r\n\r\n'
        held = [socket.create_connection(('127.0.0.1', srv.http_port), timeout=3)
                for _ in range(2)]
        try:
            for s in held:  # both served, and kept open (keep-alive)
                s.sendall(req)
                check(s.recv(100).startswith(b'HTTP/1.1 401'), 'a held connection was not served')
            third = socket.create_connection(('127.0.0.1', srv.http_port), timeout=3)
            third.sendall(req)
            try:
                got = third.recv(100)
            except (socket.timeout, ConnectionResetError):
                got = b''
            third.close()
            check(got == b'', 'a third connection from the address was served: %r' % got)
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        status, _, _ = request(srv, 'GET', '/gateway/v1/commands/999999')
        check(status == 404, 'after the others closed: %s' % status)


def main():
    try:
        srv = gateway_server(args, extra='api_tokens = "%s"; api_hmac_key = "%s"; '
                                         'max_payload = 1018;' % (TOKEN, HKEY), http=True)
        srv.__enter__()
    except Exception as e:
        R.fail('45.00 gateway_http_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'pw-alice')
        for i, t in enumerate(TESTS, 1):
            R.run('45.%02d gateway_http_%s' % (i, t.__name__.split('_', 1)[1]), t, srv,
                  server=srv)
    except Exception as e:
        R.fail('45.00 gateway_http_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('45.99 gateway_http_clean_shutdown', e)
    R.run('45.07 gateway_http_address_limits', t07_address_limits)
    R.exit()


main()
