#!/usr/bin/python3
"""34: mod_muc with a real client library: slixmpp's XEP-0045 plugin
creates a room (join_muc_wait sees status 201), fetches and submits the
configuration form, a second client enters, both exchange groupchat
messages, the plugin's roster of the room and the affiliation list
agree with the server, and a role change comes back through set_role."""

import asyncio

from common import MagpieServer, Results, parse_args, check
import slixhelp

args = parse_args()
R = Results('[workers=%d]' % args.workers)
ROOM = 'slix@conference.localhost'


async def scenario(srv):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    b = await slixhelp.login(srv.c2s_port, 'bob@localhost/slix', 'bob-pw')
    try:
        for c in (a, b):
            c.register_plugin('xep_0045')
            c.register_plugin('xep_0004')
        pres, subject, occupants, hist = await a['xep_0045'].join_muc_wait(ROOM, 'Alice', maxstanzas=0,
                                                                            timeout=10)
        st = {int(s) for s in pres['muc']['status_codes']}
        check({110, 201} <= st, 'status codes %s' % st)
        form = await a['xep_0045'].get_room_config(ROOM)
        check('muc#roomconfig_roomname' in form.get_fields(), form)
        form.set_values({'muc#roomconfig_roomname': 'Slix room', 'muc#roomconfig_persistentroom': True})
        form['type'] = 'submit'
        await a['xep_0045'].set_room_config(ROOM, form)
        _, _, occupants, _ = await b['xep_0045'].join_muc_wait(ROOM, 'Bob', timeout=10)
        check([p['from'].resource for p in occupants] == ['Alice', 'Bob'], occupants)
        b.send_message(mto=ROOM, mbody='hi from slixmpp', mtype='groupchat')
        m = await slixhelp.next_message(a, 10, lambda m: m['body'] == 'hi from slixmpp')
        check(m['from'].resource == 'Bob' and m['type'] == 'groupchat', m)
        await asyncio.sleep(0.2)
        check(set(a['xep_0045'].get_roster(ROOM)) == {'Alice', 'Bob'}, a['xep_0045'].get_roster(ROOM))
        await a['xep_0045'].set_affiliation(ROOM, 'member', jid='bob@localhost')
        members = await a['xep_0045'].get_affiliation_list(ROOM, 'member')
        check([str(j) for j in members] == ['bob@localhost'], members)
        await a['xep_0045'].set_role(ROOM, 'Bob', 'visitor')
        for _ in range(50):
            if b['xep_0045'].get_jid_property(ROOM, 'Bob', 'role') == 'visitor':
                break
            await asyncio.sleep(0.1)
        check(b['xep_0045'].get_jid_property(ROOM, 'Bob', 'role') == 'visitor', 'role not seen by bob')
    finally:
        await slixhelp.close(a, b)


def t01_slixmpp_room(srv):
    slixhelp.run(scenario, srv, timeout=60)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('34.00 muc_slixmpp_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        R.run('34.01 muc_slixmpp_room', t01_slixmpp_room, srv, server=srv)
    except Exception as e:
        R.fail('34.00 muc_slixmpp_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('34.99 muc_slixmpp_clean_shutdown', e)
    R.exit()


main()
