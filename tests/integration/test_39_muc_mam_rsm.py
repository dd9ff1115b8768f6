#!/usr/bin/python3
"""39: XEP-0313 on a room's JID, the rest of it (mod_muc, raw stanzas):
XEP-0059 <count/> and <first index=''/> in <fin/>, <index/> in queries,
the 'with' filter by occupant JID and by real JID (non-anonymous rooms,
moderators of semi-anonymous ones; forbidden to others), item-not-found
for unknown ids, and the archive size limit (mam_max_messages)."""

import os

from common import (Results, parse_args, check, child, error_condition, tostr, body_of,
                    wait_until)
from muchelp import (run_suite, create, join_ok, groupchat, wait_body, room_sid, mam_query, fin, occ,
                     NS_MAM)

NS_RSM = 'http://jabber.org/protocol/rsm'
MAX_KEPT = 12

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')
S = {}


def bodies(msgs):
    return [body_of(m) for m in msgs]


def rsm_of(r):
    """(count or None, first index or None) of a query's <fin/>."""
    f = child(r, 'fin', NS_MAM)
    check(f is not None, 'no <fin/>: %s' % tostr(r))
    s = child(f, 'set', NS_RSM)
    check(s is not None, 'no <set/> in <fin/>: %s' % tostr(r))
    c = child(s, 'count', NS_RSM)
    first = child(s, 'first', NS_RSM)
    idx = first.get('index') if first is not None else None
    return (int(c.text) if c is not None else None, int(idx) if idx is not None else None)


def talk(room, pairs):
    """Sends (client, body) pairs as groupchat, each seen by its sender;
    returns the stanza ids in order."""
    sids = []
    for c, body in pairs:
        groupchat(c, room, body)
        m = wait_body(c, body)
        sids.append(room_sid(m, room))
    return sids


def t01_count_index(u):
    a, b = u['alice'], u['bob']
    create(a, 'cnt', 'Alice')
    join_ok(b, 'cnt', 'Bob')
    sids = talk('cnt', [((a, b)[i % 2], 'c%d' % i) for i in range(10)])
    S['cnt'] = sids
    # the first page: the set's size and where the page starts
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>3</max>')
    check(ids == sids[0:3], bodies(msgs))
    check(rsm_of(r) == (10, 0), 'first page: %s' % tostr(r))
    # the next one, after the last
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>3</max><after>%s</after>' % sids[2])
    check(ids == sids[3:6] and rsm_of(r) == (10, 3), tostr(r))
    # a page by index (XEP-0059 2.6)
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>2</max><index>4</index>')
    check(ids == sids[4:6], bodies(msgs))
    check(rsm_of(r) == (10, 4) and fin(r)[1:] == (sids[4], sids[5]), tostr(r))
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>5</max><index>8</index>')
    check(ids == sids[8:10] and rsm_of(r) == (10, 8) and fin(r)[0], tostr(r))
    # an index past the end: an empty page, still counted
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>5</max><index>10</index>')
    check(ids == [] and rsm_of(r) == (10, None) and fin(r)[1] is None, tostr(r))
    # the last page, backwards: counted (no index: see docs/muc.md)
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>4</max><before/>')
    check(ids == sids[6:10] and rsm_of(r)[0] == 10, tostr(r))
    # a page past the end
    r, msgs, ids = mam_query(b, 'cnt', rsm='<max>4</max><after>%s</after>' % sids[9])
    check(ids == [] and rsm_of(r) == (10, None) and fin(r)[0], tostr(r))
    # the set is the form's: filtered by time / id, by occupant
    r, msgs, ids = mam_query(b, 'cnt', form={'after-id': sids[1]}, rsm='<max>2</max>')
    check(ids == sids[2:4] and rsm_of(r) == (8, 0), tostr(r))
    r, msgs, ids = mam_query(b, 'cnt', form={'after-id': sids[1]},
                             rsm='<max>2</max><after>%s</after>' % sids[5])
    check(ids == sids[6:8] and rsm_of(r) == (8, 4), tostr(r))
    r, msgs, ids = mam_query(b, 'cnt', form={'with': occ('cnt', 'Bob')}, rsm='<max>2</max>')
    check(bodies(msgs) == ['c1', 'c3'] and rsm_of(r) == (5, 0), tostr(r))
    r, msgs, ids = mam_query(b, 'cnt', form={'with': occ('cnt', 'Bob')},
                             rsm='<max>2</max><after>%s</after>' % sids[3])
    check(bodies(msgs) == ['c5', 'c7'] and rsm_of(r) == (5, 2), tostr(r))
    # ids: the set is the items asked for
    r, msgs, ids = mam_query(b, 'cnt', form={'ids': [sids[7], sids[2]]})
    check(ids == [sids[7], sids[2]] and rsm_of(r) == (2, 0), tostr(r))
    # an index with after or before is not a page
    r, _, _ = mam_query(b, 'cnt', rsm='<max>2</max><index>1</index><after>%s</after>' % sids[0])
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    r, _, _ = mam_query(b, 'cnt', rsm='<max>2</max><index>-1</index>')
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))


