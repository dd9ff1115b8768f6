#!/usr/bin/python3
"""48: bounded retention of ended commands (status_retention = 4 s): the
status record and the idempotency key of an ACKed command are kept during
the retention (GET answers 'acked', the same key answers the same command)
and removed after it (GET answers 404 no-such-command, the same key
creates a new command, sent to the device); the key of a command still
pending is kept however old; the status record of a command ended behind
one still pending is kept (its row is still in the queue); the pruned
records are counted in `magpiectl status`; after kill -9 and a restart
the device gets only the pending command, nothing that ended; a delivered
fallback webhook record goes after the retention and is not posted again
after a restart. Runs on the
storage of $MAGPIE_TEST_STORAGE (run-all.sh: SQLite, then MariaDB)."""

import re
import time

from common import Results, parse_args, check
from gwcommon import (gateway_server, provision, device, request, post, status, Receiver,
                      wait_posts, TOKEN)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
RETENTION = 4
SECRETS = {}


def no_command(d, timeout=1.5):
    try:
        c = d.command(timeout=timeout)
    except TimeoutError:
        return True
    return c is None


def get(srv, cid):
    st, r, _ = request(srv, 'GET', '/gateway/v1/commands/%s' % cid)
    return st, r


def wait_state(srv, cid, state):
    for _ in range(100):
        s = status(srv, cid)
        if s['state'] == state:
            return s
        time.sleep(0.05)
    check(False, 'command %s never reached %s: %s' % (cid, state, s))


def counter(srv, name):
    out = srv.ctl('status', check=True).stdout
    m = re.search(r'^%s (\d+)$' % re.escape(name), out, re.M)
    check(m is not None, '%s not in magpiectl status: %s' % (name, out))
    return int(m.group(1))


def t01_pruned_after_retention(srv):
    secret = SECRETS['ret-1'] = provision(srv, 'ret-1')
    d = device(srv, 'ret-1', secret)
    body = {'payload': 'vend:1', 'ttl': 60, 'idempotency_key': 'order-1'}
    st, r1, _ = post(srv, 'ret-1', body)
    check(st == 201 and r1['duplicate'] is False, (st, r1))
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'vend:1', cmd)
    d.ack(cmd[0])
    wait_state(srv, r1['id'], 'acked')
    ended = time.time()
    # during the retention: the status and the key are there
    time.sleep(RETENTION - 1.5)
    st, r = get(srv, r1['id'])
    check(st == 200 and r['state'] == 'acked', 'pruned too early: %s %s' % (st, r))
    st, r2, _ = post(srv, 'ret-1', body)
    check(st == 200 and r2['id'] == r1['id'] and r2['duplicate'] is True, (st, r2))
    check(no_command(d, 0.5), 'the duplicate reached the device')
    # after it: both gone
    deadline = ended + RETENTION + 10
    while time.time() < deadline:
        st, r = get(srv, r1['id'])
        if st == 404:
            break
        time.sleep(0.25)
    check(st == 404 and r.get('error') == 'no-such-command', (st, r))
    check(time.time() - ended >= RETENTION, 'pruned before the retention')
    p = srv.ctl('device', 'command', 'devices.localhost', r1['id'])
    check(p.returncode == 1 and 'no such command' in p.stderr, (p.returncode, p.stderr))
    st, r3, _ = post(srv, 'ret-1', body)
    check(st == 201 and r3['duplicate'] is False and r3['id'] != r1['id'],
          'same key after the retention: %s %s' % (st, r3))
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'vend:1', 'new command not sent: %r' % (cmd,))
    d.ack(cmd[0])
    wait_state(srv, r3['id'], 'acked')
    d.close()
    check(counter(srv, 'gateway_pruned_status') >= 1, 'pruned_status not counted')
    check(counter(srv, 'gateway_pruned_idempotency_keys') >= 1, 'pruned keys not counted')


