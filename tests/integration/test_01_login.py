#!/usr/bin/python3
"""01: logging in — slixmpp over STARTTLS and direct TLS with SCRAM-SHA-256,
wrong passwords, the raw negotiation rules (TLS first, mechanisms offered),
and a slixmpp message exchange."""

import asyncio

from common import (MagpieServer, Results, RawClient, parse_args, check, child,
                    tostr, closeall, sync, NS_STREAMS)
import slixhelp
from slixhelp import login, next_message, close, LoginFailed

args = parse_args()
R = Results('[workers=%d]' % args.workers)


def t01_slixmpp_scram256_starttls(srv):
    async def go():
        c = await login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw', direct_tls=False)
        try:
            check(c.mech_used == 'SCRAM-SHA-256', 'mechanism used: %s' % c.mech_used)
            check(str(c.boundjid) == 'alice@localhost/slix', 'bound %s' % c.boundjid)
            rtt = await c['xep_0199'].ping('localhost', timeout=5)
            check(rtt is not None, 'ping failed')
        finally:
            await close(c)
    slixhelp.run(go)


def t02_slixmpp_scram256_direct_tls(srv):
    async def go():
        c = await login(srv.tls_port, 'alice@localhost/slixtls', 'alice-pw', direct_tls=True)
        try:
            check(c.mech_used == 'SCRAM-SHA-256', 'mechanism used: %s' % c.mech_used)
            check(str(c.boundjid) == 'alice@localhost/slixtls', 'bound %s' % c.boundjid)
        finally:
            await close(c)
    slixhelp.run(go)


def t03_slixmpp_wrong_password(srv):
    async def go():
        for port, direct in ((srv.c2s_port, False), (srv.tls_port, True)):
            try:
                c = await login(port, 'alice@localhost/bad', 'not-the-password', direct_tls=direct, timeout=15)
            except LoginFailed as e:
                check(e.client.auth_failure == 'not-authorized',
                      'failure condition %r (direct_tls=%s)' % (e.client.auth_failure, direct))
                continue
            await close(c)
            raise AssertionError('login with a wrong password succeeded')
    slixhelp.run(go)


def t04_slixmpp_messages(srv):
    async def go():
        a = await login(srv.c2s_port, 'alice@localhost/sa', 'alice-pw')
        b = await login(srv.tls_port, 'bob@localhost/sb', 'bob-pw', direct_tls=True)
        try:
            await asyncio.sleep(0.2)
            a.send_message(mto='bob@localhost/sb', mbody='full jid hello', mtype='chat')
            m = await next_message(b, pred=lambda m: m['body'] == 'full jid hello')
            check(str(m['from']) == 'alice@localhost/sa', 'from %s' % m['from'])
            a.send_message(mto='bob@localhost', mbody='bare jid hello', mtype='chat')
            m = await next_message(b, pred=lambda m: m['body'] == 'bare jid hello')
            b.send_message(mto=str(m['from']), mbody='and back', mtype='chat')
            m = await next_message(a, pred=lambda m: m['body'] == 'and back')
            check(str(m['from']) == 'bob@localhost/sb', 'from %s' % m['from'])
            # utf-8 and escaping survive
            text = 'h\u00e9llo <w\u00f6rld> & "\U0001F426"'
            a.send_message(mto='bob@localhost/sb', mbody=text, mtype='chat')
            m = await next_message(b, pred=lambda m: m['body'] == text)
        finally:
            await close(a, b)
    slixhelp.run(go)


def t05_raw_tls_required_before_auth(srv):
    c = RawClient(srv.c2s_port)
    try:
        f = c.open_stream()
        st = child(f, 'starttls')
        check(st is not None, 'no starttls offered: %s' % tostr(f))
        check(child(st, 'required') is not None, 'starttls not marked required: %s' % tostr(f))
        check('PLAIN' not in c.mechanisms(), 'PLAIN offered before TLS: %s' % tostr(f))
        check(child(f, 'bind') is None, 'bind offered before auth')
        # trying PLAIN anyway must not succeed
        import base64
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
               % base64.b64encode(b'\0alice\0alice-pw').decode())
        el = c.wait_for(None, lambda e: True, timeout=5, raise_=False)
        check(el is None or el.tag.split('}')[-1] != 'success', 'PLAIN auth succeeded without TLS')
    finally:
        closeall(c)


