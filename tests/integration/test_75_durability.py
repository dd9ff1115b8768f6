#!/usr/bin/python3
"""75: "acknowledged means durable", measured with SIGKILL (issue 7).

Two clients exchange a steady stream of numbered messages while magpied is
killed with SIGKILL at random moments (at least 10 kills per scenario) and
restarted. The sender uses XEP-0198 and counts as acknowledged every
message an <a h=/> from the server covered. Afterwards:
  - acknowledged but lost must be 0,
  - duplicates (a number delivered twice, live or from storage) must be 0,
  - reorders (a number delivered after a higher one, in one delivery
    stream) must be 0.
Scenarios:
  A. recipient offline: everything goes to offline storage, delivered at
     the recipient's next login;
  B. recipient online with MAM: what the recipient received live plus its
     archive must hold every acknowledged message, the archive in order
     and without duplicates;
  C. recipient resuming with XEP-0198: its TCP connection is cut twice per
     round and the session resumed (every message exactly once, in order);
     after each server kill it logs in again and catches up from MAM.
A and B run on SQLite and on a throwaway MariaDB (tests/mariadb.sh).
The sender does not resend unacknowledged messages after a kill, so any
duplicate is the server's."""

import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time

from common import (MagpieServer, RawClient, Results, Skip, parse_args, check, child, tostr, SRCDIR)
from magpie_fixture import free_port

args = parse_args()
R = Results()

NS_SM = 'urn:xmpp:sm:3'
NS_MAM = 'urn:xmpp:mam:2'
NS_RSM = 'http://jabber.org/protocol/rsm'
NS_FWD = 'urn:xmpp:forward:0'
KILLS = int(os.environ.get('MAGPIE_DURABILITY_KILLS', '10'))
MODULES = ['disco', 'ping', 'roster', '{ name = "offline"; quota = 100000; }', 'carbons',
           'mam', 'sm']
NUM_RE = re.compile(r'^n=(\d+)$')
MARIADB_SH = os.path.join(SRCDIR, 'tests', 'mariadb.sh')


def number(m):
    b = child(m, 'body')
    mo = NUM_RE.match(b.text or '') if b is not None else None
    return int(mo.group(1)) if mo else None


def sm_login(srv, user, res, presence=True, resume=False):
    c = RawClient(srv.c2s_port)
    c.login(user, user + '-pw', resource=res)
    c.send("<enable xmlns='%s'%s/>" % (NS_SM, " resume='true'" if resume else ''))
    en = c.wait_for('enabled', timeout=10)
    c.sm_id = en.get('id')
    c.h_in = 0          # stanzas received since <enabled/> (what we ack)
    if presence:
        c.presence()
        c.h_out_base = 1  # the presence counts in the server's h
    else:
        c.h_out_base = 0
    return c


class Sender:
    """alice: sends n=<k> to 'to', asks <r/> every 5 messages, records the
    highest number an <a/> covered, and which numbers got an error back."""

    def __init__(self, srv, to, first):
        self.c = sm_login(srv, 'alice', 'send', presence=False)
        self.to = to
        self.next = first
        self.sent = []       # numbers in sending order on this connection
        self.acked = 0       # how many of self.sent the server acknowledged
        self.errors = set()

    def _read(self, t):
        try:
            self.c.pump(t)
        except Exception:
            self.c.closed = True
        keep = []
        for el in self.c.backlog:
            name = el.tag.split('}')[-1]
            if name == 'a' and el.tag.startswith('{%s}' % NS_SM):
                self.acked = max(self.acked, int(el.get('h')) - self.c.h_out_base)
            elif name == 'r' and el.tag.startswith('{%s}' % NS_SM):
                self.c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.c.h_in), ignore_errors=True)
            else:
                self.c.h_in += 1
                if name == 'message' and el.get('type') == 'error':
                    mo = re.match(r'^d(\d+)$', el.get('id') or '')
                    if mo:
                        self.errors.add(int(mo.group(1)))
                keep.append(el)
        self.c.backlog = []

    def run_until_dead(self, deadline, tail=0.5):
        """Sends until the connection dies or deadline, then reads for
        tail seconds what is still coming (the last acks)."""
        while not self.c.closed and time.time() < deadline:
            k = self.next
            self.next += 1
            try:
                self.c.sock.sendall(("<message to='%s' type='chat' id='d%d'><body>n=%d</body>"
                                     "</message>" % (self.to, k, k)).encode())
                self.sent.append(k)
                if k % 5 == 0:
                    self.c.sock.sendall(("<r xmlns='%s'/>" % NS_SM).encode())
            except OSError:
                self.c.closed = True
                break
            self._read(0.003)
        # read what is left (the kill may already have happened)
        end = time.time() + tail
        while not self.c.closed and time.time() < end:
            self._read(0.05)

    def acked_numbers(self):
        return set(self.sent[:self.acked]) - self.errors


def killer(srv, delay):
    t = threading.Timer(delay, srv.kill)
    t.start()
    return t


