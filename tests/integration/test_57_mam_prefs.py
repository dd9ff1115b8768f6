#!/usr/bin/python3
"""57: user archive preferences and lifetime (XEP-0313 §6, mod_mam):
prefs get shows the configured default; prefs set with default='never'
and an always list archives only the listed JID (both directions),
default='always' with a never list leaves that JID out (and its messages
carry no stanza-id); default='roster' archives contacts only (mod_roster
answers through mp_query_roster_item), offline messages included; prefs
and archive survive a server restart; deleting the account
(magpiectl user del) removes its archive and prefs; a XEP-0198 <a/>
covers a message only once it is committed to both archives (SIGKILL
right after the <a/> loses nothing)."""

import time

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync
from smhelp import sm_login
from mamhelp import (NS_MAM, login, stanza_id, query, fin, bodies, wait_body)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ['alice', 'bob', 'carol', 'dave', 'erin']
MODULES = ['disco', 'ping', 'roster', 'offline', 'mam', 'sm']


def prefs(c, default=None, always=(), never=()):
    if default is None:
        r = c.iq('get', None, "<prefs xmlns='%s'/>" % NS_MAM)
    else:
        r = c.iq('set', None, "<prefs xmlns='%s' default='%s'><always>%s</always><never>%s</never></prefs>" % (
            NS_MAM, default, ''.join('<jid>%s</jid>' % j for j in always),
            ''.join('<jid>%s</jid>' % j for j in never)))
    check(r.get('type') == 'result', tostr(r))
    p = child(r, 'prefs', NS_MAM)
    check(p is not None, tostr(r))
    lists = {}
    for name in ('always', 'never'):
        l = child(p, name, NS_MAM)
        lists[name] = sorted(j.text for j in l) if l is not None else []
    return p.get('default'), lists['always'], lists['never']


def t01_never_with_always_list(srv):
    a = login(srv, 'alice', 'p')
    b = login(srv, 'bob', 'p')
    c = login(srv, 'carol', 'p')
    try:
        check(prefs(a) == ('always', [], []), 'defaults: %s' % (prefs(a),))
        got = prefs(a, 'never', always=['bob@localhost'])
        check(got == ('never', ['bob@localhost'], []), got)
        b.message('alice@localhost', 'bob in')
        m = wait_body(a, 'bob in')
        check(stanza_id(m, 'alice@localhost'), 'listed JID: no stanza-id %s' % tostr(m))
        c.message('alice@localhost', 'carol in')
        m = wait_body(a, 'carol in')
        check(stanza_id(m, 'alice@localhost') is None, 'never: stanza-id %s' % tostr(m))
        a.message('bob@localhost', 'to bob')
        a.message('carol@localhost', 'to carol')
        wait_body(b, 'to bob')
        wait_body(c, 'to carol')
        for x in (a, b, c):
            sync(x)
        _, msgs, _, _ = query(a)
        check(bodies(msgs) == ['bob in', 'to bob'], 'alice archive: %s' % bodies(msgs))
    finally:
        closeall(a, b, c)


def t02_always_with_never_list(srv):
    d = login(srv, 'dave', 'p')
    b = login(srv, 'bob', 'p2')
    c = login(srv, 'carol', 'p2')
    try:
        got = prefs(d, 'always', never=['carol@localhost'])
        check(got == ('always', [], ['carol@localhost']), got)
        b.message('dave@localhost', 'b1')
        c.message('dave@localhost', 'c1')
        wait_body(d, 'b1')
        wait_body(d, 'c1')
        d.message('carol@localhost', 'c2')
        wait_body(c, 'c2')
        for x in (d, b, c):
            sync(x)
        _, msgs, _, _ = query(d)
        check(bodies(msgs) == ['b1'], 'dave archive: %s' % bodies(msgs))
    finally:
        closeall(d, b, c)


