#!/usr/bin/python3
"""47: the database outbox in a real MariaDB (a throwaway mariadbd from
tests/mariadb.sh on a loopback port, also magpied's storage): magpied
creates the documented table; a row inserted by "the shop" reaches the
device once and is marked 'queued' with its command id, then 'acked' with
the result; a row whose mark was lost (set back to 'new') is not enqueued
a second time and gets the same command id; a row for an unknown device is
'rejected'; a row whose command expires ends 'expired'; rows inserted
while magpied is down are delivered after it starts."""

import os
import shutil
import subprocess
import tempfile
import time

from common import Results, parse_args, check, SRCDIR
from gwcommon import gateway_server, provision, device
from magpie_fixture import free_port

args = parse_args()
R = Results('[mariadb workers=%d]' % args.workers)
MARIADB_SH = os.path.join(SRCDIR, 'tests', 'mariadb.sh')
TABLE = 'shop_outbox'


class DB:
    def __init__(self, spec):
        self.host, self.port, self.user, self.password, self.db = spec.split(':')

    def sql(self, q):
        p = subprocess.run(['mariadb', '--no-defaults', '-h', self.host, '-P', self.port,
                            '-u', self.user, '-p' + self.password, '-N', '-B', self.db,
                            '-e', q], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=30)
        check(p.returncode == 0, 'mariadb: %s' % p.stderr)
        return [line.split('\t') for line in p.stdout.splitlines()]

    def insert(self, dev, payload, ttl='NULL'):
        self.sql("INSERT INTO %s (device, payload, ttl) VALUES ('%s', '%s', %s)"
                 % (TABLE, dev, payload, ttl))
        return int(self.sql('SELECT MAX(id) FROM %s' % TABLE)[0][0])

    def row(self, rid):
        r = self.sql('SELECT state, IFNULL(command_id, 0), IFNULL(result, -1), IFNULL(error, "")'
                     ' FROM %s WHERE id=%d' % (TABLE, rid))
        return r[0][0], int(r[0][1]), int(r[0][2]), r[0][3]

    def wait_state(self, rid, state, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = self.row(rid)
            if r[0] == state:
                return r
            time.sleep(0.1)
        raise AssertionError('row %d: expected %s, got %s' % (rid, state, self.row(rid)))


def no_command(d, timeout=1.5):
    try:
        return d.command(timeout=timeout) is None
    except TimeoutError:
        return True


def t01_row_reaches_device_once(srv, db):
    secret = provision(srv, 'ob-1')
    d = device(srv, 'ob-1', secret)
    rid = db.insert('ob-1', 'vend:slot=7', 60)
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'vend:slot=7', cmd)
    state, cid, _, _ = db.wait_state(rid, 'queued')
    check(cid & 0xffffffff == cmd[0], (cid, cmd))
    # the mark is lost (as if magpied died before writing it): no second command
    db.sql("UPDATE %s SET state='new', command_id=NULL WHERE id=%d" % (TABLE, rid))
    state, cid2, _, _ = db.wait_state(rid, 'queued')
    check(cid2 == cid, (cid, cid2))
    check(no_command(d), 'a second COMMAND for one row')
    d.ack(cmd[0])
    state, cid3, result, _ = db.wait_state(rid, 'acked')
    check(cid3 == cid and result == 0, db.row(rid))
    check(no_command(d), 'a COMMAND after the ACK')
    d.close()


def t02_unknown_device(srv, db):
    rid = db.insert('no-such-dev', 'x')
    state, cid, _, err = db.wait_state(rid, 'rejected')
    check(cid == 0 and 'no such device' in err, db.row(rid))


def t03_expired_and_failed(srv, db):
    secret = provision(srv, 'ob-2')
    d = device(srv, 'ob-2', secret)
    rid = db.insert('ob-2', 'late', 1)
    cmd = d.command()
    check(cmd is not None, cmd)
    db.wait_state(rid, 'expired', timeout=10)
    rid2 = db.insert('ob-2', 'refuse-me', 60)
    cmd = d.command()
    check(cmd is not None and cmd[2] == b'refuse-me', cmd)
    d.ack(cmd[0], 1)
    state, _, result, _ = db.wait_state(rid2, 'failed')
    check(result == 1, db.row(rid2))
    d.close()


def t04_while_down(srv, db):
    secret = provision(srv, 'ob-3')
    srv.stop()
    rids = [db.insert('ob-3', 'offline-%d' % i, 600) for i in range(3)]
    srv.start()
    d = device(srv, 'ob-3', secret)
    got = []
    for _ in range(3):
        cmd = d.command()
        check(cmd is not None, got)
        got.append(cmd[2])
        d.ack(cmd[0])
    check(got == [b'offline-0', b'offline-1', b'offline-2'], got)
    for rid in rids:
        db.wait_state(rid, 'acked')
    check(no_command(d), 'a repeated COMMAND')
    d.close()


TESTS = [t01_row_reaches_device_once, t02_unknown_device, t03_expired_and_failed, t04_while_down]


def main():
    dbdir = tempfile.mkdtemp(prefix='magpie-mariadb-')
    port = free_port()
    p = subprocess.run(['sh', MARIADB_SH, 'start', dbdir, str(port)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=180)
    if p.returncode != 0:
        R.fail('47.00 outbox_mariadb_start', 'tests/mariadb.sh start failed (%d): %s%s'
               % (p.returncode, p.stdout, p.stderr))
        shutil.rmtree(dbdir, ignore_errors=True)
        R.exit()
    spec = p.stdout.strip().splitlines()[-1]
    db = DB(spec)
    try:
        try:
            srv = gateway_server(args, extra='outbox_dsn = "%s"; outbox_table = "%s"; '
                                 'outbox_interval_ms = 100;' % (spec, TABLE),
                                 storage='mysql', mysql=spec)
            srv.__enter__()
        except Exception as e:
            R.fail('47.00 outbox_server_start', e)
            return
        try:
            deadline = time.time() + 10
            while not db.sql("SHOW TABLES LIKE '%s'" % TABLE) and time.time() < deadline:
                time.sleep(0.1)
            for i, t in enumerate(TESTS, 1):
                if not srv.running:
                    srv.start()
                R.run('47.%02d outbox_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, db,
                      server=srv)
        except Exception as e:
            R.fail('47.00 outbox_setup', e)
        try:
            srv.__exit__(None, None, None)
        except Exception as e:
            R.fail('47.99 outbox_clean_shutdown', e)
    finally:
        subprocess.run(['sh', MARIADB_SH, 'stop', dbdir], timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(dbdir, ignore_errors=True)


main()
R.exit()
