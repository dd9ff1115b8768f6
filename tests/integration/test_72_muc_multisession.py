#!/usr/bin/python3
"""72: multi-session occupants (XEP-0045 7.2: one user, one nick, several
resources), raw stanzas: a second resource of the same bare JID entering
with the same nick joins the same occupant (its own self-presence, the
others see nothing new), groupchat and private messages reach every
resource, either resource may speak, one leaving does not remove the
occupant while another remains; another user with that nick gets
conflict."""

import slixhelp
from common import Results, parse_args, check, tostr, online, no_stanza, body_of
from muchelp import (run_suite, create, join, join_ok, groupchat, wait_body, occ, codes, item,
                     send_join, expect_presence_error, esc)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')


def from_bob(e):
    return e.get('from') == occ('ms', 'Bob')


def pm(c, room, nick, body):
    c.send("<message to='%s' type='chat'><body>%s</body></message>" % (occ(room, nick), esc(body)))


def t01_second_session(u):
    a, b, c, d = u['alice'], u['bob'], u['carol'], u['dave']
    create(a, 'ms', 'Alice')
    join_ok(b, 'ms', 'Bob')
    a.wait_for('presence', from_bob)
    b2 = u['bob2'] = online(u['srv'], 'bob', 'bob-pw', 'phone')
    p = join(b2, 'ms', 'Bob')
    check(p.get('type') != 'error' and 110 in codes(p), 'second session refused: %s' % tostr(p))
    check(item(p).get('jid') in (b.jid, b2.jid) and item(p).get('role') == 'participant', tostr(p))
    # it learns who is there, like any newcomer
    b2.wait_for('presence', lambda e: e.get('from') == occ('ms', 'Alice'))
    # the others see no new occupant, the first session no change
    no_stanza(a, 'presence', 0.5, from_bob)
    no_stanza(b, 'presence', 0.3, from_bob)
    # a newcomer sees one Bob
    join_ok(c, 'ms', 'Carol')
    bobs = [e for e in c.drain(0.5) if e.get('from') == occ('ms', 'Bob')]
    check(len(bobs) == 1 and bobs[0].get('type') is None, [tostr(x) for x in bobs])
    # another user with that nick: conflict
    send_join(d, 'ms', 'Bob')
    expect_presence_error(d, 'ms', 'Bob', 'conflict')


def t02_messages(u):
    a, b, b2, c = u['alice'], u['bob'], u['bob2'], u['carol']
    # groupchat reaches both resources
    groupchat(a, 'ms', 'hello all')
    for who in (b, b2, c):
        wait_body(who, 'hello all')
    # private messages to the nick reach both resources
    pm(c, 'ms', 'Bob', 'psst bob')
    for who in (b, b2):
        m = wait_body(who, 'psst bob')
        check(m.get('from') == occ('ms', 'Carol'), tostr(m))
    no_stanza(a, 'message', 0.3, lambda e: body_of(e) == 'psst bob')
    # either resource speaks as Bob, and both see it
    groupchat(b2, 'ms', 'from the phone')
    for who in (a, b, b2):
        m = wait_body(who, 'from the phone')
        check(m.get('from') == occ('ms', 'Bob'), tostr(m))
    pm(b2, 'ms', 'Carol', 'private from phone')
    m = wait_body(c, 'private from phone')
    check(m.get('from') == occ('ms', 'Bob'), tostr(m))


