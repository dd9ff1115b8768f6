#!/usr/bin/python3
"""55: user archives (XEP-0313, mod_mam) - what goes in: a chat between
two local users is in both archives (outgoing and incoming), the
delivered copy carries a XEP-0359 <stanza-id by='bob@localhost'/> that is
the id of bob's archive item, a forged stanza-id claiming the user's JID
is stripped, <origin-id/> is kept; a message to an offline user is stored
offline and archived (same stanza id at offline delivery, not archived
twice); XEP-0334 no-store / no-permanent-store, headlines, errors and
chat states without a body are not archived; carbon copies are not
archived again; disco#info of the account shows urn:xmpp:mam:2 and
urn:xmpp:sid:0; messages from a blocked JID (XEP-0191) and messages the
user may not send to one are not archived."""

import time

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync, no_message
from mamhelp import (NS_MAM, NS_SID, login, stanza_id, query, fin, bodies, wait_body)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank']
MODULES = ['disco', 'ping', 'roster', 'offline', 'mam', 'carbons', 'blocking']


def t01_both_directions(srv):
    a = login(srv, 'alice', 'a')
    b = login(srv, 'bob', 'b')
    try:
        a.send("<message to='bob@localhost' type='chat' id='m1'><body>hello bob</body>"
               "<origin-id xmlns='urn:xmpp:sid:0' id='orig-1'/>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@localhost' id='forged'/>"
               "<stanza-id xmlns='urn:xmpp:sid:0' by='alice@localhost' id='forged2'/></message>")
        m = wait_body(b, 'hello bob')
        sids = [s for s in m if s.tag == '{%s}stanza-id' % NS_SID]
        check(len(sids) == 1, 'want exactly our stanza-id: %s' % tostr(m))
        sid = stanza_id(m, 'bob@localhost')
        check(sid and sid != 'forged', 'stanza-id: %s' % tostr(m))
        o = child(m, 'origin-id', NS_SID)
        check(o is not None and o.get('id') == 'orig-1', 'origin-id lost: %s' % tostr(m))
        b.message('alice@localhost/a', 'hello alice')
        ma = wait_body(a, 'hello alice')
        asid = stanza_id(ma, 'alice@localhost')
        check(asid is not None, 'no stanza-id for alice: %s' % tostr(ma))
        sync(a)
        sync(b)
        r, msgs, ids, _ = query(b)
        check(bodies(msgs) == ['hello bob', 'hello alice'], 'bob archive: %s' % bodies(msgs))
        check(ids[0] == sid, 'archive id %s != stanza-id %s' % (ids[0], sid))
        check(msgs[0].get('from') == 'alice@localhost/a' and msgs[1].get('to') == 'alice@localhost/a',
              [tostr(x) for x in msgs])
        check(all(child(x, 'archived', 'urn:magpie:mam:0') is None for x in msgs), 'private child leaked')
        check(fin(r)[0], 'not complete')
        r, msgs, ids, _ = query(a)
        check(bodies(msgs) == ['hello bob', 'hello alice'], 'alice archive: %s' % bodies(msgs))
        check(ids[1] == asid, 'alice archive id %s != stanza-id %s' % (ids[1], asid))
        check(not any(s == 'forged2' for s in [stanza_id(x, 'alice@localhost') for x in msgs]),
              'forged id stored')
    finally:
        closeall(a, b)


def t02_offline_archived_once(srv):
    a = login(srv, 'alice', 'off')
    try:
        a.message('carol@localhost', 'while you were out')
        sync(a)
        time.sleep(0.3)
        c = login(srv, 'carol', 'c')
        try:
            m = wait_body(c, 'while you were out')
            sid = stanza_id(m, 'carol@localhost')
            check(sid is not None, 'offline copy without stanza-id: %s' % tostr(m))
            check(child(m, 'delay', 'urn:xmpp:delay') is not None, 'no delay: %s' % tostr(m))
            sync(c)
            r, msgs, ids, _ = query(c)
            check(bodies(msgs) == ['while you were out'], 'carol archive: %s' % bodies(msgs))
            check(ids == [sid], 'ids %s, stanza-id %s' % (ids, sid))
        finally:
            closeall(c)
    finally:
        closeall(a)