def mam_all(c, with_jid):
    """Every archived message of c's account with with_jid, oldest first,
    paged with RSM (max 100)."""
    out, after, page = [], None, 0
    while True:
        page += 1
        check(page < 1000, 'MAM paging does not end')
        qid = 'q%d' % page
        rsm = "<max>100</max>" + ("<after>%s</after>" % after if after else '')
        iq_id = c.next_id()
        c.send("<iq type='set' id='%s'><query xmlns='%s' queryid='%s'>"
               "<x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE' type='hidden'><value>%s</value></field>"
               "<field var='with'><value>%s</value></field></x>"
               "<set xmlns='%s'>%s</set></query></iq>" % (iq_id, NS_MAM, qid, NS_MAM, with_jid, NS_RSM, rsm))
        res = c.wait_for('iq', lambda e: e.get('id') == iq_id, timeout=30)
        check(res.get('type') == 'result', 'MAM query failed: %s' % tostr(res))
        for el in list(c.backlog):
            r = child(el, 'result', NS_MAM)
            if el.tag.endswith('}message') and r is not None and r.get('queryid') == qid:
                c.backlog.remove(el)
                fwd = child(r, 'forwarded', NS_FWD)
                inner = fwd.find('{jabber:client}message') if fwd is not None else None
                check(inner is not None, 'MAM result without a forwarded message: %s' % tostr(el))
                out.append(number(inner))
        fin = child(res, 'fin', NS_MAM)
        check(fin is not None, 'MAM result without <fin/>: %s' % tostr(res))
        s = child(fin, 'set', NS_RSM)
        last = child(s, 'last', NS_RSM) if s is not None else None
        if fin.get('complete') in ('true', '1') or last is None:
            return [n for n in out if n is not None]
        after = last.text


def verdict(label, acked, streams):
    """streams: lists of delivered numbers, each one delivery stream in its
    order (the offline delivery, one connection's live messages, an
    archive). Every acknowledged number must be in one of them; within a
    stream no number may come twice or after a higher one."""
    seen, dups, reorders = set(), 0, 0
    for s in streams:
        dups += len(s) - len(set(s))
        reorders += sum(1 for a, b in zip(s, s[1:]) if b < a)
        seen |= set(s)
    lost = sorted(acked - seen)
    check(acked, '%s: no message was acknowledged at all' % label)
    check(not lost and not dups and not reorders,
          '%s: %d acknowledged, %d lost %s, %d duplicates, %d reorders'
          % (label, len(acked), len(lost), lost[:10], dups, reorders))
    return '%s: %d acknowledged, 0 lost, 0 duplicates, 0 reorders' % (label, len(acked))


def new_server(storage, mysql):
    srv = MagpieServer(args.builddir, modules=MODULES, storage=storage, mysql=mysql,
                       log_level='info')
    srv.start()
    srv.add_user('alice', 'alice-pw')
    srv.add_user('bob', 'bob-pw')
    return srv


def restart_after_kill(srv, t):
    t.join()
    srv.kill()
    srv.start()


def scenario_offline(storage='sqlite', mysql=None):
    srv = new_server(storage, mysql)
    try:
        acked, nxt = set(), 1
        for _ in range(KILLS):
            s = Sender(srv, 'bob@localhost', nxt)
            t = killer(srv, random.uniform(0.3, 1.2))
            s.run_until_dead(time.time() + 10)
            acked |= s.acked_numbers()
            nxt = s.next
            s.c.close()
            restart_after_kill(srv, t)
        bob = RawClient(srv.c2s_port)
        bob.login('bob', 'bob-pw', resource='r')
        bob.presence()
        got = []
        while True:
            m = bob.wait_for('message', timeout=5, raise_=False)
            if m is None:
                break
            got.append(number(m))
        bob.close()
        # a second login must not get any of them again
        bob = RawClient(srv.c2s_port)
        bob.login('bob', 'bob-pw', resource='r2')
        bob.presence()
        again = [number(m) for m in bob.drain(2.0) if m.tag.endswith('}message')]
        bob.close()
        check(not again, 'offline messages delivered again at the second login: %s' % again[:10])
        return verdict('offline/%s, %d kills' % (storage, KILLS), acked, [got])
    finally:
        srv.kill()
        reps = srv.sanitizer_reports()
        srv.cleanup()
        check(not reps, 'sanitizer report:\n' + '\n'.join(reps))


def scenario_mam(storage='sqlite', mysql=None):
    srv = new_server(storage, mysql)
    try:
        acked, nxt, live = set(), 1, []
        for _ in range(KILLS):
            bob = sm_login(srv, 'bob', 'live')
            got = []
            s = Sender(srv, 'bob@localhost', nxt)
            t = killer(srv, random.uniform(0.3, 1.2))
            deadline = time.time() + 10
            while not s.c.closed and time.time() < deadline:
                s.run_until_dead(time.time() + 0.05, tail=0)
                for el in bob.drain(0.001):
                    if el.tag.endswith('}message') and number(el) is not None:
                        got.append(number(el))
            live.append(got)
            acked |= s.acked_numbers()
            nxt = s.next
            s.c.close()
            bob.close()
            restart_after_kill(srv, t)
        bob = RawClient(srv.c2s_port)
        bob.login('bob', 'bob-pw', resource='mam')
        archive = mam_all(bob, 'alice@localhost')
        bob.close()
        return verdict('online+MAM/%s, %d kills' % (storage, KILLS), acked, [archive] + live)
    finally:
        srv.kill()
        reps = srv.sanitizer_reports()
        srv.cleanup()
        check(not reps, 'sanitizer report:\n' + '\n'.join(reps))


