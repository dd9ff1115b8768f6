#!/usr/bin/python3
"""22: message carbons (XEP-0280, mod_carbons): enable/disable, received
carbons for messages to a full JID and to the bare JID (no copy to a
resource that got the message itself, one copy to each that did not), sent
carbons, private messages, resources without carbons, and slixmpp's
xep_0280 plugin. Run with --workers 2 as well (run-all.sh does)."""

import asyncio

from common import (RawClient, MagpieServer, Results, parse_args, check, child, error_condition, tostr,
                    closeall, sync, no_message, body_of)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_C = 'urn:xmpp:carbons:2'
NS_F = 'urn:xmpp:forward:0'
MODULES = ['disco', 'ping', 'version', 'time', 'roster', 'offline', 'carbons']


def pw(u):
    return u + '-pw'


def login(srv, user, res, priority=None, carbons=True):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    if carbons:
        r = c.iq('set', None, "<enable xmlns='%s'/>" % NS_C)
        check(r.get('type') == 'result', tostr(r))
    c.presence(priority=priority)
    sync(c)
    c.drain(0.2)
    return c


def carbon(c, how, body, timeout=5):
    """The next carbon (how = received|sent) whose forwarded body is body;
    returns the forwarded message."""
    def pred(e):
        w = child(e, how, NS_C)
        if w is None:
            return False
        f = child(w, 'forwarded', NS_F)
        m = None if f is None else child(f, 'message')
        return m is not None and body_of(m) == body
    e = c.wait_for('message', pred, timeout=timeout)
    check(e.get('from') == c.jid.split('/')[0] and e.get('to') == c.jid, 'carbon addressing: %s' % tostr(e))
    return child(child(child(e, how, NS_C), 'forwarded', NS_F), 'message')


def is_carbon(e):
    return child(e, 'received', NS_C) is not None or child(e, 'sent', NS_C) is not None


def t01_enable_and_disco(srv):
    a = login(srv, 'alice', 'd', carbons=False)
    try:
        r = a.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        feats = {f.get('var') for f in child(r, 'query')}
        check(NS_C in feats, 'no carbons feature: %s' % tostr(r))
        for what in ('enable', 'disable', 'enable'):
            r = a.iq('set', None, "<%s xmlns='%s'/>" % (what, NS_C))
            check(r.get('type') == 'result', '%s: %s' % (what, tostr(r)))
        r = a.iq('set', None, "<frobnicate xmlns='%s'/>" % NS_C)
        check(error_condition(r) == 'bad-request', tostr(r))
    finally:
        closeall(a)


def t02_received_full_jid(srv):
    a1, a2 = login(srv, 'alice', 'a1'), login(srv, 'alice', 'a2')
    a3 = login(srv, 'alice', 'a3', carbons=False)
    b = login(srv, 'bob', 'b')
    try:
        b.message('alice@localhost/a1', 'to a1')
        m = a1.wait_for('message', lambda e: body_of(e) == 'to a1')
        check(not is_carbon(m), tostr(m))
        f = carbon(a2, 'received', 'to a1')
        check(f.get('from') == 'bob@localhost/b' and f.get('to') == 'alice@localhost/a1', tostr(f))
        no_message(a1, 0.4, is_carbon)
        no_message(a3, 0.4)
    finally:
        closeall(a1, a2, a3, b)


def t03_sent(srv):
    a1, a2 = login(srv, 'alice', 's1'), login(srv, 'alice', 's2')
    b = login(srv, 'bob', 'b')
    try:
        a1.message('bob@localhost', 'from s1')
        b.wait_for('message', lambda e: body_of(e) == 'from s1')
        f = carbon(a2, 'sent', 'from s1')
        check(f.get('from') == 'alice@localhost/s1' and f.get('to') == 'bob@localhost', tostr(f))
        no_message(a1, 0.4, is_carbon)
        no_message(b, 0.3, is_carbon)
    finally:
        closeall(a1, a2, b)


