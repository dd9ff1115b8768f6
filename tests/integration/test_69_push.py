#!/usr/bin/python3
"""69: XEP-0357 push notifications (mod_push, opt-in).

The app server is a local account's full JID (pushsrv@localhost/app, a raw
client that records the IQs it gets and answers them). The account's
disco#info lists urn:xmpp:push:0; <enable/> with a publish-options form is
kept; a message with a body for the user while offline gives the app
server exactly one IQ set from the user's bare JID: pubsub publish to the
node, a urn:xmpp:push:summary form (message-count, last-message-sender, no
body by default) and the stored publish-options; the message itself is
still stored offline and delivered at login. A message without body
notifies nobody; after <disable/> nothing comes; an error answer from the
app server removes the registration; registrations survive a restart and
go with the account; bursts are coalesced by min_interval; only the
account itself can enable, at most max_registrations app servers; a
message held for a detached XEP-0198 session notifies too, and the resumed
session gets it once."""

import time

from common import (MagpieServer, RawClient, Results, parse_args, check, child, tostr, closeall,
                    error_condition, online, no_stanza)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_PUSH = 'urn:xmpp:push:0'
NS_PUBSUB = 'http://jabber.org/protocol/pubsub'
NS_DATA = 'jabber:x:data'
APP = 'pushsrv@localhost/app'
BASE = ['disco', 'ping', 'roster', 'offline']

PUBLISH_OPTIONS = ("<x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options"
                   "</value></field><field var='secret'><value>eruio234vzxc2kla-91</value></field></x>")


def enable(c, node, form=True, app=APP):
    r = c.iq('set', None, "<enable xmlns='%s' jid='%s' node='%s'>%s</enable>"
             % (NS_PUSH, app, node, PUBLISH_OPTIONS if form else ''))
    check(r.get('type') == 'result', 'enable failed: %s' % tostr(r))


def disable(c, node=None, app=APP):
    r = c.iq('set', None, "<disable xmlns='%s' jid='%s'%s/>"
             % (NS_PUSH, app, " node='%s'" % node if node else ''))
    check(r.get('type') == 'result', 'disable failed: %s' % tostr(r))


def registered_and_away(srv, *nodes):
    """pusher enables the nodes, then has no session any more."""
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    for n in nodes:
        enable(c, n)
    closeall(c)
    time.sleep(0.3)


def form_fields(x):
    out = {}
    for f in x:
        if f.get('var'):
            v = child(f, 'value')
            out[f.get('var')] = v.text if v is not None else None
    return out


def is_push(e):
    return e.get('type') == 'set' and child(e, 'pubsub', NS_PUBSUB) is not None


