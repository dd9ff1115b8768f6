#!/usr/bin/python3
"""05: administration and process lifecycle: magpiectl user add/del/passwd/
list, status, reload, check-config; accounts survive a restart; SIGHUP keeps
serving; SIGTERM closes every stream and exits 0."""

import os
import re
import signal
import subprocess
import time

from common import (MagpieServer, Results, RawClient, parse_args, check, tostr,
                    closeall, online, sync, body_of)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def can_login(srv, user, pw, domain='localhost', port=None):
    c = RawClient(port or srv.c2s_port, domain=domain)
    try:
        c.open_stream()
        c.starttls()
        ok = c.auth(user, pw)
        if ok:
            c.open_stream()
            c.bind('probe')
            sync(c, domain)
        return ok
    finally:
        closeall(c)


def listed(srv, domain):
    p = srv.ctl('user', 'list', domain)
    check(p.returncode == 0, 'user list %s: rc %d %s' % (domain, p.returncode, p.stderr))
    return set(re.split(r'\s+', p.stdout.strip())) - {''}


def t01_user_add_list(srv):
    srv.add_user('u1', 'pw1')
    srv.add_user('u2', 'pw2')
    srv.add_user('u3', 'pw3', domain='example.test')
    loc = listed(srv, 'localhost')
    check({'u1', 'u2'} <= {x.split('@')[0] for x in loc}, 'localhost list: %s' % loc)
    check('u3' not in {x.split('@')[0] for x in loc}, 'u3 listed on localhost: %s' % loc)
    ex = listed(srv, 'example.test')
    check('u3' in {x.split('@')[0] for x in ex}, 'example.test list: %s' % ex)
    check(can_login(srv, 'u1', 'pw1'), 'u1 cannot log in after add (server running)')
    check(can_login(srv, 'u3', 'pw3', domain='example.test'), 'u3 cannot log in')


def t02_user_add_errors(srv):
    p = srv.ctl('user', 'add', 'u1@localhost', '--password', 'again')
    check(p.returncode != 0, 'adding an existing user succeeded')
    check(can_login(srv, 'u1', 'pw1'), 'failed duplicate add changed the password')
    p = srv.ctl('user', 'add', 'x@unknown.example', '--password', 'x')
    check(p.returncode != 0, 'adding a user on an unknown host succeeded')
    p = srv.ctl('user', 'add', 'not a jid@@localhost', '--password', 'x')
    check(p.returncode != 0, 'adding an invalid JID succeeded')
    p = srv.ctl('user', 'frobnicate')
    check(p.returncode == 2, 'unknown subcommand: rc %d (usage errors exit 2)' % p.returncode)


def t03_user_passwd(srv):
    p = srv.ctl('user', 'passwd', 'u2@localhost', '--password', 'pw2-new')
    check(p.returncode == 0, 'passwd: rc %d %s' % (p.returncode, p.stderr))
    check(not can_login(srv, 'u2', 'pw2'), 'old password still works')
    check(can_login(srv, 'u2', 'pw2-new'), 'new password does not work')
    # password from stdin (not a terminal)
    p = srv.ctl('user', 'passwd', 'u2@localhost', input='pw2-stdin\n')
    check(p.returncode == 0, 'passwd from stdin: rc %d %s' % (p.returncode, p.stderr))
    check(can_login(srv, 'u2', 'pw2-stdin'), 'password from stdin does not work')
    p = srv.ctl('user', 'passwd', 'ghost@localhost', '--password', 'x')
    check(p.returncode != 0, 'passwd of a nonexistent user succeeded')


def t04_user_del(srv):
    srv.add_user('u4', 'pw4')
    check(can_login(srv, 'u4', 'pw4'), 'u4 cannot log in')
    p = srv.ctl('user', 'del', 'u4@localhost')
    check(p.returncode == 0, 'del: rc %d %s' % (p.returncode, p.stderr))
    check(not can_login(srv, 'u4', 'pw4'), 'deleted user can still log in')
    check('u4' not in {x.split('@')[0] for x in listed(srv, 'localhost')}, 'deleted user still listed')
    p = srv.ctl('user', 'del', 'u4@localhost')
    check(p.returncode != 0, 'deleting a nonexistent user succeeded')


def t05_status(srv):
    a = online(srv, 'u1', 'pw1', 'st1')
    b = online(srv, 'u3', 'pw3', 'st2', direct_tls=True, domain='example.test')
    try:
        p = srv.ctl('status')
        check(p.returncode == 0, 'status: rc %d %s' % (p.returncode, p.stderr))
        out = p.stdout.lower()
        for word in ('connections', 'sessions', 'uptime'):
            check(word in out, '%r missing from status output:\n%s' % (word, p.stdout))
        m = re.search(r'sessions\D*(\d+)', out)
        check(m and int(m.group(1)) >= 2, 'sessions count < 2 with two logged-in clients:\n%s' % p.stdout)
    finally:
        closeall(a, b)


