#!/usr/bin/python3
"""52: bookmarks (XEP-0402 on PEP, mod_pep) and their XEP-0048/XEP-0049
compatibility: the node urn:xmpp:bookmarks:1 created with the XEP-0402
publish-options (whitelist, max, persist, send_last never), one item per
room, the owner's other resource notified, a contact refused (not-allowed
+ closed-node) and never notified even with +notify, no last item sent on
login (send_last_published_item never); the account advertises
urn:xmpp:bookmarks:1#compat and a private storage get of storage:bookmarks
shows the PEP bookmarks in the old format; a private storage set of
storage:bookmarks replaces them (published and retracted, with events);
other private storage still works; everything back after a restart;
slixmpp's xep_0048 plugin (private storage) reads and replaces them."""

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync, no_message
from pephelp import (NS_PS, NS_EVENT, NS_INFO, pw, login, handshake, publish, published_ok, items,
                     item_list, app_error, is_event, event_items, Caps, login_caps)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

MODULES = ['disco', 'ping', 'roster', 'private', 'pep']
A = 'alice@localhost'
BM = 'urn:xmpp:bookmarks:1'
OPTS = {'pubsub#persist_items': 'true', 'pubsub#max_items': 'max',
        'pubsub#send_last_published_item': 'never', 'pubsub#access_model': 'whitelist'}
CAPS = Caps(['http://jabber.org/protocol/disco#info', BM + '+notify'], node='urn:test:bm')


def conf(name, autojoin, nick=None):
    return "<conference xmlns='%s' name='%s' autojoin='%s'>%s</conference>" % (
        BM, name, autojoin, '<nick>%s</nick>' % nick if nick else '')