def t02_with_real_jid(u):
    a, b, c, d = u['alice'], u['bob'], u['carol'], u['dave']
    # a non-anonymous room: anyone may filter by a real JID, across nicks
    create(a, 'open39', 'Alice', {'muc#roomconfig_whois': 'anyone'})
    join_ok(c, 'open39', 'Carol')
    join_ok(d, 'open39', 'Dave')
    talk('open39', [(c, 'o1'), (d, 'o2'), (c, 'o3')])
    # carol changes her nick and goes on
    c.send("<presence to='%s'/>" % occ('open39', 'Caroline'))
    c.wait_for('presence', lambda e: e.get('from') == occ('open39', 'Caroline'))
    talk('open39', [(c, 'o4'), (d, 'o5')])
    r, msgs, _ = mam_query(d, 'open39', form={'with': 'carol@localhost'})
    check(bodies(msgs) == ['o1', 'o3', 'o4'] and rsm_of(r) == (3, 0), tostr(r))
    # a full JID filters by its bare JID (the archive keeps who, not which device)
    r, msgs, _ = mam_query(d, 'open39', form={'with': c.jid})
    check(bodies(msgs) == ['o1', 'o3', 'o4'], bodies(msgs))
    # by occupant JID: that nick only
    r, msgs, _ = mam_query(d, 'open39', form={'with': occ('open39', 'Carol')})
    check(bodies(msgs) == ['o1', 'o3'], bodies(msgs))
    r, msgs, _ = mam_query(d, 'open39', form={'with': occ('open39', 'Caroline')})
    check(bodies(msgs) == ['o4'], bodies(msgs))
    # someone who never spoke; the room's own JID filters nothing
    r, msgs, _ = mam_query(d, 'open39', form={'with': 'bob@localhost'})
    check(r.get('type') == 'result' and msgs == [] and rsm_of(r) == (0, None), tostr(r))
    r, msgs, _ = mam_query(d, 'open39', form={'with': 'open39@conference.localhost'})
    check(len(msgs) == 5, bodies(msgs))
    # a semi-anonymous room: a participant may not, the owner (a moderator) may
    r, _, _ = mam_query(b, 'cnt', form={'with': 'alice@localhost'})
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    r, msgs, _ = mam_query(a, 'cnt', form={'with': 'bob@localhost'})
    check(bodies(msgs) == ['c1', 'c3', 'c5', 'c7', 'c9'], bodies(msgs))
    r, _, _ = mam_query(a, 'cnt', form={'with': 'not a jid@@'})
    check(r.get('type') == 'error' and error_condition(r) == 'jid-malformed', tostr(r))


def t03_unknown_ids(u):
    b = u['bob']
    sids = S['cnt']
    unknown = '%x-00112233445566778899' % int(sids[3].split('-')[0], 16)
    for form, rsm in (({'after-id': unknown}, None), ({'before-id': 'made-up'}, None),
                      (None, '<after>%s</after>' % unknown), (None, '<before>%s</before>' % unknown),
                      ({'ids': [unknown]}, None)):
        r, msgs, _ = mam_query(b, 'cnt', form=form, rsm=rsm)
        check(r.get('type') == 'error' and error_condition(r) == 'item-not-found' and not msgs,
              '%s %s: %s' % (form, rsm, tostr(r)))


def t04_size_limit(u):
    a, b = u['alice'], u['bob']
    create(a, 'big', 'Alice')
    join_ok(b, 'big', 'Bob')
    n = MAX_KEPT + 8
    sids = talk('big', [(a, 'b%02d' % i) for i in range(n)])

    def kept():
        r, _, _ = mam_query(b, 'big', rsm='<max>1</max>')
        return rsm_of(r)[0] == MAX_KEPT
    check(wait_until(kept, timeout=10), 'the archive was not cut to %d' % MAX_KEPT)
    r, msgs, ids = mam_query(b, 'big', rsm='<max>100</max>')
    check(ids == sids[-MAX_KEPT:] and rsm_of(r) == (MAX_KEPT, 0), bodies(msgs))
    # what went is gone: its id is unknown now
    r, _, _ = mam_query(b, 'big', form={'after-id': sids[0]})
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    # an index beyond what an archive may hold
    r, _, _ = mam_query(b, 'big', rsm='<max>1</max><index>%d</index>' % (MAX_KEPT + 1))
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))
    # the metadata agrees
    r = b.iq('get', 'big@conference.localhost', "<metadata xmlns='%s'/>" % NS_MAM)
    md = child(r, 'metadata', NS_MAM)
    check(child(md, 'start').get('id') == sids[-MAX_KEPT] and child(md, 'end').get('id') == sids[-1],
          tostr(r))


run_suite(R, args, 39, 'muc_mam', [('count_index', t01_count_index),
                                   ('with_real_jid', t02_with_real_jid),
                                   ('unknown_ids', t03_unknown_ids),
                                   ('size_limit', t04_size_limit)], USERS,
          modules=['disco', 'ping', 'version', 'time',
                   '{ name = "muc"; mam_max_messages = %d; }' % MAX_KEPT],
          storage=os.environ.get('MAGPIE_TEST_STORAGE', 'sqlite'))