class Resumer:
    """bob with resumable SM: records numbers received, acks everything it
    handled when asked, and resumes after its connection is cut."""

    def __init__(self, srv):
        self.srv = srv
        self.c = sm_login(srv, 'bob', 'res', resume=True)
        self.got = [[]]

    def poll(self, t=0.001):
        try:
            self.c.pump(t)
        except Exception:
            self.c.closed = True
        for el in self.c.backlog:
            name = el.tag.split('}')[-1]
            if el.tag.startswith('{%s}' % NS_SM):
                if name == 'r':
                    self.c.send("<a xmlns='%s' h='%d'/>" % (NS_SM, self.c.h_in % 2**32),
                                ignore_errors=True)
                continue
            self.c.h_in += 1
            if name == 'message' and number(el) is not None:
                self.got[-1].append(number(el))
        self.c.backlog = []

    def cut_and_resume(self):
        """Closes the TCP connection without </stream> and resumes."""
        self.poll(0.01)
        h, prev = self.c.h_in, self.c.sm_id
        self.c.sock.close()
        c = RawClient(self.srv.c2s_port)
        c.open_stream()
        c.starttls()
        check(c.auth('bob', 'bob-pw'), 'authentication failed before resume')
        c.open_stream()
        c.send("<resume xmlns='%s' previd='%s' h='%d'/>" % (NS_SM, prev, h))
        r = c.wait_for(None, lambda e: local_name(e) in ('resumed', 'failed'), timeout=10)
        check(local_name(r) == 'resumed', 'resume refused: %s' % tostr(r))
        c.sm_id, c.h_in, c.h_out_base = prev, h, 0
        self.c = c

    def close(self):
        self.c.close()


def local_name(el):
    return el.tag.split('}')[-1]


def scenario_resume():
    srv = new_server('sqlite', None)
    try:
        acked, nxt, streams = set(), 1, []
        for _ in range(KILLS):
            bob = Resumer(srv)
            s = Sender(srv, 'bob@localhost/res', nxt)
            cuts = sorted(random.uniform(0.1, 0.9) for _ in range(2))
            t0 = time.time()
            t = killer(srv, random.uniform(1.0, 1.6))
            deadline = t0 + 10
            while not s.c.closed and time.time() < deadline:
                s.run_until_dead(time.time() + 0.05, tail=0)
                bob.poll()
                if cuts and time.time() - t0 > cuts[0]:
                    cuts.pop(0)
                    bob.cut_and_resume()
            check(not cuts, 'the server died before the connection cuts')
            streams.append(bob.got[0])
            acked |= s.acked_numbers()
            nxt = s.next
            s.c.close()
            bob.close()
            restart_after_kill(srv, t)
        c = RawClient(srv.c2s_port)
        c.login('bob', 'bob-pw', resource='mam')
        archive = mam_all(c, 'alice@localhost')
        c.close()
        # each round's live delivery (across its resumes) is one stream; the
        # archive fills in what a kill cut off
        return verdict('resume/sqlite, %d kills, %d resumes' % (KILLS, 2 * KILLS), acked,
                       [archive] + streams)
    finally:
        srv.kill()
        reps = srv.sanitizer_reports()
        srv.cleanup()
        check(not reps, 'sanitizer report:\n' + '\n'.join(reps))


def with_mariadb(fn):
    def run():
        if not os.path.exists(MARIADB_SH) or not (shutil.which('mariadbd') or os.path.exists('/usr/sbin/mariadbd')):
            raise Skip('MariaDB is not installed')
        d = tempfile.mkdtemp(prefix='mp75-mdb-')
        port = free_port()
        p = subprocess.run(['sh', MARIADB_SH, 'start', d, str(port)], capture_output=True, text=True,
                           env=dict(os.environ, PATH=os.environ.get('PATH', '') + ':/usr/sbin'))
        try:
            check(p.returncode == 0, 'tests/mariadb.sh start failed: %s%s' % (p.stdout, p.stderr))
            return fn('mysql', p.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(['sh', MARIADB_SH, 'stop', d], capture_output=True)
            shutil.rmtree(d, ignore_errors=True)
    return run


def main():
    R.run('75.01 offline_sigkill_sqlite', lambda: print('  ' + scenario_offline()))
    R.run('75.02 online_mam_sigkill_sqlite', lambda: print('  ' + scenario_mam()))
    R.run('75.03 resume_sigkill_sqlite', lambda: print('  ' + scenario_resume()))
    R.run('75.04 offline_sigkill_mariadb', lambda: print('  ' + with_mariadb(scenario_offline)()))
    R.run('75.05 online_mam_sigkill_mariadb', lambda: print('  ' + with_mariadb(scenario_mam)()))
    R.exit()


if __name__ == '__main__':
    main()
