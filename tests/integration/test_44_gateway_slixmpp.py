#!/usr/bin/python3
"""44: slixmpp users command a device served by the simulator: the owner's
message (XEP-0184 receipt requested) is acted on by the device and the
receipt comes back with the message's id; another user gets 'forbidden'
and the device sees nothing; a message to a device that does not exist
gets 'item-not-found'."""

import asyncio
import os
import subprocess
import threading
import time

from common import Results, parse_args, check
from gwcommon import gateway_server, provision, GW_DOMAIN
import slixhelp as S

args = parse_args()
R = Results('[workers=%d]' % args.workers)
SIM = os.path.join(args.builddir, 'sdk', 'sim', 'mgw-sim')


async def scenario(srv, sim_lines):
    alice = await S.login(srv.c2s_port, 'alice@localhost', 'pw-alice')
    bob = await S.login(srv.c2s_port, 'bob@localhost', 'pw-bob')
    try:
        receipts = asyncio.Queue()
        for c in (alice, bob):
            c.register_plugin('xep_0184')
            c['xep_0184'].auto_ack = False
        alice.add_event_handler('receipt_received', lambda x: receipts.put_nowait(x))
        dev = 'vm-s@' + GW_DOMAIN
        m = alice.make_message(mto=dev, mbody='unlock:locker=12', mtype='chat')
        m['id'] = 'slix-1'
        m['request_receipt'] = True
        m.send()
        r = await asyncio.wait_for(receipts.get(), 10)
        check(r['receipt'] == 'slix-1', str(r))
        check(r['from'].bare == dev, str(r))
        check(any(l.endswith(' unlock:locker=12') for l in sim_lines), sim_lines)

        m = bob.make_message(mto=dev, mbody='unlock:locker=13', mtype='chat')
        m['id'] = 'slix-2'
        m['request_receipt'] = True
        m.send()
        e = await S.next_message(bob, 10, lambda x: x['type'] == 'error')
        check(e['id'] == 'slix-2' and e['error']['condition'] == 'forbidden', str(e))

        m = alice.make_message(mto='nobody@' + GW_DOMAIN, mbody='x', mtype='chat')
        m['id'] = 'slix-3'
        m.send()
        e = await S.next_message(alice, 10, lambda x: x['type'] == 'error')
        check(e['id'] == 'slix-3' and e['error']['condition'] == 'item-not-found', str(e))
        await asyncio.sleep(0.5)
        check(not any('locker=13' in l for l in sim_lines), 'the device got a forbidden command')
    finally:
        await S.close(alice, bob)


def t01_receipts_and_forbidden(srv):
    secret = provision(srv, 'vm-s', 'alice@localhost')
    p = subprocess.Popen([SIM, '--port', str(srv.gw_port), '--device', 'vm-s:' + secret.hex()],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=srv._env())
    lines = []
    threading.Thread(target=lambda: [lines.append(l.strip()) for l in p.stdout],
                     daemon=True).start()
    try:
        deadline = time.time() + 10
        while 'READY vm-s' not in lines and time.time() < deadline:
            time.sleep(0.05)
        check('READY vm-s' in lines, lines)
        S.run(scenario, srv, lines)
    finally:
        p.terminate()
        p.wait(10)


def main():
    try:
        srv = gateway_server(args)
        srv.__enter__()
    except Exception as e:
        R.fail('44.00 gateway_slixmpp_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'pw-alice')
        srv.add_user('bob', 'pw-bob')
        R.run('44.01 gateway_slixmpp_receipts_and_forbidden', t01_receipts_and_forbidden, srv,
              server=srv)
    except Exception as e:
        R.fail('44.00 gateway_slixmpp_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('44.99 gateway_slixmpp_clean_shutdown', e)
    R.exit()


main()
