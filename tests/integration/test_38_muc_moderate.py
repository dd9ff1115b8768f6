#!/usr/bin/python3
"""38: XEP-0425 Moderated Message Retraction (urn:xmpp:message-moderate:1,
version 0.3.0) in mod_muc: a moderator retracts a message by its stanza
id; every occupant gets the XEP-0424 <retract/> from the room's bare JID
with <moderated by=/> and the reason; the archive (XEP-0313) and the
history for newcomers hold a tombstone instead of the message, also
after a restart; participants (even the author) get forbidden; unknown
ids item-not-found; a room without a log moderates its history."""

import os
from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, body_of, no_message)
from muchelp import (NS_DELAY, NS_OID, NS_MODERATE, NS_RETRACT, room_jid, occ, join_ok, create,
                     groupchat, wait_body, room_sid, occupant_id, mam_query, moderate, send_join, codes)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')
S = {}


def connect(srv):
    return {n: online(srv, n, n + '-pw', 'p') for n in USERS}


def retraction(c, room, sid):
    return c.wait_for('message', lambda e: e.get('from') == room_jid(room) and
                      child(e, 'retract', NS_RETRACT) is not None and
                      child(e, 'retract', NS_RETRACT).get('id') == sid)


def check_notice(m, room, sid, mod_nick, mod_oid, reason):
    check(m.get('type') == 'groupchat', tostr(m))
    rt = child(m, 'retract', NS_RETRACT)
    md = child(rt, 'moderated', NS_MODERATE)
    check(md is not None and md.get('by') == occ(room, mod_nick), tostr(m))
    check(child(md, 'occupant-id', NS_OID).get('id') == mod_oid, tostr(m))
    r = child(rt, 'reason', NS_RETRACT)
    check((r.text if r is not None else None) == reason, tostr(m))
    check(body_of(m) is None, tostr(m))


def check_tombstone(m, room, author_nick, author_oid, mod_nick, sid):
    check(body_of(m) is None, 'the body survived: %s' % tostr(m))
    check(m.get('from') == occ(room, author_nick), tostr(m))
    check(occupant_id(m) == author_oid, 'author occupant id: %s' % tostr(m))
    check(room_sid(m, room) == sid, tostr(m))
    rd = child(m, 'retracted', NS_RETRACT)
    check(rd is not None and rd.get('stamp'), 'no <retracted/>: %s' % tostr(m))
    check(child(rd, 'moderated', NS_MODERATE).get('by') == occ(room, mod_nick), tostr(m))


def hist_bodies(c, room, nick):
    send_join(c, room, nick)
    c.wait_for('presence', lambda e: e.get('from') == occ(room, nick) and 110 in codes(e))
    c.wait_for('message', lambda e: e.get('from', '').startswith(room_jid(room)) and
               child(e, 'subject') is not None and body_of(e) is None)
    got = []
    while True:
        m = c.wait_for('message', lambda e: child(e, 'delay', NS_DELAY) is not None, timeout=0, raise_=False)
        if m is None:
            return got
        got.append(m)


def t01_retract(srv, u):
    a, b, c = u['alice'], u['bob'], u['carol']
    pa = create(a, 'mod', 'Alice', {'muc#roomconfig_persistentroom': '1'})
    S['alice_oid'] = occupant_id(pa)
    S['bob_oid'] = occupant_id(join_ok(b, 'mod', 'Bob'))
    join_ok(c, 'mod', 'Carol')
    groupchat(b, 'mod', 'fine words')
    wait_body(c, 'fine words')
    groupchat(b, 'mod', 'buy cheap potions')
    m = wait_body(c, 'buy cheap potions')
    sid = room_sid(m, 'mod')
    check(sid, tostr(m))
    S['sid'] = sid
    for x in (a, b):
        wait_body(x, 'buy cheap potions')
    # participants may not, not even the author
    for who in (c, b):
        r = moderate(who, 'mod', sid, 'no')
        check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    no_message(c, 0.3, lambda e: child(e, 'retract', NS_RETRACT) is not None)
    # the moderator may
    r = moderate(a, 'mod', sid, 'Spam')
    check(r.get('type') == 'result', tostr(r))
    for x in (a, b, c):
        n = retraction(x, 'mod', sid)
        check_notice(n, 'mod', sid, 'Alice', S['alice_oid'], 'Spam')
    # bad requests
    r = moderate(a, 'mod', 'abc-0123456789', 'x')
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    r = moderate(a, 'mod', '%x-0123456789abcdef' % int(sid.split('-')[0], 16), 'x')
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', 'right time, wrong id: %s' % tostr(r))
    r = moderate(a, 'mod', sid, 'x', retract=False)
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    # once is enough: a second request succeeds without a second notice
    r = moderate(a, 'mod', sid, 'again')
    check(r.get('type') == 'result', tostr(r))
    no_message(c, 0.5, lambda e: child(e, 'retract', NS_RETRACT) is not None)


