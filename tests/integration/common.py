"""Shared helpers for tests/integration/test_*.py.

Each test script is run as:  /usr/bin/python3 test_NN_name.py BUILDDIR [--workers N]
and prints one 'PASS name' / 'FAIL name: reason' line per test."""

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'lib'))

from magpie_fixture import (  # noqa: E402,F401
    MagpieServer, RawClient, Results, Skip, XMPPError, ServerError, check, child,
    error_condition, local, ns, tostr, NS_CLIENT, NS_STANZAS, NS_STREAMS, SRCDIR)

PING = "<ping xmlns='urn:xmpp:ping'/>"


def parse_args(extra=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('builddir', nargs='?', default=os.environ.get('MAGPIE_BUILDDIR', SRCDIR))
    ap.add_argument('--workers', type=int, default=1)
    if extra:
        extra(ap)
    a = ap.parse_args()
    a.builddir = os.path.abspath(a.builddir)
    return a


def sync(c, domain='localhost'):
    """Round trip to the server: when it returns, everything c sent before
    has been processed by its session."""
    r = c.iq('get', domain, PING)
    check(r is not None, 'no answer to sync ping')
    return r


def online(srv, user, password, resource, priority=0, direct_tls=False, domain='localhost'):
    """A logged-in RawClient with initial presence sent and processed."""
    c = RawClient(srv.tls_port if direct_tls else srv.c2s_port, direct_tls=direct_tls, domain=domain)
    c.login(user, password, resource=resource, presence=priority)
    sync(c, domain)
    c.drain(0.05)
    return c


def no_message(c, timeout=1.0, pred=None):
    """Asserts c receives no <message/> (matching pred) within timeout, and
    that c is still connected and served: a dead or closed client receives
    nothing either, which must not pass for "nothing was delivered"."""
    no_stanza(c, 'message', timeout, pred)


def no_stanza(c, name, timeout=1.0, pred=None):
    """no_message for any element name ('iq', 'presence', ...)."""
    m = c.wait_for(name, pred, timeout=timeout, raise_=False)
    check(m is None, 'unexpected message: %s' % (tostr(m) if m is not None else ''))
    check(not c.closed and not c.stream_closed,
          'no message arrived, but the client is no longer connected (stream error %r)'
          % c.stream_error)
    try:
        sync(c, c.domain)
    except XMPPError as e:
        raise AssertionError('no message arrived, but the client does not get answers either: %s' % e)
    m = c.wait_for(name, pred, timeout=0, raise_=False)
    check(m is None, 'unexpected message: %s' % (tostr(m) if m is not None else ''))


def body_of(el):
    b = child(el, 'body')
    return None if b is None else b.text


def expect_error(c, name, cond, pred=None, timeout=10):
    """Waits for an error stanza <name type='error'> and checks its condition."""
    el = c.wait_for(name, lambda e: e.get('type') == 'error' and (pred is None or pred(e)),
                    timeout=timeout)
    got = error_condition(el)
    check(got == cond, 'expected %s, got %s: %s' % (cond, got, tostr(el)))
    return el


def closeall(*clients):
    for c in clients:
        if c is not None:
            try:
                c.end_stream()
                c.close()
            except Exception:
                pass


def wait_until(fn, timeout=5.0, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return True
        time.sleep(step)
    return fn()


def subscribe_both(x, xname, y, yname):
    """A mutual subscription between two online clients (mod_roster)."""
    xj, yj = xname + '@localhost', yname + '@localhost'
    for a, aj, b, bj in ((x, xj, y, yj), (y, yj, x, xj)):
        a.send("<presence to='%s' type='subscribe'/>" % bj)
        b.wait_for('presence', lambda e: e.get('type') == 'subscribe' and e.get('from') == aj)
        b.send("<presence to='%s' type='subscribed'/>" % aj)
        a.wait_for('presence', lambda e: e.get('type') == 'subscribed' and e.get('from') == bj)