def t03_leaving(u):
    a, b, b2, c = u['alice'], u['bob'], u['bob2'], u['carol']
    # the phone leaves: it alone is told, Bob stays
    b2.send("<presence to='%s' type='unavailable'/>" % occ('ms', 'Bob'))
    p = b2.wait_for('presence', lambda e: from_bob(e) and e.get('type') == 'unavailable')
    check(110 in codes(p), tostr(p))
    no_stanza(a, 'presence', 0.5, lambda e: from_bob(e) and e.get('type') == 'unavailable')
    no_stanza(b, 'presence', 0.3, lambda e: from_bob(e) and e.get('type') == 'unavailable')
    groupchat(a, 'ms', 'still here?')
    wait_body(b, 'still here?')
    no_stanza(b2, 'message', 0.5, lambda e: body_of(e) == 'still here?')
    pm(c, 'ms', 'Bob', 'pm after')
    wait_body(b, 'pm after')
    no_stanza(b2, 'message', 0.3, lambda e: body_of(e) == 'pm after')
    # the phone comes back, then the first resource leaves: Bob stays, on the phone
    join_ok(b2, 'ms', 'Bob')
    b.send("<presence to='%s' type='unavailable'/>" % occ('ms', 'Bob'))
    b.wait_for('presence', lambda e: from_bob(e) and e.get('type') == 'unavailable')
    no_stanza(a, 'presence', 0.5, lambda e: from_bob(e) and e.get('type') == 'unavailable')
    groupchat(c, 'ms', 'phone only')
    wait_body(b2, 'phone only')
    no_stanza(b, 'message', 0.3, lambda e: body_of(e) == 'phone only')
    # the last resource leaves: now Bob is gone for everyone
    b2.send("<presence to='%s' type='unavailable'/>" % occ('ms', 'Bob'))
    for who in (a, c, b2):
        who.wait_for('presence', lambda e: from_bob(e) and e.get('type') == 'unavailable')
    # and the nick is free for someone else
    join_ok(u['dave'], 'ms', 'Bob')


def t04_session_ends(u):
    a, c, d = u['alice'], u['carol'], u['dave']
    # Dave holds 'Bob' now; a second resource of dave joins, then its
    # connection drops without a word: the occupant stays
    d2 = online(u['srv'], 'dave', 'dave-pw', 'tab')
    p = join(d2, 'ms', 'Bob')
    check(p.get('type') != 'error' and 110 in codes(p), tostr(p))
    d2.close()
    no_stanza(a, 'presence', 1.0, lambda e: from_bob(e) and e.get('type') == 'unavailable')
    groupchat(c, 'ms', 'dave still here')
    wait_body(d, 'dave still here')


async def slix_scenario(srv):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    b1 = await slixhelp.login(srv.c2s_port, 'bob@localhost/desk', 'bob-pw')
    b2 = await slixhelp.login(srv.c2s_port, 'bob@localhost/mobile', 'bob-pw')
    room = 'slixms@conference.localhost'
    try:
        for x in (a, b1, b2):
            x.register_plugin('xep_0045')
            x.register_plugin('xep_0004')
        await a['xep_0045'].join_muc_wait(room, 'Alice', maxstanzas=0, timeout=10)
        form = await a['xep_0045'].get_room_config(room)
        form['type'] = 'submit'
        await a['xep_0045'].set_room_config(room, form)
        await b1['xep_0045'].join_muc_wait(room, 'Bob', timeout=10)
        # slixmpp's join of the second resource completes (self-presence)
        pres, _, occupants, _ = await b2['xep_0045'].join_muc_wait(room, 'Bob', timeout=10)
        check(pres['type'] != 'error' and 110 in {int(x) for x in pres['muc']['status_codes']}, pres)
        check(sorted(p['from'].resource for p in occupants) == ['Alice', 'Bob'], occupants)
        a.send_message(mto=room, mbody='to both', mtype='groupchat')
        for x in (b1, b2):
            m = await slixhelp.next_message(x, 10, lambda m: m['body'] == 'to both')
            check(m['from'].resource == 'Alice', m)
        check(sorted(a['xep_0045'].get_roster(room)) == ['Alice', 'Bob'], a['xep_0045'].get_roster(room))
    finally:
        await slixhelp.close(a, b1, b2)


def t05_slixmpp(u):
    slixhelp.run(slix_scenario, u['srv'], timeout=60)


run_suite(R, args, 72, 'muc_multisession', [('second_session', t01_second_session),
                                             ('messages', t02_messages),
                                             ('leaving', t03_leaving),
                                             ('session_ends', t04_session_ends),
                                             ('slixmpp', t05_slixmpp)], USERS)
