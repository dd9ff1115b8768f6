#!/usr/bin/python3
"""59: user archives (mod_mam) with MariaDB storage: a chat archived on
both sides with matching stanza ids, a message to an offline user
archived and stored offline, RSM paging forward and backward over 25
messages with max=10 (exact ids, complete flag), with/ids/after-id,
item-not-found, prefs, and everything kept across a restart. Starts a
throwaway mariadbd with tests/mariadb.sh, as test_06 does."""

import os
import shutil
import subprocess
import tempfile
import time

from common import MagpieServer, Results, parse_args, check, tostr, closeall, sync, error_condition, SRCDIR
from magpie_fixture import free_port
from mamhelp import NS_MAM, login, stanza_id, query, fin, bodies, wait_body

args = parse_args()
R = Results('[mariadb workers=%d]' % args.workers)
MARIADB_SH = os.path.join(SRCDIR, 'tests', 'mariadb.sh')
MODULES = ['disco', 'ping', 'roster', 'offline', 'mam']
LIVE = []


def t01_both_sides_and_offline(srv):
    a = login(srv, 'alice', 'a')
    b = login(srv, 'bob', 'b')
    try:
        for i in range(25):
            body = 'm%02d' % i
            a.message('bob@localhost', body)
            m = wait_body(b, body)
            LIVE.append((body, stanza_id(m, 'bob@localhost')))
        sync(a)
        sync(b)
        a.message('carol@localhost', 'offline one')
        sync(a)
        time.sleep(0.3)
        c = login(srv, 'carol', 'c')
        try:
            m = wait_body(c, 'offline one')
            sid = stanza_id(m, 'carol@localhost')
            sync(c)
            _, msgs, ids, _ = query(c)
            check(bodies(msgs) == ['offline one'] and ids == [sid], '%s %s %s' % (bodies(msgs), ids, sid))
        finally:
            closeall(c)
        _, msgs, _, _ = query(a, form={'with': 'bob@localhost'}, rsm='<max>30</max>')
        check(bodies(msgs) == [x for x, _ in LIVE], 'alice: %s' % bodies(msgs))
    finally:
        closeall(a, b)


def pages(c, backward):
    got, cur, shape = [], '', []
    while True:
        if backward:
            rsm = '<max>10</max><before>%s</before>' % cur
        else:
            rsm = '<max>10</max>' + ('<after>%s</after>' % cur if cur else '')
        r, msgs, ids, _ = query(c, rsm=rsm)
        complete, first, last = fin(r)
        shape.append((len(ids), complete))
        page = list(zip(bodies(msgs), ids))
        got = page + got if backward else got + page
        cur = first if backward else last
        if complete or len(shape) > 4:
            return got, shape


def t02_paging(srv):
    b = login(srv, 'bob', 'p')
    try:
        for backward in (False, True):
            got, shape = pages(b, backward)
            check(shape == [(10, False), (10, False), (5, True)], 'pages %s' % shape)
            check(got == LIVE, 'backward=%s: %s' % (backward, got))
        sids = [s for _, s in LIVE]
        r, _, ids, _ = query(b, form={'after-id': sids[5], 'before-id': sids[9]})
        check(ids == sids[6:9], ids)
        r, _, ids, _ = query(b, form={'ids': [sids[7], sids[1]]})
        check(ids == [sids[7], sids[1]], ids)
        r, _, _, _ = query(b, rsm='<after>1-00000000</after>')
        check(error_condition(r) == 'item-not-found', tostr(r))
        r = b.iq('set', None, "<prefs xmlns='%s' default='never'><always/><never/></prefs>" % NS_MAM)
        check(r.get('type') == 'result', tostr(r))
    finally:
        closeall(b)


def t03_restart(srv):
    srv.restart()
    b = login(srv, 'bob', 'r')
    try:
        got, shape = pages(b, False)
        check(got == LIVE, 'after restart: %s' % got)
        r = b.iq('get', None, "<prefs xmlns='%s'/>" % NS_MAM)
        p = r.find('{%s}prefs' % NS_MAM)
        check(p is not None and p.get('default') == 'never', tostr(r))
    finally:
        closeall(b)


def main():
    dbdir = tempfile.mkdtemp(prefix='magpie-mariadb-')
    port = free_port()
    p = subprocess.run(['sh', MARIADB_SH, 'start', dbdir, str(port)], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=180)
    if p.returncode != 0:
        R.fail('59.00 mam_mariadb_start', 'tests/mariadb.sh start failed (%d): %s%s' % (
            p.returncode, p.stdout, p.stderr))
        shutil.rmtree(dbdir, ignore_errors=True)
        R.exit()
    spec = p.stdout.strip().splitlines()[-1]
    try:
        try:
            srv = MagpieServer(args.builddir, workers=args.workers, storage='mysql', mysql=spec,
                               modules=MODULES)
            srv.__enter__()
        except Exception as e:
            R.fail('59.00 mam_mariadb_server_start', e)
            return
        try:
            for u in ('alice', 'bob', 'carol'):
                srv.add_user(u, u + '-pw')
            R.run('59.01 mam_mariadb_both_sides_offline', t01_both_sides_and_offline, srv, server=srv)
            R.run('59.02 mam_mariadb_paging_ids_prefs', t02_paging, srv, server=srv)
            R.run('59.03 mam_mariadb_restart', t03_restart, srv, server=srv)
        except Exception as e:
            R.fail('59.00 mam_mariadb_setup', e)
        try:
            srv.__exit__(None, None, None)
        except Exception as e:
            R.fail('59.99 mam_mariadb_clean_shutdown', e)
    finally:
        subprocess.run(['sh', MARIADB_SH, 'stop', dbdir], timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(dbdir, ignore_errors=True)
        R.exit()


main()
