#!/usr/bin/python3
"""37: a room's archive through a real client library: slixmpp's
XEP-0313 plugin pages through it with XEP-0059 (forward, and backward
with reverse=True) and must see every message once, in order; its
XEP-0359 plugin reads the stanza ids of live messages, which are the
archive's result ids; the query form comes from get_fields; slixmpp's
disco sees urn:xmpp:mam:2 on the room; a members-only room refuses an
outsider with forbidden."""

import asyncio

from common import MagpieServer, Results, parse_args, check
import slixhelp

args = parse_args()
R = Results('[workers=%d]' % args.workers)
ROOM = 'slixarch@conference.localhost'
CLOSED = 'slixclosed@conference.localhost'
N = 23


async def scenario(srv):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    b = await slixhelp.login(srv.c2s_port, 'bob@localhost/slix', 'bob-pw')
    try:
        for c in (a, b):
            for p in ('xep_0045', 'xep_0004', 'xep_0059', 'xep_0313', 'xep_0359'):
                c.register_plugin(p)
        await a['xep_0045'].join_muc_wait(ROOM, 'Alice', maxstanzas=0, timeout=10)
        form = await a['xep_0045'].get_room_config(ROOM)
        form['type'] = 'submit'
        await a['xep_0045'].set_room_config(ROOM, form)
        await b['xep_0045'].join_muc_wait(ROOM, 'Bob', timeout=10)
        info = await b['xep_0030'].get_info(jid=ROOM)
        feats = info['disco_info']['features']
        check('urn:xmpp:mam:2' in feats and 'urn:xmpp:sid:0' in feats, feats)
        live = []
        for i in range(N):
            body = 'slix %02d' % i
            (a if i % 3 else b).send_message(mto=ROOM, mbody=body, mtype='groupchat')
            m = await slixhelp.next_message(b, 10, lambda m, body=body: m['body'] == body)
            sid = m['stanza_id']
            check(sid['by'] == ROOM and sid['id'], 'stanza id: %s' % m)
            live.append((body, sid['id']))
        # forward, pages of 5
        got = []
        async for m in b['xep_0313'].iterate(jid=ROOM, rsm={'max': 5}):
            got.append((m['mam_result']['forwarded']['stanza']['body'], m['mam_result']['id']))
        check(got == live, 'forward: %s' % got)
        # backward from the end, pages of 4
        got = []
        async for m in b['xep_0313'].iterate(jid=ROOM, rsm={'max': 4}, reverse=True):
            got.append((m['mam_result']['forwarded']['stanza']['body'], m['mam_result']['id']))
        check(got == list(reversed(live)), 'backward: %s' % got)
        # filtered by the publisher's occupant JID
        got = []
        async for m in b['xep_0313'].iterate(jid=ROOM, with_jid=ROOM + '/Bob', rsm={'max': 3}):
            got.append(m['mam_result']['forwarded']['stanza']['body'])
        check(got == [body for i, (body, _) in enumerate(live) if i % 3 == 0], got)
        fields = await b['xep_0313'].get_fields(jid=ROOM)
        check({'start', 'end', 'with'} <= set(fields.get_fields()), fields)
        # members-only: bob is nobody there
        await a['xep_0045'].join_muc_wait(CLOSED, 'Alice', maxstanzas=0, timeout=10)
        form = await a['xep_0045'].get_room_config(CLOSED)
        form.set_values({'muc#roomconfig_membersonly': True})
        form['type'] = 'submit'
        await a['xep_0045'].set_room_config(CLOSED, form)
        try:
            await b['xep_0313'].retrieve(jid=CLOSED, timeout=10)
            check(False, 'an outsider read a members-only archive')
        except Exception as e:  # slixmpp raises IqError
            cond = getattr(e, 'condition', None)
            check(cond == 'forbidden', 'expected forbidden, got %r' % (cond or e))
    finally:
        await slixhelp.close(a, b)


def t01_slixmpp_mam(srv):
    slixhelp.run(scenario, srv, timeout=90)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('37.00 muc_mam_slixmpp_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        R.run('37.01 muc_mam_slixmpp', t01_slixmpp_mam, srv, server=srv)
    except Exception as e:
        R.fail('37.00 muc_mam_slixmpp_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('37.99 muc_mam_slixmpp_clean_shutdown', e)
    R.exit()


main()
