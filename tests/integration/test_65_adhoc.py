#!/usr/bin/python3
"""65: XEP-0050 ad-hoc commands (mod_adhoc, the framework): the commands
feature in disco, the command list on node
http://jabber.org/protocol/commands (admins see the XEP-0133 commands,
other users do not), disco#info of a command node, forbidden for a
non-admin, item-not-found for an unknown node, a multi-stage session
(form, then complete with the sessionid), cancel, bad-sessionid and
bad-action, and a session that belongs to another resource; a command of
mod_test_echo for any local user walks three forms with next, prev and
complete, keeping its words in the session's state (one session is left
open at shutdown: its state must be freed, LeakSanitizer checks)."""

from common import (MagpieServer, Results, parse_args, check, child, tostr, closeall, online,
                    error_condition)
from adhochelp import (NS_CMD, NS_DATA, NS_ADMIN, NS_INFO, NS_ITEMS, command, cmd_el,
                       expect_cmd_error, form, field_vars, field_values, note)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

ADD = NS_ADMIN + '#add-user'


def items(c, node=NS_CMD):
    r = c.iq('get', 'localhost', "<query xmlns='%s' node='%s'/>" % (NS_ITEMS, node))
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', NS_ITEMS)
    check(q.get('node') == node, tostr(r))
    return [(i.get('jid'), i.get('node'), i.get('name')) for i in q.findall('{%s}item' % NS_ITEMS)]


def t01_feature(admin):
    r = admin.iq('get', 'localhost', "<query xmlns='%s'/>" % NS_INFO)
    feats = [f.get('var') for f in child(r, 'query', NS_INFO).findall('{%s}feature' % NS_INFO)]
    check(NS_CMD in feats, 'commands feature missing: %s' % feats)


def t02_list_admin_vs_user(admin, user):
    a = items(admin)
    nodes = [n for _, n, _ in a]
    for cmd in ('add-user', 'delete-user', 'change-user-password', 'end-user-session', 'announce'):
        check(NS_ADMIN + '#' + cmd in nodes, 'admin does not see %s: %s' % (cmd, a))
    check(all(j == 'localhost' and name for j, _, name in a), 'items lack jid/name: %s' % a)
    u = items(user)
    check(not any(n.startswith(NS_ADMIN) for _, n, _ in u), 'non-admin sees admin commands: %s' % u)


