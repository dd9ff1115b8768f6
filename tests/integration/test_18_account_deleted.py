#!/usr/bin/python3
"""18: deleting an account with `magpiectl user del` while the server runs:
the running server is told over its control socket, every module's
account_deleted notification runs (mod_test_echo counts them), every
session of the account ends with a not-authorized stream error (on every
worker), other accounts are untouched, and the account cannot log in again."""

import time

from common import (MagpieServer, RawClient, Results, parse_args, check, child, tostr, closeall,
                    online, sync, wait_until)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

ECHO = 'echo.localhost'
NS_ECHO = 'urn:magpie:test:echo'


def stats(c):
    r = c.iq('get', ECHO, "<stats xmlns='%s'/>" % NS_ECHO)
    check(r.get('type') == 'result', tostr(r))
    return {k: int(v) for k, v in child(r, 'stats', NS_ECHO).attrib.items()}


def t01_sessions_end_and_modules_hear(srv, bob):
    srv.add_user('carol', 'carol-pw')
    c1 = online(srv, 'carol', 'carol-pw', 'one')
    c2 = online(srv, 'carol', 'carol-pw', 'two')
    try:
        before = stats(bob)
        p = srv.ctl('user', 'del', 'carol@localhost')
        check(p.returncode == 0, 'magpiectl user del: %s %s' % (p.stdout, p.stderr))
        check('deleted carol@localhost' in p.stdout, p.stdout)
        for c in (c1, c2):
            check(c.wait_stream_end(10), 'a session of the deleted account was not closed')
            check(c.stream_error == 'not-authorized', 'stream error: %s' % c.stream_error)
            text = c.stream_error_el.find('{urn:ietf:params:xml:ns:xmpp-streams}text')
            check(text is not None and text.text == 'Account deleted', tostr(c.stream_error_el))
        check(wait_until(lambda: stats(bob)['deleted-a'] == before['deleted-a'] + 1),
              'account_deleted did not reach the module: %s' % stats(bob))
        after = stats(bob)
        check(after['deleted-b'] == before['deleted-b'] + 1, 'second subscriber: %s' % after)
        # bob is still served
        sync(bob)
        # and carol cannot log in again
        c3 = RawClient(srv.c2s_port)
        try:
            c3.open_stream()
            c3.starttls()
            check(not c3.auth('carol', 'carol-pw', 'SCRAM-SHA-256'), 'deleted account logged in')
        finally:
            c3.close()
    finally:
        closeall(c1, c2)


def t02_no_server_running_is_fine(srv, bob):
    """Deleting with the server stopped is not an error (nothing to tell)."""
    srv.add_user('dave', 'dave-pw')
    srv.stop()
    p = srv.ctl('user', 'del', 'dave@localhost')
    check(p.returncode == 0 and 'deleted dave@localhost' in p.stdout, '%s %s' % (p.stdout, p.stderr))


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'test_echo'])
        srv.__enter__()
    except Exception as e:
        R.fail('18.00 account_deleted_server_start', e)
        R.exit()
    bob = None
    try:
        srv.add_user('bob', 'bob-pw')
        bob = online(srv, 'bob', 'bob-pw', 'b')
        R.run('18.01 account_deleted_sessions_end_and_modules_hear', t01_sessions_end_and_modules_hear,
              srv, bob, server=srv)
        closeall(bob)
        bob = None
        R.run('18.02 account_deleted_with_no_server_running', t02_no_server_running_is_fine, srv,
              None)
    except Exception as e:
        R.fail('18.00 account_deleted_setup', e)
    closeall(bob)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('18.99 account_deleted_clean_shutdown', e)
    R.exit()


main()
