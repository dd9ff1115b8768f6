#!/usr/bin/python3
"""31: XEP-0045 roles and affiliations (mod_muc): kick (307), voice
revoked and granted, moderator granted and its limits, ban (301) and the
outcast list, members-only rooms (registration-required, 322 for those
left without membership), admins and their limits, the last owner
(conflict), passwords (not-authorized), a full room (service-unavailable),
item-not-found, and who may read which list."""

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, no_stanza, body_of)
from muchelp import (NS_ADMIN, room_jid, occ, codes, item, send_join, join, join_ok, create,
                     configure, groupchat, wait_body, admin, admin_list, expect_presence_error)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
ROOM = 'staff'


def unavailable_of(cl, nick):
    return cl.wait_for('presence', lambda e: e.get('from') == occ(ROOM, nick) and e.get('type') == 'unavailable')


def presence_of(cl, nick, pred=None):
    return cl.wait_for('presence', lambda e: e.get('from') == occ(ROOM, nick) and e.get('type') is None
                       and (pred is None or pred(e)))


def iq_error(r, cond):
    check(r.get('type') == 'error' and error_condition(r) == cond, 'want %s: %s' % (cond, tostr(r)))


def list_jids(r):
    q = child(r, 'query', NS_ADMIN)
    return {i.get('jid') for i in q}


def t01_setup(srv, u):
    create(u['alice'], ROOM, 'Alice')
    join_ok(u['bob'], ROOM, 'Bob')
    join_ok(u['carol'], ROOM, 'Carol')


