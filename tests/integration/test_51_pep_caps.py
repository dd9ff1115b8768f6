#!/usr/bin/python3
"""51: PEP notifications filtered by XEP-0115 entity capabilities (mod_pep).
A contact's client announces <c hash='sha-1' node ver/>; the server asks it
disco#info for node#ver once, checks the SHA-1 verification string, and
then sends it events of the nodes whose <node>+notify it lists: a contact
with +notify gets the event (to its full JID), a contact whose caps lack
it does not, a non-contact does not, a client whose answer does not match
its ver does not; a second client with known caps is not asked again and
gets the last item on its available presence; the owner's own login gets
its last item too, its resources without caps nothing; a resource with a
negative priority gets nothing; whitelist nodes notify nobody but the owner and the
members the owner named. Run with
--workers 2 as well."""

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync, no_message
from pephelp import (NS_PS, pw, login, handshake, publish, published_ok, is_event, event_items, Caps,
                     login_caps, caps_query, answer_caps)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

MODULES = ['disco', 'ping', 'roster', 'pep']
A = 'alice@localhost'
TUNE_NS = 'http://jabber.org/protocol/tune'
TUNE = "<tune xmlns='%s'><title>%%s</title></tune>" % TUNE_NS

WANTS_TUNE = Caps(['http://jabber.org/protocol/disco#info', TUNE_NS, TUNE_NS + '+notify',
                   'urn:xmpp:avatar:metadata+notify'], node='https://example.org/bobclient')
NO_NOTIFY = Caps(['http://jabber.org/protocol/disco#info', TUNE_NS],
                 identities=(('client', 'phone', 'en', 'Carol'), ('client', 'phone', 'de', 'Karol'),
                             ('client', 'phone', 'en-GB', 'Carol UK')),
                 forms=[('urn:xmpp:dataforms:softwareinfo', {'software': ['CarolIM'], 'os': ['Linux', 'X']})],
                 node='https://example.org/carolclient')


def title_of(ev):
    its = event_items(ev)
    check(len(its) == 1, 'one item expected: %s' % tostr(ev))
    return child(its[0][1], 'title', TUNE_NS).text


def t01_notify_filtered_by_caps(srv):
    b = login_caps(srv, 'bob', 'phone', WANTS_TUNE)
    c = login_caps(srv, 'carol', 'desk', NO_NOTIFY)
    d = login_caps(srv, 'dave', 'x', WANTS_TUNE, expect_query=None)  # not a contact
    a = login(srv, 'alice', 'pc')
    # bob's resource with a negative priority: no notifications (XEP-0163 4.3.2)
    bn = RawLogin(srv, 'bob', 'away')
    bn.send('<presence><priority>-1</priority>%s</presence>' % WANTS_TUNE.element())
    sync(bn)
    try:
        published_ok(publish(a, TUNE_NS, TUNE % 'first'))
        ev = b.wait_for('message', is_event(A, TUNE_NS), timeout=5)
        check(ev.get('to') == 'bob@localhost/phone' and ev.get('type') == 'headline', tostr(ev))
        check(child(ev, 'delay', 'urn:xmpp:delay') is None, 'a live event has a delay: %s' % tostr(ev))
        check(title_of(ev) == 'first', tostr(ev))
        no_message(c, 1.0, is_event(A, TUNE_NS))
        no_message(d, 0.5, is_event(A, TUNE_NS))
        no_message(bn, 0.5, is_event(A, TUNE_NS))
        no_message(a, 0.5, is_event(A, TUNE_NS))  # the owner's own client, without caps
        # a node carol's caps do not name, nor bob's: nobody but the owner hears of it
        published_ok(publish(a, 'urn:example:other', "<x xmlns='urn:example:other'/>"))
        no_message(b, 0.5, is_event(A, 'urn:example:other'))
    finally:
        closeall(a, b, c, d, bn)


def t02_cached_caps_and_last_item(srv):
    a = login(srv, 'alice', 'pc2')
    try:
        published_ok(publish(a, TUNE_NS, TUNE % 'second'))
    finally:
        closeall(a)
    # bob's second client, same caps: not asked again, gets the last item
    b = login_caps(srv, 'bob', 'tablet', WANTS_TUNE, expect_query=False)
    c = login_caps(srv, 'carol', 'desk2', NO_NOTIFY, expect_query=False)
    try:
        ev = b.wait_for('message', is_event(A, TUNE_NS), timeout=5)
        check(ev.get('to') == 'bob@localhost/tablet' and title_of(ev) == 'second', tostr(ev))
        dl = child(ev, 'delay', 'urn:xmpp:delay')
        check(dl is not None and dl.get('stamp', '').endswith('Z'), 'no delay on the last item: %s' % tostr(ev))
        no_message(c, 1.0, is_event(A, TUNE_NS))
    finally:
        closeall(b, c)


