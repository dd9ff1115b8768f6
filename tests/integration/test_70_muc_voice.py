#!/usr/bin/python3
"""70: voice requests in moderated rooms (XEP-0045 7.13 and 8.6), raw
stanzas: a visitor submits the muc#request form, every moderator gets the
approval form (requester's JID and nick, muc#request_allow false), a
moderator's approval makes the visitor a participant (presence to all,
the new participant can talk), a refusal changes nothing; the errors."""

import asyncio

import slixhelp
from common import (Results, parse_args, check, child, tostr, online,
                    expect_error, no_stanza, local)
from muchelp import (run_suite, NS_XDATA, create, join_ok, groupchat, wait_body, occ, room_jid, item, esc)

REQ = 'http://jabber.org/protocol/muc#request'
args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')


def request_voice(c, room, role='participant'):
    # as slixmpp's xep_0045 request_voice() sends it
    c.send("<message to='%s'><x xmlns='%s' type='submit'>"
           "<field var='FORM_TYPE' type='hidden'><value>%s</value></field>"
           "<field var='muc#role' type='list-single' label='Requested role'><value>%s</value></field>"
           "</x></message>" % (room_jid(room), NS_XDATA, REQ, role))


def answer(c, room, nick, jid, allow, ftype='submit'):
    c.send("<message to='%s'><x xmlns='%s' type='%s'>"
           "<field var='FORM_TYPE'><value>%s</value></field>"
           "<field var='muc#role'><value>participant</value></field>"
           "<field var='muc#jid'><value>%s</value></field>"
           "<field var='muc#roomnick'><value>%s</value></field>"
           "<field var='muc#request_allow'><value>%s</value></field>"
           "</x></message>" % (room_jid(room), NS_XDATA, ftype, REQ, esc(jid), esc(nick), allow))


def fields(x):
    out = {}
    for f in x:
        if local(f.tag) == 'field':
            v = child(f, 'value', NS_XDATA)
            out[f.get('var')] = (f.get('type'), v.text if v is not None else None)
    return out


def approval_form(c, room):
    m = c.wait_for('message', lambda e: e.get('from') == room_jid(room) and
                   child(e, 'x', NS_XDATA) is not None)
    x = child(m, 'x', NS_XDATA)
    check(x.get('type') == 'form', tostr(m))
    return m, fields(x)


def is_role_presence(room, nick, role):
    return lambda e: (e.get('from') == occ(room, nick) and item(e) is not None and
                      item(e).get('role') == role)


def t01_request_and_approve(u):
    a, b, c, d = u['alice'], u['bob'], u['carol'], u['dave']
    create(a, 'quiet', 'Alice', {'muc#roomconfig_moderatedroom': '1'})
    p = join_ok(b, 'quiet', 'Bob')
    check(item(p).get('role') == 'visitor', tostr(p))
    join_ok(c, 'quiet', 'Carol')
    # a second moderator: dave, an admin
    a.send("<iq type='set' to='%s' id='adm'><query xmlns='http://jabber.org/protocol/muc#admin'>"
           "<item jid='dave@localhost' affiliation='admin'/></query></iq>" % room_jid('quiet'))
    a.wait_for('iq', lambda e: e.get('id') == 'adm')
    p = join_ok(d, 'quiet', 'Dave')
    check(item(p).get('role') == 'moderator', tostr(p))
    # a visitor may not talk
    groupchat(b, 'quiet', 'let me speak')
    expect_error(b, 'message', 'forbidden')
    request_voice(b, 'quiet')
    # each moderator gets the approval form, a visitor does not
    for mod in (a, d):
        m, f = approval_form(mod, 'quiet')
        check(f.get('FORM_TYPE') == ('hidden', REQ), f)
        check(f.get('muc#role', (None, None))[1] == 'participant', f)
        check(f.get('muc#jid') == ('jid-single', b.jid), f)
        check(f.get('muc#roomnick', (None, None))[1] == 'Bob', f)
        check(f.get('muc#request_allow') == ('boolean', 'false'), f)
        check(child(child(m, 'x', NS_XDATA), 'title', NS_XDATA) is not None, tostr(m))
    no_stanza(c, 'message', 0.5, lambda e: child(e, 'x', NS_XDATA) is not None)
    # a refusal (or a cancelled form) changes nothing
    answer(a, 'quiet', 'Bob', b.jid, 'false')
    answer(d, 'quiet', 'Bob', b.jid, 'true', ftype='cancel')
    no_stanza(c, 'presence', 0.5, is_role_presence('quiet', 'Bob', 'participant'))
    # the approval: Bob is a participant, everyone is told
    answer(a, 'quiet', 'Bob', b.jid, 'true')
    for who in (a, b, c, d):
        p = who.wait_for('presence', is_role_presence('quiet', 'Bob', 'participant'))
        if who is b:
            check(110 in {int(s.get('code')) for s in child(p, 'x', 'http://jabber.org/protocol/muc#user')
                          if local(s.tag) == 'status'}, 'self-presence without 110: %s' % tostr(p))
    groupchat(b, 'quiet', 'thank you')
    wait_body(c, 'thank you')
    # approving again does nothing more
    answer(d, 'quiet', 'Bob', b.jid, '1')
    no_stanza(c, 'presence', 0.5, is_role_presence('quiet', 'Bob', 'participant'))