def t06_check_config(srv):
    p = srv.ctl('check-config')
    check(p.returncode == 0, 'check-config of a good config: rc %d %s' % (p.returncode, p.stderr))
    bad = os.path.join(srv.tmp, 'bad.conf')
    with open(bad, 'w') as f:
        f.write(srv.config_text().replace('workers = ', 'no_such_key = 1;\nworkers = '))
    lineno = srv.config_text().split('\n').index(
        [x for x in srv.config_text().split('\n') if x.startswith('workers = ')][0]) + 1
    p = srv.run_tool([srv.magpied, '--check-config', '-c', bad], stderr=subprocess.STDOUT, timeout=30)
    check(p.returncode != 0, 'magpied --check-config accepted an unknown key')
    check('bad.conf' in p.stdout and str(lineno) in p.stdout,
          'error does not name the file and line %d: %s' % (lineno, p.stdout))


def t07_sighup_keeps_serving(srv):
    a = online(srv, 'u1', 'pw1', 'hup')
    b = online(srv, 'u3', 'pw3', 'hup', domain='example.test')
    try:
        srv.signal(signal.SIGHUP)
        time.sleep(1.0)
        check(srv.running, 'magpied exited on SIGHUP')
        sync(a)
        a.message('u3@example.test/hup', 'after hup', id_='hup1')
        m = b.wait_for('message', lambda e: e.get('id') == 'hup1')
        check(body_of(m) == 'after hup', tostr(m))
        check(can_login(srv, 'u1', 'pw1'), 'login after SIGHUP failed')
        c = RawClient(srv.tls_port, direct_tls=True)
        try:
            c.login('u1', 'pw1', resource='hup-tls')
        finally:
            closeall(c)
        p = srv.ctl('reload')
        check(p.returncode == 0, 'magpiectl reload: rc %d %s' % (p.returncode, p.stderr))
        time.sleep(0.5)
        check(srv.running, 'magpied exited on reload')
        sync(a)
    finally:
        closeall(a, b)


def t08_accounts_survive_restart(srv):
    srv.restart()
    check(can_login(srv, 'u1', 'pw1'), 'u1 lost after restart')
    check(can_login(srv, 'u2', 'pw2-stdin'), 'u2 password change lost after restart')
    check(not can_login(srv, 'u4', 'pw4'), 'deleted u4 back after restart')
    check(can_login(srv, 'u3', 'pw3', domain='example.test'), 'u3 lost after restart')
    # an account added while the server is stopped
    srv.stop()
    srv.add_user('u5', 'pw5')
    p = srv.ctl('status')
    check(p.returncode != 0, 'status succeeded with the server stopped')
    srv.start()
    check(can_login(srv, 'u5', 'pw5'), 'u5 (added while stopped) cannot log in')


def t09_sigterm_closes_streams(srv):
    a = online(srv, 'u1', 'pw1', 'term1')
    b = online(srv, 'u3', 'pw3', 'term2', direct_tls=True, domain='example.test')
    pre = RawClient(srv.c2s_port)
    pre.open_stream()
    try:
        srv.signal(signal.SIGTERM)
        for name, c in (('starttls session', a), ('direct TLS session', b), ('pre-auth stream', pre)):
            check(c.wait_stream_end(15), '%s: no </stream:stream> within 15s' % name)
            check(c.stream_closed, '%s: connection dropped without </stream:stream> (received: %s)'
                  % (name, bytes(c.raw_in[-200:]).decode('utf-8', 'replace')))
            check(c.stream_error == 'system-shutdown', '%s: stream error %r, expected system-shutdown'
                  % (name, c.stream_error))
        code = srv.stop(expect_code=None)
        check(code == 0, 'magpied exit status %s after SIGTERM' % code)
    finally:
        closeall(a, b, pre)


TESTS = [t01_user_add_list, t02_user_add_errors, t03_user_passwd, t04_user_del, t05_status,
         t06_check_config, t07_sighup_keeps_serving, t08_accounts_survive_restart,
         t09_sigterm_closes_streams]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers)
        srv.__enter__()
    except Exception as e:
        R.fail('05.00 lifecycle_server_start', e)
        R.exit()
    for i, t in enumerate(TESTS, 1):
        if not srv.running and t is not t08_accounts_survive_restart:
            try:
                srv.start()
            except Exception as e:
                R.fail('05.%02d lifecycle_%s' % (i, t.__name__.split('_', 1)[1]), 'server restart: %s' % e)
                continue
        R.run('05.%02d lifecycle_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('05.99 lifecycle_clean_shutdown', e)
    R.exit()


main()
