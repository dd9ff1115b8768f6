#!/usr/bin/python3
"""76: XEP-0363 HTTP File Upload (mod_upload) on the server's HTTP listener.
The service is in the server's disco#items and its disco#info has
store/file, urn:xmpp:http:upload:0 and max-file-size; slixmpp's xep_0363
plugin (request + PUT with aiohttp) uploads a file that GET and HEAD give
back byte-identical with its type; too large -> not-acceptable with
<file-too-large><max-file-size>; a PUT must carry the slot's token and
exactly its size and type (403/413/400), once (409), before the slot
expires (403); a Content-Length above the maximum is refused with 413
before any body is sent; file names are sanitised (no path traversal; on
disk only slot ids); an account of another domain is refused; the quota
and the slot rate limit give resource-constraint; stored files survive a
restart, files older than expire_days are deleted, and files go with
their account."""

import http.client
import io
import os
import re
import socket
import ssl
import time
import urllib.parse

from common import (MagpieServer, Results, parse_args, check, online, closeall, child,
                    error_condition, tostr, ns)
import slixhelp
from slixmpp.plugins.xep_0363.http_upload import FileTooBig

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS = 'urn:xmpp:http:upload:0'
SVC = 'upload.localhost'
MAX = 100000
QUOTA = 250000
RATE = 20


def request(c, filename, size, ctype=None, to=SVC):
    attrs = "filename='%s' size='%s'" % (filename, size)
    if ctype:
        attrs += " content-type='%s'" % ctype
    return c.iq('get', to, "<request xmlns='%s' %s/>" % (NS, attrs))


def slot_of(r):
    check(r.get('type') == 'result', 'slot request failed: %s' % tostr(r))
    slot = child(r, 'slot', NS)
    check(slot is not None, 'no slot: %s' % tostr(r))
    put, get = child(slot, 'put', NS), child(slot, 'get', NS)
    check(put is not None and get is not None, tostr(r))
    headers = {h.get('name'): h.text for h in put if h.tag.endswith('header')}
    return put.get('url'), get.get('url'), headers


