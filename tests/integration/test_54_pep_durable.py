#!/usr/bin/python3
"""54: PEP persistence on both storage drivers (mod_pep): with SQLite and
with MariaDB (tests/mariadb.sh; skipped when it cannot start), a publish
that was answered survives SIGKILL of magpied (the answer waits for the
store's commit), node configuration (access model, max_items, send_last)
and items come back, retract and delete are durable as well, and a
contact's caps-filtered notification works after the restart."""

import os
import shutil
import subprocess
import tempfile

from common import MagpieServer, Results, Skip, parse_args, check, child, tostr, closeall, SRCDIR
from magpie_fixture import free_port
from pephelp import (NS_PS, pw, login, handshake, publish, published_ok, items, item_list, app_error,
                     owner_iq, is_event, event_items, Caps, login_caps)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
MARIADB_SH = os.path.join(SRCDIR, 'tests', 'mariadb.sh')
MODULES = ['disco', 'ping', 'roster', 'private', 'pep']
A = 'alice@localhost'
MOOD = 'http://jabber.org/protocol/mood'


def mood(m):
    return "<mood xmlns='%s'><%s/></mood>" % (MOOD, m)


def scenario(srv):
    for u in ('alice', 'bob'):
        srv.add_user(u, pw(u))
    a = login(srv, 'alice', 'k')
    b = login(srv, 'bob', 'k')
    handshake(b, 'bob', a, 'alice')
    closeall(b)
    for i, m in enumerate(('happy', 'sad', 'bored')):
        published_ok(publish(a, MOOD, mood(m), item_id='m%d' % i, options={'pubsub#max_items': '5'}))
    published_ok(publish(a, 'urn:example:gone', "<x xmlns='urn:x'/>"))
    published_ok(publish(a, 'urn:example:wl', "<x xmlns='urn:x'/>", options={
        'pubsub#access_model': 'whitelist', 'pubsub#send_last_published_item': 'never'}))
    r = a.iq('set', None, "<pubsub xmlns='%s'><retract node='%s'><item id='m0'/></retract></pubsub>" % (NS_PS, MOOD))
    check(r.get('type') == 'result', tostr(r))
    r = owner_iq(a, 'set', "<delete node='urn:example:gone'/>")
    check(r.get('type') == 'result', tostr(r))
    # answered, then SIGKILL: nothing may be lost
    srv.kill()
    closeall(a)
    srv.start()
    a = login(srv, 'alice', 'back')
    try:
        got = item_list(items(a, A, MOOD))
        check([i for i, _ in got] == ['m2', 'm1'], 'after SIGKILL: %r' % got)
        check(app_error(items(a, A, 'urn:example:gone'))[0] == 'item-not-found', 'deleted node came back')
        r = owner_iq(a, 'get', "<configure node='urn:example:wl'/>")
        x = child(child(child(r, 'pubsub', NS_PS + '#owner'), 'configure', NS_PS + '#owner'), 'x', 'jabber:x:data')
        vals = {f.get('var'): child(f, 'value', 'jabber:x:data').text for f in x
                if child(f, 'value', 'jabber:x:data') is not None}
        check(vals.get('pubsub#access_model') == 'whitelist' and
              vals.get('pubsub#send_last_published_item') == 'never', repr(vals))
        # bob's client with mood+notify: the last item on login, then a live event
        caps = Caps(['http://jabber.org/protocol/disco#info', MOOD + '+notify'], node='urn:test:dur')
        b = login_caps(srv, 'bob', 'k2', caps)
        ev = b.wait_for('message', is_event(A, MOOD), timeout=5)
        check(event_items(ev)[0][0] == 'm2', tostr(ev))
        check(child(ev, 'delay', 'urn:xmpp:delay') is not None, 'publication time lost: %s' % tostr(ev))
        published_ok(publish(a, MOOD, mood('excited'), item_id='m3'))
        ev = b.wait_for('message', is_event(A, MOOD), timeout=5)
        check(event_items(ev)[0][0] == 'm3', tostr(ev))
        closeall(b)
    finally:
        closeall(a)


def t01_sqlite(builddir):
    srv = MagpieServer(builddir, workers=args.workers, modules=MODULES)
    srv.__enter__()
    try:
        scenario(srv)
        reps = srv.sanitizer_reports()
        check(not reps, '\n'.join(reps))
    finally:
        srv.__exit__(None, None, None)


def t02_mariadb(builddir):
    dbdir = tempfile.mkdtemp(prefix='magpie-mariadb-')
    port = free_port()
    try:
        p = subprocess.run(['sh', MARIADB_SH, 'start', dbdir, str(port)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=180)
        if p.returncode != 0:
            raise Skip('tests/mariadb.sh start failed (%d): %s' % (p.returncode, p.stderr.strip()[-200:]))
        spec = p.stdout.strip().splitlines()[-1]
        srv = MagpieServer(builddir, workers=args.workers, modules=MODULES, storage='mysql', mysql=spec)
        srv.__enter__()
        try:
            scenario(srv)
            reps = srv.sanitizer_reports()
            check(not reps, '\n'.join(reps))
        finally:
            srv.__exit__(None, None, None)
    finally:
        subprocess.run(['sh', MARIADB_SH, 'stop', dbdir], timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(dbdir, ignore_errors=True)


R.run('54.01 pep_durable_sqlite', t01_sqlite, args.builddir)
R.run('54.02 pep_durable_mariadb', t02_mariadb, args.builddir)
R.exit()
