#!/usr/bin/python3
"""43: the gateway's queue is durable: commands accepted while the device
is offline survive kill -9 of magpied; after the restart the device gets
the ones it had not ACKed (the unACKed one it had already received
included), in order, and none it had ACKed (also when every command had
ended and the queue was not compacted yet); after a clean restart nothing
is sent again."""

from common import Results, parse_args, online, check, closeall
from gwcommon import (gateway_server, provision, device, send_command, wait_accepted,
                      wait_receipt, ack_frame)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def read_commands(d, n):
    got = []
    for _ in range(n):
        c = d.command(timeout=10)
        check(c is not None and c[0] != 'closed', 'expected a COMMAND, got %r' % (c,))
        got.append((c[0], c[2]))
    return got


def nothing_more(d, what):
    try:
        f = d.read(1.0)
    except TimeoutError:
        f = None
    check(f is None, '%s: unexpected frame %r' % (what, f))


def t01_kill9_loses_nothing(srv):
    secret = provision(srv, 'vm-k', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'k')
    for i in range(10):
        send_command(a, 'vm-k', 'cmd-%d' % i, 'k%d' % i)
    for i in range(10):
        wait_accepted(a, 'k%d' % i)
    d = device(srv, 'vm-k', secret)
    first = read_commands(d, 3)
    check([p for _, p in first] == [b'cmd-0', b'cmd-1', b'cmd-2'], first)
    d.send(ack_frame(first[0][0]))
    d.send(ack_frame(first[1][0]))
    wait_receipt(a, 'k0')
    wait_receipt(a, 'k1')
    closeall(a)
    srv.kill()  # SIGKILL: no clean shutdown
    d.close()
    srv.start()
    a = online(srv, 'alice', 'pw-alice', 'k')
    try:
        d = device(srv, 'vm-k', secret)
        rest = read_commands(d, 8)
        check([p for _, p in rest] == [b'cmd-%d' % i for i in range(2, 10)],
              'after the restart: %s' % rest)
        check(rest[0][0] == first[2][0], 'msg_id changed across the restart: %s %s' % (first, rest))
        for mid, _ in rest:
            d.send(ack_frame(mid))
        for i in range(2, 10):
            wait_receipt(a, 'k%d' % i)
        nothing_more(d, 'after the ACKs')
        d.close()
    finally:
        closeall(a)
    # a clean restart: everything was ACKed, nothing comes again
    srv.stop()
    srv.start()
    d = device(srv, 'vm-k', secret)
    nothing_more(d, 'after a clean restart')
    d.close()


def t02_kill9_right_after_accept(srv):
    secret = provision(srv, 'vm-j', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'j')
    send_command(a, 'vm-j', 'last-words', 'j1')
    wait_accepted(a, 'j1')
    closeall(a)
    srv.kill()
    srv.start()
    d = device(srv, 'vm-j', secret)
    got = read_commands(d, 1)
    check(got[0][1] == b'last-words', got)
    d.close()


def t03_kill9_after_acks_nothing_again(srv):
    # fewer ended commands than the compaction threshold: their rows stay in
    # the queue's archive, and their status records must keep them from
    # being sent again after kill -9
    secret = provision(srv, 'vm-a', 'alice@localhost')
    a = online(srv, 'alice', 'pw-alice', 'a')
    d = device(srv, 'vm-a', secret)
    try:
        for i in range(3):
            send_command(a, 'vm-a', 'once-%d' % i, 'a%d' % i)
            wait_accepted(a, 'a%d' % i)
            got = read_commands(d, 1)
            check(got[0][1] == b'once-%d' % i, got)
            d.send(ack_frame(got[0][0]))
            wait_receipt(a, 'a%d' % i)
    finally:
        closeall(a)
    srv.kill()
    d.close()
    srv.start()
    d = device(srv, 'vm-a', secret)
    nothing_more(d, 'after kill -9 with every command ACKed')
    d.close()


def main():
    try:
        srv = gateway_server(args)
        srv.__enter__()
    except Exception as e:
        R.fail('43.00 gateway_restart_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'pw-alice')
        R.run('43.01 gateway_restart_kill9_loses_nothing', t01_kill9_loses_nothing, srv,
              server=srv)
        R.run('43.02 gateway_restart_kill9_right_after_accept', t02_kill9_right_after_accept, srv,
              server=srv)
        R.run('43.03 gateway_restart_kill9_after_acks_nothing_again',
              t03_kill9_after_acks_nothing_again, srv, server=srv)
    except Exception as e:
        R.fail('43.00 gateway_restart_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('43.99 gateway_restart_clean_shutdown', e)
    R.exit()


main()
