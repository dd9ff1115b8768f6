#!/usr/bin/python3
"""66: XEP-0133 service administration over ad-hoc commands
(mod_admin_adhoc): add-user (with slixmpp's xep_0050/xep_0133 plugins)
then the new account logs in; an existing account gives conflict;
change-user-password makes the old password fail and the new one work;
delete-user ends a live session (not-authorized) and the account cannot
log in again; end-user-session ends a full JID's session or all of a bare
JID's; announce reaches every online session of two users; online users
count and list; every admin command is forbidden to a non-admin."""

import asyncio
import os

from common import (MagpieServer, RawClient, Results, parse_args, check, child, tostr, closeall,
                    online, sync, body_of)
from adhochelp import (NS_ADMIN, NS_DATA, command, expect_cmd_error, run_form_command, note,
                       field_values)
import slixhelp

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def can_login(srv, user, password):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        return bool(c.auth(user, password, 'SCRAM-SHA-256'))
    finally:
        c.close()


def t01_add_user_slixmpp(srv):
    async def go():
        a = await slixhelp.login(srv.c2s_port, 'admin@localhost', 'admin-pw')
        a.register_plugin('xep_0004')
        a.register_plugin('xep_0050')
        a.register_plugin('xep_0133')
        try:
            items = await a['xep_0133'].get_commands()
            nodes = [n for (_, n, _) in items['disco_items']['items']]
            check(NS_ADMIN + '#add-user' in nodes, 'slixmpp get_commands: %s' % nodes)
            done = asyncio.get_event_loop().create_future()

            def on_form(iq, session):
                form = iq['command']['form']
                check('accountjid' in form.get_fields(), str(iq))
                answer = a['xep_0004'].make_form(ftype='submit')
                answer.add_field(var='FORM_TYPE', ftype='hidden', value=NS_ADMIN)
                answer.add_field(var='accountjid', value='newbie@localhost')
                answer.add_field(var='password', value='newbie-pw')
                answer.add_field(var='password-verify', value='newbie-pw')
                session['payload'] = answer
                session['next'] = on_done
                a['xep_0050'].complete_command(session)

            def on_done(iq, session):
                if not done.done():
                    done.set_result(iq)

            def on_error(iq, session):
                if not done.done():
                    done.set_result(iq)
                a['xep_0050'].terminate_command(session)

            a['xep_0133'].add_user(session={'next': on_form, 'error': on_error})
            iq = await asyncio.wait_for(done, 20)
            check(iq['type'] == 'result' and iq['command']['status'] == 'completed', str(iq))
        finally:
            await slixhelp.close(a)
        n = await slixhelp.login(srv.c2s_port, 'newbie@localhost', 'newbie-pw')
        await slixhelp.close(n)
    slixhelp.run(go)
    check(can_login(srv, 'newbie', 'newbie-pw'), 'the added account cannot log in')
    check(not can_login(srv, 'newbie', 'other-pw'), 'a wrong password logs in')


def t02_add_existing_conflict(admin):
    r = run_form_command(admin, NS_ADMIN + '#add-user',
                         [('accountjid', 'user@localhost'), ('password', 'x'),
                          ('password-verify', 'x')])
    expect_cmd_error(r, 'conflict')
    # a JID of a host this server does not serve
    r = run_form_command(admin, NS_ADMIN + '#add-user',
                         [('accountjid', 'someone@elsewhere.invalid'), ('password', 'x'),
                          ('password-verify', 'x')])
    expect_cmd_error(r, 'bad-request', 'bad-payload')
    # a password SASLprep refuses (a C1 control character, RFC 4013 2.3)
    r = run_form_command(admin, NS_ADMIN + '#add-user',
                         [('accountjid', 'ctl@localhost'), ('password', 'a\u0085b'),
                          ('password-verify', 'a\u0085b')])
    expect_cmd_error(r, 'not-acceptable', 'bad-payload')


def t03_change_password(srv, admin):
    srv.add_user('pw', 'old-pw')
    el = run_form_command(admin, NS_ADMIN + '#change-user-password',
                          [('accountjid', 'pw@localhost'), ('password', 'new-pw')])
    check(el.get('status') == 'completed', tostr(el))
    check(not can_login(srv, 'pw', 'old-pw'), 'the old password still works')
    check(can_login(srv, 'pw', 'new-pw'), 'the new password does not work')
    r = run_form_command(admin, NS_ADMIN + '#change-user-password',
                         [('accountjid', 'nobody@localhost'), ('password', 'x')])
    expect_cmd_error(r, 'item-not-found')


def t04_delete_user(srv, admin):
    srv.add_user('doomed', 'doomed-pw')
    victim = online(srv, 'doomed', 'doomed-pw', 'd')
    try:
        el = run_form_command(admin, NS_ADMIN + '#delete-user',
                              [('accountjids', ['doomed@localhost'])])
        check(el.get('status') == 'completed', tostr(el))
        check(victim.wait_stream_end(10), 'the deleted account\'s session was not ended')
        check(victim.stream_error == 'not-authorized', 'stream error %s' % victim.stream_error)
        check(not can_login(srv, 'doomed', 'doomed-pw'), 'the deleted account logs in')
        r = run_form_command(admin, NS_ADMIN + '#delete-user',
                             [('accountjids', ['doomed@localhost'])])
        expect_cmd_error(r, 'item-not-found')
    finally:
        closeall(victim)


