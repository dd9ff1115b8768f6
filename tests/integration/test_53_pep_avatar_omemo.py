#!/usr/bin/python3
"""53: user avatars (XEP-0084) and OMEMO keys as plain PEP nodes (mod_pep).
Avatars with slixmpp's xep_0084/xep_0163/xep_0115 plugins on both sides:
alice publishes data and metadata with access model open; bob, her contact,
whose slixmpp client announces avatar metadata +notify through real
XEP-0115 caps, gets the metadata event and fetches the data by id; carol,
no contact, fetches it too (open). OMEMO (legacy
eu.siacs.conversations.axolotl and urn:xmpp:omemo:2) with raw stanzas:
device list and bundle nodes published open, a contact with devicelist
+notify gets the device list event, a non-contact reads the device list and
a bundle. Nodes go with a deleted account (magpiectl user del), cached or not."""

import asyncio

import slixhelp
from common import MagpieServer, Results, parse_args, check, child, tostr, closeall
from pephelp import (pw, login, handshake, publish, published_ok, items, item_list, is_event,
                     event_items, Caps, login_caps)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

MODULES = ['disco', 'ping', 'roster', 'pep']
A = 'alice@localhost'
NS_PUBOPTS = 'http://jabber.org/protocol/pubsub#publish-options'
PLUGINS = ('xep_0004', 'xep_0060', 'xep_0115', 'xep_0163', 'xep_0084')
PNG = b'\x89PNG\r\n\x1a\n' + bytes(range(256)) * 4


def open_form(c):
    f = c['xep_0004'].make_form(ftype='submit')
    f.add_field(var='FORM_TYPE', ftype='hidden', value=NS_PUBOPTS)
    f.add_field(var='pubsub#access_model', value='open')
    return f


async def avatar_scenario(srv):
    a = b = c = None
    try:
        a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', pw('alice'), presence=False,
                                    plugins=PLUGINS)
        b = await slixhelp.login(srv.c2s_port, 'bob@localhost/slix', pw('bob'), presence=False,
                                    plugins=PLUGINS)
        c = await slixhelp.login(srv.c2s_port, 'carol@localhost/slix', pw('carol'), presence=False,
                                    plugins=PLUGINS)
        got = asyncio.get_event_loop().create_future()
        b.add_event_handler('avatar_metadata_publish',
                            lambda m: got.done() or got.set_result(m))
        for x in (a, b, c):
            x.send_presence()
        await asyncio.sleep(1.0)  # caps asked and verified
        avatar_id = a['xep_0084'].generate_id(PNG)
        await a['xep_0084'].publish_avatar(PNG, options=open_form(a), timeout=10)
        await a['xep_0084'].publish_avatar_metadata(
            items=[{'id': avatar_id, 'type': 'image/png', 'bytes': len(PNG)}], options=open_form(a), timeout=10)
        m = await asyncio.wait_for(got, 10)
        check(m['from'].bare == A, 'event from %s' % m['from'])
        info = m['pubsub_event']['items']['item']['avatar_metadata']['info']
        check(info['id'] == avatar_id and int(info['bytes']) == len(PNG), str(m))
        for who in (b, c):  # a contact, then someone who is none (open access)
            r = await who['xep_0084'].retrieve_avatar(A, avatar_id, timeout=10)
            data = r['pubsub']['items']['item']['avatar_data']['value']
            check(data == PNG, '%s got a different avatar (%d bytes)' % (who.boundjid, len(data or b'')))
    finally:
        await slixhelp.close(*[x for x in (a, b, c) if x is not None])


def t01_avatar_slixmpp(srv):
    slixhelp.run(avatar_scenario, srv, timeout=60)


LEGACY = 'eu.siacs.conversations.axolotl'
OPEN = {'pubsub#access_model': 'open'}


