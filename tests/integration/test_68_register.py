#!/usr/bin/python3
"""68: XEP-0077 in-band registration (mod_register, opt-in).

With the module loaded: the iq-register stream feature after STARTTLS; an
IQ get on the unauthenticated stream returns the fields (and a data form);
an IQ set creates an account that logs in at once with SCRAM (on the same
stream and on a new one); a taken name gets conflict; a bad or missing
username and a short or missing password get not-acceptable; anything but
a jabber:iq:register IQ before authentication still closes the stream; an
authenticated user gets <registered/>, changes the password (the old one
stops working) and cancels the account (every session ends, the login then
fails). Per-IP interval: a second registration from one address within the
interval gets resource-constraint. A real client (slixmpp's XEP-0077
plugin) registers too. Without the module: no feature, and
service-unavailable."""

import asyncio
import time

from common import (MagpieServer, RawClient, Results, parse_args, check, child, tostr, closeall,
                    error_condition, online, sync)

args = parse_args()
R = Results('[workers=%d]' % args.workers)

NS_REG = 'jabber:iq:register'
NS_FEAT = 'http://jabber.org/features/iq-register'
NS_DATA = 'jabber:x:data'
NS_STREAMS_ERR = 'urn:ietf:params:xml:ns:xmpp-streams'
BASE = ['disco', 'ping', 'roster', 'offline']


def esc(s):
    return s.replace('&', '&amp;').replace('<', '&lt;').replace("'", '&apos;')


def preauth(srv):
    """A client with STARTTLS done, not authenticated."""
    c = RawClient(srv.c2s_port)
    c.open_stream()
    c.starttls()
    return c


def register(c, user, password):
    fields = ''
    if user is not None:
        fields += '<username>%s</username>' % esc(user)
    if password is not None:
        fields += '<password>%s</password>' % esc(password)
    return c.iq('set', None, "<query xmlns='%s'>%s</query>" % (NS_REG, fields))


def check_error(r, cond, etype=None):
    """r is an IQ error with that condition (and error type)."""
    check(r.get('type') == 'error' and error_condition(r) == cond, tostr(r))
    if etype:
        check(child(r, 'error').get('type') == etype, tostr(r))


def can_login(srv, user, password):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        return c.auth(user, password, 'SCRAM-SHA-256')
    finally:
        c.close()


def t01_feature(srv):
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        f = child(c.features, 'register', NS_FEAT)
        check(f is not None, 'no iq-register feature: %s' % tostr(c.features))
    finally:
        c.close()


def t02_get_fields(srv):
    c = preauth(srv)
    try:
        r = c.iq('get', None, "<query xmlns='%s'/>" % NS_REG)
        check(r.get('type') == 'result', tostr(r))
        q = child(r, 'query', NS_REG)
        check(q is not None, tostr(r))
        check(child(q, 'username', NS_REG) is not None and child(q, 'password', NS_REG) is not None,
              'fields missing: %s' % tostr(r))
        check(child(q, 'registered', NS_REG) is None, tostr(r))
        x = child(q, 'x', NS_DATA)
        check(x is not None and x.get('type') == 'form', 'no data form: %s' % tostr(r))
        vars_ = {f.get('var'): f for f in x if f.get('var')}
        check(set(vars_) >= {'FORM_TYPE', 'username', 'password'}, 'form fields: %s' % tostr(x))
        ft = child(vars_['FORM_TYPE'], 'value')
        check(ft is not None and ft.text == NS_REG, tostr(x))
        check(vars_['password'].get('type') == 'text-private', tostr(x))
    finally:
        c.close()