def t06_raw_mechanisms_after_tls(srv):
    for direct in (False, True):
        c = RawClient(srv.tls_port if direct else srv.c2s_port, direct_tls=direct)
        try:
            c.open_stream()
            if not direct:
                c.starttls()
            mechs = c.mechanisms()
            for m in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'):
                check(m in mechs, '%s not offered (direct_tls=%s): %s' % (m, direct, mechs))
            check(c.feature('starttls') is None, 'starttls offered again inside TLS')
            check(c.stream_header.get('from') == 'localhost', 'stream from=%s' % c.stream_header.get('from'))
            check(c.stream_header.get('id'), 'no stream id')
        finally:
            closeall(c)


def t07_raw_each_mechanism(srv):
    for mech in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'):
        for direct in (False, True):
            c = RawClient(srv.tls_port if direct else srv.c2s_port, direct_tls=direct)
            try:
                jid = c.login('alice', 'alice-pw', resource='m', mechanism=mech)
                check(jid == 'alice@localhost/m', jid)
                sync(c)
            finally:
                closeall(c)


def t08_raw_wrong_password_and_unknown_user(srv):
    for mech in ('SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN'):
        for user, pw in (('alice', 'wrong'), ('nosuchuser', 'whatever')):
            c = RawClient(srv.c2s_port)
            try:
                c.open_stream()
                c.starttls()
                ok = c.auth(user, pw, mech)
                check(not ok, '%s login of %s with a bad password succeeded' % (mech, user))
                check(c.sasl_failure == 'not-authorized', '%s %s: failure %r' % (mech, user, c.sasl_failure))
            finally:
                closeall(c)


def t09_raw_server_assigned_resource(srv):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(c.auth('bob', 'bob-pw'), 'auth failed')
        c.open_stream()
        jid = c.bind(None)
        check(jid.startswith('bob@localhost/') and len(jid) > len('bob@localhost/'),
              'server-assigned resource: %s' % jid)
    finally:
        closeall(c)


def t10_raw_stream_to_unknown_host(srv):
    c = RawClient(srv.c2s_port, domain='unknown.example')
    try:
        c.send("<?xml version='1.0'?><stream:stream to='unknown.example' version='1.0' "
               "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
        check(c.wait_stream_end(10), 'stream not closed')
        check(c.stream_error == 'host-unknown', 'stream error %r' % c.stream_error)
    finally:
        closeall(c)


def t11_raw_login_other_host(srv):
    c = RawClient(srv.c2s_port, domain='example.test')
    try:
        jid = c.login('eve', 'eve-pw', resource='x')
        check(jid == 'eve@example.test/x', jid)
    finally:
        closeall(c)
    # alice exists only on localhost
    c = RawClient(srv.c2s_port, domain='example.test')
    try:
        c.open_stream()
        c.starttls()
        check(not c.auth('alice', 'alice-pw'), 'alice logged in on example.test')
    finally:
        closeall(c)


TESTS = [t01_slixmpp_scram256_starttls, t02_slixmpp_scram256_direct_tls,
         t03_slixmpp_wrong_password, t04_slixmpp_messages, t05_raw_tls_required_before_auth,
         t06_raw_mechanisms_after_tls, t07_raw_each_mechanism,
         t08_raw_wrong_password_and_unknown_user, t09_raw_server_assigned_resource,
         t10_raw_stream_to_unknown_host, t11_raw_login_other_host]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers)
        srv.__enter__()
    except Exception as e:
        R.fail('01.00 login_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        srv.add_user('eve', 'eve-pw', domain='example.test')
        for i, t in enumerate(TESTS, 1):
            R.run('01.%02d login_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('01.00 login_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('01.99 login_clean_shutdown', e)
    R.exit()


main()
