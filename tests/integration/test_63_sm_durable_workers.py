#!/usr/bin/python3
"""63: XEP-0198 "acknowledged means durable", and resumption across workers.

Durable: a client with stream management sends messages to an offline
user, each followed by <r/>; once the server's <a/> covers a message,
magpied is killed with SIGKILL; after a restart the recipient gets every
acknowledged message from offline storage, once, in order (mod_offline
defers the sender's acknowledgement until its store write committed).
Across workers (--workers 2): the client's new connection lands on the
other worker than its session (retried until it does; the log names the
workers): the session moves there, and a stream of messages a contact
keeps sending during the drop and the resume arrives complete, in order,
none twice (the old connection's part and the resumed one's together)."""

import re
import threading
import time

from common import Results, MagpieServer, parse_args, check, closeall, local, online, RawClient, Skip
from smhelp import pw, sm_login, resume, bodies, NS_SM

args = parse_args()
R = Results('[workers=%d]' % args.workers)
MODULES = ['disco', 'ping', 'roster', 'offline', 'csi',
           '{ name = "sm"; resume_timeout = 60; request_every = 1000; }']


def t_acked_is_durable(srv):
    sent = []
    for rnd in range(3):
        a = sm_login(srv, 'alice', pw('alice'), 'w%d' % rnd, resume=False, presence=None)
        base = a.request()
        for i in range(4):
            body = 'r%d-%d' % (rnd, i)
            a.message('olga@localhost', body)
            sent.append(body)
            a.send("<r xmlns='%s'/>" % NS_SM)
        # the <a/> covering the last message: everything before it is on disk
        a.wait_for('a', lambda e: int(e.get('h')) == base + 4, timeout=10)
        srv.kill()
        a.close()
        srv.start()
    c = RawClient(srv.c2s_port)
    try:
        c.login('olga', pw('olga'), resource='x', presence=0)
        got = bodies([e for e in c.drain(2.0) if local(e.tag) == 'message'])
        check(got == sent, 'after SIGKILLs the offline store holds %s, acknowledged were %s' % (got, sent))
    finally:
        closeall(c)


def attached_worker(srv, start):
    text = srv.log[start:]
    m = re.findall(r'attached on worker (\d+)', text)
    return int(m[-1]) if m else None


def bound_worker(srv, start, full):
    m = re.findall(r'bound %s on worker (\d+)' % re.escape(full), srv.log[start:])
    return int(m[-1]) if m else None


def t_cross_worker(srv):
    if args.workers < 2:
        raise Skip('needs --workers 2')
    b = online(srv, 'bob', pw('bob'), 'desk')
    mark = len(srv.log)
    a = sm_login(srv, 'alice', pw('alice'), 'mover', presence=0)
    worker = bound_worker(srv, mark, 'alice@localhost/mover')
    check(worker is not None, 'no bind line in the log')
    N = 300
    got = []
    moved = False
    cur = a
    stop = threading.Event()

    def sender():
        for i in range(N):
            b.message('alice@localhost/mover', 's%03d' % i)
            time.sleep(0.002)
        stop.set()

    t = threading.Thread(target=sender)
    try:
        t.start()
        for attempt in range(12):
            time.sleep(0.05)
            cur.drain(0.05)
            got += bodies(cur.got)
            cur.got = []
            h = cur.h
            cur.drop()
            mark = len(srv.log)
            nxt, el = resume(srv, 'alice', pw('alice'), cur.sm_id if cur is a else a.sm_id, h)
            nxt.sm_id = a.sm_id
            w = None
            for _ in range(50):
                w = attached_worker(srv, mark)
                if w is not None:
                    break
                time.sleep(0.05)
            check(w is not None, 'no attach line in the log')
            if w != worker:
                moved = True
            worker = w
            cur = nxt
            if moved and attempt >= 1:
                break
        t.join(30)
        deadline = time.time() + 10
        while time.time() < deadline and not (got + bodies(cur.got))[-1:] == ['s%03d' % (N - 1)]:
            cur.drain(0.2)
        got += bodies(cur.got)
        check(moved, 'the resume never landed on the other worker')
        want = ['s%03d' % i for i in range(N)]
        dup = [x for x in set(got) if got.count(x) > 1]
        check(not dup, 'delivered twice: %s' % sorted(dup)[:10])
        check(got == want, 'incomplete or out of order: %d of %d, first difference at %s' % (
            len(got), N, next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), len(got))))
    finally:
        stop.set()
        t.join(5)
        closeall(b, cur)


with MagpieServer(args.builddir, workers=args.workers, modules=MODULES) as srv:
    for u in ('alice', 'bob', 'olga'):
        srv.add_user(u, pw(u))
    R.run('63-1 a message covered by <a/> survives SIGKILL (offline store)', t_acked_is_durable, srv,
          server=srv)
    R.run('63-2 resume on the other worker: no loss, no duplicate, in order', t_cross_worker, srv,
          server=srv)
R.exit()