def t03_register_then_login(srv):
    c = preauth(srv)
    try:
        r = register(c, 'newbie', 'newbie-secret')
        check(r.get('type') == 'result', 'registration failed: %s' % tostr(r))
        # the same stream authenticates as the new account
        check(c.auth('newbie', 'newbie-secret', 'SCRAM-SHA-256'), 'SASL on the same stream failed: %s'
              % c.sasl_failure)
        c.open_stream()
        jid = c.bind('here')
        check(jid == 'newbie@localhost/here', jid)
    finally:
        c.close()
    check(can_login(srv, 'newbie', 'newbie-secret'), 'a new connection cannot log in')
    check(not can_login(srv, 'newbie', 'wrong-secret'), 'a wrong password logs in')
    # a submitted data form works as well, and the name is nodeprep'd
    c = preauth(srv)
    try:
        r = c.iq('set', None, (
            "<query xmlns='%s'><x xmlns='%s' type='submit'>"
            "<field var='FORM_TYPE'><value>%s</value></field>"
            "<field var='username'><value>FormUser</value></field>"
            "<field var='password'><value>form-secret</value></field></x></query>")
            % (NS_REG, NS_DATA, NS_REG))
        check(r.get('type') == 'result', 'form registration failed: %s' % tostr(r))
    finally:
        c.close()
    check(can_login(srv, 'formuser', 'form-secret'), 'form-registered account cannot log in')


def t04_conflict(srv):
    srv.add_user('taken', 'taken-pw-1')
    c = preauth(srv)
    try:
        r = register(c, 'taken', 'another-secret')
        check_error(r, 'conflict', 'cancel')
        # case folds to the same account
        r = register(c, 'TAKEN', 'another-secret')
        check_error(r, 'conflict')
    finally:
        c.close()
    check(can_login(srv, 'taken', 'taken-pw-1'), 'the existing account was changed')
    check(not can_login(srv, 'taken', 'another-secret'), 'the password was overwritten')


def t05_not_acceptable(srv):
    c = preauth(srv)
    try:
        for user, pw in (('bad@name', 'long-enough'), ('', 'long-enough'), (None, 'long-enough'),
                         ('nopass', None), ('shortpw', 'abc'), ('sp ace', 'long-enough')):
            r = register(c, user, pw)
            check(r.get('type') == 'error' and error_condition(r) == 'not-acceptable',
                  '%r/%r: %s' % (user, pw, tostr(r)))
            check(child(r, 'error').get('type') == 'modify', tostr(r))
        # the stream is still usable afterwards
        r = register(c, 'okname', 'long-enough')
        check(r.get('type') == 'result', tostr(r))
    finally:
        c.close()
    check(not can_login(srv, 'shortpw', 'abc'), 'account with short password exists')


def t06_only_register_before_auth(srv):
    c = preauth(srv)
    try:
        c.send("<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>")
        check(c.wait_stream_end(10), 'stream not closed')
        check(c.stream_error == 'not-authorized', 'stream error: %s' % c.stream_error)
    finally:
        c.close()
    c = preauth(srv)
    try:
        c.send("<message to='taken@localhost'><body>hi</body></message>")
        check(c.wait_stream_end(10), 'stream not closed')
        check(c.stream_error == 'not-authorized', 'stream error: %s' % c.stream_error)
    finally:
        c.close()
    # removing an account without authenticating is refused
    c = preauth(srv)
    try:
        r = c.iq('set', None, "<query xmlns='%s'><remove/></query>" % NS_REG)
        check_error(r, 'not-authorized')
    finally:
        c.close()
    check(can_login(srv, 'taken', 'taken-pw-1'), 'account gone')


def t07_registered_and_password_change(srv):
    srv.add_user('changer', 'changer-old')
    c = online(srv, 'changer', 'changer-old', 'r')
    try:
        r = c.iq('get', None, "<query xmlns='%s'/>" % NS_REG)
        check(r.get('type') == 'result', tostr(r))
        q = child(r, 'query', NS_REG)
        check(child(q, 'registered', NS_REG) is not None, tostr(r))
        u = child(q, 'username', NS_REG)
        check(u is not None and u.text == 'changer', tostr(r))
        # someone else's name: refused
        r = c.iq('set', 'localhost', "<query xmlns='%s'><username>taken</username>"
                 "<password>hijacked-pw</password></query>" % NS_REG)
        check_error(r, 'not-allowed')
        r = c.iq('set', None, "<query xmlns='%s'><username>changer</username>"
                 "<password>x</password></query>" % NS_REG)
        check_error(r, 'not-acceptable')
        r = c.iq('set', 'localhost', "<query xmlns='%s'><username>changer</username>"
                 "<password>changer-new</password></query>" % NS_REG)
        check(r.get('type') == 'result', 'password change failed: %s' % tostr(r))
        sync(c)
    finally:
        closeall(c)
    check(can_login(srv, 'changer', 'changer-new'), 'new password does not work')
    check(not can_login(srv, 'changer', 'changer-old'), 'old password still works')
    check(can_login(srv, 'taken', 'taken-pw-1'), 'another account was changed')