def t03_roster_default(srv):
    e = login(srv, 'erin', 'p')
    b = login(srv, 'bob', 'p3')
    c = login(srv, 'carol', 'p3')
    try:
        r = e.iq('set', None, "<query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query>")
        check(r.get('type') == 'result', tostr(r))
        check(prefs(e, 'roster')[0] == 'roster', 'roster default not kept')
        b.message('erin@localhost', 'contact')
        c.message('erin@localhost', 'stranger')
        m1 = wait_body(e, 'contact')
        m2 = wait_body(e, 'stranger')
        check(stanza_id(m1, 'erin@localhost') and stanza_id(m2, 'erin@localhost') is None,
              '%s / %s' % (tostr(m1), tostr(m2)))
        e.message('carol@localhost', 'out stranger')
        e.message('bob@localhost', 'out contact')
        wait_body(b, 'out contact')
        for x in (e, b, c):
            sync(x)
        closeall(e)
        time.sleep(0.3)
        # offline: decided through the roster too
        b.message('erin@localhost', 'contact offline')
        c.message('erin@localhost', 'stranger offline')
        sync(b)
        sync(c)
        time.sleep(0.5)
        e = login(srv, 'erin', 'p2')
        wait_body(e, 'contact offline')
        wait_body(e, 'stranger offline')
        sync(e)
        _, msgs, _, _ = query(e)
        check(bodies(msgs) == ['contact', 'out contact', 'contact offline'], 'erin: %s' % bodies(msgs))
    finally:
        closeall(e, b, c)


def t04_restart(srv):
    srv.restart()
    a = login(srv, 'alice', 'r')
    d = login(srv, 'dave', 'r')
    try:
        check(prefs(a) == ('never', ['bob@localhost'], []), 'alice prefs after restart: %s' % (prefs(a),))
        _, msgs, _, _ = query(a)
        check(bodies(msgs) == ['bob in', 'to bob'], 'alice archive after restart: %s' % bodies(msgs))
        _, msgs, _, _ = query(d)
        check(bodies(msgs) == ['b1'], 'dave archive after restart: %s' % bodies(msgs))
        # stanza ids keep increasing after the restart
        a.message('dave@localhost', 'after restart')
        wait_body(d, 'after restart')
        sync(d)
        r, msgs, ids, _ = query(d, rsm='<max>1</max><before/>')
        check(bodies(msgs) == ['after restart'] and fin(r)[0] is False, bodies(msgs))
    finally:
        closeall(a, d)


def t05_account_deleted(srv):
    srv.ctl('user', 'del', 'dave@localhost', check=True)
    srv.add_user('dave', 'dave-pw')
    d = login(srv, 'dave', 'new')
    try:
        r, msgs, _, _ = query(d)
        check(msgs == [] and fin(r)[0], 'archive of a deleted account: %s' % bodies(msgs))
        check(prefs(d) == ('always', [], []), 'prefs kept: %s' % (prefs(d),))
    finally:
        closeall(d)


def t06_acked_means_archived(srv):
    """XEP-0198: an <a/> covering messages is sent only once they are
    committed to both archives (the sender's and the local recipient's):
    SIGKILL right after the <a/> loses none of them."""
    for rnd in range(3):
        a = sm_login(srv, 'alice', 'alice-pw', 'k%d' % rnd)
        b = login(srv, 'bob', 'k%d' % rnd)
        try:
            h0 = a.request()
            burst = ''.join("<message to='bob@localhost' type='chat' id='k%d-%d'><body>kill %d %02d</body></message>"
                            % (rnd, i, rnd, i) for i in range(20))
            a.send(burst)
            h = a.request()
            check(h == h0 + 20, 'h %d, want %d' % (h, h0 + 20))
            srv.kill()
        finally:
            closeall(a, b)
        srv.start()
        want = ['kill %d %02d' % (rnd, i) for i in range(20)]
        for user in ('alice', 'bob'):
            c = login(srv, user, 'chk%d' % rnd)
            try:
                other = 'bob@localhost' if user == 'alice' else 'alice@localhost'
                _, msgs, _, _ = query(c, form={'with': other}, rsm='<max>20</max><before/>')
                got = [x for x in bodies(msgs) if x and x.startswith('kill %d ' % rnd)]
                check(got == want, 'round %d, %s lost %s' % (rnd, user, sorted(set(want) - set(got))))
            finally:
                closeall(c)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('57.00 mam_prefs_server_start', e)
        R.exit()
    try:
        for u in USERS:
            srv.add_user(u, u + '-pw')
        R.run('57.01 mam_prefs_never_always_list', t01_never_with_always_list, srv, server=srv)
        R.run('57.02 mam_prefs_always_never_list', t02_always_with_never_list, srv, server=srv)
        R.run('57.03 mam_prefs_roster_default', t03_roster_default, srv, server=srv)
        R.run('57.04 mam_persists_across_restart', t04_restart, srv, server=srv)
        R.run('57.05 mam_account_deleted', t05_account_deleted, srv, server=srv)
        R.run('57.06 mam_acked_means_archived_sigkill', t06_acked_means_archived, srv, server=srv)
    except Exception as e:
        R.fail('57.00 mam_prefs_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('57.99 mam_prefs_clean_shutdown', e)
    R.exit()


main()
