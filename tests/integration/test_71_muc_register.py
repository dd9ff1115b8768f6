#!/usr/bin/python3
"""71: registering with a room (XEP-0045 7.10) and reserved nicks (7.12),
raw stanzas: the muc#register form, registration making the user a member
of a members-only room (registration-required before), <registered/>
afterwards, the reserved nick refused to others (conflict on entering and
on registering), the x-roomuser-item disco query, an occupant's new
affiliation and voice broadcast, and the errors."""

from common import Results, parse_args, check, child, error_condition, tostr, local
from muchelp import (run_suite, NS_XDATA, DISCO_INFO, create, join, join_ok, leave, item, room_jid,
                     occ, form_values, admin_list, admin, expect_presence_error, send_join, esc)

NS_REG = 'jabber:iq:register'
NS_MUCREG = 'http://jabber.org/protocol/muc#register'
NS_ADMIN = 'http://jabber.org/protocol/muc#admin'
args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')


def register(c, room, nick=None, ftype='submit', form_type=NS_MUCREG):
    fields = "<field var='FORM_TYPE'><value>%s</value></field>" % form_type
    if nick is not None:
        fields += "<field var='muc#register_roomnick'><value>%s</value></field>" % esc(nick)
    return c.iq('set', room_jid(room), "<query xmlns='%s'><x xmlns='%s' type='%s'>%s</x></query>"
                % (NS_REG, NS_XDATA, ftype, fields))


def reserved_nick(c, room):
    r = c.iq('get', room_jid(room), "<query xmlns='%s' node='x-roomuser-item'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', DISCO_INFO)
    check(q.get('node') == 'x-roomuser-item', tostr(r))
    ids = [e for e in q if local(e.tag) == 'identity']
    return ids[0].get('name') if ids else None


def t01_register_members_only(u):
    a, b, c = u['alice'], u['bob'], u['carol']
    create(a, 'club', 'Alice', {'muc#roomconfig_membersonly': '1'})
    r = a.iq('get', room_jid('club'), "<query xmlns='%s'/>" % DISCO_INFO)
    feats = {f.get('var') for f in child(r, 'query', DISCO_INFO) if local(f.tag) == 'feature'}
    check(NS_REG in feats, feats)
    # not a member: registration-required
    send_join(b, 'club', 'Bobby')
    expect_presence_error(b, 'club', 'Bobby', 'registration-required')
    # the form
    r = b.iq('get', room_jid('club'), "<query xmlns='%s'/>" % NS_REG)
    check(r.get('type') == 'result', tostr(r))
    x = child(child(r, 'query', NS_REG), 'x', NS_XDATA)
    check(x is not None and x.get('type') == 'form', tostr(r))
    vals = form_values(x)
    check(vals.get('FORM_TYPE') == [NS_MUCREG] and 'muc#register_roomnick' in vals, vals)
    nickf = [f for f in x if local(f.tag) == 'field' and f.get('var') == 'muc#register_roomnick'][0]
    check(child(nickf, 'required', NS_XDATA) is not None, tostr(nickf))
    check(reserved_nick(b, 'club') is None, 'a nick before registering')
    # registering: a member with a reserved nick
    r = register(b, 'club', 'Bobby')
    check(r.get('type') == 'result', tostr(r))
    r = admin_list(a, 'club', affiliation='member')
    items = [i for i in child(r, 'query', NS_ADMIN)]
    check([(i.get('jid'), i.get('nick')) for i in items] == [('bob@localhost', 'Bobby')], tostr(r))
    r = b.iq('get', room_jid('club'), "<query xmlns='%s'/>" % NS_REG)
    q = child(r, 'query', NS_REG)
    check(child(q, 'registered', NS_REG) is not None and child(q, 'username', NS_REG).text == 'Bobby',
          tostr(r))
    check(reserved_nick(b, 'club') == 'Bobby', 'reserved nick')
    p = join_ok(b, 'club', 'Bobby')
    check(item(p).get('affiliation') == 'member', tostr(p))
    # the nick is Bob's: carol may neither register it nor enter with it
    r = register(c, 'club', 'Bobby')
    check(r.get('type') == 'error' and error_condition(r) == 'conflict', tostr(r))
    r = register(c, 'club', 'Caro')
    check(r.get('type') == 'result', tostr(r))
    leave(b, 'club', 'Bobby')
    send_join(c, 'club', 'Bobby')
    expect_presence_error(c, 'club', 'Bobby', 'conflict')
    join_ok(c, 'club', 'Caro')
    join_ok(b, 'club', 'Bobby')
    # registering again with another nick moves the reservation
    r = register(c, 'club', 'Caroline')
    check(r.get('type') == 'result' and reserved_nick(c, 'club') == 'Caroline', tostr(r))


def t02_register_in_room(u):
    a, d = u['alice'], u['dave']
    # a moderated open room: a visitor who registers becomes a member
    # with voice, and everyone is told
    create(a, 'stage', 'Alice', {'muc#roomconfig_moderatedroom': '1'})
    p = join_ok(d, 'stage', 'Dave')
    check(item(p).get('role') == 'visitor', tostr(p))
    r = register(d, 'stage', 'Dave')
    check(r.get('type') == 'result', tostr(r))
    for who in (a, d):
        p = who.wait_for('presence', lambda e: e.get('from') == occ('stage', 'Dave') and
                         item(e) is not None and item(e).get('affiliation') == 'member')
        check(item(p).get('role') == 'participant', tostr(p))


def t03_errors(u):
    a, c, d = u['alice'], u['carol'], u['dave']
    # no nickname
    r = register(d, 'club')
    check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable', tostr(r))
    # not the registration form
    r = register(d, 'club', 'D', form_type='urn:example:other')
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    r = d.iq('set', room_jid('club'), "<query xmlns='%s'><username>d</username></query>" % NS_REG)
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    # a nick in use in the room by someone else
    r = register(d, 'club', 'Alice')
    check(r.get('type') == 'error' and error_condition(r) == 'conflict', tostr(r))
    # a cancelled form registers nothing
    r = register(d, 'club', 'Dee', ftype='cancel')
    check(r.get('type') == 'result' and reserved_nick(d, 'club') is None, tostr(r))
    # an outcast may not
    check(admin(a, 'club', [{'jid': 'carol@localhost', 'affiliation': 'outcast'}]).get('type') == 'result', '')
    c.wait_for('presence', lambda e: e.get('from') == occ('club', 'Caro') and e.get('type') == 'unavailable')
    r = c.iq('get', room_jid('club'), "<query xmlns='%s'/>" % NS_REG)
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    r = register(c, 'club', 'Caro')
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    # a room that does not exist
    r = d.iq('get', room_jid('nosuch71'), "<query xmlns='%s'/>" % NS_REG)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    p = join(d, 'club', 'Dee')
    check(p.get('type') == 'error' and error_condition(p) == 'registration-required', tostr(p))


run_suite(R, args, 71, 'muc_register', [('members_only', t01_register_members_only),
                                         ('in_room', t02_register_in_room),
                                         ('errors', t03_errors)], USERS)
