#!/usr/bin/python3
"""50: PEP (XEP-0163, mod_pep) with raw stanzas: the account's disco
identity pubsub/pep and features; publish (node auto-created, item id
generated or kept), items (all, max_items newest first, by id), retract
with notify to the owner's other resource (when its caps ask for the node), the node's item limit;
publish-options preconditions (XEP-0060 §7.1.5: conflict +
precondition-not-met, "max" honoured); access models (presence: a
non-contact gets not-authorized + presence-subscription-required, open:
readable by anyone, whitelist: not-allowed + closed-node until the owner
makes the reader a member), disco#items on
the bare JID filtered the same way; node creation with a configuration
(XEP-0060 §8.1.3), owner configure get/set, purge and
delete (others forbidden); limits (payload not-acceptable, nodes
and the account's byte quota policy-violation); everything back after a restart. Run with --workers 2
as well."""

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync, no_message
from pephelp import (NS_PS, NS_OWNER, NS_EVENT, NS_INFO, NS_ITEMS, NS_DATA, NS_PUBOPTS, pw, login,
                     publish, published_ok, items, item_list, app_error, owner_iq, is_event, event_items,
                     form, Caps, login_caps)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

MODULES = ['disco', 'ping', 'roster', 'private',
           '{ name = "pep"; max_nodes = 8; max_payload = 2000; max_items = 20; max_bytes = 6000; cache_bytes = 0; }']
A = 'alice@localhost'
TUNE = "<tune xmlns='http://jabber.org/protocol/tune'><title>%s</title></tune>"
# the owner's watching client: notifications are filtered by caps for the owner too
WATCH = Caps(['http://jabber.org/protocol/disco#info', 'http://jabber.org/protocol/tune+notify',
              'urn:example:cfg+notify'], node='urn:test:watch')


def title(payload):
    return child(payload, 'title', 'http://jabber.org/protocol/tune').text


def t01_disco(srv):
    a = login(srv, 'alice', 'd')
    try:
        r = a.iq('get', A, "<query xmlns='%s'/>" % NS_INFO)
        q = child(r, 'query', NS_INFO)
        ids = {(i.get('category'), i.get('type')) for i in q if i.tag.endswith('identity')}
        check(('pubsub', 'pep') in ids, 'no pubsub/pep identity: %s' % tostr(r))
        feats = {f.get('var') for f in q if f.tag.endswith('feature')}
        for f in (NS_PUBOPTS, NS_PS + '#publish', NS_PS + '#access-presence', NS_PS + '#auto-create'):
            check(f in feats, 'missing feature %s' % f)
        # no node yet: empty disco#items
        r = a.iq('get', A, "<query xmlns='%s'/>" % NS_ITEMS)
        check(r.get('type') == 'result' and len(list(child(r, 'query', NS_ITEMS))) == 0, tostr(r))
    finally:
        closeall(a)