def next_push(app, answer='result', cond='item-not-found', timeout=10):
    """Waits for a notification at the app server, answers it, returns its
    parts: (iq, node, summary fields, publish-options fields or None)."""
    iq = app.wait_for('iq', is_push, timeout=timeout)
    if answer == 'result':
        app.send("<iq type='result' id='%s' to='%s'/>" % (iq.get('id'), iq.get('from')))
    elif answer == 'error':
        app.send("<iq type='error' id='%s' to='%s'><error type='cancel'><%s xmlns="
                 "'urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                 % (iq.get('id'), iq.get('from'), cond))
    ps = child(iq, 'pubsub', NS_PUBSUB)
    pub = child(ps, 'publish', NS_PUBSUB)
    check(pub is not None, tostr(iq))
    item = child(pub, 'item', NS_PUBSUB)
    n = child(item, 'notification', NS_PUSH) if item is not None else None
    x = child(n, 'x', NS_DATA) if n is not None else None
    check(x is not None and x.get('type') == 'submit', 'no summary form: %s' % tostr(iq))
    po = child(ps, 'publish-options', NS_PUBSUB)
    pox = child(po, 'x', NS_DATA) if po is not None else None
    return iq, pub.get('node'), form_fields(x), (form_fields(pox) if pox is not None else None)


def t01_disco(srv, sender, app):
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    try:
        r = c.iq('get', 'pusher@localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        check(r.get('type') == 'result', tostr(r))
        feats = [f.get('var') for f in child(r, 'query')]
        check(NS_PUSH in feats, 'urn:xmpp:push:0 not on the account: %s' % feats)
    finally:
        closeall(c)


def t02_notification(srv, sender, app):
    registered_and_away(srv, 'node-1')
    sender.message('pusher@localhost', 'first secret words')
    iq, node, summary, po = next_push(app)
    check(iq.get('from') == 'pusher@localhost', 'from: %s' % tostr(iq))
    check(iq.get('to') == APP, 'to: %s' % tostr(iq))
    check(node == 'node-1', 'node: %s' % tostr(iq))
    check(summary.get('FORM_TYPE') == 'urn:xmpp:push:summary', tostr(iq))
    check(summary.get('message-count') == '1', 'count: %s' % tostr(iq))
    check(summary.get('last-message-sender') == 'sender@localhost', 'sender: %s' % tostr(iq))
    check('last-message-body' not in summary, 'body sent by default: %s' % tostr(iq))
    check('first secret words' not in tostr(iq), 'body leaked: %s' % tostr(iq))
    check(po is not None and po.get('secret') == 'eruio234vzxc2kla-91' and
          po.get('FORM_TYPE') == 'http://jabber.org/protocol/pubsub#publish-options',
          'publish-options: %s' % tostr(iq))
    # exactly one
    no_stanza(app, 'iq', 1.0, is_push)
    # a second message: one more, counted
    sender.message('pusher@localhost', 'second')
    iq, node, summary, po = next_push(app)
    check(summary.get('message-count') == '2', 'count: %s' % tostr(iq))
    no_stanza(app, 'iq', 0.5, is_push)
    # the messages themselves were stored and come at login
    c = RawClient(srv.c2s_port)
    try:
        c.login('pusher', 'pusher-pw', resource='phone', presence=0)
        got = []
        while len(got) < 2:
            m = c.wait_for('message', timeout=10)
            got.append(child(m, 'body').text)
        check(got == ['first secret words', 'second'], 'offline delivery: %s' % got)
        disable(c, 'node-1')
    finally:
        closeall(c)


def t03_no_body_no_push(srv, sender, app):
    registered_and_away(srv, 'node-3')
    sender.send("<message to='pusher@localhost' type='chat'><composing "
                "xmlns='http://jabber.org/protocol/chatstates'/></message>")
    no_stanza(app, 'iq', 1.0, is_push)
    sender.message('pusher@localhost', 'with body')
    next_push(app)
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    disable(c)  # every node of the app server
    closeall(c)


def t04_disable(srv, sender, app):
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    enable(c, 'node-4a')
    enable(c, 'node-4b')
    disable(c, 'node-4a')
    closeall(c)
    time.sleep(0.3)
    sender.message('pusher@localhost', 'to b only')
    iq, node, _, _ = next_push(app)
    check(node == 'node-4b', 'disabled node notified: %s' % tostr(iq))
    no_stanza(app, 'iq', 1.0, is_push)
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    disable(c)
    closeall(c)
    time.sleep(0.3)
    sender.message('pusher@localhost', 'nobody')
    no_stanza(app, 'iq', 1.5, is_push)


def t05_app_error_removes(srv, sender, app):
    registered_and_away(srv, 'node-5')
    sender.message('pusher@localhost', 'one')
    next_push(app, answer='error', cond='item-not-found')
    time.sleep(0.5)
    sender.message('pusher@localhost', 'two')
    no_stanza(app, 'iq', 1.5, is_push)


def t06_persist_restart(srv, sender, app):
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    enable(c, 'node-6')
    closeall(c)
    closeall(sender, app)
    srv.restart()
    sender = online(srv, 'sender', 'sender-pw', 's')
    app = online(srv, 'pushsrv', 'pushsrv-pw', 'app')
    try:
        sender.message('pusher@localhost', 'after restart')
        iq, node, summary, po = next_push(app)
        check(node == 'node-6' and po is not None and po.get('secret'), tostr(iq))
        c = online(srv, 'pusher', 'pusher-pw', 'phone')
        disable(c, 'node-6')
    finally:
        closeall(c)
        closeall(sender, app)


def t07_validation(srv, sender, app):
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    try:
        r = c.iq('set', None, "<enable xmlns='%s' jid='%s'/>" % (NS_PUSH, APP))
        check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
        r = c.iq('set', None, "<enable xmlns='%s' node='n'/>" % NS_PUSH)
        check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
        # someone else's account
        r = c.iq('set', 'sender@localhost', "<enable xmlns='%s' jid='%s' node='evil'/>"
                 % (NS_PUSH, APP))
        check(r.get('type') == 'error' and error_condition(r) in ('forbidden', 'service-unavailable'),
              tostr(r))
    finally:
        closeall(c)
    # the refused enable on sender's account notifies nobody
    s2 = online(srv, 'sender', 'sender-pw', 'tmp')
    closeall(s2)
    p = online(srv, 'pusher', 'pusher-pw', 'x')
    try:
        p.message('sender@localhost', 'hello sender')  # sender@localhost/s is online: no push
        no_stanza(app, 'iq', 1.0, is_push)
    finally:
        closeall(p)


def t08_account_deleted(srv, sender, app):
    srv.add_user('gone', 'gone-pw')
    c = online(srv, 'gone', 'gone-pw', 'g')
    enable(c, 'node-8')
    closeall(c)
    p = srv.ctl('user', 'del', 'gone@localhost')
    check(p.returncode == 0, p.stderr)
    srv.add_user('gone', 'gone-pw-2')
    time.sleep(0.3)
    sender.message('gone@localhost', 'for the new owner')
    no_stanza(app, 'iq', 1.5, is_push)


def t09_coalesce(srv):
    srv.modules = BASE + ['{ name = "push"; min_interval = 60; include_body = true; '
                          'max_registrations = 2; }']
    srv.write_config()
    srv.restart()
    sender = online(srv, 'sender', 'sender-pw', 's')
    app = online(srv, 'pushsrv', 'pushsrv-pw', 'app')
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    try:
        enable(c, 'node-9')
        closeall(c)
        c = None
        time.sleep(0.3)
        for i in range(3):
            sender.message('pusher@localhost', 'burst %d' % i)
        iq, node, summary, _ = next_push(app)
        check(summary.get('last-message-body') == 'burst 0', 'include_body: %s' % tostr(iq))
        no_stanza(app, 'iq', 1.5, is_push)
    finally:
        closeall(c, sender, app)


def t10_max_registrations(srv):
    """max_registrations = 2 (set by t09, whose node-9 is still registered)."""
    c = online(srv, 'pusher', 'pusher-pw', 'phone')
    try:
        enable(c, 'node-10a')
        r = c.iq('set', None, "<enable xmlns='%s' jid='%s' node='node-10b'/>" % (NS_PUSH, APP))
        check(r.get('type') == 'error' and error_condition(r) == 'resource-constraint', tostr(r))
        enable(c, 'node-9', form=False)  # replacing one is fine
        disable(c)
    finally:
        closeall(c)


def t11_detached_session():
    """XEP-0198 + push: a message that arrives while the user's only session
    is detached (connection lost, waiting to be resumed) notifies the app
    server; the resumed session then gets the message once."""
    with MagpieServer(args.builddir, workers=args.workers,
                      modules=BASE + ['sm', '{ name = "push"; min_interval = 0; }']) as srv:
        for u in ('pusher', 'sender', 'pushsrv'):
            srv.add_user(u, u + '-pw')
        sender = online(srv, 'sender', 'sender-pw', 's')
        app = online(srv, 'pushsrv', 'pushsrv-pw', 'app')
        c = online(srv, 'pusher', 'pusher-pw', 'phone')
        try:
            enable(c, 'node-11')
            c.send("<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
            en = c.wait_for('enabled', timeout=10)
            check(en.get('resume') in ('true', '1'), tostr(en))
            c.sock.close()  # lost, not closed: the session waits for a resume
            time.sleep(0.5)
            sender.message('pusher@localhost', 'while detached')
            iq, node, summary, _ = next_push(app)
            check(node == 'node-11' and summary.get('message-count') == '1',
                  'notification: %s' % tostr(iq))
            r = RawClient(srv.c2s_port)
            r.open_stream()
            r.starttls()
            check(r.auth('pusher', 'pusher-pw'), 'auth before resume')
            r.open_stream()
            r.send("<resume xmlns='urn:xmpp:sm:3' previd='%s' h='0'/>" % en.get('id'))
            res = r.wait_for(None, lambda e: e.tag.split('}')[-1] in ('resumed', 'failed'), timeout=10)
            check(res.tag.endswith('}resumed'), 'resume: %s' % tostr(res))
            m = r.wait_for('message', lambda e: child(e, 'body') is not None, timeout=10)
            check(child(m, 'body').text == 'while detached', tostr(m))
            no_stanza(r, 'message', 1.0, lambda e: child(e, 'body') is not None)
            r.close()
        finally:
            closeall(sender, app)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=BASE + ['{ name = "push"; min_interval = 0; }'])
        srv.__enter__()
    except Exception as e:
        R.fail('69.00 push_server_start', e)
        R.exit()
    sender = app = None
    try:
        srv.add_user('pusher', 'pusher-pw')
        srv.add_user('sender', 'sender-pw')
        srv.add_user('pushsrv', 'pushsrv-pw')
        sender = online(srv, 'sender', 'sender-pw', 's')
        app = online(srv, 'pushsrv', 'pushsrv-pw', 'app')
        for name, fn in (('69.01 push_disco_feature', t01_disco),
                         ('69.02 push_notification_offline', t02_notification),
                         ('69.03 push_no_body_no_notification', t03_no_body_no_push),
                         ('69.04 push_disable', t04_disable),
                         ('69.05 push_app_server_error_removes', t05_app_error_removes)):
            R.run(name, fn, srv, sender, app, server=srv)
        R.run('69.06 push_persists_across_restart', t06_persist_restart, srv, sender, app, server=srv)
        sender = online(srv, 'sender', 'sender-pw', 's')
        app = online(srv, 'pushsrv', 'pushsrv-pw', 'app')
        R.run('69.07 push_enable_validation', t07_validation, srv, sender, app, server=srv)
        R.run('69.08 push_account_deleted', t08_account_deleted, srv, sender, app, server=srv)
        closeall(sender, app)
        sender = app = None
        R.run('69.09 push_coalesce_and_body_option', t09_coalesce, srv, server=srv)
        R.run('69.10 push_max_registrations', t10_max_registrations, srv, server=srv)
    except Exception as e:
        R.fail('69.00 push_setup', e)
    closeall(sender, app)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('69.99 push_clean_shutdown', e)
    R.run('69.11 push_for_detached_sm_session', t11_detached_session)
    R.exit()


main()
