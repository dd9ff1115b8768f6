#!/usr/bin/python3
"""42: mod_gateway with the device simulator (sdk/sim/mgw-sim, on the SDK):
20 devices get one command each and every sender its receipt; a device
that drops the connection before its ACK gets the command again after
reconnecting, the SDK acts on it once and the sender gets one receipt; a
device that sends everything twice causes no second receipt or uplink; a
device that goes silent is closed after 2.5 heartbeats and its owner sees
it go offline."""

import re
import time

from common import Results, parse_args, online, check, child, closeall, no_message, body_of
from gwcommon import (gateway_server, provision, send_command, wait_receipt, GW_DOMAIN,
                      NS_RECEIPTS, Sim)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def counter(srv, name):
    st = srv.ctl('status', check=True).stdout
    m = re.search(r'gateway_%s\D*?(\d+)' % name, st)
    check(m is not None, 'no counter %s in: %s' % (name, st))
    return int(m.group(1))


def t01_many_devices(srv):
    devs = [('sim-%02d' % i, provision(srv, 'sim-%02d' % i, 'alice@localhost')) for i in range(20)]
    a = online(srv, 'alice', 'pw-alice', 'many')
    sim = Sim(srv, devs)
    try:
        sim.wait(lambda l: l.startswith('READY'), count=20)
        for dev, _ in devs:
            send_command(a, dev, 'go-%s' % dev, 'm-%s' % dev)
        for dev, _ in devs:
            wait_receipt(a, 'm-%s' % dev)
        sim.wait(lambda l: l.startswith('COMMAND'), count=20)  # stdout may lag
        for dev, _ in devs:
            n = len([l for l in sim.lines if l.startswith('COMMAND %s ' % dev)])
            check(n == 1 and any(l.endswith(' go-%s' % dev) for l in sim.lines), (dev, sim.lines))
    finally:
        sim.stop()
        closeall(a)


def t02_drop_before_ack(srv):
    secret = provision(srv, 'drop-1', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'drop')
    retried0 = counter(srv, 'commands_retried')
    sim = Sim(srv, [('drop-1', secret)], '--drop-before-ack', 1)
    try:
        sim.wait(lambda l: l == 'READY drop-1')
        send_command(a, 'drop-1', 'open-door', 'd1')
        sim.wait(lambda l: l.startswith('DROP drop-1'))
        sim.wait(lambda l: l == 'READY drop-1', count=2)
        wait_receipt(a, 'd1', timeout=10)
        check(sim.count('COMMAND drop-1') == 1, 'acted on more than once: %s' % sim.lines)
        no_message(a, 1.0, lambda e: child(e, 'received', NS_RECEIPTS) is not None)
        check(counter(srv, 'commands_retried') > retried0, 'no retry counted')
    finally:
        sim.stop()
        closeall(a)


def t03_duplicates(srv):
    secret = provision(srv, 'dup-1', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'dup')
    unmatched0 = counter(srv, 'acks_unmatched')
    sim = Sim(srv, [('dup-1', secret)], '--duplicates', '--uplink', 'door=open')
    try:
        sim.wait(lambda l: l.startswith('UPLINK-ACK dup-1'), count=2)
        m = a.wait_for('message', lambda e: body_of(e) == 'door=open', timeout=5)
        check(m.get('from') == 'dup-1@' + GW_DOMAIN, m.attrib)
        send_command(a, 'dup-1', 'once', 'u1')
        wait_receipt(a, 'u1')
        no_message(a, 1.0, lambda e: body_of(e) == 'door=open' or
                   child(e, 'received', NS_RECEIPTS) is not None)
        check(counter(srv, 'acks_unmatched') > unmatched0, 'the duplicate ACK was not seen')
    finally:
        sim.stop()
        closeall(a)


def t04_silent(srv):
    secret = provision(srv, 'mute-1', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'mute')
    sim = Sim(srv, [('mute-1', secret)], '--silent-after', 0.5)
    try:
        a.wait_for('presence', lambda e: e.get('from') == 'mute-1@' + GW_DOMAIN and
                   e.get('type') is None, timeout=5)
        sim.wait(lambda l: l == 'SILENT mute-1')
        t0 = time.time()
        a.wait_for('presence', lambda e: e.get('from') == 'mute-1@' + GW_DOMAIN and
                   e.get('type') == 'unavailable', timeout=6)
        dt = time.time() - t0
        check(dt <= 4.0, 'offline only after %.1fs (heartbeat 1 s)' % dt)
        sim.wait(lambda l: l == 'DISCONNECTED mute-1 closed-by-server', timeout=5)
    finally:
        sim.stop()
        closeall(a)


TESTS = [t01_many_devices, t02_drop_before_ack, t03_duplicates, t04_silent]


def main():
    try:
        srv = gateway_server(args, heartbeat=1)
        srv.__enter__()
    except Exception as e:
        R.fail('42.00 gateway_sim_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'pw-alice')
        for i, t in enumerate(TESTS, 1):
            R.run('42.%02d gateway_sim_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('42.00 gateway_sim_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('42.99 gateway_sim_clean_shutdown', e)
    R.exit()


main()