def t02_publish_items_retract(srv):
    a = login(srv, 'alice', 'p')
    a2 = login_caps(srv, 'alice', 'p2', WATCH, expect_query=None)
    a3 = login(srv, 'alice', 'p3')  # no caps: no notifications
    try:
        # default node: one item kept
        id1 = published_ok(publish(a, 'urn:example:mood', "<mood xmlns='urn:example:mood'>1</mood>"))
        published_ok(publish(a, 'urn:example:mood', "<mood xmlns='urn:example:mood'>2</mood>"))
        got = item_list(items(a, A, 'urn:example:mood'))
        check(len(got) == 1 and got[0][1].text == '2', 'default max_items 1: %r' % got)
        check(got[0][0] != id1, 'generated ids repeat')
        # a node with room for 10, ids kept
        opts = {'pubsub#max_items': '10'}
        for i in range(1, 5):
            r = publish(a, 'http://jabber.org/protocol/tune', TUNE % ('song%d' % i), item_id='t%d' % i, options=opts)
            check(published_ok(r) == 't%d' % i, tostr(r))
            ev = a2.wait_for('message', is_event(A, 'http://jabber.org/protocol/tune'), timeout=5)
            check(ev.get('type') == 'headline' and ev.get('to') == A + '/p2', tostr(ev))
            check(event_items(ev)[0][0] == 't%d' % i and title(event_items(ev)[0][1]) == 'song%d' % i, tostr(ev))
        got = item_list(items(a, A, 'http://jabber.org/protocol/tune'))
        check(sorted(i for i, _ in got) == ['t1', 't2', 't3', 't4'], repr(got))
        got = item_list(items(a, A, 'http://jabber.org/protocol/tune', max_items=2))
        check([i for i, _ in got] == ['t4', 't3'], 'max_items=2 gives the newest: %r' % got)
        got = item_list(items(a, A, 'http://jabber.org/protocol/tune', ids=['t2']))
        check(len(got) == 1 and title(got[0][1]) == 'song2', repr(got))
        # republishing an id replaces it
        published_ok(publish(a, 'http://jabber.org/protocol/tune', TUNE % 'again', item_id='t2'))
        got = item_list(items(a, A, 'http://jabber.org/protocol/tune', ids=['t2']))
        check(title(got[0][1]) == 'again', repr(got))
        check(len(item_list(items(a, A, 'http://jabber.org/protocol/tune'))) == 4, 'replace added an item')
        no_message(a3, 0.5, is_event(A, 'http://jabber.org/protocol/tune'))
        a2.drain(0.3)
        # retract with notify
        r = a.iq('set', None, "<pubsub xmlns='%s'><retract node='http://jabber.org/protocol/tune' notify='true'>"
                              "<item id='t1'/></retract></pubsub>" % NS_PS)
        check(r.get('type') == 'result', tostr(r))
        ev = a2.wait_for('message', is_event(A, 'http://jabber.org/protocol/tune'), timeout=5)
        ret = child(child(child(ev, 'event', NS_EVENT), 'items', NS_EVENT), 'retract', NS_EVENT)
        check(ret is not None and ret.get('id') == 't1', tostr(ev))
        check('t1' not in [i for i, _ in item_list(items(a, A, 'http://jabber.org/protocol/tune'))], 'not retracted')
        r = a.iq('set', None, "<pubsub xmlns='%s'><retract node='http://jabber.org/protocol/tune'>"
                              "<item id='t1'/></retract></pubsub>" % NS_PS)
        check(app_error(r)[0] == 'item-not-found', tostr(r))
        # errors: no node, no payload, two payloads, unknown node
        r = items(a, A, 'urn:nope')
        check(app_error(r)[0] == 'item-not-found', tostr(r))
        r = publish(a, 'urn:x', '')
        check(app_error(r) == ('bad-request', 'payload-required'), tostr(r))
        r = publish(a, 'urn:x', "<a xmlns='urn:x'/><b xmlns='urn:x'/>")
        check(app_error(r) == ('bad-request', 'invalid-payload'), tostr(r))
    finally:
        closeall(a, a2, a3)


def t03_publish_options(srv):
    a = login(srv, 'alice', 'o')
    try:
        node = 'urn:example:opts'
        published_ok(publish(a, node, "<x xmlns='urn:example:opts'>1</x>",
                             options={'pubsub#access_model': 'whitelist', 'pubsub#max_items': 'max',
                                      'pubsub#persist_items': 'true'}))
        # same preconditions: accepted, "max" kept many items
        for i in range(2, 6):
            published_ok(publish(a, node, "<x xmlns='urn:example:opts'>%d</x>" % i,
                                 options={'pubsub#access_model': 'whitelist', 'pubsub#max_items': 'max'}))
        check(len(item_list(items(a, A, node))) == 5, 'max_items max kept fewer')
        # mismatches
        for opts in ({'pubsub#access_model': 'open'}, {'pubsub#max_items': '3'},
                     {'pubsub#persist_items': 'false'}):
            r = publish(a, node, "<x xmlns='urn:example:opts'>no</x>", options=opts)
            check(app_error(r) == ('conflict', 'precondition-not-met'), '%r: %s' % (opts, tostr(r)))
        check(len(item_list(items(a, A, node))) == 5, 'a refused publish was stored')
        # max_items over the server's cap (20 here) on creation
        r = publish(a, 'urn:example:big', "<x xmlns='urn:x'/>", options={'pubsub#max_items': '500'})
        check(app_error(r)[0] == 'not-acceptable', tostr(r))
    finally:
        closeall(a)


