#!/usr/bin/python3
"""12: authentication costs are off the event loop and throttled (issue 5).

12.01 a PBKDF2 storm (wrong PLAIN passwords for an account stored with
      1,000,000 iterations, and for unknown users, from several connections)
      does not delay a canary pair of logged-in users on the same worker
12.02 a full key-derivation queue refuses logins with temporary-auth-failure
12.03 a failed channel-binding check on -PLUS is not a failed password
12.04 after auth_failures_free failures, failure answers come later and
      later (per address and per account), nothing is parsed meanwhile, the
      stream still closes after 5 failures, and the right password still
      logs in at once
12.05 the counters show in magpiectl status

Run:  /usr/bin/python3 test_12_auth_guard.py BUILDDIR [--workers 1]
      [--baseline]  only 12.01, with a configuration an older magpied
                    accepts (to show the storm test fails without the pool)
"""

import threading
import time

from common import (MagpieServer, Results, RawClient, parse_args, check, closeall,
                    online, sync, tostr, body_of)

args = parse_args(lambda ap: ap.add_argument('--baseline', action='store_true'))
R = Results('[workers=%d]' % args.workers)

HIGH_ITERATIONS = 1000000   # ~0.7 s of PBKDF2-SHA-256 per PLAIN attempt (idle machine)
STORM_SECONDS = 8           # at least; longer until MIN_STORM_ANSWERS came back
STORM_MAX_SECONDS = 60
MIN_STORM_ANSWERS = 4
CANARY_P99_MS = 100


def status(srv):
    """magpiectl status as a dict of name -> int (where it is a number)."""
    p = srv.ctl('status', check=True)
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                out[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return out


def plain_attempt(c, user, password):
    """One PLAIN attempt on an open, TLS-protected stream. Returns
    (ok, condition, seconds until the answer)."""
    t0 = time.time()
    ok = c.auth(user, password, 'PLAIN')
    return ok, c.sasl_failure, time.time() - t0


def tls_stream(srv, timeout=30):
    c = RawClient(srv.c2s_port, timeout=timeout)
    c.open_stream()
    c.starttls()
    return c


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


# ---------------------------------------------------------------------------
# 12.01 the storm

class Storm:
    """Threads sending wrong PLAIN passwords as fast as the server answers."""

    def __init__(self, srv, users, per_user):
        self.srv = srv
        self.stop = threading.Event()
        self.answers = 0
        self.conditions = {}
        self.errors = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(u, i), daemon=True)
                        for u in users for i in range(per_user)]

    def run(self, user, i):
        n = 0
        while not self.stop.is_set():
            c = None
            try:
                c = tls_stream(self.srv)
                for _ in range(4):   # under MAX_SASL_FAILURES (5) per connection
                    if self.stop.is_set():
                        break
                    n += 1
                    ok, cond, _ = plain_attempt(c, user, 'wrong-%d-%d' % (i, n))
                    with self.lock:
                        self.answers += 1
                        self.conditions[cond] = self.conditions.get(cond, 0) + 1
                    if ok:
                        self.errors.append('wrong password accepted for %s' % user)
            except Exception as e:   # timeouts while the loop is stalled count too
                if not self.stop.is_set():
                    with self.lock:
                        self.errors.append('%s: %s' % (type(e).__name__, e))
            finally:
                closeall(c)

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def t01_pbkdf2_storm(srv):
    a = online(srv, 'alice', 'alice-pw', 'canary')
    b = online(srv, 'bob', 'bob-pw', 'canary')
    # the storm's target: credentials stored with a high iteration count
    srv.security['scram_iterations'] = HIGH_ITERATIONS
    srv.write_config()        # magpiectl reads it; the running server does not
    srv.add_user('victim', 'victim-pw')
    storm = Storm(srv, ['victim', 'nosuchuser'], 3)
    lat = []
    stalled = False
    try:
        # warm up: the canary works before the storm
        for i in range(5):
            mid = 'warm-%d' % i
            a.message('bob@localhost/canary', 'warm', id_=mid)
            b.wait_for('message', lambda e, mid=mid: e.get('id') == mid, timeout=10)
        storm.start()
        time.sleep(0.5)       # let the derivations start
        start = time.time()
        n = 0
        # the storm must really have run: keep measuring until enough wrong
        # passwords were answered (a loaded machine derives slowly)
        while time.time() < start + STORM_MAX_SECONDS and \
                (time.time() < start + STORM_SECONDS or storm.answers < MIN_STORM_ANSWERS):
            n += 1
            mid = 'canary-%d' % n
            t0 = time.time()
            a.message('bob@localhost/canary', 'ping %d' % n, id_=mid)
            m = b.wait_for('message', lambda e, mid=mid: e.get('id') == mid, timeout=30,
                           raise_=False)
            lat.append((time.time() - t0) * 1000.0)
            if m is None:
                stalled = True   # 30 s without the message: the worker is stuck
                break
            check(body_of(m) == 'ping %d' % n, tostr(m))
            time.sleep(0.02)
    finally:
        storm.finish()
        closeall(a, b)
    p50, p99, mx = percentile(lat, 50), percentile(lat, 99), max(lat)
    print('    canary: %d round trips during the storm, p50 %.1f ms, p99 %.1f ms, max %.1f ms; '
          'storm: %d failure answers %s' % (len(lat), p50, p99, mx, storm.answers,
                                            storm.conditions), flush=True)
    check(not stalled, 'a canary message took over 30 s: the worker is stuck in key derivation')
    check(storm.answers >= MIN_STORM_ANSWERS, 'the storm got only %d answers (%s)'
          % (storm.answers, storm.errors[:3]))
    check(not [e for e in storm.errors if 'accepted' in e], storm.errors)
    check(p99 < CANARY_P99_MS, 'canary p99 %.1f ms >= %d ms (max %.1f ms): key derivation '
          'blocks the worker' % (p99, CANARY_P99_MS, mx))
    # the wrong password is an authentication failure, not some other error
    check(storm.conditions.get('not-authorized', 0) >= MIN_STORM_ANSWERS,
          'wrong passwords not answered not-authorized: %s' % storm.conditions)
    # and the right password still works
    c = tls_stream(srv)
    try:
        ok, cond, dt = plain_attempt(c, 'victim', 'victim-pw')
        check(ok, 'victim login failed after the storm: %s' % cond)
    finally:
        closeall(c)