def t08_cancel(srv):
    srv.add_user('leaver', 'leaver-pw')
    c1 = online(srv, 'leaver', 'leaver-pw', 'one')
    c2 = online(srv, 'leaver', 'leaver-pw', 'two')
    try:
        r = c1.iq('set', None, "<query xmlns='%s'><remove/></query>" % NS_REG)
        check(r.get('type') == 'result', 'remove failed: %s' % tostr(r))
        for c in (c1, c2):
            check(c.wait_stream_end(10), 'a session of the cancelled account was not closed')
            check(c.stream_error == 'not-authorized', 'stream error: %s' % c.stream_error)
    finally:
        closeall(c1, c2)
    check(not can_login(srv, 'leaver', 'leaver-pw'), 'the cancelled account still logs in')
    # and the name is free again
    c = preauth(srv)
    try:
        r = register(c, 'leaver', 'leaver-pw-2')
        check(r.get('type') == 'result', tostr(r))
    finally:
        c.close()
    check(can_login(srv, 'leaver', 'leaver-pw-2'), 're-registered account cannot log in')


def t09_slixmpp_registers(srv):
    import slixmpp

    class Reg(slixmpp.ClientXMPP):
        def __init__(self):
            super().__init__('slixreg@localhost', 'slix-secret')
            # (slixmpp's -PLUS uses tls-unique, which TLS 1.3 does not have)
            self['feature_mechanisms'].use_mechs = {'SCRAM-SHA-256'}
            self.register_plugin('xep_0077')
            self['xep_0077'].force_registration = True
            # slixmpp holds stanzas back until the session starts; XEP-0077
            # needs them before authentication
            self._always_send_everything = True
            self.outcome = asyncio.get_event_loop().create_future()
            self.add_event_handler('register', self.on_register)
            self.add_event_handler('session_start', self.on_start)
            self.add_event_handler('failed_all_auth', lambda _: self._done('auth failed'))
            self.add_event_handler('connection_failed', lambda e: self._done('connection: %s' % e))

        def _done(self, v):
            if not self.outcome.done():
                self.outcome.set_result(v)

        async def on_register(self, _):
            resp = self.Iq()
            resp['type'] = 'set'
            resp['register']['username'] = 'slixreg'
            resp['register']['password'] = 'slix-secret'
            try:
                await resp.send()
            except Exception as e:
                self._done('register error: %s' % e)

        def on_start(self, _):
            self._done('ok')

    async def run():
        c = Reg()
        c.enable_plaintext = False
        import ssl
        c.ssl_context.check_hostname = False
        c.ssl_context.verify_mode = ssl.CERT_NONE
        c.connect(('127.0.0.1', srv.c2s_port))
        try:
            return await asyncio.wait_for(c.outcome, 20)
        finally:
            c.disconnect()
            await asyncio.sleep(0.2)

    out = asyncio.run(run())
    check(out == 'ok', 'slixmpp: %s' % out)
    check(can_login(srv, 'slixreg', 'slix-secret'), 'slixmpp-registered account cannot log in')