def t02_tombstones(srv, u):
    a, d = u['alice'], u['dave']
    sid = S['sid']
    r, msgs, ids = mam_query(a, 'mod')
    check(r.get('type') == 'result', tostr(r))
    i = ids.index(sid)
    check([body_of(m) for m in msgs[:i]] == ['fine words'], [tostr(m) for m in msgs])
    check_tombstone(msgs[i], 'mod', 'Bob', S['bob_oid'], 'Alice', sid)
    # the notice is archived too, after the message: a client catching up learns of it
    notice = msgs[i + 1]
    check(child(notice, 'retract', NS_RETRACT).get('id') == sid and notice.get('from') == room_jid('mod'),
          tostr(notice))
    check(not any('potions' in tostr(m) for m in msgs), 'the text is still in the archive')
    # a newcomer's history
    got = hist_bodies(d, 'mod', 'Dave')
    check(len(got) == 2 and body_of(got[0]) == 'fine words', [tostr(m) for m in got])
    check_tombstone(got[1], 'mod', 'Bob', S['bob_oid'], 'Alice', sid)


def t03_after_restart(srv, u):
    a, d = u['alice'], u['dave']
    sid = S['sid']
    r, msgs, ids = mam_query(d, 'mod')
    check_tombstone(msgs[ids.index(sid)], 'mod', 'Bob', S['bob_oid'], 'Alice', sid)
    got = hist_bodies(d, 'mod', 'Dave')
    check(len(got) == 2, [tostr(m) for m in got])
    check_tombstone(got[1], 'mod', 'Bob', S['bob_oid'], 'Alice', sid)
    # the owner, out of the room, has no role: forbidden (moderation is a role's right)
    r = moderate(a, 'mod', sid, 'not in the room')
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))


def t04_no_log(srv, u):
    """A temporary room that does not archive keeps no log: moderation
    works on the history it holds."""
    a, b, c = u['alice'], u['bob'], u['carol']
    create(a, 'quick', 'Alice', {'muc#roomconfig_enablearchiving': '0'})
    join_ok(b, 'quick', 'Bob')
    groupchat(b, 'quick', 'oops')
    sid = room_sid(wait_body(a, 'oops'), 'quick')
    r = moderate(a, 'quick', sid)
    check(r.get('type') == 'result', tostr(r))
    n = retraction(b, 'quick', sid)
    check(child(child(n, 'retract', NS_RETRACT), 'reason', NS_RETRACT) is None, tostr(n))
    got = hist_bodies(c, 'quick', 'Carol')
    check(len(got) == 1, [tostr(m) for m in got])
    check(child(got[0], 'retracted', NS_RETRACT) is not None and body_of(got[0]) is None, tostr(got[0]))
    r = moderate(a, 'quick', 'ffff-0123456789')
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def main():
    try:
        # MAGPIE_TEST_STORAGE=mysql (with MAGPIE_TEST_MYSQL from tests/mariadb.sh, a
        # fresh database) runs the same conversations on the MySQL driver
        srv = MagpieServer(args.builddir, workers=args.workers,
                           storage=os.environ.get('MAGPIE_TEST_STORAGE', 'sqlite'),
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('38.00 muc_moderate_server_start', e)
        R.exit()
    u = {}
    try:
        for n in USERS:
            srv.add_user(n, n + '-pw')
        u = connect(srv)
        R.run('38.01 muc_moderate_retract', t01_retract, srv, u, server=srv)
        R.run('38.02 muc_moderate_tombstones', t02_tombstones, srv, u, server=srv)
        R.run('38.03 muc_moderate_without_log', t04_no_log, srv, u, server=srv)
        closeall(*u.values())
        u = {}
        R.run('38.04 muc_moderate_clean_restart', srv.restart, server=srv)
        u = connect(srv)
        R.run('38.05 muc_moderate_after_restart', t03_after_restart, srv, u, server=srv)
    except Exception as e:
        R.fail('38.00 muc_moderate_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('38.99 muc_moderate_clean_shutdown', e)
    R.exit()


main()