def t02_kick(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    # a participant may not kick
    iq_error(admin(c, ROOM, [{'nick': 'Bob', 'role': 'none'}]), 'forbidden')
    iq_error(admin(a, ROOM, [{'nick': 'Nobody', 'role': 'none'}]), 'item-not-found')
    r = admin(a, ROOM, [{'nick': 'Carol', 'role': 'none', 'reason': 'Be quiet'}])
    check(r.get('type') == 'result', tostr(r))
    k = unavailable_of(c, 'Carol')
    check({307, 110} <= codes(k), tostr(k))
    it = item(k)
    check(it.get('role') == 'none' and child(it, 'actor') is not None and
          child(it, 'actor').get('nick') == 'Alice' and child(it, 'reason').text == 'Be quiet', tostr(k))
    k = unavailable_of(b, 'Carol')
    check(307 in codes(k) and 110 not in codes(k), tostr(k))
    groupchat(a, ROOM, 'carol kicked')
    wait_body(b, 'carol kicked')
    no_stanza(c, 'message', 0.3, lambda e: body_of(e) == 'carol kicked')
    # a kick is not a ban: she comes back
    join_ok(c, ROOM, 'Carol')


def t03_voice(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    check(admin(a, ROOM, [{'nick': 'Bob', 'role': 'visitor'}]).get('type') == 'result', 'revoke voice')
    presence_of(c, 'Bob', lambda e: item(e).get('role') == 'visitor')
    p = presence_of(b, 'Bob', lambda e: 110 in codes(e))
    check(item(p).get('role') == 'visitor', tostr(p))
    b.send("<message to='%s' type='groupchat' id='v1'><body>can I speak</body></message>" % room_jid(ROOM))
    e = b.wait_for('message', lambda e: e.get('id') == 'v1' and e.get('type') == 'error')
    check(error_condition(e) == 'forbidden', tostr(e))
    no_stanza(a, 'message', 0.3, lambda e: body_of(e) == 'can I speak')
    # moderators list
    r = admin_list(a, ROOM, role='visitor')
    q = child(r, 'query', NS_ADMIN)
    check([i.get('nick') for i in q] == ['Bob'], tostr(r))
    iq_error(admin_list(c, ROOM, role='moderator'), 'forbidden')
    check(admin(a, ROOM, [{'nick': 'Bob', 'role': 'participant'}]).get('type') == 'result', 'grant voice')
    presence_of(b, 'Bob', lambda e: item(e).get('role') == 'participant')
    groupchat(b, ROOM, 'I speak')
    wait_body(a, 'I speak')


def t04_moderator_limits(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    check(admin(a, ROOM, [{'nick': 'Bob', 'role': 'moderator'}]).get('type') == 'result', 'grant mod')
    presence_of(b, 'Bob', lambda e: item(e).get('role') == 'moderator')
    # Bob, moderator without affiliation: cannot kick the owner, cannot make moderators
    iq_error(admin(b, ROOM, [{'nick': 'Alice', 'role': 'none'}]), 'not-allowed')
    iq_error(admin(b, ROOM, [{'nick': 'Carol', 'role': 'moderator'}]), 'forbidden')
    # ... but he kicks a participant
    check(admin(b, ROOM, [{'nick': 'Carol', 'role': 'none'}]).get('type') == 'result', 'mod kicks')
    k = unavailable_of(c, 'Carol')
    check(307 in codes(k) and child(item(k), 'actor').get('nick') == 'Bob', tostr(k))
    check(admin(a, ROOM, [{'nick': 'Bob', 'role': 'participant'}]).get('type') == 'result', 'revoke mod')
    presence_of(b, 'Bob', lambda e: item(e).get('role') == 'participant' and 110 in codes(e))
    # all or nothing: one bad item, nothing applied
    iq_error(admin(a, ROOM, [{'nick': 'Bob', 'role': 'visitor'}, {'nick': 'Ghost', 'role': 'none'}]),
             'item-not-found')
    no_stanza(b, 'presence', 0.3, lambda e: item(e) is not None and item(e).get('role') == 'visitor')


def t05_ban(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    join_ok(c, ROOM, 'Carol')
    iq_error(admin(b, ROOM, [{'jid': 'carol@localhost', 'affiliation': 'outcast'}]), 'forbidden')
    r = admin(a, ROOM, [{'jid': 'carol@localhost', 'affiliation': 'outcast', 'reason': 'Spam'}])
    check(r.get('type') == 'result', tostr(r))
    k = unavailable_of(c, 'Carol')
    check({301, 110} <= codes(k) and item(k).get('affiliation') == 'outcast', tostr(k))
    k = unavailable_of(b, 'Carol')
    check(301 in codes(k), tostr(k))
    send_join(c, ROOM, 'Carol')
    expect_presence_error(c, ROOM, 'Carol', 'forbidden')
    r = admin_list(a, ROOM, affiliation='outcast')
    check(list_jids(r) == {'carol@localhost'}, tostr(r))
    iq_error(admin_list(b, ROOM, affiliation='outcast'), 'forbidden')
    # lifting the ban
    check(admin(a, ROOM, [{'jid': 'carol@localhost', 'affiliation': 'none'}]).get('type') == 'result', 'unban')
    join_ok(c, ROOM, 'Carol')


def t06_members_only(srv, u):
    a, b, c, d = u['alice'], u['bob'], u['carol'], u['dave']
    check(admin(a, ROOM, [{'jid': 'bob@localhost', 'affiliation': 'member'}]).get('type') == 'result', 'member')
    presence_of(b, 'Bob', lambda e: item(e).get('affiliation') == 'member')
    r = configure(a, ROOM, {'muc#roomconfig_membersonly': '1'})
    check(r.get('type') == 'result', tostr(r))
    # Carol, no member, has to leave (322); Bob stays
    k = unavailable_of(c, 'Carol')
    check(322 in codes(k), tostr(k))
    b.wait_for('message', lambda e: e.get('from') == room_jid(ROOM) and 104 in codes(e))
    send_join(d, ROOM, 'Dave')
    expect_presence_error(d, ROOM, 'Dave', 'registration-required')
    check(admin(a, ROOM, [{'jid': 'dave@localhost', 'affiliation': 'member'}]).get('type') == 'result', 'add dave')
    join_ok(d, ROOM, 'Dave')
    r = admin_list(a, ROOM, affiliation='member')
    check(list_jids(r) == {'bob@localhost', 'dave@localhost'}, tostr(r))
    iq_error(admin_list(b, ROOM, affiliation='member'), 'forbidden')


def t07_admins(srv, u):
    a, b, d = u['alice'], u['bob'], u['dave']
    check(admin(a, ROOM, [{'jid': 'bob@localhost', 'affiliation': 'admin'}]).get('type') == 'result', 'admin')
    p = presence_of(b, 'Bob', lambda e: item(e).get('affiliation') == 'admin' and 110 in codes(e))
    check(item(p).get('role') == 'moderator', tostr(p))
    iq_error(admin(b, ROOM, [{'jid': 'dave@localhost', 'affiliation': 'owner'}]), 'forbidden')
    iq_error(admin(b, ROOM, [{'jid': 'dave@localhost', 'affiliation': 'admin'}]), 'forbidden')
    iq_error(admin(b, ROOM, [{'jid': 'alice@localhost', 'affiliation': 'outcast'}]), 'not-allowed')
    iq_error(admin(b, ROOM, [{'nick': 'Alice', 'role': 'none'}]), 'not-allowed')
    # an admin manages members
    check(admin(b, ROOM, [{'jid': 'carol@localhost', 'affiliation': 'member'}]).get('type') == 'result', 'admin adds member')
    r = admin_list(b, ROOM, affiliation='owner')
    check(list_jids(r) == {'alice@localhost'}, tostr(r))
    r = admin_list(a, ROOM, affiliation='admin')
    check(list_jids(r) == {'bob@localhost'}, tostr(r))
    # the owner's configuration is the owner's
    r = b.iq('get', room_jid(ROOM), "<query xmlns='http://jabber.org/protocol/muc#owner'/>")
    iq_error(r, 'forbidden')


def t08_last_owner(srv, u):
    a = u['alice']
    iq_error(admin(a, ROOM, [{'jid': 'alice@localhost', 'affiliation': 'admin'}]), 'conflict')
    # with a second owner it works
    check(admin(a, ROOM, [{'jid': 'dave@localhost', 'affiliation': 'owner'}]).get('type') == 'result', 'owner')
    r = admin_list(a, ROOM, affiliation='owner')
    check(list_jids(r) == {'alice@localhost', 'dave@localhost'}, tostr(r))
    check(admin(u['dave'], ROOM, [{'jid': 'dave@localhost', 'affiliation': 'member'}]).get('type') == 'result',
          'owner steps down')


def t09_password(srv, u):
    a, c = u['alice'], u['carol']
    r = configure(a, ROOM, {'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'sesame'})
    check(r.get('type') == 'result', tostr(r))
    send_join(c, ROOM, 'Carol')
    expect_presence_error(c, ROOM, 'Carol', 'not-authorized')
    send_join(c, ROOM, 'Carol', password='wrong')
    expect_presence_error(c, ROOM, 'Carol', 'not-authorized')
    join_ok(c, ROOM, 'Carol', password='sesame')
    # protected without a password is refused
    r = configure(a, ROOM, {'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': ''})
    iq_error(r, 'not-acceptable')
    r = configure(a, ROOM, {'muc#roomconfig_passwordprotectedroom': '0'})
    check(r.get('type') == 'result', tostr(r))


def t10_full_room(srv, u):
    a, c, e = u['alice'], u['carol'], u['eve']
    # occupants now: Alice, Bob, Dave, Carol
    check(admin(a, ROOM, [{'jid': 'eve@localhost', 'affiliation': 'member'}]).get('type') == 'result', 'eve')
    r = configure(a, ROOM, {'muc#roomconfig_maxusers': '4'})
    check(r.get('type') == 'result', tostr(r))
    send_join(e, ROOM, 'Eve')
    expect_presence_error(e, ROOM, 'Eve', 'service-unavailable')
    c.send("<presence to='%s' type='unavailable'/>" % occ(ROOM, 'Carol'))
    unavailable_of(c, 'Carol')
    join_ok(e, ROOM, 'Eve')


def t11_bad_requests(srv, u):
    a = u['alice']
    iq_error(admin(a, ROOM, [{'jid': 'x@localhost', 'affiliation': 'emperor'}]), 'bad-request')
    iq_error(a.iq('set', room_jid(ROOM), "<query xmlns='%s'/>" % NS_ADMIN), 'bad-request')
    iq_error(admin(a, 'nosuchroom', [{'nick': 'X', 'role': 'none'}]), 'item-not-found')


TESTS = [t01_setup, t02_kick, t03_voice, t04_moderator_limits, t05_ban, t06_members_only,
         t07_admins, t08_last_owner, t09_password, t10_full_room, t11_bad_requests]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('31.00 muc_admin_server_start', e)
        R.exit()
    u = {}
    try:
        for n in ('alice', 'bob', 'carol', 'dave', 'eve'):
            srv.add_user(n, n + '-pw')
            u[n] = online(srv, n, n + '-pw', 'adm')
        for i, t in enumerate(TESTS, 1):
            ok = R.run('31.%02d muc_admin_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, u, server=srv)
            for x in u.values():
                x.drain(0.1)
            if not ok and i == 1:
                break
    except Exception as e:
        R.fail('31.00 muc_admin_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('31.99 muc_admin_clean_shutdown', e)
    R.exit()


main()
