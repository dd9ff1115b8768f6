#!/usr/bin/python3
"""40: the device simulator (sdk/sim/mgw-sim, on the SDK) against a fake
gateway written in Python from the specification (mgwproto.FakeGateway),
no magpied: handshake, COMMAND/ACK bytes, a command sent again is ACKed
but acted on once, drop-before-ACK then redelivery after the reconnect is
acted on once, heartbeats, going silent, --duplicates, a server that does
not prove the secret."""

import os
import struct
import subprocess
import threading
import time

from common import Results, parse_args, check
import mgwproto as P

args = parse_args()
R = Results()
SIM = os.path.join(args.builddir, 'sdk', 'sim', 'mgw-sim')
SECRET = bytes(range(32))


class Sim:
    """mgw-sim in the background; .lines collects its output."""

    def __init__(self, port, *extra, dev='vm-1'):
        self.p = subprocess.Popen([SIM, '--port', str(port), '--device', '%s:%s' % (dev, SECRET.hex())]
                                  + [str(e) for e in extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.strip())

    def wait_line(self, prefix, timeout=5, count=1):
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = [l for l in self.lines if l.startswith(prefix)]
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError('no %d line(s) %r in %s' % (count, prefix, self.lines))

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        err = self.p.stderr.read()
        check('runtime error' not in err and 'AddressSanitizer' not in err, err)


def cmd(mid, payload, ttl=60):
    return P.frame(P.COMMAND, struct.pack('>IH', mid, ttl) + payload)


def with_sim(fn, *extra, hb=30):
    gw = P.FakeGateway({'vm-1': SECRET}, heartbeat=hb)
    sim = Sim(gw.port, *extra)
    try:
        fn(gw, sim)
    finally:
        sim.stop()
        gw.close()


def t01_command_ack(gw, sim):
    c, dev = gw.accept()
    check(dev == 'vm-1', dev)
    sim.wait_line('READY vm-1')
    c.send(cmd(7, b'vend:slot=4', 300))
    f = c.read_until((P.ACK,))
    check(f == (P.ACK, struct.pack('>IB', 7, 0)), 'ACK %r' % (f,))
    check(sim.wait_line('COMMAND vm-1 7 300 vend:slot=4'), sim.lines)
    # the same msg_id again: ACKed again, not acted on again
    c.send(cmd(7, b'vend:slot=4', 300))
    f = c.read_until((P.ACK,))
    check(f == (P.ACK, struct.pack('>IB', 7, 0)), 'second ACK %r' % (f,))
    c.send(cmd(8, b'next'))
    check(c.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 8, 0)))
    sim.wait_line('COMMAND vm-1 8 ')  # its stdout may lag behind the socket
    check([l for l in sim.lines if l.startswith('COMMAND')] ==
          ['COMMAND vm-1 7 300 vend:slot=4', 'COMMAND vm-1 8 60 next'], sim.lines)
    c.close()


def t02_drop_before_ack(gw, sim):
    c, _ = gw.accept()
    c.send(cmd(11, b'open'))
    check(c.closed(5), 'the simulator did not drop the connection')
    sim.wait_line('DROP vm-1 11')
    # it reconnects; the command is sent again and now ACKed, acted on once
    c2, _ = gw.accept()
    c2.send(cmd(11, b'open'))
    check(c2.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 11, 0)))
    c2.send(cmd(12, b'second'))
    check(c2.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 12, 0)))
    check(len([l for l in sim.lines if l.startswith('COMMAND vm-1 11 ')]) == 1, sim.lines)
    c2.close()


def t03_heartbeat(gw, sim):
    c, _ = gw.accept()
    t0 = time.time()
    f = c.read(3)
    check(f == (P.PING, b''), 'expected a PING, got %r' % (f,))
    check(0.8 < time.time() - t0 < 2.0, 'PING after %.2fs (heartbeat 1 s)' % (time.time() - t0))
    c.send(P.frame(P.PONG))
    # a PING from the server is answered with PONG
    c.send(P.frame(P.PING))
    check(c.read_until((P.PONG,), 3) == (P.PONG, b''))
    c.close()


def t04_silent(gw, sim):
    c, _ = gw.accept()
    sim.wait_line('SILENT vm-1', timeout=3)
    c.send(cmd(5, b'x'))
    try:
        f = c.read(2.5)
    except TimeoutError:
        f = 'nothing'
    check(f == 'nothing', 'a silent device sent %r' % (f,))
    c.close()
    sim.wait_line('DISCONNECTED vm-1 closed-by-server')
    check(not any(l.startswith('COMMAND') for l in sim.lines), sim.lines)


def t05_duplicates(gw, sim):
    c, _ = gw.accept()
    c.send(cmd(9, b'dup'))
    a = struct.pack('>IB', 9, 0)
    check(c.read_until((P.ACK,)) == (P.ACK, a) and c.read_until((P.ACK,)) == (P.ACK, a),
          'ACK not sent twice')
    c.close()


def t06_bad_server_proof():
    # a server that does not know the secret cannot make a valid WELCOME
    gw = P.FakeGateway({'vm-1': b'not the device secret'}, check_mac=False)
    sim = Sim(gw.port, '--no-reconnect')
    try:
        c, _ = gw.accept()
        c.send(cmd(1, b'forged'))
        f = c.read_until((P.ERROR,))
        check(f == (P.ERROR, bytes([P.E_AUTH_FAILED])), 'expected ERROR AUTH_FAILED, got %r' % (f,))
        sim.wait_line('DISCONNECTED vm-1 auth')
        check(not any(l.startswith(('READY', 'COMMAND')) for l in sim.lines), sim.lines)
        c.close()
    finally:
        sim.stop()
        gw.close()


def t07_result_code(gw, sim):
    c, _ = gw.accept()
    c.send(cmd(3, b'x'))
    check(c.read_until((P.ACK,)) == (P.ACK, struct.pack('>IB', 3, 2)))
    c.close()


R.run('40.01 gateway_sim_command_ack', with_sim, t01_command_ack)
R.run('40.02 gateway_sim_drop_before_ack', with_sim, t02_drop_before_ack, '--drop-before-ack', 1)
R.run('40.03 gateway_sim_heartbeat', with_sim, t03_heartbeat, hb=1)
R.run('40.04 gateway_sim_silent', with_sim, t04_silent, '--silent-after', 0.3)
R.run('40.05 gateway_sim_duplicates', with_sim, t05_duplicates, '--duplicates')
R.run('40.06 gateway_sim_bad_server_proof', t06_bad_server_proof)
R.run('40.07 gateway_sim_result_code', with_sim, t07_result_code, '--result', 2)
R.exit()