def t04_access_models(srv):
    a = login(srv, 'alice', 'm')
    b = login(srv, 'bob', 'm')
    try:
        published_ok(publish(a, 'urn:example:pres', "<x xmlns='urn:x'>p</x>"))
        published_ok(publish(a, 'urn:example:open', "<x xmlns='urn:x'>o</x>", options={'pubsub#access_model': 'open'}))
        # bob is not alice's contact
        r = items(b, A, 'urn:example:pres')
        check(app_error(r) == ('not-authorized', 'presence-subscription-required'), tostr(r))
        check('<x' not in tostr(r) and ':item ' not in tostr(r), 'items leaked: %s' % tostr(r))
        got = item_list(items(b, A, 'urn:example:open'))
        check(len(got) == 1 and got[0][1].text == 'o', repr(got))
        r = items(b, A, 'urn:example:opts')  # whitelist (t03)
        check(app_error(r) == ('not-allowed', 'closed-node'), tostr(r))
        # disco#items: bob sees the open node only; alice sees all
        r = b.iq('get', A, "<query xmlns='%s'/>" % NS_ITEMS)
        nodes = {i.get('node') for i in child(r, 'query', NS_ITEMS)}
        check(nodes == {'urn:example:open'}, 'bob sees %r' % nodes)
        r = a.iq('get', A, "<query xmlns='%s'/>" % NS_ITEMS)
        nodes = {i.get('node') for i in child(r, 'query', NS_ITEMS)}
        check({'urn:example:pres', 'urn:example:open', 'urn:example:opts'} <= nodes, 'alice sees %r' % nodes)
        # disco#info on a node (XEP-0060 5.3): a leaf with its access model, hidden from who may not read
        r = b.iq('get', A, "<query xmlns='%s' node='urn:example:open'/>" % NS_INFO)
        q = child(r, 'query', NS_INFO)
        check(q is not None and q.get('node') == 'urn:example:open', tostr(r))
        ids = {(i.get('category'), i.get('type')) for i in q if i.tag.endswith('identity')}
        check(ids == {('pubsub', 'leaf')}, tostr(r))
        check("<ns" in tostr(r) and '>open<' in tostr(r), 'no access model in the meta-data: %s' % tostr(r))
        r = b.iq('get', A, "<query xmlns='%s' node='urn:example:pres'/>" % NS_INFO)
        check(app_error(r)[0] == 'item-not-found', tostr(r))
        r = b.iq('get', A, "<query xmlns='%s'/>" % NS_INFO)
        check(child(r, 'query', NS_INFO) is not None and r.get('type') == 'result', 'plain disco#info: %s' % tostr(r))
        # bob may not publish to alice
        r = publish(b, 'urn:example:pres', "<x xmlns='urn:x'>b</x>", to=A)
        check(app_error(r)[0] == 'forbidden', tostr(r))
        # once bob receives alice's presence, the presence model lets him read
        b.send("<presence to='%s' type='subscribe'/>" % A)
        a.wait_for('presence', lambda e: e.get('type') == 'subscribe', timeout=5)
        a.send("<presence to='bob@localhost' type='subscribed'/>")
        b.wait_for('presence', lambda e: e.get('type') == 'subscribed', timeout=5)
        sync(a)
        got = item_list(items(b, A, 'urn:example:pres'))
        check(len(got) == 1 and got[0][1].text == 'p', repr(got))
        r = items(b, A, 'urn:example:opts')
        check(app_error(r) == ('not-allowed', 'closed-node'), 'whitelist opened to a contact: %s' % tostr(r))
    finally:
        closeall(a, b)


def t05_owner_ops(srv):
    a = login(srv, 'alice', 'w')
    b = login(srv, 'bob', 'w')
    try:
        node = 'urn:example:cfg'
        published_ok(publish(a, node, "<x xmlns='urn:x'>1</x>", options={'pubsub#max_items': '5'}))
        published_ok(publish(a, node, "<x xmlns='urn:x'>2</x>"))
        r = owner_iq(a, 'get', "<configure node='%s'/>" % node)
        x = child(child(child(r, 'pubsub', NS_OWNER), 'configure', NS_OWNER), 'x', NS_DATA)
        vals = {f.get('var'): (child(f, 'value', NS_DATA).text if child(f, 'value', NS_DATA) is not None else None)
                for f in x}
        check(vals.get('pubsub#access_model') == 'presence' and vals.get('pubsub#max_items') == '5'
              and vals.get('pubsub#persist_items') in ('1', 'true'), repr(vals))
        check(app_error(owner_iq(b, 'get', "<configure node='%s'/>" % node, to=A))[0] == 'forbidden', 'bob configures')
        r = owner_iq(a, 'set', "<configure node='%s'>%s</configure>" % (
            node, form('http://jabber.org/protocol/pubsub#node_config', {'pubsub#access_model': 'open'})))
        check(r.get('type') == 'result', tostr(r))
        check(len(item_list(items(b, A, node))) == 2, 'open after configure')
        # purge, with an event to the owner's other resource
        a2 = login_caps(srv, 'alice', 'w2', WATCH, expect_query=None)
        r = owner_iq(a, 'set', "<purge node='%s'/>" % node)
        check(r.get('type') == 'result', tostr(r))
        a2.wait_for('message', is_event(A, node, 'purge'), timeout=5)
        check(item_list(items(a, A, node)) == [], 'purge left items')
        r = owner_iq(b, 'set', "<delete node='%s'/>" % node, to=A)
        check(app_error(r)[0] == 'forbidden', tostr(r))
        r = owner_iq(a, 'set', "<delete node='%s'/>" % node)
        check(r.get('type') == 'result', tostr(r))
        a2.wait_for('message', is_event(A, node, 'delete'), timeout=5)
        check(app_error(items(a, A, node))[0] == 'item-not-found', 'node survived delete')
        closeall(a2)
    finally:
        closeall(a, b)


