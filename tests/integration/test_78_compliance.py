#!/usr/bin/python3
"""78: docs/compliance.md (the XEP-0479 Core/IM/Mobile server table) says
what the server does. For every line: a provider claimed (yes, opt-in,
partial) has a manifest and conversation scripts under xep/ (which the
conformance run plays), a provider claimed absent (no) has none; a "yes"
line's modules are in the default module list, an "opt-in" line's are not;
and a server started with the default module list advertises what the
"advertised as" column names (server or account disco#info features,
stream features, services in disco#items). Also RFC 7590's cipher policy:
TLS 1.2 without forward secrecy, and TLS 1.1, are refused."""

import os
import re
import socket
import ssl

from common import (MagpieServer, RawClient, Results, parse_args, check, tostr, SRCDIR)

args = parse_args()
R = Results()
NS_INFO = 'http://jabber.org/protocol/disco#info'
NS_ITEMS = 'http://jabber.org/protocol/disco#items'


def table_rows():
    rows = []
    with open(os.path.join(SRCDIR, 'docs', 'compliance.md')) as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip('|').split('|')]
            if len(cells) != 6 or cells[0] in ('feature', '---') or not line.startswith('|'):
                continue
            feature, level, providers, status, advertised, notes = cells
            rows.append({'feature': feature, 'level': level, 'status': status, 'notes': notes,
                         'providers': [p.strip() for p in providers.split(',') if p.strip()],
                         'advertised': [a.strip() for a in advertised.split(',') if a.strip()]})
    return rows


def folder(spec):
    m = re.match(r'^(RFC|XEP)[ -](\d+)$', spec)
    check(m, 'provider %r is neither "RFC n" nor "XEP-nnnn"' % spec)
    return ('rfc%s' if m.group(1) == 'RFC' else 'xep-%s') % m.group(2)


def manifest(spec):
    d = os.path.join(SRCDIR, 'xep', folder(spec))
    path = os.path.join(d, 'manifest')
    if not os.path.exists(path):
        return None
    out = {'convs': [f for f in os.listdir(d) if f.endswith('.conv')]}
    with open(path) as f:
        for line in f:
            if ':' in line and not line.startswith('#'):
                k, v = line.split(':', 1)
                out.setdefault(k.strip(), v.strip())
    return out


def default_modules():
    with open(os.path.join(SRCDIR, 'src', 'conf', 'config.c')) as f:
        src = f.read()
    body = re.search(r'default_modules\[\]\s*=\s*\{(.*?)\};', src, re.S).group(1)
    return re.findall(r'"([a-z_]+)"', body)


ROWS = table_rows()
DEFAULTS = default_modules()


def t01_table_matches_manifests():
    check(len(ROWS) >= 20, 'only %d lines read from docs/compliance.md' % len(ROWS))
    for r in ROWS:
        check(r['status'] in ('yes', 'opt-in', 'partial', 'no'), 'status %r: %s' % (r['status'], r['feature']))
        for spec in r['providers']:
            m = manifest(spec)
            if r['status'] == 'no':
                check(m is None, '%s: %s says no, but xep/%s exists' % (r['feature'], spec, folder(spec)))
                continue
            check(m is not None, '%s: %s claimed, no xep/%s/manifest' % (r['feature'], spec, folder(spec)))
            check(m['convs'], '%s: xep/%s has no conversation script' % (spec, folder(spec)))
            mods = [x.strip() for x in m.get('module', '').split(',') if x.strip()]
            check(mods, '%s: manifest names no module' % spec)
            for mod in mods:
                if mod == 'core':
                    continue
                name = mod[4:] if mod.startswith('mod_') else mod
                if r['status'] == 'yes':
                    check(name in DEFAULTS, '%s: %s is "yes" but %s is not in the default modules %s'
                          % (r['feature'], spec, name, DEFAULTS))
                elif r['status'] == 'opt-in':
                    check(name not in DEFAULTS, '%s: %s is "opt-in" but %s is on by default'
                          % (r['feature'], spec, name))
            if r['status'] == 'yes' and m.get('status') == 'partial':
                # a partial manifest on a "yes" line must say why in the line's notes
                check(r['notes'], '%s: %s is partial, the line has no note' % (r['feature'], spec))


def features(c, to):
    r = c.iq('get', to, "<query xmlns='%s'/>" % NS_INFO)
    check(r.get('type') == 'result', tostr(r))
    return {f.get('var') for f in r.iter('{%s}feature' % NS_INFO)}


def t02_default_server_advertises(srv):
    c = RawClient(srv.c2s_port)
    c.login('alice', 'alice-pw', resource='compliance')
    stream = {ch.tag.split('}')[0].lstrip('{') for ch in c.features}
    server = features(c, 'localhost')
    account = features(c, 'alice@localhost')
    r = c.iq('get', 'localhost', "<query xmlns='%s'/>" % NS_ITEMS)
    items = [i.get('jid') for i in r.iter('{%s}item' % NS_ITEMS)]
    c.close()
    checked = 0
    for row in ROWS:
        if row['status'] != 'yes':
            continue
        for adv in row['advertised']:
            kind, _, what = adv.partition(':')
            have = {'server': server, 'account': account, 'stream': stream}.get(kind)
            if kind == 'item':
                check(any(j.startswith(what) for j in items), '%s: no %s* service in disco#items %s'
                      % (row['feature'], what, items))
            else:
                check(have is not None, 'bad advertised kind %r' % adv)
                check(what in have, '%s: %s not advertised (%s: %s)' % (row['feature'], what, kind,
                                                                       sorted(have)))
            checked += 1
    check(checked >= 12, 'only %d advertisements checked' % checked)


def tls_connect(srv, **kw):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for k, v in kw.items():
        if k == 'ciphers':
            ctx.set_ciphers(v)
        else:
            setattr(ctx, k, v)
    s = socket.create_connection(('127.0.0.1', srv.tls_port), timeout=5)
    try:
        t = ctx.wrap_socket(s, server_hostname='localhost')
        v, c = t.version(), t.cipher()[0]
        t.close()
        return v, c
    except (ssl.SSLError, OSError):
        s.close()
        return None


def t03_tls_policy(srv):
    ok = tls_connect(srv, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers='ECDHE+AESGCM')
    check(ok and ok[0] == 'TLSv1.2' and ok[1].startswith('ECDHE'), 'TLS 1.2 with ECDHE: %s' % (ok,))
    check(tls_connect(srv, maximum_version=ssl.TLSVersion.TLSv1_2, ciphers='AES256-GCM-SHA384:AES128-GCM-SHA256') is None,
          'TLS 1.2 without forward secrecy was accepted')
    try:
        old = tls_connect(srv, minimum_version=ssl.TLSVersion.TLSv1_1,
                          maximum_version=ssl.TLSVersion.TLSv1_1, ciphers='ALL:@SECLEVEL=0')
    except ValueError:
        old = None  # this Python cannot even offer TLS 1.1
    check(old is None, 'TLS 1.1 was accepted: %s' % (old,))


def main():
    R.run('78.01 compliance_table_matches_manifests', t01_table_matches_manifests)
    # the server's own default module list, as a server without 'modules' runs it
    with MagpieServer(args.builddir, modules=DEFAULTS) as srv:
        srv.add_user('alice', 'alice-pw')
        R.run('78.02 compliance_default_server_advertises', t02_default_server_advertises, srv,
              server=srv)
        R.run('78.03 compliance_tls_policy', t03_tls_policy, srv, server=srv)
    R.exit()


main()