def legacy(c, inner=None):
    if inner is None:
        r = c.iq('get', None, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>")
        check(r.get('type') == 'result', tostr(r))
        st = child(child(r, 'query', 'jabber:iq:private'), 'storage', 'storage:bookmarks')
        check(st is not None, tostr(r))
        return {x.get('jid'): x for x in st if x.tag == '{storage:bookmarks}conference'}
    return c.iq('set', None, "<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'>%s</storage></query>"
                % inner)


def t01_publish_and_read(srv):
    a = login_caps(srv, 'alice', 'one', CAPS)
    a2 = login_caps(srv, 'alice', 'two', CAPS, expect_query=None)
    b = login_caps(srv, 'bob', 'b', CAPS, expect_query=False)  # same ver: cached
    try:
        r = a.iq('get', A, "<query xmlns='%s'/>" % NS_INFO)
        feats = {f.get('var') for f in child(r, 'query', NS_INFO) if f.tag.endswith('feature')}
        check(BM + '#compat' in feats, 'no #compat feature')
        check(published_ok(publish(a, BM, conf('Coven', 'true', 'ali'), item_id='coven@conference.localhost',
                                   options=OPTS)) == 'coven@conference.localhost', 'item id')
        ev = a2.wait_for('message', is_event(A, BM), timeout=5)
        check(event_items(ev)[0][0] == 'coven@conference.localhost', tostr(ev))
        published_ok(publish(a, BM, conf('Lair', 'false'), item_id='lair@conference.localhost', options=OPTS))
        got = dict(item_list(items(a, A, BM)))
        check(set(got) == {'coven@conference.localhost', 'lair@conference.localhost'}, repr(got))
        check(got['coven@conference.localhost'].get('autojoin') == 'true', 'payload')
        r = items(b, A, BM)
        check(app_error(r) == ('not-allowed', 'closed-node'), tostr(r))
        no_message(b, 0.5, is_event(A, BM))
        r = publish(a, BM, conf('X', 'false'), item_id='x@conference.localhost',
                    options=dict(OPTS, **{'pubsub#access_model': 'open'}))
        check(app_error(r) == ('conflict', 'precondition-not-met'), tostr(r))
    finally:
        closeall(a, a2, b)


def t02_compat_get(srv):
    a = login(srv, 'alice', 'legacy')
    try:
        bms = legacy(a)
        check(set(bms) == {'coven@conference.localhost', 'lair@conference.localhost'}, repr(bms))
        c = bms['coven@conference.localhost']
        check(c.get('name') == 'Coven' and c.get('autojoin') in ('true', '1'), tostr(c))
        check(child(c, 'nick', 'storage:bookmarks').text == 'ali', tostr(c))
        check(bms['lair@conference.localhost'].get('autojoin') in ('false', '0'), 'autojoin')
    finally:
        closeall(a)


def t03_compat_set(srv):
    a = login(srv, 'alice', 'legacy2')
    a2 = login_caps(srv, 'alice', 'watch', CAPS, expect_query=None)
    try:
        r = legacy(a, "<conference jid='coven@conference.localhost' name='Coven 2' autojoin='false'>"
                      "<nick>alice</nick></conference>"
                      "<conference jid='new@conference.localhost' name='New' autojoin='true'/>")
        check(r.get('type') == 'result', tostr(r))
        ev = a2.wait_for('message', is_event(A, BM), timeout=5)
        evi = child(child(ev, 'event', NS_EVENT), 'items', NS_EVENT)
        retracted = {x.get('id') for x in evi if x.tag == '{%s}retract' % NS_EVENT}
        published = {x.get('id') for x in evi if x.tag == '{%s}item' % NS_EVENT}
        check(retracted == {'lair@conference.localhost'}, 'retracted %r' % retracted)
        check(published == {'coven@conference.localhost', 'new@conference.localhost'}, 'published %r' % published)
        got = dict(item_list(items(a, A, BM)))
        check(set(got) == {'coven@conference.localhost', 'new@conference.localhost'}, repr(got))
        cv = got['coven@conference.localhost']
        check(cv.tag == '{%s}conference' % BM and cv.get('name') == 'Coven 2' and cv.get('autojoin') == 'false'
              and child(cv, 'nick', BM).text == 'alice', tostr(cv))
        # other private storage is untouched by the bookmark mapping
        r = a.iq('set', None, "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'>v</prefs></query>")
        check(r.get('type') == 'result', tostr(r))
        r = a.iq('get', None, "<query xmlns='jabber:iq:private'><prefs xmlns='urn:example:prefs'/></query>")
        check(child(child(r, 'query', 'jabber:iq:private'), 'prefs', 'urn:example:prefs').text == 'v', tostr(r))
    finally:
        closeall(a, a2)


def t04_no_last_item_and_restart(srv):
    srv.restart()
    a = login_caps(srv, 'alice', 'back', CAPS)
    try:
        no_message(a, 1.0, is_event(A, BM))  # send_last_published_item never
        got = dict(item_list(items(a, A, BM)))
        check(set(got) == {'coven@conference.localhost', 'new@conference.localhost'}, 'after restart: %r' % got)
        check(set(legacy(a)) == set(got), 'compat view after restart')
    finally:
        closeall(a)


async def slix_legacy(srv):
    import asyncio
    import slixhelp
    from slixmpp.plugins.xep_0048.stanza import Bookmarks
    c = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', pw('alice'),
                             plugins=('xep_0049', 'xep_0048'))
    try:
        r = await c['xep_0048'].get_bookmarks(timeout=10)
        confs = {str(x['jid']): x for x in r['private']['bookmarks']['conferences']}
        check(set(confs) == {'coven@conference.localhost', 'new@conference.localhost'}, repr(list(confs)))
        check(confs['coven@conference.localhost']['nick'] == 'alice', str(confs['coven@conference.localhost']))
        bm = Bookmarks()
        bm.add_conference('slix@conference.localhost', 'slixnick', name='From slixmpp', autojoin=True)
        await c['xep_0048'].set_bookmarks(bm, timeout=10)
        await asyncio.sleep(0.1)
    finally:
        await slixhelp.close(c)


def t05_slixmpp_xep0048(srv):
    import slixhelp
    slixhelp.run(slix_legacy, srv, timeout=60)
    a = login(srv, 'alice', 'after-slix')
    try:
        got = dict(item_list(items(a, A, BM)))
        check(set(got) == {'slix@conference.localhost'}, 'slixmpp set not mapped: %r' % got)
        cv = got['slix@conference.localhost']
        check(cv.get('name') == 'From slixmpp' and cv.get('autojoin') == 'true' and
              child(cv, 'nick', BM).text == 'slixnick', tostr(cv))
    finally:
        closeall(a)


TESTS = [t01_publish_and_read, t02_compat_get, t03_compat_set, t04_no_last_item_and_restart,
         t05_slixmpp_xep0048]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('52.00 bookmarks_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob'):
            srv.add_user(u, pw(u))
        a = login(srv, 'alice', 'setup')
        b = login(srv, 'bob', 'setup')
        handshake(b, 'bob', a, 'alice')
        closeall(a, b)
        for i, t in enumerate(TESTS, 1):
            R.run('52.%02d bookmarks_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('52.00 bookmarks_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('52.99 bookmarks_clean_shutdown', e)
    R.exit()


main()
