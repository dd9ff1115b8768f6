#!/usr/bin/python3
"""25: private XML storage (XEP-0049, mod_private): get of nothing stored
returns the empty element, set and get by (name, namespace), elements of
the same namespace but another name kept apart, several fragments in one
set, replace, another user (forbidden, both get and set, even to the
owner's bare JID), jabber:* and namespace-less fragments
(not-acceptable), malformed queries (bad-request), the size limit,
fragments kept across a restart and from another session, and deleted with
the account. Run with --workers 2 as well (run-all.sh)."""

from common import (RawClient, MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, sync)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_P = 'jabber:iq:private'
MODULES = ['disco', 'ping', 'roster', 'vcard', '{ name = "private"; max_size = 400; }', 'last']


def pw(u):
    return u + '-pw'


def login(srv, user, res):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.presence()
    sync(c)
    c.drain(0.2)
    return c


def pget(c, frag, to=None):
    return c.iq('get', to, "<query xmlns='%s'>%s</query>" % (NS_P, frag))


def pset(c, frag, to=None):
    return c.iq('set', to, "<query xmlns='%s'>%s</query>" % (NS_P, frag))


def stored(c, name, ns):
    """The element answered for (name, ns), checked to be alone in the query."""
    r = pget(c, "<%s xmlns='%s'/>" % (name, ns))
    check(r.get('type') == 'result', tostr(r))
    q = child(r, 'query', NS_P)
    check(q is not None and len(list(q)) == 1, tostr(r))
    el = list(q)[0]
    check(el.tag == '{%s}%s' % (ns, name), 'wrong element: %s' % tostr(r))
    return el


def t01_disco_and_empty(srv):
    a = login(srv, 'alice', 'd')
    try:
        r = a.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        check(NS_P in {f.get('var') for f in child(r, 'query')}, tostr(r))
        el = stored(a, 'prefs', 'urn:example:prefs')
        check(len(list(el)) == 0 and not (el.text or '').strip(), 'not empty: %s' % tostr(el))
    finally:
        closeall(a)


def t02_set_get_replace(srv):
    a = login(srv, 'alice', 's')
    try:
        r = pset(a, "<prefs xmlns='urn:example:prefs'><color>blue</color></prefs>")
        check(r.get('type') == 'result', tostr(r))
        el = stored(a, 'prefs', 'urn:example:prefs')
        check(child(el, 'color', 'urn:example:prefs').text == 'blue', tostr(el))
        # same namespace, other name: a different fragment
        el = stored(a, 'other', 'urn:example:prefs')
        check(len(list(el)) == 0, 'other name shares the fragment: %s' % tostr(el))
        # to one's own bare JID works the same
        r = pget(a, "<prefs xmlns='urn:example:prefs'/>", to='alice@localhost')
        check(r.get('type') == 'result', tostr(r))
        check(child(child(child(r, 'query', NS_P), 'prefs', 'urn:example:prefs'), 'color',
                    'urn:example:prefs').text == 'blue', tostr(r))
        # two fragments in one set; the first replaced
        r = pset(a, "<prefs xmlns='urn:example:prefs'><color>red</color></prefs>"
                    "<storage xmlns='storage:bookmarks'><conference jid='room@conference.localhost'"
                    " name='Room' autojoin='true'/></storage>")
        check(r.get('type') == 'result', tostr(r))
        el = stored(a, 'prefs', 'urn:example:prefs')
        check(child(el, 'color', 'urn:example:prefs').text == 'red', tostr(el))
        conf = child(stored(a, 'storage', 'storage:bookmarks'), 'conference', 'storage:bookmarks')
        check(conf is not None and conf.get('jid') == 'room@conference.localhost', 'bookmarks')
    finally:
        closeall(a)


def t03_others_forbidden(srv):
    b = login(srv, 'bob', 'f')
    a = login(srv, 'alice', 'f')
    try:
        for r in (pget(b, "<prefs xmlns='urn:example:prefs'/>", to='alice@localhost'),
                  pset(b, "<prefs xmlns='urn:example:prefs'><color>black</color></prefs>",
                       to='alice@localhost')):
            check(error_condition(r) == 'forbidden', tostr(r))
        check(child(stored(a, 'prefs', 'urn:example:prefs'), 'color', 'urn:example:prefs').text ==
              'red', 'changed by bob')
        # bob's own storage is his: alice's fragment is not visible there
        check(len(list(stored(b, 'prefs', 'urn:example:prefs'))) == 0, "bob sees alice's data")
    finally:
        closeall(a, b)


def t04_errors(srv):
    a = login(srv, 'alice', 'e')
    try:
        for frag in ("<x xmlns='jabber:iq:roster'/>", "<query xmlns='jabber:iq:private'/>",
                     "<x xmlns='jabber:x:data'/>"):
            r = pget(a, frag)
            check(error_condition(r) == 'not-acceptable', '%s: %s' % (frag, tostr(r)))
            r = pset(a, frag)
            check(error_condition(r) == 'not-acceptable', '%s: %s' % (frag, tostr(r)))
        # a fragment without its own namespace inherits jabber:iq:private
        r = pset(a, "<bare/>")
        check(error_condition(r) == 'not-acceptable', tostr(r))
        # a valid fragment next to a refused one: nothing is stored
        r = pset(a, "<ok xmlns='urn:example:ok'/><x xmlns='jabber:iq:roster'/>")
        check(error_condition(r) == 'not-acceptable', tostr(r))
        check(len(list(stored(a, 'ok', 'urn:example:ok'))) == 0, 'half of a refused set stored')
        # get needs exactly one child; set at least one
        r = pget(a, '')
        check(error_condition(r) == 'bad-request', tostr(r))
        r = pget(a, "<a xmlns='urn:x'/><b xmlns='urn:x'/>")
        check(error_condition(r) == 'bad-request', tostr(r))
        r = pset(a, '')
        check(error_condition(r) == 'bad-request', tostr(r))
        # too large (max_size = 400 in this server's configuration)
        r = pset(a, "<big xmlns='urn:example:big'>%s</big>" % ('y' * 500))
        check(error_condition(r) == 'not-acceptable', tostr(r))
        check(len(list(stored(a, 'big', 'urn:example:big'))) == 0, 'oversized fragment stored')
    finally:
        closeall(a)


def t05_restart_and_account_deleted(srv):
    srv.restart()
    a = login(srv, 'alice', 'r')
    try:
        check(child(stored(a, 'prefs', 'urn:example:prefs'), 'color', 'urn:example:prefs').text ==
              'red', 'lost across restart')
    finally:
        closeall(a)
    p = srv.ctl('user', 'del', 'alice@localhost')
    check(p.returncode == 0, 'user del: %s %s' % (p.stdout, p.stderr))
    srv.add_user('alice', pw('alice'))
    a = login(srv, 'alice', 'new')
    try:
        check(len(list(stored(a, 'prefs', 'urn:example:prefs'))) == 0, 'survived the account')
        check(len(list(stored(a, 'storage', 'storage:bookmarks'))) == 0, 'survived the account')
    finally:
        closeall(a)


TESTS = [t01_disco_and_empty, t02_set_get_replace, t03_others_forbidden, t04_errors,
         t05_restart_and_account_deleted]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('25.00 private_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('25.%02d private_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('25.00 private_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('25.99 private_clean_shutdown', e)
    R.exit()


main()
