#!/usr/bin/python3
"""36: XEP-0313 Message Archive Management on a room's JID (mod_muc), in
raw stanzas: XEP-0359 stanza ids on broadcast messages (by = the room,
a client's forged one removed), disco features, paging forward and
backward with XEP-0059 (first/last, complete), flip-page, the form's
start/end/with/after-id/before-id/ids, errors for unknown ids and
fields, the form and the metadata, real JIDs for those who may see
them, access control (members-only, outcasts, password), rooms with
archiving off, private messages and subjects."""

import os
import time

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, local, body_of)
from muchelp import (MUC, NS_USER, NS_XDATA, DISCO_INFO, NS_MAM, NS_SID, NS_MODERATE, room_jid, occ,
                     join_ok, create, groupchat, wait_body, admin, room_sid, stanza_ids, sid_time,
                     mam_query, fin, expect_presence_error, send_join, codes)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ('alice', 'bob', 'carol', 'dave')
S = {}  # state shared by the tests: stanza ids by body


def features(c, room):
    r = c.iq('get', room_jid(room), "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    return {f.get('var') for f in child(r, 'query', DISCO_INFO) if local(f.tag) == 'feature'}


def bodies(msgs):
    return [body_of(m) for m in msgs]


def t01_stanza_ids(u):
    a, b = u['alice'], u['bob']
    create(a, 'arch', 'Alice')
    join_ok(b, 'arch', 'Bob')
    f = features(b, 'arch')
    for v in (NS_MAM, NS_MAM + '#extended', NS_SID, NS_MODERATE):
        check(v in f, 'room lacks feature %s: %s' % (v, f))
    sids = []
    for i in range(25):
        body = 'm%02d' % i
        groupchat(a, 'arch', body)
        m = wait_body(b, body)
        ma = wait_body(a, body)
        sid = room_sid(m, 'arch')
        check(sid and room_sid(ma, 'arch') == sid, 'sender and receiver see one stanza id: %s / %s' % (
            tostr(m), tostr(ma)))
        sids.append(sid)
    check(len(set(sids)) == 25, 'stanza ids not unique: %s' % sids)
    check([sid_time(s) for s in sids] == sorted(sid_time(s) for s in sids), 'ids do not follow time')
    S['sids'] = sids
    # a client cannot put words in the room's mouth: its stanza-id by the
    # room and a muc#user <x/> with a JID are removed, other ids kept
    b.send("<message to='%s' type='groupchat' id='forge'><body>forged</body>"
           "<stanza-id xmlns='%s' by='%s' id='fake-id'/><stanza-id xmlns='%s' by='other@x' id='kept'/>"
           "<x xmlns='%s'><item jid='admin@localhost/evil'/></x></message>"
           % (room_jid('arch'), NS_SID, room_jid('arch'), NS_SID, NS_USER))
    m = wait_body(a, 'forged')
    ids = stanza_ids(m)
    check(ids.get(room_jid('arch')) not in (None, 'fake-id') and ids.get('other@x') == 'kept', tostr(m))
    check(child(m, 'x', NS_USER) is None, 'forged muc#user x passed: %s' % tostr(m))
    S['forged'] = ids[room_jid('arch')]
    # a chat state without a body is neither numbered nor archived
    b.send("<message to='%s' type='groupchat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
           % room_jid('arch'))
    m = a.wait_for('message', lambda e: child(e, 'active') is not None)
    check(not stanza_ids(m), 'a chat state got a stanza id: %s' % tostr(m))


def t02_pages_forward(u):
    b = u['bob']
    sids = S['sids']
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max>')
    check(r.get('type') == 'result', tostr(r))
    check(bodies(msgs) == ['m%02d' % i for i in range(10)], bodies(msgs))
    check(ids == sids[:10], 'result ids are the stanza ids: %s vs %s' % (ids, sids[:10]))
    complete, first, last = fin(r)
    check(not complete and first == sids[0] and last == sids[9], tostr(r))
    m = msgs[0]
    check(m.get('from') == occ('arch', 'Alice') and m.get('to') is None and m.get('type') == 'groupchat', tostr(m))
    check(child(m, 'x', NS_USER) is None, 'a participant of a semi-anonymous room sees no JID: %s' % tostr(m))
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><after>%s</after>' % last)
    check(bodies(msgs) == ['m%02d' % i for i in range(10, 20)], bodies(msgs))
    complete, first, last = fin(r)
    check(not complete and first == sids[10], tostr(r))
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><after>%s</after>' % last)
    check(bodies(msgs) == ['m%02d' % i for i in range(20, 25)] + ['forged'], bodies(msgs))
    complete, first, last = fin(r)
    check(complete and first == sids[20] and last == S['forged'], tostr(r))
    # past the end: empty and complete
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><after>%s</after>' % last)
    check(msgs == [] and fin(r) == (True, None, None), tostr(r))
    # without RSM: everything (below the server's page limit), complete
    r, msgs, ids = mam_query(b, 'arch')
    check(len(msgs) == 26 and fin(r)[0], '%d results' % len(msgs))


def t03_pages_backward(u):
    b = u['bob']
    sids = S['sids'] + [S['forged']]
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><before/>')
    check(ids == sids[16:26], 'last page, oldest first: %s' % bodies(msgs))
    complete, first, last = fin(r)
    check(not complete and first == sids[16] and last == sids[25], tostr(r))
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><before>%s</before>' % first)
    check(ids == sids[6:16], bodies(msgs))
    complete, first, last = fin(r)
    check(not complete and first == sids[6], tostr(r))
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>10</max><before>%s</before>' % first)
    check(ids == sids[0:6], bodies(msgs))
    check(fin(r) == (True, sids[0], sids[5]), tostr(r))
    # flip-page: the same page, newest first; first/last still name its ends
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>4</max><before/>', flip=True)
    check(ids == list(reversed(sids[22:26])), bodies(msgs))
    check(fin(r) == (False, sids[22], sids[25]), tostr(r))
    r, msgs, ids = mam_query(b, 'arch', rsm='<max>3</max>', flip=True)
    check(ids == list(reversed(sids[0:3])), bodies(msgs))


def t04_form_filters(u):
    a, b = u['alice'], u['bob']
    sids = S['sids']
    r, msgs, ids = mam_query(b, 'arch', form={'after-id': sids[4], 'before-id': sids[8]})
    check(ids == sids[5:8] and fin(r)[0], bodies(msgs))
    # form and RSM together: the tighter bounds and a page
    r, msgs, ids = mam_query(b, 'arch', form={'after-id': sids[4]}, rsm='<max>2</max><after>%s</after>' % sids[10])
    check(ids == sids[11:13] and not fin(r)[0], bodies(msgs))
    r, msgs, ids = mam_query(b, 'arch', form={'ids': [sids[20], sids[3]]})
    check(ids == [sids[20], sids[3]] and bodies(msgs) == ['m20', 'm03'], bodies(msgs))
    # with: the publisher's occupant JID
    for i in range(3):
        groupchat(b, 'arch', 'bob%d' % i)
        wait_body(a, 'bob%d' % i)
    r, msgs, ids = mam_query(a, 'arch', form={'with': occ('arch', 'Bob')})
    check(bodies(msgs) == ['forged', 'bob0', 'bob1', 'bob2'], bodies(msgs))
    check(all(m.get('from') == occ('arch', 'Bob') for m in msgs), [tostr(m) for m in msgs])
    # start / end: whole seconds, inclusive. Wait for a new second, so
    # that everything above is in earlier ones.
    time.sleep(1.0 - time.time() % 1.0 + 0.05)
    now = int(time.time())
    start = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))
    earlier = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now - 1))
    for i in range(3):
        groupchat(a, 'arch', 'late%d' % i)
        wait_body(b, 'late%d' % i)
    r, msgs, ids = mam_query(b, 'arch', form={'start': start})
    check(bodies(msgs) == ['late0', 'late1', 'late2'], 'start: %s' % bodies(msgs))
    r, msgs, ids = mam_query(b, 'arch', form={'end': earlier})
    check('late0' not in bodies(msgs) and 'm00' in bodies(msgs) and len(msgs) == 29, 'end: %s' % bodies(msgs))
    r, msgs, ids = mam_query(b, 'arch', form={'start': start, 'with': occ('arch', 'Bob')})
    check(msgs == [] and fin(r)[0], bodies(msgs))