def hreq(method, url, body=None, headers=None):
    """(status, headers dict (lower-case names), body bytes)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == 'https':
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection('127.0.0.1', u.port, timeout=10, context=ctx)
    else:
        conn = http.client.HTTPConnection('127.0.0.1', u.port, timeout=10)
    try:
        conn.request(method, u.path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def put(url, data, hdrs, ctype=None):
    h = dict(hdrs)
    if ctype:
        h['Content-Type'] = ctype
    return hreq('PUT', url, data, h)[0]


def t01_disco(srv):
    c = online(srv, 'alice', 'alice-pw', 'disco')
    try:
        r = c.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#items'/>")
        items = [i.get('jid') for i in child(r, 'query')]
        check(SVC in items, 'server disco#items: %s' % tostr(r))
        r = c.iq('get', SVC, "<query xmlns='http://jabber.org/protocol/disco#info'/>")
        q = child(r, 'query')
        ids = [(i.get('category'), i.get('type')) for i in q if i.tag.endswith('identity')]
        check(('store', 'file') in ids, tostr(r))
        feats = [f.get('var') for f in q if f.tag.endswith('feature')]
        check(NS in feats, tostr(r))
        form = child(q, 'x', 'jabber:x:data')
        check(form is not None and form.get('type') == 'result', tostr(r))
        fields = {f.get('var'): [v.text for v in f] for f in form}
        check(fields.get('FORM_TYPE') == [NS], fields)
        check(fields.get('max-file-size') == [str(MAX)], fields)
    finally:
        closeall(c)


async def slix_upload(srv, data):
    a = await slixhelp.login(srv.c2s_port, 'alice@localhost/slix', 'alice-pw')
    try:
        a.register_plugin('xep_0363')
        up = a['xep_0363']
        # the plugin's own find_upload_service() goes through
        # xep_0030.get_info_from_domain, which this slixmpp cannot run on
        # Python >= 3.11 (asyncio.wait on bare coroutines); do the same
        # discovery (server disco#items, then disco#info of each item) with
        # the plugin's stanza classes and let it do the rest
        items = await a['xep_0030'].get_items(jid='localhost', timeout=10)
        for jid, _, _ in items['disco_items']['items']:
            info = await a['xep_0030'].get_info(jid=jid, timeout=10)
            ids = [(i[0], i[1]) for i in info['disco_info']['identities']]
            if ('store', 'file') in ids and NS in info['disco_info']['features']:
                up.upload_service = info['from']
                for form in info['disco_info'].iterables:
                    values = form['values']
                    if values['FORM_TYPE'] == [NS]:
                        up.max_file_size = int(values['max-file-size'])
        check(str(up.upload_service) == SVC and up.max_file_size == MAX,
              (up.upload_service, up.max_file_size))
        try:
            await up.upload_file('huge.bin', size=MAX + 1, input_file=io.BytesIO(b''),
                                 timeout=10)
            check(False, 'FileTooBig not raised')
        except FileTooBig:
            pass
        url = await up.upload_file('photo.png', size=len(data), content_type='image/png',
                                   input_file=io.BytesIO(data), timeout=10)
        return url
    finally:
        await slixhelp.close(a)


def t02_slixmpp_roundtrip(srv):
    data = bytes((i * 7 + 3) % 256 for i in range(54321))
    url = slixhelp.run(slix_upload, srv, data, timeout=60)
    check(re.match(r'^http://localhost:%d/upload/[0-9a-f]{32}/photo\.png$' % srv.http_port, url),
          url)
    st, h, body = hreq('GET', url)
    check(st == 200 and body == data, (st, len(body)))
    check(h.get('content-type') == 'image/png', h)
    check(h.get('content-length') == str(len(data)), h)
    check(h.get('x-content-type-options') == 'nosniff', h)
    check(h.get('content-disposition', '').startswith('inline'), h)
    st, h, body = hreq('HEAD', url)
    check(st == 200 and body == b'' and h.get('content-length') == str(len(data)), (st, h))
    check(h.get('content-type') == 'image/png', h)


def t03_too_large(srv):
    c = online(srv, 'alice', 'alice-pw', 'big')
    try:
        r = request(c, 'big.bin', MAX + 1)
        check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable', tostr(r))
        err = child(r, 'error')
        check(err.get('type') == 'modify', tostr(r))
        ftl = child(err, 'file-too-large', NS)
        check(ftl is not None, tostr(r))
        mfs = child(ftl, 'max-file-size', NS)
        check(mfs is not None and mfs.text == str(MAX), tostr(r))
        # the maximum itself is fine
        slot_of(request(c, 'max.bin', MAX))
        for bad in ("<request xmlns='%s' filename='x'/>" % NS,
                    "<request xmlns='%s' filename='' size='3'/>" % NS,
                    "<request xmlns='%s' filename='x' size='0'/>" % NS,
                    "<request xmlns='%s' filename='x' size='-5'/>" % NS,
                    "<request xmlns='%s' filename='x' size='3' content-type='a b/c'/>" % NS):
            r = c.iq('get', SVC, bad)
            check(error_condition(r) == 'bad-request', tostr(r))
    finally:
        closeall(c)


def t04_put_rules(srv):
    c = online(srv, 'alice', 'alice-pw', 'rules')
    try:
        purl, gurl, hdrs = slot_of(request(c, 'notes.txt', 10, 'text/plain'))
        check(purl == gurl and list(hdrs) == ['Authorization'], (purl, gurl, hdrs))
        check(put(purl, b'0123456789', {}, 'text/plain') == 403, 'PUT without the token')
        check(put(purl, b'0123456789', {'Authorization': 'Bearer ' + '0' * 32},
                  'text/plain') == 403, 'PUT with a wrong token')
        check(put(purl, b'0123456789A', hdrs, 'text/plain') == 413, 'PUT larger than the slot')
        check(put(purl, b'012345678', hdrs, 'text/plain') == 400, 'PUT smaller than the slot')
        check(put(purl, b'0123456789', hdrs, 'text/html') == 400, 'PUT with another type')
        check(put(purl + 'x', b'0123456789', hdrs, 'text/plain') == 403, 'PUT to another name')
        check(hreq('GET', gurl)[0] == 404, 'GET before the PUT')
        check(put(purl, b'0123456789', hdrs, 'text/plain') == 201, 'the right PUT')
        check(put(purl, b'9876543210', hdrs, 'text/plain') == 409, 'second PUT')
        st, h, body = hreq('GET', gurl)
        check(st == 200 and body == b'0123456789' and h.get('content-type') == 'text/plain',
              (st, h, body))
        check(hreq('GET', gurl + 'x')[0] == 404, 'GET of another name')
        u = urllib.parse.urlsplit(gurl)
        other = '%s://%s/upload/%s/notes.txt' % (u.scheme, u.netloc, 'ab' * 16)
        check(hreq('GET', other)[0] == 404, 'GET of an unknown slot')
        check(hreq('DELETE', gurl)[0] == 405, 'DELETE')
        # refused on the head, before any body is sent: a Content-Length above
        # the maximum (413), a used slot (409), an unknown one or a wrong
        # token (403), a length other than the slot's (413 / 400)
        purl2, _, hdrs2 = slot_of(request(c, 'head.bin', 5000))
        p2 = urllib.parse.urlsplit(purl2).path
        auth2 = 'Authorization: %s\r\n' % hdrs2['Authorization']
        for path, extra, length, want in ((u.path, '', MAX + 1, 413), (u.path, auth2, 10, 409),
                                          (other, auth2, 5000, 403), (p2, '', 5000, 403),
                                          (p2, auth2, 5001, 413), (p2, auth2, 4999, 400)):
            s = socket.create_connection(('127.0.0.1', srv.http_port), timeout=5)
            try:
                s.sendall(('PUT %s HTTP/1.1\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n'
                           % (urllib.parse.urlsplit(path).path, extra, length)).encode())
                resp = s.recv(4096).decode(errors='replace')
                check(resp.startswith('HTTP/1.1 %d' % want), (path, length, want, resp))
            finally:
                s.close()
        check(put(purl2, b'h' * 5000, hdrs2) == 201, 'the slot still works')
        # no type requested: the PUT's is kept
        purl, gurl, hdrs = slot_of(request(c, 'blob', 3))
        check(put(purl, b'abc', hdrs, 'application/x-test') == 201, 'PUT without a slot type')
        st, h, body = hreq('GET', gurl)
        check(st == 200 and body == b'abc' and h.get('content-type') == 'application/x-test'
              and h.get('content-disposition', '').startswith('attachment'), (st, h))
    finally:
        closeall(c)


def t05_expired(srv):
    c = online(srv, 'alice', 'alice-pw', 'exp')
    try:
        purl, gurl, hdrs = slot_of(request(c, 'late.txt', 4, 'text/plain'))
        time.sleep(3.5)  # slot_timeout = 3
        check(put(purl, b'late', hdrs, 'text/plain') == 403, 'PUT after the slot expired')
        check(hreq('GET', gurl)[0] == 404, 'GET of an expired slot')
    finally:
        closeall(c)


def t06_traversal(srv):
    updir = os.path.join(srv.state_dir, 'upload')
    before = set(os.listdir(srv.state_dir))
    c = online(srv, 'alice', 'alice-pw', 'trav')
    try:
        cases = [('../../../evil.txt', 'evil.txt'), ('..\\..\\win.txt', 'win.txt'),
                 ('..', '__'), ('.hidden', '_hidden'), ('a b?c#d%2e.txt', 'a_b_c_d_2e.txt'),
                 ('/etc/passwd', 'passwd'), ('caf\u00e9.txt', 'caf%C3%A9.txt')]
        for name, want in cases:
            esc = name.replace('&', '&amp;').replace("'", '&apos;').replace('<', '&lt;')
            purl, gurl, hdrs = slot_of(request(c, esc, 2))
            last = gurl.rsplit('/', 1)[1]
            check(last == want, 'filename %r -> %r, want %r' % (name, last, want))
            check('..' not in urllib.parse.unquote(urllib.parse.urlsplit(gurl).path), gurl)
            check(put(purl, b'ok', hdrs) == 201, 'PUT %s' % gurl)
            check(hreq('GET', gurl)[2] == b'ok', 'GET %s' % gurl)
        # a crafted PUT path never reaches the file system
        u = urllib.parse.urlsplit(purl)
        sid = u.path.split('/')[2]
        for path in ('/upload/%s/../../x' % sid, '/upload/%s/a/b' % sid, '/upload/../x',
                     '/upload/%2e%2e/x', '/upload/' + sid):
            conn = http.client.HTTPConnection('127.0.0.1', srv.http_port, timeout=5)
            conn.request('PUT', path, body=b'ok', headers=hdrs)
            st = conn.getresponse().status
            conn.close()
            check(st in (403, 404), '%s -> %s' % (path, st))
        names = os.listdir(updir)
        check(names and all(re.match(r'^[0-9a-f]{32}(\.meta)?$', n) for n in names), names)
        check(set(os.listdir(srv.state_dir)) == before, (before, os.listdir(srv.state_dir)))
    finally:
        closeall(c)


def t07_non_local(srv):
    c = online(srv, 'alice', 'alice-pw', 'relay')
    try:
        # mod_test_echo sends the request as someone@echo.localhost (a domain
        # this server serves but does not host) and relays the answer back
        r = c.iq('set', 'echo.localhost',
                 "<relay xmlns='urn:magpie:test:echo' to='%s'><request xmlns='%s' "
                 "filename='x.txt' size='5'/></relay>" % (SVC, NS))
        check(r.get('type') == 'result', tostr(r))
        relay = child(r, 'relay', 'urn:magpie:test:echo')
        answer = child(relay, 'iq') if relay is not None else None
        check(answer is not None and answer.get('type') == 'error', tostr(r))
        check(error_condition(answer) == 'not-allowed', tostr(r))
        check(child(answer, 'slot') is None, tostr(r))
    finally:
        closeall(c)


def t08_quota_and_rate(srv):
    c = online(srv, 'carol', 'carol-pw', 'q')
    try:
        slot_of(request(c, 'one', MAX))
        purl, _, hdrs = slot_of(request(c, 'two', MAX))
        st = hreq('PUT', purl, b'x' * MAX, hdrs)
        check(st[0] == 201, ('PUT two', st))
        r = request(c, 'three', MAX)
        check(r.get('type') == 'error' and error_condition(r) == 'resource-constraint', tostr(r))
        check(child(r, 'error').get('type') == 'wait', tostr(r))
        # what fits still fits
        slot_of(request(c, 'small', QUOTA - 2 * MAX))
    finally:
        closeall(c)
    d = online(srv, 'dave', 'dave-pw', 'r')
    try:
        for i in range(RATE):
            slot_of(request(d, 'f%d' % i, 1))
        r = request(d, 'one-too-many', 1)
        check(error_condition(r) == 'resource-constraint', tostr(r))
        retry = child(child(r, 'error'), 'retry', NS)
        check(retry is not None and retry.get('stamp'), tostr(r))
    finally:
        closeall(d)


def t09_restart_and_delete(srv):
    c = online(srv, 'erin', 'erin-pw', 'p')
    try:
        purl, gurl, hdrs = slot_of(request(c, 'keep.txt', 4, 'text/plain'))
        check(put(purl, b'kept', hdrs, 'text/plain') == 201, 'PUT')
        purl, old_url, hdrs = slot_of(request(c, 'old.txt', 3))
        check(put(purl, b'old', hdrs) == 201, 'PUT old')
    finally:
        closeall(c)
    # old.txt was uploaded three days ago (expire_days = 2): gone after the restart
    meta = os.path.join(srv.state_dir, 'upload', old_url.split('/')[-2] + '.meta')
    with open(meta) as f:
        lines = f.read().split('\n')
    lines[4] = str(int(time.time()) - 3 * 86400)
    with open(meta, 'w') as f:
        f.write('\n'.join(lines))
    srv.restart()
    check(not os.path.exists(meta) and not os.path.exists(meta[:-5]),
          'expired file left on disk after the restart')
    st, h, body = hreq('GET', gurl)
    check(st == 200 and body == b'kept' and h.get('content-type') == 'text/plain', (st, h))
    check(hreq('GET', old_url)[0] == 404, 'an expired file is still served')
    p = srv.ctl('user', 'del', 'erin@localhost')
    check(p.returncode == 0, p.stderr)
    ok = False
    for _ in range(50):
        if hreq('GET', gurl)[0] == 404:
            ok = True
            break
        time.sleep(0.1)
    check(ok, 'the file outlived its account')
    sid = urllib.parse.urlsplit(gurl).path.split('/')[2]
    check(not any(n.startswith(sid) for n in os.listdir(os.path.join(srv.state_dir, 'upload'))),
          'files of the deleted account left on disk')


def t10_https(builddir):
    """An HTTPS listener: https:// URLs, PUT and GET (a file answer through
    the TLS filter) byte-identical."""
    with MagpieServer(builddir, workers=args.workers, http='tls',
                      modules=['disco', '{ name = "upload"; max_file_size = 3000000; }']) as s:
        s.add_user('alice', 'alice-pw')
        c = online(s, 'alice', 'alice-pw', 'tls')
        try:
            data = os.urandom(2500000)
            purl, gurl, hdrs = slot_of(request(c, 'big.bin', len(data)))
            check(gurl.startswith('https://localhost:%d/upload/' % s.http_port), gurl)
            check(put(purl, data, hdrs, 'application/octet-stream') == 201, 'PUT over TLS')
            st, h, body = hreq('GET', gurl)
            check(st == 200 and body == data, (st, len(body)))
            check(h.get('content-length') == str(len(data)), h)
        finally:
            closeall(c)
        reps = s.sanitizer_reports()
        check(not reps, reps)


def t11_no_listener(builddir):
    """Without an HTTP listener (the default configuration) the module loads
    and stays idle: no service in disco#items, nothing at its domain."""
    with MagpieServer(builddir, workers=args.workers, modules=['disco', 'upload']) as s:
        s.add_user('alice', 'alice-pw')
        check(s.wait_log(r'upload: no "http" listener configured'), 'no log line')
        c = online(s, 'alice', 'alice-pw', 'idle')
        try:
            r = c.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#items'/>")
            check(r.get('type') == 'result', tostr(r))
            check(SVC not in [i.get('jid') for i in child(r, 'query')], tostr(r))
            r = request(c, 'x.txt', 5)
            check(r.get('type') == 'error' and child(r, 'slot', NS) is None, tostr(r))
        finally:
            closeall(c)
        check(not s.sanitizer_reports(), s.sanitizer_reports())