def t02_pending_kept(srv):
    """A pending head command (never ACKed) and a command ACKed behind it:
    after the retention the head's key still answers the same command and
    the second's status is kept (its row is still in the queue)."""
    secret = provision(srv, 'ret-2')
    d = device(srv, 'ret-2', secret)
    st, ra, _ = post(srv, 'ret-2', {'payload': 'head', 'idempotency_key': 'order-2a'})
    check(st == 201, (st, ra))
    st, rb, _ = post(srv, 'ret-2', {'payload': 'behind', 'idempotency_key': 'order-2b'})
    check(st == 201, (st, rb))
    ca = d.command()
    cb = d.command()
    check(ca[2] == b'head' and cb[2] == b'behind', (ca, cb))
    d.ack(cb[0])
    wait_state(srv, rb['id'], 'acked')
    d.close()
    time.sleep(RETENTION + 3)  # several pruning passes
    st, r = get(srv, rb['id'])
    check(st == 200 and r['state'] == 'acked',
          'status of a command ended behind a pending one pruned: %s %s' % (st, r))
    st, r = get(srv, ra['id'])
    check(st == 200 and r['state'] in ('queued', 'sent'), (st, r))
    st, r2, _ = post(srv, 'ret-2', {'payload': 'head', 'idempotency_key': 'order-2a'})
    check(st == 200 and r2['id'] == ra['id'], 'key of a pending command pruned: %s %s' % (st, r2))
    # kill -9: the device gets the pending command again, nothing that ended
    srv.kill()
    srv.start()
    d = device(srv, 'ret-2', secret)
    c = d.command()
    check(c is not None and c[2] == b'head', 'after the restart: %r' % (c,))
    check(no_command(d), 'an ended command was sent again after the restart')
    d.ack(c[0])
    wait_state(srv, ra['id'], 'acked')
    d.close()
    # nothing pending any more: after the retention everything goes
    time.sleep(RETENTION + 3)
    for cid in (ra['id'], rb['id']):
        st, r = get(srv, cid)
        check(st == 404, 'not pruned once nothing was pending: %s %s %s' % (cid, st, r))


def t03_restart_after_pruning(srv):
    """kill -9 after pruning: ret-1's pruned commands are not sent again."""
    secret = SECRETS['ret-1']
    srv.kill()
    srv.start()
    d = device(srv, 'ret-1', secret)
    check(no_command(d, 2.0), 'a pruned (ended) command was sent again after the restart')
    d.close()


def t04_webhook_record(srv, rx):
    """An expired command's delivered webhook record and its status go
    after the retention, and the hook is not posted again."""
    provision(srv, 'ret-4')  # offline: the command expires unsent
    before = counter(srv, 'gateway_pruned_webhooks')
    st, r, _ = post(srv, 'ret-4', {'payload': 'x', 'ttl': 1, 'idempotency_key': 'order-4'})
    check(st == 201, (st, r))
    wait_posts(rx, r['id'], 1)
    check(status(srv, r['id'])['state'] == 'expired', 'not expired')
    check(counter(srv, 'gateway_pruned_webhooks') == before, 'webhook record pruned at once')
    deadline = time.time() + RETENTION + 10
    while time.time() < deadline and counter(srv, 'gateway_pruned_webhooks') == before:
        time.sleep(0.25)
    check(counter(srv, 'gateway_pruned_webhooks') == before + 1, 'webhook record not pruned')
    for _ in range(40):
        st, x = get(srv, r['id'])
        if st == 404:
            break
        time.sleep(0.25)
    check(st == 404, 'status of the expired command kept: %s %s' % (st, x))
    srv.restart()
    post(srv, 'ret-4', {'payload': 'wake', 'ttl': 60})  # starts the gateway's timer
    time.sleep(2)
    check(len(rx.for_id(r['id'])) == 1, 'posted %d times' % len(rx.for_id(r['id'])))


def main():
    rx = Receiver()
    try:
        srv = gateway_server(args, extra='api_tokens = "%s"; status_retention = %d; '
                             'webhook_url = "http://127.0.0.1:%d/hook";'
                             % (TOKEN, RETENTION, rx.port), http=True)
        srv.__enter__()
    except Exception as e:
        R.fail('48.00 gateway_retention_server_start', e)
        R.exit()
    try:
        R.run('48.01 gateway_retention_pruned_after_retention', t01_pruned_after_retention, srv,
              server=srv)
        R.run('48.02 gateway_retention_pending_kept', t02_pending_kept, srv, server=srv)
        R.run('48.03 gateway_retention_restart_after_pruning', t03_restart_after_pruning, srv,
              server=srv)
        R.run('48.04 gateway_retention_webhook_record', t04_webhook_record, srv, rx, server=srv)
    except Exception as e:
        R.fail('48.00 gateway_retention_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('48.99 gateway_retention_clean_shutdown', e)
    rx.stop()
    R.exit()


main()