def t06_limits(srv):
    a = login(srv, 'alice', 'l')
    try:
        r = publish(a, 'urn:example:big', "<x xmlns='urn:x'>%s</x>" % ('z' * 2500))
        check(app_error(r) == ('not-acceptable', 'payload-too-big'), tostr(r))
        # the account's quota (max_bytes = 6000): three 1900-byte items fit, not four
        big = "<x xmlns='urn:x'>%s</x>" % ('q' * 1880)
        results = [publish(a, 'urn:example:quota', big, item_id='q%d' % i, options={'pubsub#max_items': '10'})
                   for i in range(4)]
        check(all(r.get('type') == 'result' for r in results[:2]), 'quota hit too early: %s' % [tostr(r)[-200:] for r in results])
        check(app_error(results[3])[0] == 'policy-violation', 'quota not enforced: %s' % tostr(results[3]))
        # replacing an item does not count twice; purging frees the room
        r = owner_iq(a, 'set', "<purge node='urn:example:quota'/>")
        check(r.get('type') == 'result', tostr(r))
        for i in range(3):
            published_ok(publish(a, 'urn:example:quota', big, item_id='same'))
        # a full node pushes its oldest item out: that item's bytes do not count
        published_ok(publish(a, 'urn:example:quota', big, item_id='other'))
        r = owner_iq(a, 'set', "<configure node='urn:example:quota'>%s</configure>" % form(
            'http://jabber.org/protocol/pubsub#node_config', {'pubsub#max_items': '2'}))
        check(r.get('type') == 'result', tostr(r))
        published_ok(publish(a, 'urn:example:quota', big, item_id='third'))
        check(sorted(i for i, _ in item_list(items(a, A, 'urn:example:quota'))) == ['other', 'third'],
              'oldest not pushed out')
        r = a.iq('get', A, "<query xmlns='%s'/>" % NS_ITEMS)
        have = len(list(child(r, 'query', NS_ITEMS)))
        for i in range(have, 8):
            published_ok(publish(a, 'urn:example:n%d' % i, "<x xmlns='urn:x'/>"))
        r = publish(a, 'urn:example:one-too-many', "<x xmlns='urn:x'/>")
        check(app_error(r)[0] == 'policy-violation', tostr(r))
        # existing nodes still take items
        published_ok(publish(a, 'urn:example:mood', "<mood xmlns='urn:example:mood'>3</mood>"))
    finally:
        closeall(a)


def t07_restart(srv):
    srv.restart()
    a = login(srv, 'alice', 'r')
    b = login(srv, 'bob', 'r')
    try:
        got = item_list(items(a, A, 'http://jabber.org/protocol/tune'))
        check(sorted(i for i, _ in got) == ['t2', 't3', 't4'], 'lost across restart: %r' % got)
        check(len(item_list(items(a, A, 'urn:example:opts'))) == 5, 'max node lost')
        # configuration kept: still whitelist, still open
        check(app_error(items(b, A, 'urn:example:opts')) == ('not-allowed', 'closed-node'), 'whitelist lost')
        check(len(item_list(items(b, A, 'urn:example:open'))) == 1, 'open lost')
        r = publish(a, 'urn:example:opts', "<x xmlns='urn:x'/>", options={'pubsub#access_model': 'open'})
        check(app_error(r) == ('conflict', 'precondition-not-met'), tostr(r))
    finally:
        closeall(a, b)


