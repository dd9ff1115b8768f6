#!/usr/bin/python3
"""67: the device gateway's XEP-0050 commands (issue 9: "an ad-hoc command
for admins"): the gateway's admins and the server's admins see and run
urn:x-magpie:gateway:0#send and #status, other users neither see them nor
run them (forbidden); #send queues a command on the HTTP trigger's path
(durable before the answer: it survives a restart), the simulated device
receives it, and #status reports sent, then acked with the device's result
code; an idempotency key given twice gives one command; unknown device and
unknown command id are item-not-found."""

from common import Results, parse_args, check, child, tostr, closeall, online
from adhochelp import (NS_CMD, NS_DATA, NS_ITEMS, command, cmd_el, expect_cmd_error,
                       run_form_command, field_values, form)
from gwcommon import gateway_server, provision, device, Sim

args = parse_args()
R = Results('[workers=%d]' % args.workers)

GW = 'urn:x-magpie:gateway:0'
SEND = GW + '#send'
STATUS = GW + '#status'


def nodes(c):
    r = c.iq('get', 'localhost', "<query xmlns='%s' node='%s'/>" % (NS_ITEMS, NS_CMD))
    check(r.get('type') == 'result', tostr(r))
    return [i.get('node') for i in child(r, 'query', NS_ITEMS).findall('{%s}item' % NS_ITEMS)]


def send(c, dev, payload, ttl=None, key=None):
    fields = [('device', dev), ('payload', payload)]
    if ttl is not None:
        fields.append(('ttl', str(ttl)))
    if key is not None:
        fields.append(('idempotency-key', key))
    return run_form_command(c, SEND, fields)


def state(c, cid):
    el = run_form_command(c, STATUS, [('command-id', cid)])
    check(el.get('status') == 'completed', tostr(el))
    x = child(el, 'x', NS_DATA)
    return {f: (field_values(x, f) or [None])[0]
            for f in ('command-id', 'device', 'state', 'result', 'queued', 'sent', 'ended')}


def t01_visibility(gwadmin, root, user):
    for who in (gwadmin, root):
        n = nodes(who)
        check(SEND in n and STATUS in n, 'admin does not see the gateway commands: %s' % n)
    n = nodes(user)
    check(SEND not in n and STATUS not in n, 'a user sees the gateway commands: %s' % n)
    expect_cmd_error(command(user, SEND, 'execute'), 'forbidden')
    expect_cmd_error(command(user, STATUS, 'execute'), 'forbidden')


def t02_send_reaches_device_and_status(srv, gwadmin, root):
    secret = provision(srv, 'vend-1', 'owner@localhost')
    d = device(srv, 'vend-1', secret)
    try:
        el = send(gwadmin, 'vend-1', 'vend:slot=7', ttl=120)
        check(el.get('status') == 'completed', tostr(el))
        x = child(el, 'x', NS_DATA)
        cid = field_values(x, 'command-id')[0]
        check(cid and cid.isdigit(), tostr(el))
        check(field_values(x, 'duplicate') == ['0'], tostr(el))
        cmd = d.command()
        check(cmd is not None and cmd[2] == b'vend:slot=7', 'device got %r' % (cmd,))
        check(cmd[0] == int(cid) & 0xffffffff, (cmd, cid))
        s = state(root, cid)     # a server admin may ask too
        check(s['state'] == 'sent' and s['device'] == 'vend-1' and s['queued'] and s['sent'], s)
        d.ack(cmd[0], 0)
        for _ in range(50):
            s = state(gwadmin, cid)
            if s['state'] != 'sent':
                break
        check(s['state'] == 'acked' and s['result'] == '0' and s['ended'], s)
    finally:
        d.close()


def t03_idempotency_key(srv, gwadmin):
    secret = provision(srv, 'vend-2', 'owner@localhost')
    d = device(srv, 'vend-2', secret)
    try:
        a = child(send(gwadmin, 'vend-2', 'pay:order=51', key='order-51'), 'x', NS_DATA)
        b = child(send(gwadmin, 'vend-2', 'pay:order=51', key='order-51'), 'x', NS_DATA)
        check(field_values(a, 'command-id') == field_values(b, 'command-id'), (tostr(a), tostr(b)))
        check(field_values(b, 'duplicate') == ['1'], tostr(b))
        cmd = d.command()
        check(cmd is not None and cmd[2] == b'pay:order=51', cmd)
        d.ack(cmd[0])
        try:
            again = d.command(timeout=1.5)
        except TimeoutError:
            again = None
        check(again is None, 'a second COMMAND arrived: %r' % (again,))
    finally:
        d.close()


