"""Shared set-up for the gateway tests (test_40..49): a magpied with
mod_gateway on a free port, device provisioning through magpiectl, and
helpers to talk to a device's owner."""

import http.client
import http.server
import json
import os
import struct
import subprocess
import threading
import time

from common import MagpieServer, check, child, tostr
from magpie_fixture import free_port
import mgwproto as P

GW_DOMAIN = 'devices.localhost'
NS_GW = 'urn:x-magpie:gateway:0'
NS_RECEIPTS = 'urn:xmpp:receipts'


def gateway_server(args, heartbeat=30, extra='', port=None, **kw):
    port = port or free_port()
    mod = ('{ name = "gateway"; port = %d; heartbeat = %d; admins = "admin@localhost"; %s }'
           % (port, heartbeat, extra))
    srv = MagpieServer(args.builddir, workers=args.workers, modules=['disco', 'ping', mod], **kw)
    srv.gw_port = port
    return srv


def provision(srv, dev, *owners):
    """Provisions dev with owners; returns its secret (bytes)."""
    cmd = ['device', 'add', '%s@%s' % (dev, GW_DOMAIN)]
    for o in owners:
        cmd += ['--owner', o]
    p = srv.ctl(*cmd, check=True)
    parts = p.stdout.split()
    check(parts[0] == '%s@%s' % (dev, GW_DOMAIN), p.stdout)
    return bytes.fromhex(parts[1])


def device(srv, dev, secret):
    """A RawDevice logged in."""
    d = P.RawDevice(srv.gw_port, dev, secret)
    d.login()
    return d


def send_command(c, dev, body, id_, receipt=True, ttl=None):
    extra = ''
    if receipt:
        extra += "<request xmlns='urn:xmpp:receipts'/>"
    if ttl is not None:
        extra += "<command xmlns='%s' ttl='%d'/>" % (NS_GW, ttl)
    c.send("<message to='%s@%s' id='%s' type='chat'><body>%s</body>%s</message>"
           % (dev, GW_DOMAIN, id_, body, extra))


def wait_accepted(c, id_, timeout=10):
    m = c.wait_for('message', lambda e: child(e, 'accepted', NS_GW) is not None and
                   child(e, 'accepted', NS_GW).get('id') == id_, timeout=timeout)
    return int(child(m, 'accepted', NS_GW).get('command'))


def wait_receipt(c, id_, timeout=10):
    return c.wait_for('message', lambda e: child(e, 'received', NS_RECEIPTS) is not None and
                      child(e, 'received', NS_RECEIPTS).get('id') == id_, timeout=timeout)


def ack_frame(mid, result=0):
    return P.frame(P.ACK, struct.pack('>IB', mid, result))


def dump(el):
    return tostr(el) if el is not None else 'None'


# ---- the HTTP trigger API (test_45..49)

TOKEN = 'tok-0123456789abcdef'
HKEY = 'hmac-key-for-tests'


def request(srv, method, path, body=None, token=TOKEN, headers=None):
    """(status, parsed JSON or raw text, headers) of one request."""
    c = http.client.HTTPConnection('127.0.0.1', srv.http_port, timeout=10)
    h = dict(headers or {})
    if token:
        h['Authorization'] = 'Bearer ' + token
    if body is not None and not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if body is not None:
        h['Content-Type'] = 'application/json'
    c.request(method, path, body=body, headers=h)
    r = c.getresponse()
    data = r.read().decode()
    c.close()
    try:
        data = json.loads(data)
    except ValueError:
        pass
    return r.status, data, dict(r.getheaders())


def post(srv, dev, body, **kw):
    return request(srv, 'POST', '/gateway/v1/devices/%s/commands' % dev, body, **kw)


def status(srv, cid):
    st, d, _ = request(srv, 'GET', '/gateway/v1/commands/%s' % cid)
    check(st == 200, (st, d))
    return d


class Sim:
    """sdk/sim/mgw-sim (the device simulator on the SDK) in the background,
    for the devices [(id, secret)]; .lines collects its output."""

    def __init__(self, srv, devices, *extra):
        path = os.path.join(srv.tmp, 'devices-%d.txt' % id(self))
        with open(path, 'w') as f:
            for dev, secret in devices:
                f.write('%s %s\n' % (dev, secret.hex()))
        sim = os.path.join(srv.builddir, 'sdk', 'sim', 'mgw-sim')
        self.p = subprocess.Popen([sim, '--port', str(srv.gw_port), '--devices', path]
                                  + [str(e) for e in extra], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=srv._env())
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line.strip())

    def wait(self, pred, count=1, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len([l for l in self.lines if pred(l)]) >= count:
                return
            time.sleep(0.02)
        raise AssertionError('simulator: expected %d matching lines, got %s' % (count, self.lines[-20:]))

    def count(self, prefix):
        return len([l for l in self.lines if l.startswith(prefix)])

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        err = self.p.stderr.read()
        check('runtime error' not in err and 'Sanitizer' not in err, err)


# ---- the fallback webhook's receiver (test_46, test_48)

class Receiver:
    """Records every POST; answers fail_first times 500, then 200."""

    def __init__(self):
        self.posts = []
        self.fail = {}
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get('Content-Length', 0))
                body = self.rfile.read(n)
                rec.posts.append((self.path, dict(self.headers), body))
                doc = json.loads(body)
                left = rec.fail.get(doc.get('id'), 0)
                if left:
                    rec.fail[doc['id']] = left - 1
                self.send_response(500 if left else 200)
                self.send_header('Content-Length', '0')
                self.end_headers()

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.srv = http.server.ThreadingHTTPServer(('127.0.0.1', self.port), H)
        threading.Thread(target=self.srv.serve_forever, daemon=True).start()

    def for_id(self, cid):
        return [p for p in self.posts if json.loads(p[2]).get('id') == cid]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def wait_posts(rx, cid, n, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if len(rx.for_id(cid)) >= n:
            return rx.for_id(cid)
        time.sleep(0.05)
    raise AssertionError('expected %d webhook POSTs for %s, got %d' % (n, cid, len(rx.for_id(cid))))