def t08_whitelist_members(srv):
    a = login(srv, 'alice', 'wm')
    b = login(srv, 'bob', 'wm')
    try:
        node = 'urn:example:circle'
        published_ok(publish(a, node, "<x xmlns='urn:x'>secret</x>", options={'pubsub#access_model': 'whitelist'}))
        check(app_error(items(b, A, node)) == ('not-allowed', 'closed-node'), 'read before being a member')
        r = owner_iq(b, 'set', "<affiliations node='%s'><affiliation jid='bob@localhost' affiliation='member'/>"
                               "</affiliations>" % node, to=A)
        check(app_error(r)[0] == 'forbidden', tostr(r))
        r = owner_iq(a, 'set', "<affiliations node='%s'><affiliation jid='bob@localhost' affiliation='member'/>"
                               "</affiliations>" % node)
        check(r.get('type') == 'result', tostr(r))
        r = owner_iq(a, 'get', "<affiliations node='%s'/>" % node)
        affs = {e.get('jid'): e.get('affiliation')
                for e in child(child(r, 'pubsub', NS_OWNER), 'affiliations', NS_OWNER)}
        check(affs == {A: 'owner', 'bob@localhost': 'member'}, repr(affs))
        got = item_list(items(b, A, node))
        check(len(got) == 1 and got[0][1].text == 'secret', repr(got))
        r = owner_iq(a, 'set', "<affiliations node='%s'><affiliation jid='bob@localhost' affiliation='none'/>"
                               "</affiliations>" % node)
        check(r.get('type') == 'result', tostr(r))
        check(app_error(items(b, A, node)) == ('not-allowed', 'closed-node'), 'still readable after removal')
        r = owner_iq(a, 'set', "<affiliations node='%s'><affiliation jid='bob@localhost' affiliation='owner'/>"
                               "</affiliations>" % node)
        check(app_error(r)[0] == 'not-acceptable', tostr(r))
        # kept across a restart
        r = owner_iq(a, 'set', "<affiliations node='%s'><affiliation jid='bob@localhost' affiliation='member'/>"
                               "</affiliations>" % node)
        check(r.get('type') == 'result', tostr(r))
    finally:
        closeall(a, b)
    srv.restart()
    b = login(srv, 'bob', 'wm2')
    try:
        check(len(item_list(items(b, A, 'urn:example:circle'))) == 1, 'membership lost across restart')
    finally:
        closeall(b)


def t09_create_and_configure(srv):
    a = login(srv, 'alice', 'cc')
    b = login(srv, 'bob', 'cc')
    try:
        node = 'urn:example:made'
        cfg = "<configure>%s</configure>" % form('http://jabber.org/protocol/pubsub#node_config',
                                                 {'pubsub#access_model': 'open', 'pubsub#max_items': '3'})
        r = a.iq('set', None, "<pubsub xmlns='%s'><create node='%s'/>%s</pubsub>" % (NS_PS, node, cfg))
        check(r.get('type') == 'result', tostr(r))
        r = a.iq('set', None, "<pubsub xmlns='%s'><create node='%s'/></pubsub>" % (NS_PS, node))
        check(app_error(r)[0] == 'conflict', tostr(r))
        check(item_list(items(b, A, node)) == [], 'new node not empty or not open')
        for i in range(5):
            published_ok(publish(a, node, "<x xmlns='urn:x'>%d</x>" % i))
        check(len(item_list(items(b, A, node))) == 3, 'configured max_items not applied')
        r = a.iq('set', None, "<pubsub xmlns='%s'><create node='urn:example:bad'/><configure>%s</configure></pubsub>"
                 % (NS_PS, form('urn:wrong', {'pubsub#access_model': 'open'})))
        check(app_error(r)[0] == 'bad-request', tostr(r))
        r = a.iq('set', None, "<pubsub xmlns='%s'><create/></pubsub>" % NS_PS)
        check(app_error(r)[0] == 'not-acceptable', 'instant node: %s' % tostr(r))
    finally:
        closeall(a, b)


TESTS = [t01_disco, t02_publish_items_retract, t03_publish_options, t04_access_models, t05_owner_ops,
         t08_whitelist_members, t09_create_and_configure, t06_limits, t07_restart]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('50.00 pep_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('50.%02d pep_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('50.00 pep_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('50.99 pep_clean_shutdown', e)
    R.exit()


main()
