#!/usr/bin/python3
"""32: XEP-0045 room configuration and the rest of the room's life
(mod_muc): the owner's configuration form (§10.2) and its effects (name
and description in disco, whois=anyone with 100/172, unlisted rooms,
moderated rooms, changesubject, allowpm, 104), cancelling the initial
configuration, destruction with an alternate venue (§10.9), mediated
invitations and declines (§7.8.2), XEP-0249 direct invitations passing
through, and the history a newcomer gets (§7.2.15, maxstanzas,
maxchars, seconds, since) with XEP-0203 delay stamps."""

import time

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, local, no_stanza, body_of)
from muchelp import (MUC, NS_USER, NS_OWNER, NS_XDATA, NS_DELAY, DISCO_INFO, DISCO_ITEMS,
                     ROOMCONFIG, room_jid, occ, codes, item, send_join, join, join_ok, create,
                     configure, groupchat, wait_body, form_values, expect_presence_error)

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def disco_features(c, room):
    r = c.iq('get', room_jid(room), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', DISCO_INFO)
    return q, {f.get('var') for f in q if local(f.tag) == 'feature'}


def listed(c):
    r = c.iq('get', MUC, "<query xmlns='%s'/>" % DISCO_ITEMS)
    return {i.get('jid'): i.get('name') for i in child(r, 'query', DISCO_ITEMS)}


def t01_form(srv, u):
    a, b = u['alice'], u['bob']
    p = join(a, 'cfg', 'Alice')
    check(201 in codes(p), tostr(p))
    r = a.iq('get', room_jid('cfg'), "<query xmlns='%s'/>" % NS_OWNER)
    check(r.get('type') == 'result', tostr(r))
    x = child(child(r, 'query', NS_OWNER), 'x', NS_XDATA)
    check(x is not None and x.get('type') == 'form', tostr(r))
    v = form_values(x)
    check(v['FORM_TYPE'] == [ROOMCONFIG], tostr(r))
    for f in ('muc#roomconfig_roomname', 'muc#roomconfig_roomdesc', 'muc#roomconfig_persistentroom',
              'muc#roomconfig_publicroom', 'muc#roomconfig_membersonly',
              'muc#roomconfig_passwordprotectedroom', 'muc#roomconfig_roomsecret',
              'muc#roomconfig_moderatedroom', 'muc#roomconfig_whois', 'muc#roomconfig_maxusers',
              'muc#roomconfig_changesubject', 'muc#roomconfig_allowinvites', 'muc#maxhistoryfetch'):
        check(f in v, 'form lacks %s' % f)
    check(v['muc#roomconfig_whois'] == ['moderators'] and v['muc#roomconfig_publicroom'] == ['1'], tostr(r))
    # a bad value is refused and changes nothing
    r = configure(a, 'cfg', {'muc#roomconfig_whois': 'everybody'})
    check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable', tostr(r))
    r = configure(a, 'cfg', {'muc#roomconfig_roomname': 'Config Lab', 'muc#roomconfig_roomdesc': 'Testing',
                             'muc#roomconfig_whois': 'anyone', 'muc#roomconfig_changesubject': '1'})
    check(r.get('type') == 'result', tostr(r))
    q, feats = disco_features(b, 'cfg')
    ident = child(q, 'identity')
    check(ident.get('name') == 'Config Lab', tostr(q))
    check('muc_nonanonymous' in feats, feats)
    check(form_values(child(q, 'x', NS_XDATA))['muc#roominfo_description'] == ['Testing'], tostr(q))
    check(listed(b).get(room_jid('cfg')) == 'Config Lab', listed(b))
    # non-anonymous: 100 on entering, everybody sees real JIDs
    p = join(b, 'cfg', 'Bob')
    check({100, 110} <= codes(p), tostr(p))
    pa = b.wait_for('presence', lambda e: e.get('from') == occ('cfg', 'Alice'), timeout=0)
    check(item(pa).get('jid') == a.jid, 'participant should see JIDs: %s' % tostr(pa))
    # changesubject lets participants set it
    b.send("<message to='%s' type='groupchat'><subject>Bob's topic</subject></message>" % room_jid('cfg'))
    m = a.wait_for('message', lambda e: child(e, 'subject') is not None and child(e, 'subject').text == "Bob's topic")
    check(m.get('from') == occ('cfg', 'Bob'), tostr(m))


def t02_change_notice_and_whois(srv, u):
    a, b = u['alice'], u['bob']
    r = configure(a, 'cfg', {'muc#roomconfig_whois': 'moderators', 'muc#roomconfig_publicroom': '0'})
    check(r.get('type') == 'result', tostr(r))
    m = b.wait_for('message', lambda e: e.get('from') == room_jid('cfg') and 104 in codes(e))
    check(173 in codes(m), 'semi-anonymous again: 173 %s' % tostr(m))
    check(room_jid('cfg') not in listed(b), 'hidden room listed')
    _, feats = disco_features(b, 'cfg')
    check('muc_hidden' in feats and 'muc_semianonymous' in feats, feats)


def t03_moderated_and_pm(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    r = configure(a, 'cfg', {'muc#roomconfig_moderatedroom': '1', 'muc#roomconfig_allowpm': 'none'})
    check(r.get('type') == 'result', tostr(r))
    p = join(c, 'cfg', 'Carol')
    check(item(p).get('role') == 'visitor', 'moderated: newcomers are visitors: %s' % tostr(p))
    c.send("<message to='%s' type='groupchat' id='m1'><body>hello?</body></message>" % room_jid('cfg'))
    e = c.wait_for('message', lambda e: e.get('id') == 'm1' and e.get('type') == 'error')
    check(error_condition(e) == 'forbidden', tostr(e))
    b.send("<message to='%s' type='chat' id='m2'><body>pm</body></message>" % occ('cfg', 'Alice'))
    e = b.wait_for('message', lambda e: e.get('id') == 'm2' and e.get('type') == 'error')
    check(error_condition(e) == 'not-allowed', tostr(e))


def t04_cancel_initial_configuration(srv, u):
    a, b = u['alice'], u['bob']
    join(a, 'oops', 'Alice')
    r = a.iq('set', room_jid('oops'), "<query xmlns='%s'><x xmlns='%s' type='cancel'/></query>" % (NS_OWNER, NS_XDATA))
    check(r.get('type') == 'result', tostr(r))
    r = b.iq('get', room_jid('oops'), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    # only an owner configures
    r = b.iq('set', room_jid('cfg'), "<query xmlns='%s'><x xmlns='%s' type='submit'/></query>" % (NS_OWNER, NS_XDATA))
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))


def t05_invitations(srv, u):
    a, b, d = u['alice'], u['bob'], u['dave']
    create(a, 'party', 'Alice')
    a.send("<message to='%s'><x xmlns='%s'><invite to='dave@localhost'><reason>Come!</reason></invite></x></message>"
           % (room_jid('party'), NS_USER))
    m = d.wait_for('message', lambda e: e.get('from') == room_jid('party'))
    inv = child(child(m, 'x', NS_USER), 'invite', NS_USER)
    check(inv is not None and inv.get('from') == 'alice@localhost' and child(inv, 'reason').text == 'Come!', tostr(m))
    d.send("<message to='%s'><x xmlns='%s'><decline to='alice@localhost'><reason>Busy</reason></decline></x></message>"
           % (room_jid('party'), NS_USER))
    m = a.wait_for('message', lambda e: e.get('from') == room_jid('party') and child(e, 'x', NS_USER) is not None)
    dec = child(child(m, 'x', NS_USER), 'decline', NS_USER)
    check(dec is not None and dec.get('from') == 'dave@localhost' and child(dec, 'reason').text == 'Busy', tostr(m))
    # only occupants invite
    b.send("<message to='%s' id='i3'><x xmlns='%s'><invite to='dave@localhost'/></x></message>"
           % (room_jid('party'), NS_USER))
    e = b.wait_for('message', lambda e: e.get('id') == 'i3' and e.get('type') == 'error')
    check(error_condition(e) == 'not-acceptable', tostr(e))
    # a members-only room: the admin's invitation makes the invitee a member
    r = configure(a, 'party', {'muc#roomconfig_membersonly': '1'})
    check(r.get('type') == 'result', tostr(r))
    send_join(d, 'party', 'Dave')
    expect_presence_error(d, 'party', 'Dave', 'registration-required')
    a.send("<message to='%s'><x xmlns='%s'><invite to='dave@localhost'/></x></message>" % (room_jid('party'), NS_USER))
    d.wait_for('message', lambda e: e.get('from') == room_jid('party'))
    join_ok(d, 'party', 'Dave')
    # XEP-0249 direct invitations go user to user, untouched
    a.send("<message to='bob@localhost/cfg'><x xmlns='jabber:x:conference' jid='%s' reason='direct'/></message>"
           % room_jid('party'))
    m = b.wait_for('message', lambda e: child(e, 'x', 'jabber:x:conference') is not None)
    check(m.get('from') == a.jid and child(m, 'x', 'jabber:x:conference').get('jid') == room_jid('party'), tostr(m))


def t06_destroy(srv, u):
    a, d = u['alice'], u['dave']
    r = u['bob'].iq('set', room_jid('party'), "<query xmlns='%s'><destroy/></query>" % NS_OWNER)
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    r = a.iq('set', room_jid('party'), "<query xmlns='%s'><destroy jid='%s'><reason>Moved</reason></destroy></query>"
             % (NS_OWNER, room_jid('newparty')))
    check(r.get('type') == 'result', tostr(r))
    for cl, nick in ((a, 'Alice'), (d, 'Dave')):
        p = cl.wait_for('presence', lambda e: e.get('from') == occ('party', nick) and e.get('type') == 'unavailable')
        x = child(p, 'x', NS_USER)
        dst = child(x, 'destroy', NS_USER)
        check(dst is not None and dst.get('jid') == room_jid('newparty') and child(dst, 'reason').text == 'Moved', tostr(p))
        check(item(p).get('role') == 'none' and item(p).get('affiliation') == 'none', tostr(p))
    r = d.iq('get', room_jid('party'), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def history_bodies(c, room, nick, **hist):
    send_join(c, room, nick, history=hist if hist else None)
    got = []
    while True:
        el = c.wait_for(None, timeout=5)
        if local(el.tag) == 'message' and child(el, 'subject') is not None and body_of(el) is None:
            break
        if local(el.tag) == 'message' and body_of(el) is not None:
            got.append(el)
    return got


def t07_history(srv, u):
    a, b = u['alice'], u['bob']
    create(a, 'hist', 'Alice')
    for i in range(1, 6):
        groupchat(a, 'hist', 'msg %d' % i)
        wait_body(a, 'msg %d' % i)
    got = history_bodies(b, 'hist', 'Bob')
    check([body_of(m) for m in got] == ['msg %d' % i for i in range(1, 6)], [tostr(m) for m in got])
    for m in got:
        d = child(m, 'delay', NS_DELAY)
        check(d is not None and d.get('from') == room_jid('hist') and d.get('stamp', '').endswith('Z'), tostr(m))
        check(m.get('from') == occ('hist', 'Alice') and m.get('type') == 'groupchat', tostr(m))
    b.send("<presence to='%s' type='unavailable'/>" % occ('hist', 'Bob'))
    b.drain(0.2)
    got = history_bodies(b, 'hist', 'Bob', maxstanzas='2')
    check([body_of(m) for m in got] == ['msg 4', 'msg 5'], [tostr(m) for m in got])
    b.send("<presence to='%s' type='unavailable'/>" % occ('hist', 'Bob'))
    b.drain(0.2)
    check(history_bodies(b, 'hist', 'Bob', maxchars='0') == [], 'maxchars=0: no history')
    b.send("<presence to='%s' type='unavailable'/>" % occ('hist', 'Bob'))
    b.drain(0.2)
    check(history_bodies(b, 'hist', 'Bob', since='2099-01-01T00:00:00Z') == [], 'since the future: none')
    b.send("<presence to='%s' type='unavailable'/>" % occ('hist', 'Bob'))
    b.drain(0.2)
    got = history_bodies(b, 'hist', 'Bob', since='2000-01-01T00:00:00Z', seconds='3600')
    check(len(got) == 5, [tostr(m) for m in got])
    # the live messages have no delay
    groupchat(a, 'hist', 'live')
    m = wait_body(b, 'live')
    check(child(m, 'delay', NS_DELAY) is None, tostr(m))
    # history length follows the configuration
    r = configure(a, 'hist', {'muc#maxhistoryfetch': '2'})
    check(r.get('type') == 'result', tostr(r))
    b.send("<presence to='%s' type='unavailable'/>" % occ('hist', 'Bob'))
    b.drain(0.2)
    got = history_bodies(b, 'hist', 'Bob')
    check([body_of(m) for m in got] == ['msg 5', 'live'], [tostr(m) for m in got])


TESTS = [t01_form, t02_change_notice_and_whois, t03_moderated_and_pm,
         t04_cancel_initial_configuration, t05_invitations, t06_destroy, t07_history]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('32.00 muc_config_server_start', e)
        R.exit()
    u = {}
    try:
        for n in ('alice', 'bob', 'carol', 'dave'):
            srv.add_user(n, n + '-pw')
            u[n] = online(srv, n, n + '-pw', 'cfg')
        for i, t in enumerate(TESTS, 1):
            R.run('32.%02d muc_config_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, u, server=srv)
            for x in u.values():
                x.drain(0.1)
    except Exception as e:
        R.fail('32.00 muc_config_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('32.99 muc_config_clean_shutdown', e)
    R.exit()


main()