def t05_errors(u):
    b = u['bob']
    sids = S['sids']
    unknown = '%x-0123456789abcdef' % sid_time(sids[3])  # right time, wrong id
    for form, rsm in (({'after-id': unknown}, None), ({'before-id': 'not-an-id'}, None),
                      (None, '<after>%s</after>' % unknown), (None, '<before>nope</before>'),
                      ({'ids': [sids[1], unknown]}, None)):
        r, msgs, _ = mam_query(b, 'arch', form=form, rsm=rsm)
        check(r.get('type') == 'error' and error_condition(r) == 'item-not-found' and not msgs,
              '%s %s: %s' % (form, rsm, tostr(r)))
    r, _, _ = mam_query(b, 'arch', form={'{urn:example}fulltext': 'x'})
    check(r.get('type') == 'error' and error_condition(r) == 'feature-not-implemented', tostr(r))
    r, _, _ = mam_query(b, 'arch', form={'start': 'yesterday'})
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    # a real JID in a semi-anonymous room: not for a participant
    r, _, _ = mam_query(b, 'arch', form={'with': 'bob@localhost'})
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    # the form (XEP-0313 4.1.5) and the metadata (section 5)
    r = b.iq('get', room_jid('arch'), "<query xmlns='%s'/>" % NS_MAM)
    x = child(child(r, 'query', NS_MAM), 'x', NS_XDATA)
    vars_ = {f.get('var') for f in x}
    check({'FORM_TYPE', 'with', 'start', 'end', 'before-id', 'after-id', 'ids'} <= vars_, vars_)
    r = b.iq('get', room_jid('arch'), "<metadata xmlns='%s'/>" % NS_MAM)
    md = child(r, 'metadata', NS_MAM)
    check(child(md, 'start').get('id') == sids[0] and child(md, 'start').get('timestamp'), tostr(r))
    _, _, all_ids = mam_query(b, 'arch', rsm='<max>1</max><before/>')
    check(child(md, 'end').get('id') == all_ids[-1], tostr(r))