# ---------------------------------------------------------------------------
# 12.02 bounded queue

def t02_pool_full(srv):
    # auth_threads = 1, auth_queue = 1: one derivation runs, one waits
    clients = [tls_stream(srv) for _ in range(5)]
    try:
        for c in clients:
            c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
                   % __import__('base64').b64encode(b'\0victim\0nope').decode())
        conds = []
        for c in clients:
            el = c.wait_for('failure', timeout=30)
            conds.append([x.tag.rsplit('}', 1)[-1] for x in el][0])
    finally:
        closeall(*clients)
    check('temporary-auth-failure' in conds, 'no login refused with a full queue: %s' % conds)
    check('not-authorized' in conds, 'no login verified at all: %s' % conds)
    st = status(srv)
    check(st.get('auth_pool_rejected', 0) >= 1, 'auth_pool_rejected not counted: %s' % st)
    check('auth_pool_queued' in st, 'auth_pool_queued missing from status')


# ---------------------------------------------------------------------------
# 12.03 - 12.05 throttling (auth_failures_free 2, auth_delay_max 4)

FREE = 2
DELAY_MAX = 4


def t03_channel_binding_not_counted(srv):
    before = status(srv)
    for i in range(FREE + 3):
        c = tls_stream(srv)
        try:
            t0 = time.time()
            ok = c.auth('erin', 'erin-pw', 'SCRAM-SHA-256-PLUS', cb_name='tls-server-end-point',
                        cb_data=b'\x00' * 32)
            dt = time.time() - t0
            check(not ok and c.sasl_failure == 'not-authorized',
                  'tampered binding: %s %s' % (ok, c.sasl_failure))
            check(dt < 0.8, 'binding failure %d answered after %.2f s' % (i + 1, dt))
        finally:
            closeall(c)
    after = status(srv)
    check(after.get('auth_delayed', 0) == before.get('auth_delayed', 0), 'delays counted')
    check(after.get('auth_throttled_addresses', 0) == 0, after)
    check(after.get('auth_throttled_accounts', 0) == 0, after)
    # the right password (with the right binding) works at once
    c = tls_stream(srv)
    try:
        check(c.auth('erin', 'erin-pw', 'SCRAM-SHA-256-PLUS'), 'erin -PLUS login failed')
    finally:
        closeall(c)


