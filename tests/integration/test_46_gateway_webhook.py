#!/usr/bin/python3
"""46: the fallback webhook: a command that expires without an ACK makes
magpied POST the configured URL (a tiny HTTP server of the test on
loopback) once, with the command's id, device, idempotency key, an
Idempotency-Key header and an HMAC signature; a receiver that fails first
gets retries until it answers 2xx, and then never again; an ACKed command
fires nothing; a restart does not fire a delivered hook again."""

import hashlib
import hmac
import json
import time

from common import Results, parse_args, check
from gwcommon import (gateway_server, provision, device, post, status, Receiver, wait_posts,
                      TOKEN, HKEY)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def t01_fires_once(srv, rx):
    secret = provision(srv, 'hk-1')
    d = device(srv, 'hk-1', secret)
    st, r, _ = post(srv, 'hk-1', {'payload': 'unlock', 'ttl': 1, 'idempotency_key': 'ord-1'})
    check(st == 201, (st, r))
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'unlock', cmd)
    # no ACK: it expires after 1 s
    posts = wait_posts(rx, r['id'], 1)
    path, headers, body = posts[0]
    doc = json.loads(body)
    check(path == '/hook?shop=1', path)
    check(doc['event'] == 'command.expired' and doc['device'] == 'hk-1' and doc['sent'] is True
          and doc['idempotency_key'] == 'ord-1' and doc['origin'] == 'http', doc)
    check(headers.get('Idempotency-Key') == r['id'], headers)
    want = 'sha256=' + hmac.new(HKEY.encode(), body, hashlib.sha256).hexdigest()
    check(headers.get('X-Magpie-Signature') == want, headers)
    check(status(srv, r['id'])['state'] == 'expired', 'not expired')
    time.sleep(2.5)
    check(len(rx.for_id(r['id'])) == 1, 'fired %d times' % len(rx.for_id(r['id'])))
    # a late ACK changes nothing
    d.ack(cmd[0])
    time.sleep(0.5)
    check(len(rx.for_id(r['id'])) == 1, 'fired again after a late ACK')
    d.close()


def t02_retries_then_once(srv, rx):
    provision(srv, 'hk-2')  # offline: never sent
    st, r, _ = post(srv, 'hk-2', {'payload': 'x', 'ttl': 1})
    check(st == 201, (st, r))
    rx.fail[r['id']] = 2
    posts = wait_posts(rx, r['id'], 3, timeout=15)  # 500, 500 (1 s, 2 s later), 200
    check(json.loads(posts[-1][2])['sent'] is False, posts[-1])
    time.sleep(5)
    check(len(rx.for_id(r['id'])) == 3, 'POSTed %d times' % len(rx.for_id(r['id'])))
    # a restart does not fire it again
    srv.restart()
    st, _, _ = post(srv, 'hk-2', {'payload': 'wake'})  # starts the gateway's timer
    time.sleep(2)
    check(len(rx.for_id(r['id'])) == 3, 'fired again after restart')


def t03_acked_fires_nothing(srv, rx):
    secret = provision(srv, 'hk-3')
    d = device(srv, 'hk-3', secret)
    st, r, _ = post(srv, 'hk-3', {'payload': 'ok', 'ttl': 1})
    cmd = d.command()
    d.ack(cmd[0])
    time.sleep(2.5)
    check(rx.for_id(r['id']) == [], rx.for_id(r['id']))
    check(status(srv, r['id'])['state'] == 'acked', 'not acked')
    d.close()


TESTS = [t01_fires_once, t02_retries_then_once, t03_acked_fires_nothing]


def main():
    rx = Receiver()
    try:
        srv = gateway_server(args, extra='api_tokens = "%s"; api_hmac_key = "%s"; '
                             'webhook_url = "http://127.0.0.1:%d/hook?shop=1"; '
                             'webhook_attempts = 4;' % (TOKEN, HKEY, rx.port), http=True)
        srv.__enter__()
    except Exception as e:
        R.fail('46.00 gateway_webhook_server_start', e)
        R.exit()
    try:
        for i, t in enumerate(TESTS, 1):
            R.run('46.%02d gateway_webhook_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, rx,
                  server=srv)
    except Exception as e:
        R.fail('46.00 gateway_webhook_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('46.99 gateway_webhook_clean_shutdown', e)
    rx.stop()
    R.exit()


main()