def t10_disabled(srv):
    srv.add_user('plain', 'plain-pw')
    c = RawClient(srv.c2s_port)
    try:
        c.open_stream()
        c.starttls()
        check(child(c.features, 'register', NS_FEAT) is None,
              'feature advertised without the module: %s' % tostr(c.features))
        c.send("<iq type='get' id='g1'><query xmlns='%s'/></iq>" % NS_REG)
        check(c.wait_stream_end(10), 'pre-auth register IQ not refused')
        check(c.stream_error == 'not-authorized', 'stream error: %s' % c.stream_error)
    finally:
        c.close()
    c = online(srv, 'plain', 'plain-pw', 'r')
    try:
        for t in ('get', 'set'):
            payload = ("<query xmlns='%s'/>" % NS_REG if t == 'get' else
                       "<query xmlns='%s'><remove/></query>" % NS_REG)
            r = c.iq(t, None, payload)
            check_error(r, 'service-unavailable')
    finally:
        closeall(c)
    check(can_login(srv, 'plain', 'plain-pw'), 'account removed without the module')


def t11_rate_limit(srv):
    srv.add_user('occupied', 'occupied-pw')
    c = preauth(srv)
    try:
        # a refused attempt does not use up the address's turn
        check_error(register(c, 'occupied', 'another-secret'), 'conflict')
        r = register(c, 'first', 'first-secret')
        check(r.get('type') == 'result', tostr(r))
        r = register(c, 'second', 'second-secret')
        check_error(r, 'resource-constraint', 'wait')
    finally:
        c.close()
    # another connection from the same address is limited too
    c = preauth(srv)
    try:
        r = register(c, 'third', 'third-secret')
        check_error(r, 'resource-constraint')
    finally:
        c.close()
    check(can_login(srv, 'first', 'first-secret'), 'first account cannot log in')
    check(not can_login(srv, 'second', 'second-secret'), 'rate-limited account exists')


def t12_preauth_iq_counted_per_address(srv):
    """Each registration IQ before login takes a token of the address's
    connection rate (burst 3 here: the connection takes one)."""
    time.sleep(3.5)  # the bucket refills (1/s) from the fixture's start-up probes
    c = preauth(srv)
    try:
        answers = []
        for _ in range(4):
            r = c.iq('get', None, "<query xmlns='%s'/>" % NS_REG)
            answers.append(r.get('type') if r.get('type') == 'result' else error_condition(r))
        check(answers[:2] == ['result', 'result'], 'answers: %s' % answers)
        check('resource-constraint' in answers[2:], 'never limited: %s' % answers)
    finally:
        c.close()


def serve(name, modules, tests, limits=None):
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=modules, limits=limits)
        srv.__enter__()
    except Exception as e:
        R.fail('68.00 register_server_start_%s' % name, e)
        return
    try:
        for tname, fn in tests:
            R.run(tname, fn, srv, server=srv)
    finally:
        try:
            srv.__exit__(None, None, None)
        except Exception as e:
            R.fail('68.99 register_clean_shutdown_%s' % name, e)


def main():
    reg = '{ name = "register"; interval = 0; min_password_length = 6; }'
    serve('enabled', BASE + [reg], [
        ('68.01 register_feature_advertised', t01_feature),
        ('68.02 register_get_fields_and_form', t02_get_fields),
        ('68.03 register_then_scram_login', t03_register_then_login),
        ('68.04 register_conflict', t04_conflict),
        ('68.05 register_not_acceptable', t05_not_acceptable),
        ('68.06 register_only_register_iq_before_auth', t06_only_register_before_auth),
        ('68.07 register_registered_and_password_change', t07_registered_and_password_change),
        ('68.08 register_cancel_ends_sessions', t08_cancel),
        ('68.09 register_slixmpp_client', t09_slixmpp_registers),
    ])
    serve('disabled', BASE, [('68.10 register_disabled_service_unavailable', t10_disabled)])
    serve('limited', BASE + ['{ name = "register"; interval = 3600; }'],
          [('68.11 register_rate_limit_per_ip', t11_rate_limit)])
    serve('per-address', BASE + [reg],
          [('68.12 register_preauth_iq_counted_per_address', t12_preauth_iq_counted_per_address)],
          limits={'connection_rate_per_address': 1, 'connection_burst_per_address': 3})
    R.exit()


main()