def t06_real_jids(u):
    a, b, c = u['alice'], u['bob'], u['carol']
    # the owner (a moderator) sees who wrote what in a semi-anonymous room
    r, msgs, _ = mam_query(a, 'arch', form={'with': occ('arch', 'Bob')})
    x = child(msgs[1], 'x', NS_USER)
    check(x is not None and child(x, 'item').get('jid') == b.jid, tostr(msgs[1]))
    # in a non-anonymous room everybody does
    create(a, 'open', 'Alice', {'muc#roomconfig_whois': 'anyone'})
    join_ok(c, 'open', 'Carol')
    groupchat(c, 'open', 'hello open')
    wait_body(a, 'hello open')
    r, msgs, _ = mam_query(u['dave'], 'open')
    check(bodies(msgs) == ['hello open'], bodies(msgs))
    check(child(child(msgs[0], 'x', NS_USER), 'item').get('jid') == c.jid, tostr(msgs[0]))


def t07_access(u):
    a, b, c, d = u['alice'], u['bob'], u['carol'], u['dave']
    create(a, 'priv', 'Alice', {'muc#roomconfig_membersonly': '1'})
    check(admin(a, 'priv', [{'jid': 'bob@localhost', 'affiliation': 'member'}]).get('type') == 'result', '')
    groupchat(a, 'priv', 'members only talk')
    wait_body(a, 'members only talk')
    r, msgs, _ = mam_query(c, 'priv')
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden' and not msgs, tostr(r))
    r, msgs, _ = mam_query(b, 'priv')  # a member who never entered
    check(r.get('type') == 'result' and bodies(msgs) == ['members only talk'], tostr(r))
    # an outcast of an open room may not read it; anyone else may
    check(admin(a, 'arch', [{'jid': 'carol@localhost', 'affiliation': 'outcast'}]).get('type') == 'result', '')
    r, _, _ = mam_query(c, 'arch', rsm='<max>1</max>')
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    r, msgs, _ = mam_query(d, 'arch', rsm='<max>1</max>')
    check(r.get('type') == 'result' and len(msgs) == 1, tostr(r))
    # a password room: only its occupants and members
    create(a, 'secret', 'Alice', {'muc#roomconfig_passwordprotectedroom': '1', 'muc#roomconfig_roomsecret': 'pw'})
    r, _, _ = mam_query(d, 'secret')
    check(r.get('type') == 'error' and error_condition(r) == 'forbidden', tostr(r))
    join_ok(d, 'secret', 'Dave', password='pw')
    r, _, _ = mam_query(d, 'secret')
    check(r.get('type') == 'result', tostr(r))
    # a room that does not exist
    r, _, _ = mam_query(d, 'nosuchroom')
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def t08_not_archived(u):
    a, b = u['alice'], u['bob']
    _, before, _ = mam_query(b, 'arch')
    # private messages are not the room's (XEP-0313 6.1.2)
    b.send("<message to='%s' type='chat'><body>psst</body></message>" % occ('arch', 'Alice'))
    wait_body(a, 'psst')
    # a subject change is
    a.send("<message to='%s' type='groupchat'><subject>Archived topic</subject></message>" % room_jid('arch'))
    m = b.wait_for('message', lambda e: child(e, 'subject') is not None and child(e, 'subject').text == 'Archived topic')
    check(room_sid(m, 'arch'), 'subject change without stanza id: %s' % tostr(m))
    _, after, _ = mam_query(b, 'arch')
    check(len(after) == len(before) + 1, '%d then %d' % (len(before), len(after)))
    check(child(after[-1], 'subject').text == 'Archived topic' and 'psst' not in bodies(after), tostr(after[-1]))
    # archiving off: no feature, no archive, stanza ids still given
    create(a, 'noarch', 'Alice', {'muc#roomconfig_enablearchiving': '0'})
    p = join_ok(b, 'noarch', 'Bob')
    check(170 not in codes(p), 'no 170 without archiving: %s' % tostr(p))
    check(NS_MAM not in features(b, 'noarch'), 'feature advertised with archiving off')
    groupchat(a, 'noarch', 'not kept')
    m = wait_body(b, 'not kept')
    check(room_sid(m, 'noarch'), tostr(m))
    r, _, _ = mam_query(b, 'noarch')
    check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
    # and on again: archived from then on
    from muchelp import configure
    check(configure(a, 'noarch', {'muc#roomconfig_enablearchiving': '1'}).get('type') == 'result', '')
    n = b.wait_for('message', lambda e: e.get('from') == room_jid('noarch') and 104 in codes(e))
    check(170 in codes(n), 'archiving on: 170 %s' % tostr(n))
    p = join_ok(u['dave'], 'noarch', 'Dave')
    check(170 in codes(p), 'entering an archiving room: 170 %s' % tostr(p))
    groupchat(a, 'noarch', 'kept now')
    wait_body(b, 'kept now')
    r, msgs, _ = mam_query(b, 'noarch')
    check(bodies(msgs) == ['kept now'], bodies(msgs))