def t02_omemo(srv):
    caps = Caps(['http://jabber.org/protocol/disco#info', LEGACY + '.devicelist+notify',
                 'urn:xmpp:omemo:2:devices+notify'], node='urn:test:omemo')
    b = login_caps(srv, 'bob', 'omemo', caps)
    a = login(srv, 'alice', 'omemo')
    c = login(srv, 'carol', 'omemo')
    try:
        # legacy OMEMO (Conversations, Dino, Gajim)
        published_ok(publish(a, LEGACY + '.devicelist', "<list xmlns='%s'><device id='31337'/></list>" % LEGACY,
                             item_id='current', options=OPEN))
        ev = b.wait_for('message', is_event(A, LEGACY + '.devicelist'), timeout=5)
        dev = child(event_items(ev)[0][1], 'device', LEGACY)
        check(dev is not None and dev.get('id') == '31337', tostr(ev))
        bundle = ("<bundle xmlns='%s'><signedPreKeyPublic signedPreKeyId='1'>BQ==</signedPreKeyPublic>"
                  "<signedPreKeySignature>c2ln</signedPreKeySignature><identityKey>aWQ=</identityKey>"
                  "<prekeys><preKeyPublic preKeyId='1'>cGs=</preKeyPublic></prekeys></bundle>" % LEGACY)
        published_ok(publish(a, LEGACY + '.bundles:31337', bundle, item_id='current', options=OPEN))
        got = item_list(items(c, A, LEGACY + '.devicelist'))
        check(len(got) == 1 and child(got[0][1], 'device', LEGACY).get('id') == '31337', repr(got))
        got = item_list(items(c, A, LEGACY + '.bundles:31337'))
        check(len(got) == 1 and child(got[0][1], 'identityKey', LEGACY).text == 'aWQ=', repr(got))
        # OMEMO 2 (XEP-0384 0.8+)
        o2 = 'urn:xmpp:omemo:2'
        published_ok(publish(a, o2 + ':devices', "<devices xmlns='%s'><device id='4242' label='phone'/></devices>" % o2,
                             item_id='current', options=OPEN))
        ev = b.wait_for('message', is_event(A, o2 + ':devices'), timeout=5)
        check(child(event_items(ev)[0][1], 'device', o2).get('label') == 'phone', tostr(ev))
        published_ok(publish(a, o2 + ':bundles', "<bundle xmlns='%s'><ik>aWs=</ik></bundle>" % o2,
                             item_id='4242', options=dict(OPEN, **{'pubsub#max_items': 'max'})))
        got = item_list(items(c, A, o2 + ':bundles', ids=['4242']))
        check(len(got) == 1 and child(got[0][1], 'ik', o2).text == 'aWs=', repr(got))
    finally:
        closeall(a, b, c)


def t03_account_deleted(srv):
    c = login(srv, 'carol', 'del')
    try:
        published_ok(publish(c, LEGACY + '.devicelist', "<list xmlns='%s'><device id='7'/></list>" % LEGACY,
                             item_id='current', options=OPEN))
    finally:
        closeall(c)
    a = login(srv, 'alice', 'del')
    try:
        # carol is offline: her nodes are cached (cache_bytes); reading them keeps them there
        check(len(item_list(items(a, 'carol@localhost', LEGACY + '.devicelist'))) == 1, 'not published')
        p = srv.ctl('user', 'del', 'carol@localhost')
        check(p.returncode == 0, 'user del: %s %s' % (p.stdout, p.stderr))
        srv.add_user('carol', pw('carol'))
        c = login(srv, 'carol', 'new')
        try:
            r = items(a, 'carol@localhost', LEGACY + '.devicelist')
            check(child(r, 'error') is not None and 'item-not-found' in tostr(r),
                  'the deleted account\'s node survived: %s' % tostr(r))
        finally:
            closeall(c)
    finally:
        closeall(a)


TESTS = [t01_avatar_slixmpp, t02_omemo, t03_account_deleted]


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('53.00 avatar_omemo_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'bob', 'carol'):
            srv.add_user(u, pw(u))
        a = login(srv, 'alice', 'setup')
        b = login(srv, 'bob', 'setup')
        handshake(b, 'bob', a, 'alice')
        closeall(a, b)
        for i, t in enumerate(TESTS, 1):
            R.run('53.%02d pep_%s' % (i, t.__name__.split('_', 1)[1]), t, srv, server=srv)
    except Exception as e:
        R.fail('53.00 avatar_omemo_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('53.99 avatar_omemo_clean_shutdown', e)
    R.exit()


main()