def main():
    upload = ('{ name = "upload"; max_file_size = %d; quota = %d; slot_timeout = 3; expire_days = 2; '
              'rate_limit = %d; }' % (MAX, QUOTA, RATE))
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, http=True,
                           modules=['disco', 'ping', 'roster', upload,
                                    '{ name = "test_echo"; }'])
        srv.__enter__()
    except Exception as e:
        R.fail('76.00 upload_server_start', e)
        R.exit()
    try:
        for u in ('alice', 'carol', 'dave', 'erin'):
            srv.add_user(u, u + '-pw')
        R.run('76.01 upload_disco', t01_disco, srv, server=srv)
        R.run('76.02 upload_slixmpp_roundtrip', t02_slixmpp_roundtrip, srv, server=srv)
        R.run('76.03 upload_too_large', t03_too_large, srv, server=srv)
        R.run('76.04 upload_put_rules', t04_put_rules, srv, server=srv)
        R.run('76.05 upload_slot_expires', t05_expired, srv, server=srv)
        R.run('76.06 upload_path_traversal', t06_traversal, srv, server=srv)
        R.run('76.07 upload_non_local_refused', t07_non_local, srv, server=srv)
        R.run('76.08 upload_quota_and_rate', t08_quota_and_rate, srv, server=srv)
        R.run('76.09 upload_restart_and_account_deleted', t09_restart_and_delete, srv,
              server=srv)
    except Exception as e:
        R.fail('76.00 upload_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('76.99 upload_clean_shutdown', e)
    R.run('76.10 upload_https_large_file', t10_https, args.builddir)
    R.run('76.11 upload_idle_without_http_listener', t11_no_listener, args.builddir)
    R.exit()


main()
