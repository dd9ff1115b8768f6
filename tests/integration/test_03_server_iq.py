#!/usr/bin/python3
"""03: IQs the server answers itself: service discovery (XEP-0030) for the
server and for accounts, ping (XEP-0199), software version (XEP-0092),
entity time (XEP-0202), and errors for what nobody handles."""

import datetime
import re

from common import (MagpieServer, Results, RawClient, parse_args, check, child,
                    error_condition, tostr, closeall, online, local, ns)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

DISCO_INFO = 'http://jabber.org/protocol/disco#info'
DISCO_ITEMS = 'http://jabber.org/protocol/disco#items'


def features_of(query):
    return {f.get('var') for f in query if local(f.tag) == 'feature'}


def identities_of(query):
    return {(i.get('category'), i.get('type')) for i in query if local(i.tag) == 'identity'}


def t01_disco_info_server(srv, a):
    r = a.iq('get', 'localhost', "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    check(r.get('from') == 'localhost', 'from=%s' % r.get('from'))
    q = child(r, 'query', DISCO_INFO)
    check(q is not None, tostr(r))
    check(('server', 'im') in identities_of(q), 'identities: %s' % identities_of(q))
    feats = features_of(q)
    for f in (DISCO_INFO, DISCO_ITEMS, 'urn:xmpp:ping', 'jabber:iq:version', 'urn:xmpp:time'):
        check(f in feats, '%s missing from server features %s' % (f, sorted(feats)))
    # the other virtual host answers too
    r = a.iq('get', 'example.test', "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result' and r.get('from') == 'example.test', tostr(r))


def t02_disco_items_server(srv, a):
    r = a.iq('get', 'localhost', "<query xmlns='%s'/>" % DISCO_ITEMS)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', DISCO_ITEMS)
    check(q is not None, tostr(r))
    for it in q:
        check(local(it.tag) == 'item' and it.get('jid'), 'bad item %s' % tostr(it))


def t03_disco_info_unknown_node(srv, a):
    r = a.iq('get', 'localhost', "<query xmlns='%s' node='no-such-node'/>" % DISCO_INFO)
    check(r.get('type') == 'error', tostr(r))
    check(error_condition(r) in ('item-not-found', 'feature-not-implemented'), tostr(r))


def t04_disco_info_account(srv, a):
    # the server answers for an account's bare JID (XEP-0030, RFC 6121 8.5.1):
    # always for the user's own account
    r = a.iq('get', 'alice@localhost', "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    check(r.get('from') == 'alice@localhost', 'from=%s' % r.get('from'))
    q = child(r, 'query', DISCO_INFO)
    check(('account', 'registered') in identities_of(q), 'identities: %s' % identities_of(q))
    r = a.iq('get', 'alice@localhost', "<query xmlns='%s'/>" % DISCO_ITEMS)
    check(r.get('type') == 'result', tostr(r))
    # another account: answered, or refused without revealing anything
    r = a.iq('get', 'bob@localhost', "<query xmlns='%s'/>" % DISCO_INFO)
    if r.get('type') == 'result':
        q = child(r, 'query', DISCO_INFO)
        check(('account', 'registered') in identities_of(q), 'identities: %s' % identities_of(q))
    else:
        check(error_condition(r) == 'service-unavailable', tostr(r))
    # nonexistent account: an error, never a result
    r = a.iq('get', 'nobody@localhost', "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'error', 'disco of a nonexistent account: %s' % tostr(r))
    check(error_condition(r) in ('service-unavailable', 'item-not-found'), tostr(r))


def t05_ping_server(srv, a):
    r = a.iq('get', 'localhost', "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'result' and r.get('from') == 'localhost', tostr(r))
    check(len(list(r)) == 0, 'ping result has children: %s' % tostr(r))
    # no 'to': addressed to the account, answered by the server
    iid = a.next_id()
    a.send("<iq type='get' id='%s'><ping xmlns='urn:xmpp:ping'/></iq>" % iid)
    r = a.wait_for('iq', lambda e: e.get('id') == iid)
    check(r.get('type') == 'result', tostr(r))
    # a ping of type set is wrong
    r = a.iq('set', 'localhost', "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'error', 'ping type=set: %s' % tostr(r))


def t06_version(srv, a):
    r = a.iq('get', 'localhost', "<query xmlns='jabber:iq:version'/>")
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', 'jabber:iq:version')
    check(q is not None, tostr(r))
    name, ver = child(q, 'name'), child(q, 'version')
    check(name is not None and (name.text or '').strip(), 'no name: %s' % tostr(r))
    check(ver is not None and (ver.text or '').strip(), 'no version: %s' % tostr(r))
    check('magpie' in name.text.lower(), 'name %r' % name.text)


def t07_time(srv, a):
    r = a.iq('get', 'localhost', "<time xmlns='urn:xmpp:time'/>")
    check(r.get('type') == 'result', tostr(r))
    t = child(r, 'time', 'urn:xmpp:time')
    check(t is not None, tostr(r))
    tzo, utc = child(t, 'tzo'), child(t, 'utc')
    check(tzo is not None and re.fullmatch(r'[+-]\d\d:\d\d|Z', tzo.text or ''), 'tzo: %s' % tostr(r))
    check(utc is not None and re.fullmatch(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z', utc.text or ''),
          'utc: %s' % tostr(r))
    ts = datetime.datetime.strptime(utc.text[:19], '%Y-%m-%dT%H:%M:%S').replace(tzinfo=datetime.timezone.utc)
    skew = abs((datetime.datetime.now(datetime.timezone.utc) - ts).total_seconds())
    check(skew < 30, 'server time off by %ss' % skew)


def t08_unknown_namespace_server(srv, a):
    r = a.iq('get', 'localhost', "<query xmlns='urn:example:nothing'/>")
    check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
    # the error echoes the id and comes from the server
    check(r.get('from') == 'localhost', tostr(r))


def t09_iq_result_to_server_not_answered(srv, a):
    # an IQ result/error must never be answered (RFC 6120 8.2.3)
    a.send("<iq type='result' id='stray1' to='localhost'/>")
    a.send("<iq type='error' id='stray2' to='localhost'><error type='cancel'>"
           "<service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    r = a.iq('get', 'localhost', "<ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'result', tostr(r))
    stray = a.wait_for('iq', lambda e: e.get('id') in ('stray1', 'stray2'), timeout=0.5, raise_=False)
    check(stray is None, 'server answered an IQ result/error: %s' % (tostr(stray) if stray is not None else ''))


def t10_iq_bad_shape(srv, a):
    # an IQ get with no child, and one with two children: bad-request
    r = a.iq('get', 'localhost', '')
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', 'no child: %s' % tostr(r))
    r = a.iq('get', 'localhost', "<ping xmlns='urn:xmpp:ping'/><ping xmlns='urn:xmpp:ping'/>")
    check(r.get('type') == 'error' and error_condition(r) == 'bad-request', 'two children: %s' % tostr(r))


TESTS = [t01_disco_info_server, t02_disco_items_server, t03_disco_info_unknown_node,
         t04_disco_info_account, t05_ping_server, t06_version, t07_time,
         t08_unknown_namespace_server, t09_iq_result_to_server_not_answered, t10_iq_bad_shape]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers)
        srv.__enter__()
    except Exception as e:
        R.fail('03.00 server_iq_server_start', e)
        R.exit()
    a = None
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        a = online(srv, 'alice', 'alice-pw', 'iq')
        for i, t in enumerate(TESTS, 1):
            R.run('03.%02d server_iq_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, a, server=srv)
    except Exception as e:
        R.fail('03.00 server_iq_setup', e)
    closeall(a)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('03.99 server_iq_clean_shutdown', e)
    R.exit()


main()
