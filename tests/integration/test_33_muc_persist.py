#!/usr/bin/python3
"""33: persistent rooms (mod_muc, muc#roomconfig_persistentroom) survive
a restart of magpied: configuration, affiliations, subject and occupant
ids come back from the store; a temporary room does not; a room made
temporary again, or destroyed, is gone after the next restart."""

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, local)
from muchelp import (MUC, NS_XDATA, DISCO_INFO, DISCO_ITEMS, NS_OWNER, room_jid, occ, codes, item,
                     occupant_id, send_join, join, join_ok, leave, create, configure, admin,
                     admin_list, form_values, expect_presence_error, NS_ADMIN)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol')
state = {}


def connect(srv):
    return {n: online(srv, n, n + '-pw', 'p') for n in USERS}


def info(c, room):
    return c.iq('get', room_jid(room), "<query xmlns='%s'/>" % DISCO_INFO)


def t01_before_restart(srv, u):
    a, b = u['alice'], u['bob']
    create(a, 'keep', 'Alice', {'muc#roomconfig_persistentroom': '1', 'muc#roomconfig_roomname': 'Kept Room',
                                'muc#roomconfig_roomdesc': 'Survives restarts', 'muc#roomconfig_moderatedroom': '1',
                                'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'pw1',
                                'muc#roomconfig_maxusers': '30'})
    a.send("<message to='%s' type='groupchat'><subject>Persistent topic</subject></message>" % room_jid('keep'))
    a.wait_for('message', lambda e: child(e, 'subject') is not None and child(e, 'subject').text == 'Persistent topic')
    for jid, aff in (('bob@localhost', 'member'), ('carol@localhost', 'outcast'), ('dave@localhost', 'admin')):
        r = admin(a, 'keep', [{'jid': jid, 'affiliation': aff}])
        check(r.get('type') == 'result', tostr(r))
    p = join_ok(b, 'keep', 'Bob', password='pw1')
    state['bob_oid'] = occupant_id(p)
    leave(b, 'keep', 'Bob')
    leave(a, 'keep', 'Alice')
    # empty, still there
    r = info(b, 'keep')
    check(r.get('type') == 'result', tostr(r))
    # a temporary room and one made temporary again
    create(a, 'temp', 'Alice')
    create(a, 'flip', 'Alice', {'muc#roomconfig_persistentroom': '1'})
    r = configure(a, 'flip', {'muc#roomconfig_persistentroom': '0'})
    check(r.get('type') == 'result', tostr(r))
    # and one destroyed
    create(a, 'gone', 'Alice', {'muc#roomconfig_persistentroom': '1'})
    r = a.iq('set', room_jid('gone'), "<query xmlns='%s'><destroy/></query>" % NS_OWNER)
    check(r.get('type') == 'result', tostr(r))


def t02_after_restart(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    r = info(b, 'keep')
    check(r.get('type') == 'result', 'room lost in the restart: %s' % tostr(r))
    q = child(r, 'query', DISCO_INFO)
    check(child(q, 'identity').get('name') == 'Kept Room', tostr(r))
    feats = {f.get('var') for f in q if local(f.tag) == 'feature'}
    for f in ('muc_persistent', 'muc_moderated', 'muc_passwordprotected'):
        check(f in feats, 'lost %s: %s' % (f, tostr(r)))
    v = form_values(child(q, 'x', NS_XDATA))
    check(v['muc#roominfo_description'] == ['Survives restarts'] and v['muc#roominfo_subject'] == ['Persistent topic'], tostr(r))
    items = {i.get('jid') for i in child(b.iq('get', MUC, "<query xmlns='%s'/>" % DISCO_ITEMS), 'query', DISCO_ITEMS)}
    check(room_jid('keep') in items, items)
    for room in ('temp', 'flip', 'gone'):
        r = info(b, room)
        check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', '%s came back: %s' % (room, tostr(r)))
    # affiliations: carol is still banned, bob still a member with his occupant id
    send_join(c, 'keep', 'Carol', password='pw1')
    expect_presence_error(c, 'keep', 'Carol', 'forbidden')
    send_join(b, 'keep', 'Bob')
    expect_presence_error(b, 'keep', 'Bob', 'not-authorized')
    p = join_ok(b, 'keep', 'Bob', password='pw1')
    check(item(p).get('affiliation') == 'member' and item(p).get('role') == 'participant', tostr(p))
    check(occupant_id(p) == state.get('bob_oid'), 'occupant id changed: %s vs %s' % (occupant_id(p), state.get('bob_oid')))
    p = join_ok(a, 'keep', 'Alice', password='pw1')
    check(item(p).get('affiliation') == 'owner' and 201 not in codes(p), tostr(p))
    r = admin_list(a, 'keep', affiliation='admin')
    check({i.get('jid') for i in child(r, 'query', NS_ADMIN)} == {'dave@localhost'}, tostr(r))
    r = a.iq('get', room_jid('keep'), "<query xmlns='%s'/>" % NS_OWNER)
    v = form_values(child(child(r, 'query', NS_OWNER), 'x', NS_XDATA))
    check(v['muc#roomconfig_maxusers'] == ['30'] and v['muc#roomconfig_roomsecret'] == ['pw1'], tostr(r))


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('33.00 muc_persist_server_start', e)
        R.exit()
    u = {}
    try:
        for n in USERS:
            srv.add_user(n, n + '-pw')
        u = connect(srv)
        R.run('33.01 muc_persist_before_restart', t01_before_restart, srv, u, server=srv)
        closeall(*u.values())
        u = {}

        def restart():
            srv.restart()
        R.run('33.02 muc_persist_clean_restart', restart, server=srv)
        u = connect(srv)
        R.run('33.03 muc_persist_after_restart', t02_after_restart, srv, u, server=srv)
    except Exception as e:
        R.fail('33.00 muc_persist_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('33.99 muc_persist_clean_shutdown', e)
    R.exit()


main()