def t04_errors(gwadmin):
    expect_cmd_error(send(gwadmin, 'no-such-device', 'x'), 'item-not-found')
    expect_cmd_error(run_form_command(gwadmin, STATUS, [('command-id', '987654321')]),
                     'item-not-found')
    expect_cmd_error(run_form_command(gwadmin, STATUS, [('command-id', 'abc')]), 'bad-request',
                     'bad-payload')
    expect_cmd_error(send(gwadmin, 'vend-1', 'x', ttl=-5), 'bad-request', 'bad-payload')


def t05_durable_across_restart(srv):
    secret = provision(srv, 'vend-3', 'owner@localhost')
    a = online(srv, 'admin', 'admin-pw', 'r')
    try:
        el = send(a, 'vend-3', 'unlock:door=2', ttl=600)
        cid = field_values(child(el, 'x', NS_DATA), 'command-id')[0]
    finally:
        closeall(a)
    srv.restart()
    d = device(srv, 'vend-3', secret)
    try:
        cmd = d.command()
        check(cmd is not None and cmd[2] == b'unlock:door=2', 'after restart: %r' % (cmd,))
        check(cmd[0] == int(cid) & 0xffffffff, (cmd, cid))
        d.ack(cmd[0])
    finally:
        d.close()


def t06_simulator(srv):
    """The device simulator on the SDK gets the command and ACKs it."""
    secret = provision(srv, 'sim-adhoc', 'owner@localhost')
    sim = Sim(srv, [('sim-adhoc', secret)])
    a = online(srv, 'admin', 'admin-pw', 's')
    try:
        sim.wait(lambda l: l.startswith('READY'))
        el = send(a, 'sim-adhoc', 'dispense:cup=1', ttl=60)
        cid = field_values(child(el, 'x', NS_DATA), 'command-id')[0]
        sim.wait(lambda l: l.startswith('COMMAND sim-adhoc ') and l.endswith(' dispense:cup=1'))
        for _ in range(100):
            s = state(a, cid)
            if s['state'] == 'acked':
                break
        check(s['state'] == 'acked' and s['result'] == '0', s)
        check(sim.count('COMMAND sim-adhoc ') == 1, sim.lines)
    finally:
        closeall(a)
        sim.stop()


def main():
    try:
        srv = gateway_server(args, extra_config='admins = [ "root@localhost" ];')
        srv.modules.append('adhoc')
        srv.write_config()
        srv.__enter__()
    except Exception as e:
        R.fail('67.00 gateway_adhoc_server_start', e)
        R.exit()
    gwadmin = root = user = None
    try:
        for u in ('admin', 'root', 'user'):
            srv.add_user(u, u + '-pw')
        gwadmin = online(srv, 'admin', 'admin-pw', 'g')
        root = online(srv, 'root', 'root-pw', 'r')
        user = online(srv, 'user', 'user-pw', 'u')
        R.run('67.01 gateway_adhoc_visibility_forbidden', t01_visibility, gwadmin, root, user,
              server=srv)
        R.run('67.02 gateway_adhoc_send_device_status', t02_send_reaches_device_and_status, srv,
              gwadmin, root, server=srv)
        R.run('67.03 gateway_adhoc_idempotency_key', t03_idempotency_key, srv, gwadmin,
              server=srv)
        R.run('67.04 gateway_adhoc_errors', t04_errors, gwadmin, server=srv)
        closeall(gwadmin, root, user)
        gwadmin = root = user = None
        R.run('67.05 gateway_adhoc_durable_across_restart', t05_durable_across_restart, srv,
              server=srv)
        R.run('67.06 gateway_adhoc_device_simulator', t06_simulator, srv, server=srv)
    except Exception as e:
        R.fail('67.00 gateway_adhoc_setup', e)
    closeall(gwadmin, root, user)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('67.99 gateway_adhoc_clean_shutdown', e)
    R.exit()


main()
