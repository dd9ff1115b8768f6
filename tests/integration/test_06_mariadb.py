#!/usr/bin/python3
"""06: the core login and messaging set with MariaDB storage. Starts a
throwaway mariadbd on a loopback port with tests/mariadb.sh (fresh data dir,
so every run starts from an empty database) and stops it afterwards."""

import os
import shutil
import subprocess
import tempfile

from common import (MagpieServer, Results, RawClient, parse_args, check, tostr,
                    closeall, online, sync, body_of, expect_error, no_message, SRCDIR)
from magpie_fixture import free_port
import slixhelp
from slixhelp import login, next_message, close, LoginFailed

args = parse_args()
R = Results('[mariadb workers=%d]' % args.workers)
MARIADB_SH = os.path.join(SRCDIR, 'tests', 'mariadb.sh')


def t01_slixmpp_login_starttls_and_tls(srv):
    async def go():
        a = await login(srv.c2s_port, 'alice@localhost/m1', 'alice-pw')
        b = await login(srv.tls_port, 'bob@localhost/m2', 'bob-pw', direct_tls=True)
        try:
            check(a.mech_used == 'SCRAM-SHA-256' and b.mech_used == 'SCRAM-SHA-256',
                  'mechanisms used: %s %s' % (a.mech_used, b.mech_used))
            a.send_message(mto='bob@localhost/m2', mbody='over mariadb', mtype='chat')
            m = await next_message(b, pred=lambda m: m['body'] == 'over mariadb')
            check(str(m['from']) == 'alice@localhost/m1', 'from %s' % m['from'])
            b.send_message(mto='alice@localhost', mbody='bare back', mtype='chat')
            await next_message(a, pred=lambda m: m['body'] == 'bare back')
        finally:
            await close(a, b)
    slixhelp.run(go)


def t02_wrong_password(srv):
    async def go():
        try:
            c = await login(srv.c2s_port, 'alice@localhost/bad', 'wrong', timeout=15)
        except LoginFailed as e:
            check(e.client.auth_failure == 'not-authorized', 'condition %r' % e.client.auth_failure)
            return
        await close(c)
        raise AssertionError('wrong password accepted')
    slixhelp.run(go)
    for mech in ('SCRAM-SHA-1', 'PLAIN'):
        c = RawClient(srv.tls_port, direct_tls=True)
        try:
            c.open_stream()
            check(not c.auth('alice', 'wrong', mech), '%s accepted a wrong password' % mech)
            check(c.sasl_failure == 'not-authorized', '%s: %r' % (mech, c.sasl_failure))
        finally:
            closeall(c)


def t03_raw_mechanisms(srv):
    for mech in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'):
        c = RawClient(srv.c2s_port)
        try:
            check(c.login('bob', 'bob-pw', resource='mech', mechanism=mech) == 'bob@localhost/mech', mech)
        finally:
            closeall(c)


def t04_routing_errors(srv):
    a = online(srv, 'alice', 'alice-pw', 'err')
    try:
        # carol exists and is offline: mod_offline (on by default) stores
        # the message in MariaDB and delivers it, stamped, at her login
        a.message('carol@localhost', 'offline', id_='off')
        no_message(a, 1.0, lambda e: e.get('id') == 'off')
        c = RawClient(srv.c2s_port)
        c.login('carol', 'carol-pw', resource='later')
        c.presence()
        try:
            m = c.wait_for('message', lambda e: e.get('id') == 'off', timeout=10)
            check(body_of(m) == 'offline', tostr(m))
            check(m.find('{urn:xmpp:delay}delay') is not None, 'no delay stamp: %s' % tostr(m))
        finally:
            closeall(c)
        a.message('nobody@localhost', 'none', id_='none')
        expect_error(a, 'message', 'service-unavailable', lambda e: e.get('id') == 'none')
        a.message('x@elsewhere.invalid', 'remote', id_='rem')
        expect_error(a, 'message', 'remote-server-not-found', lambda e: e.get('id') == 'rem')
    finally:
        closeall(a)


def t05_priorities(srv):
    a = online(srv, 'alice', 'alice-pw', 'prio')
    hi = online(srv, 'bob', 'bob-pw', 'hi', priority=7)
    lo = online(srv, 'bob', 'bob-pw', 'lo', priority=2)
    try:
        a.message('bob@localhost', 'to highest', id_='p1')
        hi.wait_for('message', lambda e: e.get('id') == 'p1')
        no_message(lo, 1, lambda e: e.get('id') == 'p1')
    finally:
        closeall(a, hi, lo)


def t06_ctl_and_restart(srv):
    srv.add_user('dave', 'dave-pw')
    p = srv.ctl('user', 'list', 'localhost')
    check(p.returncode == 0 and 'dave' in p.stdout and 'alice' in p.stdout, 'list: %s %s' % (p.stdout, p.stderr))
    p = srv.ctl('user', 'passwd', 'dave@localhost', '--password', 'dave-pw2')
    check(p.returncode == 0, 'passwd: %s' % p.stderr)
    srv.add_user('gone', 'gone-pw')
    check(srv.ctl('user', 'del', 'gone@localhost').returncode == 0, 'del failed')
    srv.restart()
    c = RawClient(srv.c2s_port)
    try:
        check(c.login('dave', 'dave-pw2', resource='r') == 'dave@localhost/r', 'dave after restart')
    finally:
        closeall(c)
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(not c.auth('gone', 'gone-pw'), 'deleted account back after restart')
        check(not c.sasl_failure is None, 'no failure condition')
    finally:
        closeall(c)
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(not c.auth('dave', 'dave-pw'), 'old password works after restart')
    finally:
        closeall(c)


TESTS = [t01_slixmpp_login_starttls_and_tls, t02_wrong_password, t03_raw_mechanisms,
         t04_routing_errors, t05_priorities, t06_ctl_and_restart]


def main():
    dbdir = tempfile.mkdtemp(prefix='magpie-mariadb-')
    port = free_port()
    p = subprocess.run(['sh', MARIADB_SH, 'start', dbdir, str(port)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=180)
    if p.returncode != 0:
        R.fail('06.00 mariadb_start', 'tests/mariadb.sh start failed (%d): %s%s' % (p.returncode, p.stdout, p.stderr))
        shutil.rmtree(dbdir, ignore_errors=True)
        R.exit()
    spec = p.stdout.strip().splitlines()[-1]
    try:
        try:
            srv = MagpieServer(args.builddir, workers=args.workers, storage='mysql', mysql=spec)
            srv.__enter__()
        except Exception as e:
            R.fail('06.00 mariadb_server_start', e)
            return
        try:
            for u in ('alice', 'bob', 'carol'):
                srv.add_user(u, u + '-pw')
            for i, t in enumerate(TESTS, 1):
                if not srv.running:
                    srv.start()
                R.run('06.%02d mariadb_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
        except Exception as e:
            R.fail('06.00 mariadb_setup', e)
        try:
            srv.__exit__(None, None, None)
        except Exception as e:
            R.fail('06.99 mariadb_clean_shutdown', e)
    finally:
        subprocess.run(['sh', MARIADB_SH, 'stop', dbdir], timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(dbdir, ignore_errors=True)


main()
R.exit()
