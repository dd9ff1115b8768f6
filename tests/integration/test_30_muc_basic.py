#!/usr/bin/python3
"""30: XEP-0045 Multi-User Chat, the occupant's side (mod_muc, loaded by
default): creating a room (201, locked until configured), entering (the
others' presence, then one's own with 110, then the subject), presence
broadcast with roles and real JIDs for moderators only, groupchat
fan-out with occupant ids (XEP-0421), private messages, nick conflicts and
changes (303), the subject, leaving, disco on the service and the room,
an occupant removed when its session ends or its server bounces what the
room sends (333), and self-ping (XEP-0410)."""

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, local, no_stanza, body_of, wait_until, XMPPError)
from muchelp import (MUC, NS_MUC, NS_USER, NS_XDATA, DISCO_INFO, DISCO_ITEMS, room_jid, occ, codes,
                     item, occupant_id, send_join, join, join_ok, leave, create, groupchat,
                     wait_body, form_values, expect_presence_error)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
ROOM = 'lobby'


def from_is(j):
    return lambda e: e.get('from') == j


def t01_create_locked_room(srv, a, b, c):
    send_join(a, ROOM, 'Alice')
    p = a.wait_for('presence', from_is(occ(ROOM, 'Alice')))
    check(p.get('type') is None, tostr(p))
    check({110, 201} <= codes(p), 'want 110 and 201: %s' % tostr(p))
    it = item(p)
    check(it.get('affiliation') == 'owner' and it.get('role') == 'moderator', tostr(p))
    check(it.get('jid') == a.jid, 'own presence carries own JID: %s' % tostr(p))
    check(occupant_id(p), 'no occupant-id: %s' % tostr(p))
    s = a.wait_for('message', lambda e: child(e, 'subject') is not None)
    check(s.get('from') == room_jid(ROOM) and s.get('type') == 'groupchat', tostr(s))
    check(not (child(s, 'subject').text or ''), 'empty subject expected: %s' % tostr(s))
    # locked (10.1.1): nobody else gets in, the room does not show
    send_join(b, ROOM, 'Bob')
    expect_presence_error(b, ROOM, 'Bob', 'item-not-found')
    r = b.iq('get', room_jid(ROOM), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    # the owner accepts the defaults (instant room)
    r = a.iq('set', room_jid(ROOM), "<query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'/></query>")
    check(r.get('type') == 'result', tostr(r))


def t02_enter_existing_room(srv, a, b, c):
    send_join(b, ROOM, 'Bob')
    got = []
    while not any(child(e, 'subject') is not None for e in got):
        el = b.recv(timeout=5)
        check(el is not None, 'entering stalled after %s' % [tostr(e) for e in got])
        got.append(el)
    # XEP-0045 7.2.3: the occupants already there, then one's own presence, then the subject
    kinds = [(local(e.tag), e.get('from')) for e in got if local(e.tag) in ('presence', 'message')]
    check(kinds == [('presence', occ(ROOM, 'Alice')), ('presence', occ(ROOM, 'Bob')),
                    ('message', room_jid(ROOM))],
          'order: %s' % kinds)
    pa, pb, s = got[-3], got[-2], got[-1]
    # Alice, without her JID (bob is no moderator in a semi-anonymous room)
    check(item(pa).get('role') == 'moderator' and item(pa).get('jid') is None, tostr(pa))
    check(occupant_id(pa), tostr(pa))
    check(codes(pb) == {110, 170}, 'self presence codes (170: the room archives): %s' % tostr(pb))
    check(item(pb).get('role') == 'participant' and item(pb).get('affiliation') == 'none', tostr(pb))
    check(s.get('to') == b.jid, tostr(s))
    # Alice, a moderator, sees Bob's real JID
    p = a.wait_for('presence', from_is(occ(ROOM, 'Bob')))
    check(item(p).get('jid') == b.jid and 110 not in codes(p), tostr(p))
    check(occupant_id(p) == occupant_id(pb), 'occupant id differs between views')


def t03_groupchat_fan_out(srv, a, b, c):
    mid = groupchat(b, ROOM, 'hello room')
    for cl in (a, b):
        m = wait_body(cl, 'hello room')
        check(m.get('from') == occ(ROOM, 'Bob') and m.get('type') == 'groupchat', tostr(m))
        check(m.get('to') == cl.jid and m.get('id') == mid, tostr(m))
        check(occupant_id(m), 'no occupant-id on a message: %s' % tostr(m))
    # a spoofed occupant-id from the client is replaced (XEP-0421 §4)
    b.send("<message to='%s' type='groupchat'><body>spoof</body>"
           "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='fake'/></message>" % room_jid(ROOM))
    m = wait_body(a, 'spoof')
    ids = [o.get('id') for o in m if local(o.tag) == 'occupant-id']
    check(ids and 'fake' not in ids and len(ids) == 1, tostr(m))
    wait_body(b, 'spoof')
    # a non-occupant cannot post
    groupchat(c, ROOM, 'intruder')
    e = c.wait_for('message', lambda e: e.get('type') == 'error')
    check(error_condition(e) == 'not-acceptable', tostr(e))
    no_stanza(a, 'message', 0.3, lambda e: body_of(e) == 'intruder')


def t04_private_messages(srv, a, b, c):
    a.send("<message to='%s' type='chat' id='pm1'><body>psst</body></message>" % occ(ROOM, 'Bob'))
    m = wait_body(b, 'psst')
    check(m.get('from') == occ(ROOM, 'Alice') and m.get('to') == b.jid, tostr(m))
    check(child(m, 'x', NS_USER) is not None, 'PM without muc#user x: %s' % tostr(m))
    # to a nick nobody has
    a.send("<message to='%s' type='chat' id='pm2'><body>void</body></message>" % occ(ROOM, 'Nobody'))
    e = a.wait_for('message', lambda e: e.get('type') == 'error' and e.get('id') == 'pm2')
    check(error_condition(e) == 'item-not-found', tostr(e))
    # from someone not in the room
    c.send("<message to='%s' type='chat' id='pm3'><body>hi</body></message>" % occ(ROOM, 'Bob'))
    e = c.wait_for('message', lambda e: e.get('type') == 'error' and e.get('id') == 'pm3')
    check(error_condition(e) == 'not-acceptable', tostr(e))
    # groupchat to an occupant JID is a mistake
    a.send("<message to='%s' type='groupchat' id='pm4'><body>x</body></message>" % occ(ROOM, 'Bob'))
    e = a.wait_for('message', lambda e: e.get('type') == 'error' and e.get('id') == 'pm4')
    check(error_condition(e) == 'bad-request', tostr(e))


def t05_nick_conflict(srv, a, b, c):
    send_join(c, ROOM, 'Bob')
    p = expect_presence_error(c, ROOM, 'Bob', 'conflict')
    check(child(p, 'x', NS_MUC) is not None, 'error keeps the request: %s' % tostr(p))
    no_stanza(a, 'presence', 0.3, lambda e: 'Bob' in e.get('from', '') and e.get('type') != 'unavailable')


def t06_nick_change(srv, a, b, c):
    b.send("<presence to='%s'/>" % occ(ROOM, 'Robert'))
    for cl, self_ in ((a, False), (b, True)):
        u = cl.wait_for('presence', lambda e: e.get('from') == occ(ROOM, 'Bob') and e.get('type') == 'unavailable')
        check(303 in codes(u) and item(u).get('nick') == 'Robert', tostr(u))
        check((110 in codes(u)) == self_, tostr(u))
        p = cl.wait_for('presence', from_is(occ(ROOM, 'Robert')))
        check(p.get('type') is None and (110 in codes(p)) == self_, tostr(p))
    # to a nick in use: conflict, nothing changes
    b.send("<presence to='%s'/>" % occ(ROOM, 'Alice'))
    expect_presence_error(b, ROOM, 'Alice', 'conflict')
    groupchat(b, ROOM, 'still robert')
    m = wait_body(a, 'still robert')
    check(m.get('from') == occ(ROOM, 'Robert'), tostr(m))
    wait_body(b, 'still robert')


def t07_subject(srv, a, b, c):
    a.send("<message to='%s' type='groupchat'><subject>Tea time</subject></message>" % room_jid(ROOM))
    for cl in (a, b):
        m = cl.wait_for('message', lambda e: child(e, 'subject') is not None)
        check(m.get('from') == occ(ROOM, 'Alice') and child(m, 'subject').text == 'Tea time', tostr(m))
    # a participant may not (changesubject is off by default)
    b.send("<message to='%s' type='groupchat' id='s2'><subject>Coffee</subject></message>" % room_jid(ROOM))
    e = b.wait_for('message', lambda e: e.get('type') == 'error' and e.get('id') == 's2')
    check(error_condition(e) == 'forbidden', tostr(e))
    # a newcomer gets it after the presences
    p = join(c, ROOM, 'Carol')
    check(p.get('type') is None, tostr(p))
    s = c.wait_for('message', lambda e: child(e, 'subject') is not None)
    check(child(s, 'subject').text == 'Tea time' and s.get('from') == occ(ROOM, 'Alice'), tostr(s))
    c.wait_for('presence', from_is(occ(ROOM, 'Alice')), timeout=0)
    c.wait_for('presence', from_is(occ(ROOM, 'Robert')), timeout=0)


def t08_leave(srv, a, b, c):
    c.send("<presence to='%s' type='unavailable'><status>bye</status></presence>" % occ(ROOM, 'Carol'))
    u = c.wait_for('presence', lambda e: e.get('from') == occ(ROOM, 'Carol') and e.get('type') == 'unavailable')
    check(110 in codes(u) and item(u).get('role') == 'none', tostr(u))
    for cl in (a, b):
        u = cl.wait_for('presence', lambda e: e.get('from') == occ(ROOM, 'Carol') and e.get('type') == 'unavailable')
        check(110 not in codes(u) and child(u, 'status') is not None and child(u, 'status').text == 'bye', tostr(u))
    groupchat(a, ROOM, 'after carol')
    wait_body(b, 'after carol')
    no_stanza(c, 'message', 0.3, lambda e: body_of(e) == 'after carol')


def t09_disco(srv, a, b, c):
    r = c.iq('get', MUC, "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', DISCO_INFO)
    ids = {(i.get('category'), i.get('type')) for i in q if local(i.tag) == 'identity'}
    feats = {f.get('var') for f in q if local(f.tag) == 'feature'}
    check(('conference', 'text') in ids and NS_MUC in feats, tostr(r))
    # the server lists the service in its disco#items (XEP-0045 6.1)
    r = c.iq('get', 'localhost', "<query xmlns='%s'/>" % DISCO_ITEMS)
    check({(i.get('jid'), i.get('name')) for i in child(r, 'query', DISCO_ITEMS)} == {(MUC, 'Chatrooms')}, tostr(r))
    r = c.iq('get', room_jid(ROOM), "<query xmlns='%s'/>" % DISCO_INFO)
    q = child(r, 'query', DISCO_INFO)
    feats = {f.get('var') for f in q if local(f.tag) == 'feature'}
    for f in (NS_MUC, 'muc_public', 'muc_temporary', 'muc_open', 'muc_unmoderated',
              'muc_semianonymous', 'muc_unsecured', 'urn:xmpp:occupant-id:0'):
        check(f in feats, 'room lacks %s: %s' % (f, tostr(r)))
    form = child(q, 'x', NS_XDATA)
    vals = form_values(form)
    check(vals.get('FORM_TYPE') == ['http://jabber.org/protocol/muc#roominfo'], tostr(r))
    check(vals.get('muc#roominfo_occupants') == ['2'], 'occupants: %s' % tostr(r))
    check(vals.get('muc#roominfo_subject') == ['Tea time'], tostr(r))
    r = c.iq('get', MUC, "<query xmlns='%s'/>" % DISCO_ITEMS)
    items = {i.get('jid') for i in child(r, 'query', DISCO_ITEMS)}
    check(room_jid(ROOM) in items, 'room not listed: %s' % tostr(r))
    r = c.iq('get', room_jid('nosuchroom'), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def t10_session_end_leaves(srv, a, b, c):
    d = online(srv, 'dave', 'dave-pw', 'gone')
    try:
        join_ok(d, ROOM, 'Dave')
        a.wait_for('presence', from_is(occ(ROOM, 'Dave')))
        b.wait_for('presence', from_is(occ(ROOM, 'Dave')))
        d.sock.close()  # no unavailable, no </stream>: the session just dies
    finally:
        d.closed = True
    for cl in (a, b):
        u = cl.wait_for('presence', lambda e: e.get('from') == occ(ROOM, 'Dave') and e.get('type') == 'unavailable')
        check(item(u).get('role') == 'none', tostr(u))


def t11_bounce_removes_occupant(srv, a, b, c):
    # Carol's server answers what the room sends with an error (as the
    # router does for a session that has gone): she is removed, 333
    join_ok(c, ROOM, 'Carol')
    a.wait_for('presence', from_is(occ(ROOM, 'Carol')))
    c.send("<message to='%s' type='error'><body>x</body><error type='cancel'>"
           "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
           % occ(ROOM, 'Alice'))
    u = a.wait_for('presence', lambda e: e.get('from') == occ(ROOM, 'Carol') and e.get('type') == 'unavailable')
    check(333 in codes(u), tostr(u))
    groupchat(a, ROOM, 'carol is out')
    wait_body(b, 'carol is out')
    no_stanza(c, 'message', 0.3, lambda e: body_of(e) == 'carol is out')


def t12_self_ping(srv, a, b, c):
    r = b.iq('get', occ(ROOM, 'Robert'), "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'result' and r.get('from') == occ(ROOM, 'Robert'), tostr(r))
    r = c.iq('get', occ(ROOM, 'Carol'), "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable', tostr(r))
    r = c.iq('get', occ('nosuchroom', 'Carol'), "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable', tostr(r))


def t13_iq_between_occupants(srv, a, b, c):
    # a ping from Alice to Robert reaches Bob's client from room/Alice; his answer goes back
    a.send("<iq type='get' id='v1' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % occ(ROOM, 'Robert'))
    q = b.wait_for('iq', lambda e: e.get('id') == 'v1')
    check(q.get('from') == occ(ROOM, 'Alice') and q.get('to') == b.jid, tostr(q))
    b.send("<iq type='result' id='v1' to='%s'/>" % occ(ROOM, 'Alice'))
    r = a.wait_for('iq', lambda e: e.get('id') == 'v1')
    check(r.get('type') == 'result' and r.get('from') == occ(ROOM, 'Robert'), tostr(r))


def t14_instant_room_without_muc_x(srv, a, b, c):
    # a client that does not speak MUC (no <x/>) gets an unlocked room at once
    send_join(a, 'plain', 'Alice', muc=False)
    p = a.wait_for('presence', from_is(occ('plain', 'Alice')))
    check({110, 201} <= codes(p), tostr(p))
    join_ok(b, 'plain', 'Bob')
    # empty temporary rooms disappear
    leave(b, 'plain', 'Bob')
    leave(a, 'plain', 'Alice')
    r = c.iq('get', room_jid('plain'), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def t15_presence_without_nick(srv, a, b, c):
    # presence without a nick
    a.send("<presence to='%s'><x xmlns='%s'/></presence>" % (room_jid('nonick'), NS_MUC))
    e = a.wait_for('presence', lambda e: e.get('type') == 'error' and e.get('from') == room_jid('nonick'))
    check(error_condition(e) == 'jid-malformed', tostr(e))


TESTS = [t01_create_locked_room, t02_enter_existing_room, t03_groupchat_fan_out,
         t04_private_messages, t05_nick_conflict, t06_nick_change, t07_subject, t08_leave,
         t09_disco, t10_session_end_leaves, t11_bounce_removes_occupant, t12_self_ping,
         t13_iq_between_occupants, t14_instant_room_without_muc_x,
         t15_presence_without_nick]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('30.00 muc_server_start', e)
        R.exit()
    cl = []
    try:
        for u in ('alice', 'bob', 'carol', 'dave'):
            srv.add_user(u, u + '-pw')
        a = online(srv, 'alice', 'alice-pw', 'muc')
        b = online(srv, 'bob', 'bob-pw', 'muc')
        c = online(srv, 'carol', 'carol-pw', 'muc')
        cl = [a, b, c]
        for i, t in enumerate(TESTS, 1):
            ok = R.run('30.%02d muc_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, a, b, c, server=srv)
            for x in cl:
                x.drain(0.1)
            if not ok and i <= 2:
                break  # the rest needs the room
    except Exception as e:
        R.fail('30.00 muc_setup', e)
    closeall(*cl)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('30.99 muc_clean_shutdown', e)
    R.exit()


main()