def t03_not_archived(srv):
    a = login(srv, 'alice', 'h')
    d = login(srv, 'dave', 'd')
    try:
        a.send("<message to='dave@localhost' type='chat'><body>nostore</body>"
               "<no-store xmlns='urn:xmpp:hints'/></message>")
        a.send("<message to='dave@localhost' type='chat'><body>noperm</body>"
               "<no-permanent-store xmlns='urn:xmpp:hints'/></message>")
        a.send("<message to='dave@localhost' type='headline'><body>news</body></message>")
        a.send("<message to='dave@localhost' type='chat'>"
               "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
        a.send("<message to='dave@localhost' type='chat'><body>kept</body></message>")
        a.send("<message to='dave@localhost' type='chat' id='st'><store xmlns='urn:xmpp:hints'/>"
               "<x xmlns='jabber:x:oob'><url>https://example.test/f</url></x></message>")
        m = wait_body(d, 'nostore')
        check(stanza_id(m, 'dave@localhost') is None, 'no-store got a stanza-id: %s' % tostr(m))
        wait_body(d, 'kept')
        d.wait_for('message', lambda e: e.get('id') == 'st')
        sync(a)
        sync(d)
        _, msgs, _, _ = query(d)
        check(bodies(msgs) == ['kept', None] and msgs[1].get('id') == 'st',
              'dave archive (a <store/> hint keeps a message without body): %s' % bodies(msgs))
        _, msgs, _, _ = query(a, form={'with': 'dave@localhost'})
        check(bodies(msgs) == ['kept', None], 'alice (sender) archive: %s' % bodies(msgs))
    finally:
        closeall(a, d)


def t04_carbons_not_twice(srv):
    e1 = login(srv, 'erin', 'e1')
    e2 = login(srv, 'erin', 'e2')
    f = login(srv, 'frank', 'f')
    try:
        for c in (e1, e2):
            r = c.iq('set', None, "<enable xmlns='urn:xmpp:carbons:2'/>")
            check(r.get('type') == 'result', tostr(r))
        e1.message('frank@localhost', 'to frank')
        wait_body(f, 'to frank')
        e2.wait_for('message', lambda x: child(x, 'sent', 'urn:xmpp:carbons:2') is not None)
        f.message('erin@localhost/e1', 'to erin')
        wait_body(e1, 'to erin')
        e2.wait_for('message', lambda x: child(x, 'received', 'urn:xmpp:carbons:2') is not None)
        for c in (e1, e2, f):
            sync(c)
        _, msgs, _, _ = query(e2)
        check(bodies(msgs) == ['to frank', 'to erin'], 'erin archive: %s' % bodies(msgs))
        _, msgs, _, _ = query(f)
        check(bodies(msgs) == ['to frank', 'to erin'], 'frank archive: %s' % bodies(msgs))
    finally:
        closeall(e1, e2, f)


def t05_disco(srv):
    a = login(srv, 'alice', 'disco')
    try:
        r = a.iq('get', 'alice@localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        feats = [x.get('var') for x in child(r, 'query', 'http://jabber.org/protocol/disco#info')
                 if x.tag.endswith('feature')]
        check(NS_MAM in feats and NS_SID in feats and NS_MAM + '#extended' in feats, feats)
    finally:
        closeall(a)


def t06_blocked_not_archived(srv):
    g = login(srv, 'gina', 'g')
    h = login(srv, 'hank', 'h')
    try:
        r = g.iq('set', None, "<block xmlns='urn:xmpp:blocking'><item jid='hank@localhost'/></block>")
        check(r.get('type') == 'result', tostr(r))
        h.message('gina@localhost', 'you blocked me')
        h.message('gina@localhost/g', 'still blocked')
        sync(h)
        no_message(g, 0.5, lambda e: child(e, 'body') is not None)
        _, msgs, _, _ = query(g)
        check(msgs == [], 'blocked sender archived: %s' % bodies(msgs))
        # a message the user tries to send to a blocked JID is refused, not archived
        g.message('hank@localhost', 'to the blocked')
        g.wait_for('message', lambda e: e.get('type') == 'error')
        _, msgs, _, _ = query(g)
        check(msgs == [], 'refused message archived: %s' % bodies(msgs))
    finally:
        closeall(g, h)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('55.00 mam_archive_server_start', e)
        R.exit()
    try:
        for u in USERS:
            srv.add_user(u, u + '-pw')
        R.run('55.01 mam_both_directions_stanza_id', t01_both_directions, srv, server=srv)
        R.run('55.02 mam_offline_archived_once', t02_offline_archived_once, srv, server=srv)
        R.run('55.03 mam_hints_and_kinds_not_archived', t03_not_archived, srv, server=srv)
        R.run('55.04 mam_carbons_not_archived_twice', t04_carbons_not_twice, srv, server=srv)
        R.run('55.05 mam_disco_features', t05_disco, srv, server=srv)
        R.run('55.06 mam_blocked_not_archived', t06_blocked_not_archived, srv, server=srv)
    except Exception as e:
        R.fail('55.00 mam_archive_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('55.99 mam_archive_clean_shutdown', e)
    R.exit()


main()