def t05_end_user_session(srv, admin):
    srv.add_user('kicked', 'kicked-pw')
    k1 = online(srv, 'kicked', 'kicked-pw', 'one')
    k2 = online(srv, 'kicked', 'kicked-pw', 'two')
    k3 = None
    try:
        el = run_form_command(admin, NS_ADMIN + '#end-user-session',
                              [('accountjids', ['kicked@localhost/one'])])
        check(el.get('status') == 'completed', tostr(el))
        check(k1.wait_stream_end(10), 'the full JID\'s session was not ended')
        sync(k2)    # the other resource is untouched
        k3 = online(srv, 'kicked', 'kicked-pw', 'three')
        el = run_form_command(admin, NS_ADMIN + '#end-user-session',
                              [('accountjids', ['kicked@localhost'])])
        check(el.get('status') == 'completed', tostr(el))
        check(note(el) == ('info', '2 session(s) ended.'), tostr(el))
        for c in (k2, k3):
            check(c.wait_stream_end(10), 'a session of the bare JID was not ended')
        check(can_login(srv, 'kicked', 'kicked-pw'), 'the account itself must stay')
    finally:
        closeall(k1, k2, k3)


def t06_announce(srv, admin):
    srv.add_user('ann1', 'pw1')
    srv.add_user('ann2', 'pw2')
    a1 = online(srv, 'ann1', 'pw1', 'r')
    a2 = online(srv, 'ann2', 'pw2', 'r')
    a2b = online(srv, 'ann2', 'pw2', 'r2')
    try:
        el = run_form_command(admin, NS_ADMIN + '#announce',
                              [('subject', 'Maintenance'),
                               ('body', ['Server restarts at 22:00.', 'Sorry.'])])
        check(el.get('status') == 'completed', tostr(el))
        for c in (a1, a2, a2b):
            m = c.wait_for('message', lambda e: e.get('from') == 'localhost', timeout=10)
            check(body_of(m) == 'Server restarts at 22:00.\nSorry.', tostr(m))
            subj = child(m, 'subject')
            check(subj is not None and subj.text == 'Maintenance', tostr(m))
    finally:
        closeall(a1, a2, a2b)


def t07_online_users(srv, admin):
    srv.add_user('on1', 'pw1')
    o1 = online(srv, 'on1', 'pw1', 'x')
    o1b = online(srv, 'on1', 'pw1', 'y')
    try:
        r = command(admin, NS_ADMIN + '#get-online-users-num', 'execute')
        el = child(r, 'command', 'http://jabber.org/protocol/commands')
        check(r.get('type') == 'result' and el.get('status') == 'completed', tostr(r))
        x = child(el, 'x', NS_DATA)
        check(x is not None and x.get('type') == 'result', tostr(r))
        # online now: admin and on1 (two resources: one user), plus user
        check(field_values(x, 'onlineusersnum') == ['3'], tostr(x))
        el = run_form_command(admin, NS_ADMIN + '#get-online-users-list', [('max_items', '25')])
        x = child(el, 'x', NS_DATA)
        check(field_values(x, 'onlineuserjids') ==
              ['admin@localhost', 'on1@localhost', 'user@localhost'], tostr(x))
    finally:
        closeall(o1, o1b)


def t08_forbidden_for_users(user):
    for cmd in ('add-user', 'delete-user', 'change-user-password', 'end-user-session', 'announce',
                'get-online-users-num', 'get-online-users-list'):
        expect_cmd_error(command(user, NS_ADMIN + '#' + cmd, 'execute'), 'forbidden')


def main():
    try:
        # MAGPIE_TEST_STORAGE=mysql (with MAGPIE_TEST_MYSQL from tests/mariadb.sh, a
        # fresh database) runs the same conversations on the MySQL driver
        srv = MagpieServer(args.builddir, workers=args.workers,
                           storage=os.environ.get('MAGPIE_TEST_STORAGE', 'sqlite'),
                           extra_config='admins = [ "admin@localhost" ];')
        # the default module list of the fixture plus the two ad-hoc modules
        srv.modules += ['adhoc', 'admin_adhoc']
        srv.write_config()
        srv.__enter__()
    except Exception as e:
        R.fail('66.00 admin_adhoc_server_start', e)
        R.exit()
    admin = user = None
    try:
        srv.add_user('admin', 'admin-pw')
        srv.add_user('user', 'user-pw')
        R.run('66.01 admin_add_user_slixmpp_then_login', t01_add_user_slixmpp, srv, server=srv)
        admin = online(srv, 'admin', 'admin-pw', 'a')
        user = online(srv, 'user', 'user-pw', 'u')
        R.run('66.02 admin_add_existing_conflict', t02_add_existing_conflict, admin, server=srv)
        R.run('66.03 admin_change_password', t03_change_password, srv, admin, server=srv)
        R.run('66.04 admin_delete_user_ends_session', t04_delete_user, srv, admin, server=srv)
        R.run('66.05 admin_end_user_session', t05_end_user_session, srv, admin, server=srv)
        R.run('66.06 admin_announce_two_users', t06_announce, srv, admin, server=srv)
        R.run('66.07 admin_online_users', t07_online_users, srv, admin, server=srv)
        R.run('66.08 admin_forbidden_for_users', t08_forbidden_for_users, user, server=srv)
    except Exception as e:
        R.fail('66.00 admin_adhoc_setup', e)
    closeall(admin, user)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('66.99 admin_adhoc_clean_shutdown', e)
    R.exit()


main()