def t03_node_info(admin, user):
    r = admin.iq('get', 'localhost', "<query xmlns='%s' node='%s'/>" % (NS_INFO, ADD))
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', NS_INFO)
    ident = q.find('{%s}identity' % NS_INFO)
    check(ident is not None and ident.get('category') == 'automation'
          and ident.get('type') == 'command-node', tostr(r))
    feats = [f.get('var') for f in q.findall('{%s}feature' % NS_INFO)]
    check(NS_CMD in feats and NS_DATA in feats, tostr(r))
    r = admin.iq('get', 'localhost', "<query xmlns='%s' node='%s'/>" % (NS_INFO, NS_CMD))
    check(r.get('type') == 'result', tostr(r))
    r = user.iq('get', 'localhost', "<query xmlns='%s' node='%s'/>" % (NS_INFO, ADD))
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    r = admin.iq('get', 'localhost', "<query xmlns='%s' node='urn:nothing'/>" % NS_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def t04_forbidden_and_unknown(admin, user):
    expect_cmd_error(command(user, ADD, 'execute'), 'forbidden')
    expect_cmd_error(command(admin, 'urn:magpie:no-such-command', 'execute'), 'item-not-found')
    # without a node
    r = admin.iq('set', 'localhost', "<command xmlns='%s' action='execute'/>" % NS_CMD)
    expect_cmd_error(r, 'bad-request')


def t05_multistage_and_cancel(admin):
    first = cmd_el(command(admin, ADD))        # no action: execute
    check(first.get('status') == 'executing' and first.get('node') == ADD, tostr(first))
    sid = first.get('sessionid')
    check(sid, tostr(first))
    acts = child(first, 'actions', NS_CMD)
    check(acts is not None and acts.get('execute') == 'complete'
          and acts.find('{%s}complete' % NS_CMD) is not None, 'actions: %s' % tostr(first))
    x = child(first, 'x', NS_DATA)
    check(x is not None and x.get('type') == 'form', tostr(first))
    check({'FORM_TYPE', 'accountjid', 'password', 'password-verify'} <= set(field_vars(x)), tostr(x))
    # cancel
    r = cmd_el(command(admin, ADD, 'cancel', sid))
    check(r.get('status') == 'canceled' and r.get('sessionid') == sid, tostr(r))
    # the session is gone
    expect_cmd_error(command(admin, ADD, 'complete', sid,
                             form([('accountjid', 'x1@localhost'), ('password', 'p'),
                                   ('password-verify', 'p')])), 'bad-request', 'bad-sessionid')
    # an unknown session id
    expect_cmd_error(command(admin, ADD, 'next', 'nonexistent'), 'bad-request', 'bad-sessionid')
    # a first request must execute
    expect_cmd_error(command(admin, ADD, 'next'), 'bad-request', 'bad-action')
    # an action the form did not offer
    sid = cmd_el(command(admin, ADD)).get('sessionid')
    expect_cmd_error(command(admin, ADD, 'prev', sid), 'bad-request', 'bad-action')
    # a malformed action
    sid = cmd_el(command(admin, ADD)).get('sessionid')
    expect_cmd_error(command(admin, ADD, 'jump', sid), 'bad-request', 'malformed-action')


def t06_session_belongs_to_its_requester(srv, admin):
    other = online(srv, 'admin', 'admin-pw', 'other')
    try:
        sid = cmd_el(command(admin, ADD)).get('sessionid')
        expect_cmd_error(command(other, ADD, 'complete', sid,
                                 form([('accountjid', 'x2@localhost'), ('password', 'p'),
                                       ('password-verify', 'p')])), 'bad-request', 'bad-sessionid')
        # the owner still completes it (execute = the default action, complete)
        r = cmd_el(command(admin, ADD, 'execute', sid,
                           form([('accountjid', 'x2@localhost'), ('password', 'p2'),
                                 ('password-verify', 'p2')])))
        check(r.get('status') == 'completed', tostr(r))
        check(note(r) is not None and note(r)[0] == 'info', tostr(r))
    finally:
        closeall(other)


def t07_mismatched_passwords(admin):
    sid = cmd_el(command(admin, ADD)).get('sessionid')
    expect_cmd_error(command(admin, ADD, 'complete', sid,
                             form([('accountjid', 'x3@localhost'), ('password', 'a'),
                                   ('password-verify', 'b')])), 'bad-request', 'bad-payload')


WIZ = 'urn:magpie:test:echo#wizard'


def wform(el, step, stage):
    x = child(el, 'x', NS_DATA)
    check(x is not None and child(x, 'title', NS_DATA) is not None
          and child(x, 'title', NS_DATA).text == 'Word %d' % step, 'expected form %d: %s' % (step, tostr(el)))
    check(field_values(x, 'stage') == [str(stage)], 'stage: %s' % tostr(x))
    acts = child(el, 'actions', NS_CMD)
    return acts, field_values(x, 'word')


def word(w):
    return form([('word', w)], form_type='urn:magpie:test:echo')


def t08_local_user_wizard(admin, user):
    check(WIZ in [n for _, n, _ in items(user)], 'a local user does not see the wizard')
    el = cmd_el(command(user, WIZ))
    sid = el.get('sessionid')
    acts, _ = wform(el, 1, 0)
    check(acts.get('execute') == 'next' and acts.find('{%s}prev' % NS_CMD) is None, tostr(el))
    expect_cmd_error(command(user, WIZ, 'prev', sid), 'bad-request', 'bad-action')
    expect_cmd_error(command(user, WIZ, 'complete', sid, word('x')), 'bad-request', 'bad-action')
    el = cmd_el(command(user, WIZ, 'next', sid, word('alpha')))
    acts, _ = wform(el, 2, 1)
    check(acts.find('{%s}prev' % NS_CMD) is not None and acts.find('{%s}next' % NS_CMD) is not None,
          tostr(el))
    el = cmd_el(command(user, WIZ, 'prev', sid))
    _, w = wform(el, 1, 2)
    check(w == ['alpha'], 'the first word was not kept: %s' % tostr(el))
    cmd_el(command(user, WIZ, 'next', sid, word('alpha')))
    el = cmd_el(command(user, WIZ, 'execute', sid, word('beta')))     # execute = next here
    acts, _ = wform(el, 3, 4)
    check(acts.get('execute') == 'complete' and acts.find('{%s}next' % NS_CMD) is None, tostr(el))
    expect_cmd_error(command(user, WIZ, 'next', sid, word('x')), 'bad-request', 'bad-action')
    el = cmd_el(command(user, WIZ, 'execute', sid, word('gamma')))    # execute = complete
    check(el.get('status') == 'completed' and note(el) == ('info', 'alpha beta gamma'), tostr(el))
    expect_cmd_error(command(user, WIZ, 'next', sid, word('x')), 'bad-request', 'bad-sessionid')
    # two sessions at once are independent; one stays open until shutdown
    s1 = cmd_el(command(user, WIZ)).get('sessionid')
    s2 = cmd_el(command(admin, WIZ)).get('sessionid')
    check(s1 != s2, 'same session id twice')
    cmd_el(command(admin, WIZ, 'next', s2, word('one')))
    el = cmd_el(command(user, WIZ, 'next', s1, word('uno')))
    wform(el, 2, 1)
    check(cmd_el(command(admin, WIZ, 'cancel', s2)).get('status') == 'canceled', 'cancel')


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'adhoc', 'admin_adhoc', 'test_echo'],
                           extra_config='admins = [ "admin@localhost" ];')
        srv.__enter__()
    except Exception as e:
        R.fail('65.00 adhoc_server_start', e)
        R.exit()
    admin = user = None
    try:
        srv.add_user('admin', 'admin-pw')
        srv.add_user('user', 'user-pw')
        admin = online(srv, 'admin', 'admin-pw', 'a')
        user = online(srv, 'user', 'user-pw', 'u')
        R.run('65.01 adhoc_commands_feature', t01_feature, admin, server=srv)
        R.run('65.02 adhoc_list_admin_vs_user', t02_list_admin_vs_user, admin, user, server=srv)
        R.run('65.03 adhoc_command_node_info', t03_node_info, admin, user, server=srv)
        R.run('65.04 adhoc_forbidden_and_unknown', t04_forbidden_and_unknown, admin, user,
              server=srv)
        R.run('65.05 adhoc_multistage_cancel_errors', t05_multistage_and_cancel, admin, server=srv)
        R.run('65.06 adhoc_session_owner', t06_session_belongs_to_its_requester, srv, admin,
              server=srv)
        R.run('65.07 adhoc_bad_payload', t07_mismatched_passwords, admin, server=srv)
        R.run('65.08 adhoc_local_user_multistage_state', t08_local_user_wizard, admin, user,
              server=srv)
    except Exception as e:
        R.fail('65.00 adhoc_setup', e)
    closeall(admin, user)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('65.99 adhoc_clean_shutdown', e)
    R.exit()


main()