def t04_progressive_delays(srv):
    c = tls_stream(srv)
    times = []
    try:
        # one connection: failures 1..2 free, then 1 s, 2 s; the 5th closes
        for i in range(4):
            ok, cond, dt = plain_attempt(c, 'dave', 'wrong-%d' % i)
            check(not ok and cond == 'not-authorized', 'attempt %d: %s %s' % (i + 1, ok, cond))
            times.append(dt)
        st = status(srv)
        check(st.get('auth_throttled_addresses', 0) >= 1, 'address not throttled: %s' % st)
        check(st.get('auth_throttled_accounts', 0) >= 1, 'account not throttled: %s' % st)
        ok, cond, dt = plain_attempt(c, 'dave', 'wrong-4')
        check(not ok and cond == 'not-authorized', 'attempt 5: %s %s' % (ok, cond))
        times.append(dt)
        check(c.wait_stream_end(10), 'stream not closed after 5 failures')
        check(c.stream_error == 'not-authorized', 'stream error %s' % c.stream_error)
    finally:
        closeall(c)
    print('    failure answers after: %s s' % ', '.join('%.2f' % t for t in times), flush=True)
    check(times[0] < 0.8 and times[1] < 0.8, 'free failures delayed: %s' % times)
    check(0.9 <= times[2] < 1.8, 'third failure not delayed ~1 s: %s' % times)
    check(1.9 <= times[3] < 2.8, 'fourth failure not delayed ~2 s: %s' % times)
    check(3.9 <= times[4] < 4.8, 'fifth failure not delayed ~4 s (cap): %s' % times)

    # nothing is parsed during the delay: a pipelined second <auth/> (the
    # right password) is answered after the delayed failure, in order
    c = tls_stream(srv)
    try:
        b64 = __import__('base64').b64encode
        t0 = time.time()
        c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
               "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>%s</auth>"
               % (b64(b'\0dave\0wrong-5').decode(), b64(b'\0dave\0dave-pw').decode()))
        first = c.wait_for(None, lambda e: e.tag.endswith('}failure') or e.tag.endswith('}success'),
                           timeout=15)
        t1 = time.time() - t0
        second = c.wait_for(None, lambda e: e.tag.endswith('}failure') or e.tag.endswith('}success'),
                            timeout=15)
        check(first.tag.endswith('}failure'), 'first answer %s' % tostr(first))
        check(t1 >= 3.9, 'pipelined failure answered after %.2f s, not delayed' % t1)
        check(second.tag.endswith('}success'), 'right password after a delayed failure: %s'
              % tostr(second))
    finally:
        closeall(c)

    # the success reset the account, not the address: another account from
    # this address is still delayed; dave from here only by the address
    st = status(srv)
    check(st.get('auth_throttled_accounts', 0) == 0, 'account count not reset: %s' % st)
    check(st.get('auth_throttled_addresses', 0) >= 1, 'address count reset: %s' % st)
    c = tls_stream(srv)
    try:
        ok, cond, dt = plain_attempt(c, 'nosuchuser', 'x')
        check(not ok and cond == 'not-authorized', '%s %s' % (ok, cond))
        check(dt >= 3.9, 'throttled address answered after %.2f s' % dt)
        # the right password logs in at once even from a throttled address
        ok, cond, dt = plain_attempt(c, 'dave', 'dave-pw')
        check(ok, 'dave login failed: %s' % cond)
        check(dt < 0.8, 'a success was delayed %.2f s' % dt)
        c.open_stream()
        c.bind('after')
        sync(c)
    finally:
        closeall(c)


def t05_status_counters(srv):
    st = status(srv)
    for k in ('auth_delayed', 'auth_throttled_addresses', 'auth_throttled_accounts',
              'auth_pool_queued', 'auth_pool_rejected'):
        check(k in st, '%s missing from magpiectl status: %s' % (k, sorted(st)))
    check(st['auth_delayed'] >= 4, 'auth_delayed %d' % st['auth_delayed'])
    check(st['auth_failures'] >= 9, 'auth_failures %d' % st.get('auth_failures', -1))


def server(**security):
    srv = MagpieServer(args.builddir, workers=args.workers)
    if args.baseline:
        srv.security = {}     # an older magpied knows none of the auth_* keys
    srv.security.update(security)
    srv.write_config()
    srv.__enter__()
    return srv


def with_server(prefix, tests, users, **security):
    try:
        srv = server(**security)
    except Exception as e:
        R.fail('%s server_start' % prefix, e)
        return
    try:
        for u, pw in users:
            srv.add_user(u, pw)
        for name, fn in tests:
            R.run('%s %s' % (name, fn.__name__.split('_', 1)[1]), fn, srv, server=srv)
    except Exception as e:
        R.fail('%s setup' % prefix, e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('%s clean_shutdown' % prefix, e)


def main():
    with_server('12.01', [('12.01', t01_pbkdf2_storm)],
                [('alice', 'alice-pw'), ('bob', 'bob-pw')])
    if args.baseline:
        R.exit()
    with_server('12.02', [('12.02', t02_pool_full)], [('victim', 'victim-pw')],
                auth_threads=1, auth_queue=1, scram_iterations=HIGH_ITERATIONS)
    with_server('12.03', [('12.03', t03_channel_binding_not_counted),
                          ('12.04', t04_progressive_delays),
                          ('12.05', t05_status_counters)],
                [('dave', 'dave-pw'), ('erin', 'erin-pw')],
                auth_failures_free=FREE, auth_delay_max=DELAY_MAX)
    R.exit()


main()