def t03_owner_gets_own_last_item(srv):
    own = Caps(['http://jabber.org/protocol/disco#info', TUNE_NS + '+notify'], node='urn:test:own')
    a = login_caps(srv, 'alice', 'laptop', own)
    try:
        ev = a.wait_for('message', is_event(A, TUNE_NS), timeout=5)
        check(ev.get('to') == A + '/laptop' and title_of(ev) == 'second', tostr(ev))
    finally:
        closeall(a)


def t04_unverified_caps_ignored(srv):
    liar = Caps(['http://jabber.org/protocol/disco#info', TUNE_NS + '+notify'], node='urn:test:liar')
    e = RawLogin(srv, 'erin', 'l')
    a = login(srv, 'alice', 'pc4')
    try:
        e.send('<presence>%s</presence>' % liar.element(ver='AAAAAAAAAAAAAAAAAAAAAAAAAAA='))
        q = caps_query(e)
        node = child(q, 'query', 'http://jabber.org/protocol/disco#info').get('node')
        check(node == 'urn:test:liar#AAAAAAAAAAAAAAAAAAAAAAAAAAA=', tostr(q))
        e.send("<iq type='result' id='%s' to='%s'>%s</iq>" % (q.get('id'), q.get('from'), liar.query(node)))
        sync(e)
        published_ok(publish(a, TUNE_NS, TUNE % 'third'))
        no_message(e, 1.0, is_event(A, TUNE_NS))
    finally:
        closeall(a, e)


def RawLogin(srv, user, res):
    from common import RawClient
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    return c


def t05_whitelist_only_owner(srv):
    b = login_caps(srv, 'bob', 'wl', WANTS_TUNE, expect_query=False)
    a = login(srv, 'alice', 'pc5')
    a2 = login_caps(srv, 'alice', 'pc6', WANTS_TUNE, expect_query=False)
    try:
        b.drain(0.5)
        published_ok(publish(a, 'urn:xmpp:avatar:metadata', "<metadata xmlns='urn:xmpp:avatar:metadata'/>",
                             options={'pubsub#access_model': 'whitelist'}))
        a2.wait_for('message', is_event(A, 'urn:xmpp:avatar:metadata'), timeout=5)
        no_message(b, 1.0, is_event(A, 'urn:xmpp:avatar:metadata'))
    finally:
        closeall(a, a2, b)


def t06_whitelist_member_notified(srv):
    b = login_caps(srv, 'bob', 'wm', WANTS_TUNE, expect_query=False)
    a = login(srv, 'alice', 'pc7')
    try:
        b.drain(0.5)
        r = a.iq('set', None, "<pubsub xmlns='%s#owner'><affiliations node='urn:xmpp:avatar:metadata'>"
                              "<affiliation jid='bob@localhost' affiliation='member'/></affiliations></pubsub>" % NS_PS)
        check(r.get('type') == 'result', tostr(r))
        published_ok(publish(a, 'urn:xmpp:avatar:metadata', "<metadata xmlns='urn:xmpp:avatar:metadata'><info id='1'/></metadata>"))
        ev = b.wait_for('message', is_event(A, 'urn:xmpp:avatar:metadata'), timeout=5)
        check(ev.get('to') == 'bob@localhost/wm', tostr(ev))
    finally:
        closeall(a, b)


TESTS = [t01_notify_filtered_by_caps, t02_cached_caps_and_last_item, t03_owner_gets_own_last_item,
         t04_unverified_caps_ignored, t05_whitelist_only_owner, t06_whitelist_member_notified]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('51.00 pep_caps_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'carol', 'dave', 'erin'):
            srv.add_user(u, pw(u))
        a = login(srv, 'alice', 'setup')
        for u in ('bob', 'carol', 'erin'):
            x = login(srv, u, 'setup')
            handshake(x, u, a, 'alice')
            closeall(x)
        closeall(a)
        for i, t in enumerate(TESTS, 1):
            R.run('51.%02d pep_caps_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('51.00 pep_caps_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('51.99 pep_caps_clean_shutdown', e)
    R.exit()


main()