def t04_bare_jid(srv):
    hi, lo = login(srv, 'alice', 'hi', priority=5), login(srv, 'alice', 'lo', priority=1)
    b = login(srv, 'bob', 'b')
    try:
        b.message('alice@localhost', 'to bare')
        hi.wait_for('message', lambda e: body_of(e) == 'to bare' and not is_carbon(e))
        carbon(lo, 'received', 'to bare')
        no_message(lo, 0.5, lambda e: body_of(e) == 'to bare' or is_carbon(e))
        no_message(hi, 0.3, is_carbon)
        # equal priorities: both get the message itself, nobody a carbon
        lo.presence(priority=5)
        sync(lo)
        lo.drain(0.2)
        hi.drain(0.2)
        b.message('alice@localhost', 'to both')
        hi.wait_for('message', lambda e: body_of(e) == 'to both' and not is_carbon(e))
        lo.wait_for('message', lambda e: body_of(e) == 'to both' and not is_carbon(e))
        no_message(hi, 0.5, is_carbon)
        no_message(lo, 0.3, is_carbon)
    finally:
        closeall(hi, lo, b)


def t05_private_and_disabled(srv):
    a1, a2 = login(srv, 'alice', 'p1'), login(srv, 'alice', 'p2')
    b = login(srv, 'bob', 'b')
    try:
        a1.send("<message to='bob@localhost' type='chat'><body>secret</body>"
                "<private xmlns='%s'/><no-copy xmlns='urn:xmpp:hints'/></message>" % NS_C)
        b.wait_for('message', lambda e: body_of(e) == 'secret')
        no_message(a2, 0.5, is_carbon)
        r = a2.iq('set', None, "<disable xmlns='%s'/>" % NS_C)
        check(r.get('type') == 'result', tostr(r))
        a1.message('bob@localhost', 'after disable')
        b.wait_for('message', lambda e: body_of(e) == 'after disable')
        no_message(a2, 0.5, is_carbon)
        # headline and error messages are not copied
        b.send("<message to='alice@localhost/p1' type='headline'><body>news</body></message>")
        a1.wait_for('message', lambda e: body_of(e) == 'news')
        r = a2.iq('set', None, "<enable xmlns='%s'/>" % NS_C)
        b.send("<message to='alice@localhost/p1' type='headline'><body>news2</body></message>")
        a1.wait_for('message', lambda e: body_of(e) == 'news2')
        no_message(a2, 0.5, is_carbon)
    finally:
        closeall(a1, a2, b)


def t06_slixmpp(srv):
    from slixhelp import run, login as slogin, close as sclose

    async def scenario():
        k1 = await slogin(srv.c2s_port, 'kim@localhost/one', pw('kim'))
        k2 = await slogin(srv.c2s_port, 'kim@localhost/two', pw('kim'))
        for k in (k1, k2):
            k.register_plugin('xep_0280')
        got = asyncio.Queue()
        k2.add_event_handler('carbon_received', lambda m: got.put_nowait(('received', m)))
        k2.add_event_handler('carbon_sent', lambda m: got.put_nowait(('sent', m)))
        try:
            await k1.plugin['xep_0280'].enable()
            await k2.plugin['xep_0280'].enable()
            b = login(srv, 'bob', 'sx', carbons=False)
            try:
                b.message('kim@localhost/one', 'hello one')
                how, m = await asyncio.wait_for(got.get(), 10)
                fwd = m['carbon_received']
                check(how == 'received' and fwd['body'] == 'hello one', str(m))
                k1.send_message(mto='bob@localhost', mbody='reply from one', mtype='chat')
                how, m = await asyncio.wait_for(got.get(), 10)
                check(how == 'sent' and m['carbon_sent']['body'] == 'reply from one', str(m))
            finally:
                closeall(b)
        finally:
            await sclose(k1, k2)
    run(scenario, timeout=40)


TESTS = [t01_enable_and_disco, t02_received_full_jid, t03_sent, t04_bare_jid, t05_private_and_disabled,
         t06_slixmpp]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('22.00 carbons_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'kim'):
            srv.add_user(u, pw(u))
        for i, t in enumerate(TESTS, 1):
            R.run('22.%02d carbons_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('22.00 carbons_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('22.99 carbons_clean_shutdown', e)
    R.exit()


main()
