#!/usr/bin/python3
"""24: vcard-temp (XEP-0054, mod_vcard) and disco#info on accounts
(XEP-0030, mod_disco): an empty <vCard/> when none is stored, set and get
of one's own vCard (no 'to' and to one's own bare JID), another user's
vCard read through their bare JID, a set on someone else's vCard
forbidden, the size limit (not-acceptable), a wrong element
(bad-request), a nonexistent account (service-unavailable), the vCard
kept across a restart and gone with the account. Run with --workers 2 as
well (run-all.sh)."""

from common import (RawClient, MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, sync)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_V = 'vcard-temp'
NS_INFO = 'http://jabber.org/protocol/disco#info'
MODULES = ['disco', 'ping', 'roster', 'offline', 'carbons', 'blocking',
           '{ name = "vcard"; max_size = 600; }', 'private', 'last']


def pw(u):
    return u + '-pw'


def login(srv, user, res):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.presence()
    sync(c)
    c.drain(0.2)
    return c


def vcard_get(c, to=None):
    r = c.iq('get', to, "<vCard xmlns='%s'/>" % NS_V)
    check(r.get('type') == 'result', tostr(r))
    v = child(r, 'vCard', NS_V)
    check(v is not None, 'no vCard in %s' % tostr(r))
    return v


def vcard_set(c, body, to=None):
    return c.iq('set', to, "<vCard xmlns='%s'>%s</vCard>" % (NS_V, body))


def fn_of(v):
    f = child(v, 'FN', NS_V)
    return None if f is None else f.text


def t01_disco(srv):
    a, b = login(srv, 'alice', 'd'), login(srv, 'bob', 'd')
    try:
        r = a.iq('get', 'localhost', "<query xmlns='%s'/>" % NS_INFO)
        check(NS_V in {f.get('var') for f in child(r, 'query', NS_INFO)}, tostr(r))
        # disco#info on an account, asked by another user: answered by the server
        r = b.iq('get', 'alice@localhost', "<query xmlns='%s'/>" % NS_INFO)
        check(r.get('type') == 'result' and r.get('from') == 'alice@localhost', tostr(r))
        q = child(r, 'query', NS_INFO)
        ids = {(i.get('category'), i.get('type')) for i in q if i.tag.endswith('identity')}
        feats = {f.get('var') for f in q if f.tag.endswith('feature')}
        check(('account', 'registered') in ids, tostr(r))
        for f in (NS_V, 'jabber:iq:last', NS_INFO, 'urn:xmpp:ping'):
            check(f in feats, 'account feature %s missing: %s' % (f, tostr(r)))
        # server-only features are not claimed for the account
        check('jabber:iq:private' not in feats and 'urn:xmpp:blocking' not in feats, tostr(r))
        # disco#info on a nonexistent account: an error
        r = b.iq('get', 'nobody@localhost', "<query xmlns='%s'/>" % NS_INFO)
        check(error_condition(r) == 'service-unavailable', tostr(r))
    finally:
        closeall(a, b)


def t02_empty_set_get(srv):
    a, b = login(srv, 'alice', 'v'), login(srv, 'bob', 'v')
    try:
        v = vcard_get(a)
        check(len(list(v)) == 0 and not (v.text or '').strip(), 'not empty: %s' % tostr(v))
        r = vcard_set(a, "<FN>Alice Liddell</FN><NICKNAME>al</NICKNAME>")
        check(r.get('type') == 'result', tostr(r))
        check(len(list(r)) == 0, 'set result has a payload: %s' % tostr(r))
        for to in (None, 'alice@localhost'):
            v = vcard_get(a, to)
            check(fn_of(v) == 'Alice Liddell', tostr(v))
            check(child(v, 'NICKNAME', NS_V).text == 'al', tostr(v))
        # bob reads alice's vCard through her bare JID; the answer is from it
        r = b.iq('get', 'alice@localhost', "<vCard xmlns='%s'/>" % NS_V)
        check(r.get('type') == 'result' and r.get('from') == 'alice@localhost', tostr(r))
        check(fn_of(child(r, 'vCard', NS_V)) == 'Alice Liddell', tostr(r))
        # bob has none
        check(len(list(vcard_get(a, 'bob@localhost'))) == 0, 'bob has a vCard')
        # replaced, not merged
        r = vcard_set(a, "<FN>Alice L.</FN>")
        check(r.get('type') == 'result', tostr(r))
        v = vcard_get(b, 'alice@localhost')
        check(fn_of(v) == 'Alice L.' and child(v, 'NICKNAME', NS_V) is None, tostr(v))
    finally:
        closeall(a, b)


def t03_errors(srv):
    a, b = login(srv, 'alice', 'e'), login(srv, 'bob', 'e')
    try:
        r = vcard_set(b, "<FN>Mallory</FN>", to='alice@localhost')
        check(error_condition(r) == 'forbidden', tostr(r))
        check(fn_of(vcard_get(a)) == 'Alice L.', 'changed by bob')
        r = vcard_set(a, "<FN>%s</FN>" % ('x' * 700))
        check(error_condition(r) == 'not-acceptable', tostr(r))
        check(fn_of(vcard_get(a)) == 'Alice L.', 'oversized vCard stored')
        r = a.iq('get', None, "<photo xmlns='%s'/>" % NS_V)
        check(error_condition(r) == 'bad-request', tostr(r))
        r = a.iq('get', 'nobody@localhost', "<vCard xmlns='%s'/>" % NS_V)
        check(error_condition(r) == 'service-unavailable', tostr(r))
    finally:
        closeall(a, b)


def t04_restart_and_account_deleted(srv):
    srv.restart()
    b = login(srv, 'bob', 'r')
    try:
        check(fn_of(vcard_get(b, 'alice@localhost')) == 'Alice L.', 'lost across restart')
        p = srv.ctl('user', 'del', 'alice@localhost')
        check(p.returncode == 0, 'user del: %s %s' % (p.stdout, p.stderr))
        srv.add_user('alice', pw('alice'))
        v = vcard_get(b, 'alice@localhost')
        check(len(list(v)) == 0, 'vCard survived the account: %s' % tostr(v))
    finally:
        closeall(b)


TESTS = [t01_disco, t02_empty_set_get, t03_errors, t04_restart_and_account_deleted]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('24.00 vcard_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('24.%02d vcard_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('24.00 vcard_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('24.99 vcard_clean_shutdown', e)
    R.exit()


main()