def main():
    try:
        # MAGPIE_TEST_STORAGE=mysql (with MAGPIE_TEST_MYSQL from tests/mariadb.sh, a
        # fresh database) runs the same conversations on the MySQL driver
        srv = MagpieServer(args.builddir, workers=args.workers,
                           storage=os.environ.get('MAGPIE_TEST_STORAGE', 'sqlite'),
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('36.00 muc_mam_server_start', e)
        R.exit()
    u = {}
    try:
        for n in USERS:
            srv.add_user(n, n + '-pw')
        u = {n: online(srv, n, n + '-pw', 'p') for n in USERS}
        R.run('36.01 muc_mam_stanza_ids', t01_stanza_ids, u, server=srv)
        R.run('36.02 muc_mam_pages_forward', t02_pages_forward, u, server=srv)
        R.run('36.03 muc_mam_pages_backward_flip', t03_pages_backward, u, server=srv)
        R.run('36.04 muc_mam_form_filters', t04_form_filters, u, server=srv)
        R.run('36.05 muc_mam_errors_form_metadata', t05_errors, u, server=srv)
        R.run('36.06 muc_mam_real_jids', t06_real_jids, u, server=srv)
        R.run('36.07 muc_mam_access', t07_access, u, server=srv)
        R.run('36.08 muc_mam_not_archived', t08_not_archived, u, server=srv)
    except Exception as e:
        R.fail('36.00 muc_mam_setup', e)
    closeall(*u.values())
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('36.99 muc_mam_clean_shutdown', e)
    R.exit()


main()
