#!/usr/bin/python3
"""64: XEP-0198 with a real client: slixmpp's xep_0198 plugin.

slixmpp enables stream management with resumption after binding and gets
an id; its stanzas are acknowledged by the server (its unacked queue
empties after it asks with <r/>); messages from a contact are counted and
acknowledged when the server asks. Its TCP connection is then cut (the
transport aborted, no </stream:stream>); messages sent meanwhile wait;
slixmpp reconnects, resumes (session_resumed, no new bind), and receives
exactly those messages, in order, once each; the conversation goes on.
Run with --workers 2 as well."""

import asyncio

from common import Results, MagpieServer, parse_args, check
import slixhelp
from slixhelp import Client, next_message, close, run
from smhelp import pw

args = parse_args()
R = Results('[workers=%d]' % args.workers)
MODULES = ['disco', 'ping', 'roster', 'offline', 'carbons', 'csi',
           '{ name = "sm"; resume_timeout = 60; request_every = 2; }']


async def sm_client(srv, jid):
    c = Client(jid, pw(jid.split('@')[0]))
    c.register_plugin('xep_0198')
    c.resumed = asyncio.get_event_loop().create_future()
    c.add_event_handler('session_resumed',
                        lambda _: c.resumed.done() or c.resumed.set_result(True))
    c.connect(('127.0.0.1', srv.c2s_port), use_ssl=False, force_starttls=True)
    res = await asyncio.wait_for(asyncio.shield(c._done), 20)
    check(res == 'ok', 'login: %s' % res)
    c.send_presence()
    return c


async def scenario(srv):
    a = await sm_client(srv, 'alice@localhost/slix')
    b = await slixhelp.login(srv.c2s_port, 'bob@localhost/desk', pw('bob'))
    try:
        sm = a['xep_0198']
        for _ in range(50):
            if sm.sm_id:
                break
            await asyncio.sleep(0.1)
        check(sm.sm_id, 'slixmpp got no resumption id')
        # acks of alice's stanzas
        for i in range(3):
            a.send_message(mto='bob@localhost/desk', mbody='to bob %d' % i, mtype='chat')
        for i in range(3):
            m = await next_message(b, 5)
            check(m['body'] == 'to bob %d' % i, m['body'])
        sm.request_ack()
        for _ in range(50):
            if not sm.unacked_queue:
                break
            await asyncio.sleep(0.1)
        check(not sm.unacked_queue, 'the server did not acknowledge %d stanzas' % len(sm.unacked_queue))
        # counting of what alice receives, acked on the server's <r/>
        for i in range(4):
            b.send_message(mto='alice@localhost/slix', mbody='before %d' % i, mtype='chat')
        for i in range(4):
            m = await next_message(a, 5)
            check(m['body'] == 'before %d' % i, m['body'])
        # cut the connection under slixmpp's feet
        a.transport.abort()
        await asyncio.sleep(0.5)
        for i in range(3):
            b.send_message(mto='alice@localhost/slix', mbody='away %d' % i, mtype='chat')
        await asyncio.sleep(0.3)
        a.connect(('127.0.0.1', srv.c2s_port), use_ssl=False, force_starttls=True)
        await asyncio.wait_for(a.resumed, 20)
        got = []
        while True:
            try:
                m = await next_message(a, 1.5)
            except asyncio.TimeoutError:
                break
            got.append(m['body'])
        check(got == ['away 0', 'away 1', 'away 2'], 'after resume slixmpp got %s' % got)
        a.send_message(mto='bob@localhost/desk', mbody='resumed', mtype='chat')
        m = await next_message(b, 5)
        check(m['body'] == 'resumed' and str(m['from']) == 'alice@localhost/slix', str(m))
    finally:
        await close(a, b)


def t_slixmpp(srv):
    run(scenario, srv, timeout=90)


with MagpieServer(args.builddir, workers=args.workers, modules=MODULES) as srv:
    for u in ('alice', 'bob'):
        srv.add_user(u, pw(u))
    R.run('64-1 slixmpp xep_0198: acks, resume after a cut connection', t_slixmpp, srv, server=srv)
R.exit()
