#!/usr/bin/python3
"""58: the user archive through a real client library: slixmpp's
XEP-0313 plugin pages through the user's own archive (no 'to') with
XEP-0059, forward and backward (reverse=True), and sees every message
once, in order; its XEP-0359 plugin reads the stanza ids of live
messages, which are the archive's result ids; get_fields gives the
query form; preferences set and read back (raw IQs: no slixmpp API); disco on the
account shows urn:xmpp:mam:2."""

from xml.etree import ElementTree as ET

from common import MagpieServer, Results, parse_args, check
import slixhelp

args = parse_args()
R = Results('[workers=%d]' % args.workers)
N = 23


async def scenario(srv):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    b = await slixhelp.login(srv.c2s_port, 'bob@localhost/slix', 'bob-pw')
    try:
        for c in (a, b):
            for p in ('xep_0004', 'xep_0059', 'xep_0313', 'xep_0359'):
                c.register_plugin(p)
        info = await b['xep_0030'].get_info(jid='bob@localhost')
        feats = info['disco_info']['features']
        check('urn:xmpp:mam:2' in feats and 'urn:xmpp:sid:0' in feats, feats)
        live = []
        for i in range(N):
            body = 'slix %02d' % i
            a.send_message(mto='bob@localhost', mbody=body, mtype='chat')
            m = await slixhelp.next_message(b, 10, lambda m, body=body: m['body'] == body)
            sid = m['stanza_id']
            check(sid['by'] == 'bob@localhost' and sid['id'], 'stanza id: %s' % m)
            live.append((body, sid['id']))
        got = []
        async for m in b['xep_0313'].iterate(rsm={'max': 5}):
            got.append((m['mam_result']['forwarded']['stanza']['body'], m['mam_result']['id']))
        check(got == live, 'forward: %s' % got)
        got = []
        async for m in b['xep_0313'].iterate(rsm={'max': 4}, reverse=True):
            got.append((m['mam_result']['forwarded']['stanza']['body'], m['mam_result']['id']))
        check(got == list(reversed(live)), 'backward: %s' % got)
        got = []
        async for m in a['xep_0313'].iterate(with_jid='bob@localhost', rsm={'max': 10}):
            got.append(m['mam_result']['forwarded']['stanza']['body'])
        check(got == [body for body, _ in live], 'alice (sender) archive: %s' % got)
        fields = await b['xep_0313'].get_fields()
        check({'start', 'end', 'with'} <= set(fields.get_fields()), fields)
        # preferences (this slixmpp has no API for them): a raw IQ
        iq = b.make_iq_set()
        iq.append(ET.fromstring("<prefs xmlns='urn:xmpp:mam:2' default='roster'><always><jid>"
                                "alice@localhost</jid></always><never><jid>eve@localhost</jid>"
                                "</never></prefs>"))
        await iq.send(timeout=10)
        iq = b.make_iq_get()
        iq.append(ET.fromstring("<prefs xmlns='urn:xmpp:mam:2'/>"))
        res = await iq.send(timeout=10)
        p = res.xml.find('{urn:xmpp:mam:2}prefs')
        jids = lambda n: [j.text for j in p.find('{urn:xmpp:mam:2}%s' % n)]
        check(p.get('default') == 'roster' and jids('always') == ['alice@localhost']
              and jids('never') == ['eve@localhost'], 'prefs: %s' % ET.tostring(p))
    finally:
        await slixhelp.close(a, b)


def t01_slixmpp_mam(srv):
    slixhelp.run(scenario, srv, timeout=90)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers,
                           modules=['disco', 'ping', 'roster', 'offline', 'mam', 'carbons'])
        srv.__enter__()
    except Exception as e:
        R.fail('58.00 mam_slixmpp_server_start', e)
        R.exit()
    try:
        srv.add_user('alice', 'alice-pw')
        srv.add_user('bob', 'bob-pw')
        R.run('58.01 mam_slixmpp_user_archive', t01_slixmpp_mam, srv, server=srv)
    except Exception as e:
        R.fail('58.00 mam_slixmpp_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('58.99 mam_slixmpp_clean_shutdown', e)
    R.exit()


main()
