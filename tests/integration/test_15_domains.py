#!/usr/bin/python3
"""15: entities and hooks, with the test module mod_test_echo: a module
serves a service domain of its own (every stanza to it and its sub-JIDs
reaches the module; per-domain IQ handlers and disco, next to the main
host's own disco); typed inbound filters run in priority order and can stop
a stanza; an outbound filter can stop delivery; typed notifications reach
every subscriber; a session found again by its id."""

from common import (MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, online, local, no_message, body_of, wait_until)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

DISCO_INFO = 'http://jabber.org/protocol/disco#info'
ECHO = 'echo.localhost'
NS_ECHO = 'urn:magpie:test:echo'


def features_of(q):
    return {f.get('var') for f in q if local(f.tag) == 'feature'}


def identities_of(q):
    return {(i.get('category'), i.get('type'), i.get('name')) for i in q if local(i.tag) == 'identity'}


def t01_domain_disco_info(srv, a):
    r = a.iq('get', ECHO, "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result' and r.get('from') == ECHO, tostr(r))
    q = child(r, 'query', DISCO_INFO)
    check(('component', 'generic', 'Echo service') in identities_of(q), tostr(r))
    check({DISCO_INFO, NS_ECHO, 'urn:xmpp:ping'} <= features_of(q), tostr(r))
    check(('server', 'im') not in {i[:2] for i in identities_of(q)}, 'server identity leaked: %s' % tostr(r))
    # the host's own disco is untouched
    r = a.iq('get', 'localhost', "<query xmlns='%s'/>" % DISCO_INFO)
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', DISCO_INFO)
    check(('server', 'im') in {i[:2] for i in identities_of(q)}, tostr(r))
    check(NS_ECHO not in features_of(q), 'domain feature on the host: %s' % tostr(r))
    check({DISCO_INFO, 'urn:xmpp:ping', 'jabber:iq:version'} <= features_of(q), tostr(r))


def t02_domain_iq_handlers(srv, a):
    # per-domain IQ handler, also for a sub-JID of the domain
    for to in (ECHO, 'room@' + ECHO, 'room@' + ECHO + '/nick'):
        r = a.iq('get', to, "<ping xmlns='urn:xmpp:ping'/>")
        check(r.get('type') == 'result' and r.get('from') == to, tostr(r))
    # nobody handles this namespace on the domain: service-unavailable
    r = a.iq('get', ECHO, "<query xmlns='urn:example:nothing'/>")
    check(r.get('type') == 'error' and error_condition(r) == 'service-unavailable', tostr(r))
    # a disco#info with a node the domain does not know
    r = a.iq('get', ECHO, "<query xmlns='%s' node='x'/>" % DISCO_INFO)
    check(r.get('type') == 'error' and error_condition(r) == 'item-not-found', tostr(r))


def t03_domain_echoes_messages(srv, a):
    for to in (ECHO, 'room@' + ECHO, 'room@' + ECHO + '/nick'):
        a.send("<message to='%s' type='chat' id='e1'><body>hello %s</body></message>" % (to, to))
        m = a.wait_for('message', lambda e: body_of(e) == 'hello ' + to)
        check(m.get('from') == to and m.get('to') == 'alice@localhost/dom', tostr(m))


def t04_inbound_filters_in_priority_order(srv, a):
    a.send("<message to='%s' type='chat'><body>filter-order</body></message>" % ECHO)
    m = a.wait_for('message', lambda e: body_of(e) == 'filter-order')
    order = [f.get('n') for f in m if local(f.tag) == 'f']
    check(order == ['b', 'a', 'c'], 'filters ran in order %s, want b a c: %s' % (order, tostr(m)))


def t05_inbound_filter_stops(srv, a):
    a.send("<message to='%s' type='chat'><body>drop-me</body></message>" % ECHO)
    a.send("<message to='%s' type='chat'><body>after-drop</body></message>" % ECHO)
    a.wait_for('message', lambda e: body_of(e) == 'after-drop')
    no_message(a, 0.3, lambda e: body_of(e) == 'drop-me')


def t06_outbound_filter_stops(srv, a):
    a.send("<message to='%s' type='chat'><body>hide-me</body></message>" % ECHO)
    a.send("<message to='%s' type='chat'><body>after-hide</body></message>" % ECHO)
    a.wait_for('message', lambda e: body_of(e) == 'after-hide')
    no_message(a, 0.3, lambda e: body_of(e) in ('hide-me',) or e.get('type') == 'error')


def stats(a):
    r = a.iq('get', ECHO, "<stats xmlns='%s'/>" % NS_ECHO)
    check(r.get('type') == 'result', tostr(r))
    s = child(r, 'stats', NS_ECHO)
    return {k: int(v) for k, v in s.attrib.items()}


def t07_notifications_reach_every_subscriber(srv, a):
    before = stats(a)
    check(before['started-a'] == before['started-b'] >= 1, 'started: %s' % before)
    check(before['presence-a'] == before['presence-b'] >= 1, 'presence: %s' % before)
    check(before['found-by-id'] == before['started-a'], 'sessions found by id: %s' % before)
    # a second session starts, changes presence and ends: both subscribers see each
    b = online(srv, 'bob', 'bob-pw', 'n1')
    b.send("<presence><show>away</show></presence>")
    b.send("<presence type='unavailable'/>")
    closeall(b)

    def done():
        s = stats(a)
        return s['ended-a'] >= before['ended-a'] + 1 and s['ended-b'] >= before['ended-b'] + 1
    check(wait_until(done, 5), 'session end not notified: %s' % stats(a))
    after = stats(a)
    for k in ('started', 'presence', 'ended'):
        check(after[k + '-a'] == after[k + '-b'], '%s differs: %s' % (k, after))
    check(after['started-a'] == before['started-a'] + 1, 'started: %s -> %s' % (before, after))
    check(after['presence-a'] >= before['presence-a'] + 3, 'presence: %s -> %s' % (before, after))
    check(after['found-by-id'] == after['started-a'], 'found by id: %s' % after)


TESTS = [t01_domain_disco_info, t02_domain_iq_handlers, t03_domain_echoes_messages,
         t04_inbound_filters_in_priority_order, t05_inbound_filter_stops,
         t06_outbound_filter_stops, t07_notifications_reach_every_subscriber]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'test_echo'])
        srv.__enter__()
    except Exception as e:
        R.fail('15.00 domains_server_start', e)
        R.exit()
    a = None
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        a = online(srv, 'alice', 'alice-pw', 'dom')
        for i, t in enumerate(TESTS, 1):
            R.run('15.%02d domains_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, a, server=srv)
    except Exception as e:
        R.fail('15.00 domains_setup', e)
    closeall(a)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('15.99 domains_clean_shutdown', e)
    R.exit()


main()