def t02_errors(u):
    a, b, c = u['alice'], u['bob'], u['carol']
    # Bob has voice now: nothing to grant
    request_voice(b, 'quiet')
    expect_error(b, 'message', 'not-allowed')
    # a visitor may not approve (herself or anyone)
    answer(c, 'quiet', 'Carol', c.jid, 'true')
    expect_error(c, 'message', 'forbidden')
    no_stanza(a, 'presence', 0.5, is_role_presence('quiet', 'Carol', 'participant'))
    # someone outside the room
    u['dave2'] = online(u['srv'], 'dave', 'dave-pw', 'other')
    request_voice(u['dave2'], 'quiet')
    expect_error(u['dave2'], 'message', 'not-acceptable')
    # only voice can be asked for
    request_voice(c, 'quiet', role='moderator')
    expect_error(c, 'message', 'bad-request')
    # approving someone who is not there
    answer(a, 'quiet', 'Nobody', 'nobody@localhost/x', 'true')
    expect_error(a, 'message', 'item-not-found')
    # a room that is not moderated
    create(a, 'loud', 'Alice')
    join_ok(c, 'loud', 'Carol')
    request_voice(c, 'loud')
    expect_error(c, 'message', 'not-allowed')
    no_stanza(a, 'message', 0.5, lambda e: child(e, 'x', NS_XDATA) is not None)


async def slix_scenario(srv):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    c = await slixhelp.login(srv.c2s_port, 'carol@localhost/slix', 'carol-pw')
    room = 'slixvoice@conference.localhost'
    try:
        for x in (a, c):
            x.register_plugin('xep_0045')
            x.register_plugin('xep_0004')
        await a['xep_0045'].join_muc_wait(room, 'Alice', maxstanzas=0, timeout=10)
        form = await a['xep_0045'].get_room_config(room)
        form.set_values({'muc#roomconfig_moderatedroom': True})
        form['type'] = 'submit'
        await a['xep_0045'].set_room_config(room, form)
        await c['xep_0045'].join_muc_wait(room, 'Carol', timeout=10)
        check(c['xep_0045'].get_jid_property(room, 'Carol', 'role') == 'visitor', 'not a visitor')
        # slixmpp's own request; the moderator's xep_0004 plugin takes the
        # form (a message without a body is a 'message_xform' event there)
        forms = asyncio.Queue()
        a.add_event_handler('message_xform', forms.put_nowait)
        c['xep_0045'].request_voice(room, 'participant')
        m = await asyncio.wait_for(forms.get(), 10)
        check(m['from'] == room and m['form']['type'] == 'form', m)
        values = m['form'].get_values()
        check(values.get('muc#roomnick') == 'Carol' and str(values.get('muc#jid')) == str(c.boundjid),
              values)
        reply = a.make_message(mto=room)
        f = reply['form']
        f['type'] = 'submit'
        f.add_field(var='FORM_TYPE', value=REQ)
        for var in ('muc#role', 'muc#jid', 'muc#roomnick'):
            f.add_field(var=var, value=str(values[var]))
        f.add_field(var='muc#request_allow', ftype='boolean', value=True)
        reply.send()
        for _ in range(50):
            if c['xep_0045'].get_jid_property(room, 'Carol', 'role') == 'participant':
                break
            await asyncio.sleep(0.1)
        check(c['xep_0045'].get_jid_property(room, 'Carol', 'role') == 'participant',
              'voice not granted as slixmpp sees it')
    finally:
        await slixhelp.close(a, c)


def t03_slixmpp(u):
    slixhelp.run(slix_scenario, u['srv'], timeout=60)


run_suite(R, args, 70, 'muc_voice', [('request_approve', t01_request_and_approve),
                                      ('errors', t02_errors),
                                      ('slixmpp', t03_slixmpp)], USERS)
