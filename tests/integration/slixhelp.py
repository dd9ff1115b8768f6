"""slixmpp helpers for the integration tests: a client that accepts the
self-signed certificate, is limited to one SASL mechanism and records the
mechanism it actually used, the stanzas it received and stream errors.

All coroutine helpers run on one asyncio loop per test (see run())."""

import asyncio
import logging
import os
import ssl
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))

import slixmpp  # noqa: E402

if os.environ.get('MAGPIE_TEST_VERBOSE', '') == '2':
    logging.basicConfig(level=logging.DEBUG)
else:
    logging.basicConfig(level=logging.CRITICAL)


class LoginFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    """ClientXMPP restricted to `mech`, with futures for the login outcome."""

    def __init__(self, jid, password, mech='SCRAM-SHA-256'):
        super().__init__(jid, password)
        self['feature_mechanisms'].use_mechs = {mech}
        self.register_plugin('xep_0030')
        self.register_plugin('xep_0199')
        self.ssl_context = ssl.create_default_context()
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.outcome = None
        self.mech_used = None
        self.auth_failure = None
        self.stream_errors = []
        self.messages = asyncio.Queue()
        self.presences = asyncio.Queue()
        self._done = asyncio.get_event_loop().create_future()
        self.add_event_handler('session_start', self._on_start)
        self.add_event_handler('auth_success', self._on_auth)
        self.add_event_handler('failed_auth', self._on_failed)
        self.add_event_handler('failed_all_auth', self._on_failed_all)
        self.add_event_handler('connection_failed', self._on_connfail)
        self.add_event_handler('disconnected', self._on_disconnected)
        self.add_event_handler('stream_error', lambda e: self.stream_errors.append(e['condition']))
        self.add_event_handler('message', lambda m: self.messages.put_nowait(m))
        self.add_event_handler('presence', lambda p: self.presences.put_nowait(p))

    def _finish(self, value):
        if not self._done.done():
            self._done.set_result(value)

    def _on_start(self, _):
        self._finish('ok')

    def _on_auth(self, _):
        self.mech_used = self['feature_mechanisms'].mech.name

    def _on_failed(self, stanza):
        self.auth_failure = stanza['condition']

    def _on_failed_all(self, _):
        self._finish('auth-failed')

    def _on_connfail(self, e):
        self._finish('connection-failed: %s' % (e,))

    def _on_disconnected(self, reason):
        self._finish('disconnected')


async def login(port, jid, password, direct_tls=False, mech='SCRAM-SHA-256',
                presence=True, timeout=20, plugins=()):
    """Connects and waits for session_start. Returns the Client; raises
    LoginFailed (with .client) otherwise. plugins: more slixmpp plugins
    to register first ('xep_0084', ...)."""
    c = Client(jid, password, mech)
    for p in plugins:
        c.register_plugin(p)
    if direct_tls:
        c.enable_direct_tls = True
        c.connect(('127.0.0.1', port), use_ssl=True, force_starttls=False)
    else:
        c.connect(('127.0.0.1', port), use_ssl=False, force_starttls=True)
    try:
        res = await asyncio.wait_for(asyncio.shield(c._done), timeout)
    except asyncio.TimeoutError:
        res = 'timeout'
    c.outcome = res
    if res != 'ok':
        try:
            c.abort()
        except Exception:
            pass
        e = LoginFailed('%s login: %s (sasl failure: %s, stream errors: %s)'
                        % (jid, res, c.auth_failure, c.stream_errors))
        e.client = c
        raise e
    if presence:
        c.send_presence()
    return c


async def next_message(c, timeout=10, pred=None):
    """The next received message (optionally matching pred)."""
    loop = asyncio.get_event_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise asyncio.TimeoutError('no message within %ss' % timeout)
        m = await asyncio.wait_for(c.messages.get(), left)
        if pred is None or pred(m):
            return m


async def close(*clients):
    """Closes the streams (</stream:stream>) and waits for the disconnects."""
    futs = []
    for c in clients:
        try:
            # capture the future now: slixmpp replaces c.disconnected once it fires
            futs.append((c, c.disconnect(wait=1)))
        except Exception:
            pass
    for c, f in futs:
        try:
            await asyncio.wait_for(f, 3)
        except Exception:
            try:
                c.abort()
            except Exception:
                pass


def run(coro_fn, *args, timeout=60, **kw):
    """Runs coro_fn(*args, **kw) on a fresh event loop (synchronously)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(*args, **kw), timeout))
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        except Exception:
            pass
        loop.close()
        asyncio.set_event_loop(None)
