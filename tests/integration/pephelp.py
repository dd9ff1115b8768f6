"""Helpers for the PEP tests (test_50..54): raw-client publish/items,
presence subscriptions, and a client side of XEP-0115 caps (the
verification string computed here, independently of the server)."""

import base64
import hashlib
from xml.sax.saxutils import quoteattr

from common import RawClient, check, child, error_condition, tostr, sync

NS_PS = 'http://jabber.org/protocol/pubsub'
NS_OWNER = NS_PS + '#owner'
NS_EVENT = NS_PS + '#event'
NS_ERRORS = NS_PS + '#errors'
NS_PUBOPTS = NS_PS + '#publish-options'
NS_CAPS = 'http://jabber.org/protocol/caps'
NS_INFO = 'http://jabber.org/protocol/disco#info'
NS_ITEMS = 'http://jabber.org/protocol/disco#items'
NS_DATA = 'jabber:x:data'


def pw(u):
    return u + '-pw'


def login(srv, user, res, presence=True, caps=None):
    """A logged-in raw client; caps: a Caps to announce (its disco#info
    query is answered when it comes)."""
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    if presence:
        if caps is not None:
            c.send('<presence>%s</presence>' % caps.element())
        else:
            c.presence()
    sync(c)
    return c


def handshake(x, xname, y, yname):
    """x subscribes to y's presence and y approves."""
    xj, yj = xname + '@localhost', yname + '@localhost'
    x.send("<presence to='%s' type='subscribe'/>" % yj)
    y.wait_for('presence', lambda e: e.get('type') == 'subscribe' and e.get('from') == xj, timeout=5)
    y.send("<presence to='%s' type='subscribed'/>" % xj)
    x.wait_for('presence', lambda e: e.get('type') == 'subscribed' and e.get('from') == yj, timeout=5)
    sync(x)
    sync(y)


def form(form_type, fields, type_='submit'):
    out = "<x xmlns='%s' type='%s'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % (
        NS_DATA, type_, form_type)
    for var, val in fields.items():
        out += '<field var=%s><value>%s</value></field>' % (quoteattr(var), val)
    return out + '</x>'


def publish(c, node, payload, item_id=None, options=None, to=None):
    item = '<item%s>%s</item>' % (' id=%s' % quoteattr(item_id) if item_id else '', payload)
    po = ''
    if options is not None:
        po = '<publish-options>%s</publish-options>' % form(NS_PUBOPTS, options)
    return c.iq('set', to, "<pubsub xmlns='%s'><publish node=%s>%s</publish>%s</pubsub>"
                % (NS_PS, quoteattr(node), item, po))


def published_ok(r):
    check(r.get('type') == 'result', 'publish failed: %s' % tostr(r))
    it = child(child(child(r, 'pubsub', NS_PS), 'publish', NS_PS), 'item', NS_PS)
    check(it is not None and it.get('id'), 'no item id in the answer: %s' % tostr(r))
    return it.get('id')


def items(c, owner, node, max_items=None, ids=None):
    attrs = ' max_items=%s' % quoteattr(str(max_items)) if max_items is not None else ''
    inner = ''.join("<item id=%s/>" % quoteattr(i) for i in (ids or ()))
    return c.iq('get', owner, "<pubsub xmlns='%s'><items node=%s%s>%s</items></pubsub>"
                % (NS_PS, quoteattr(node), attrs, inner))


def item_list(r):
    """[(id, payload element)] of an items result, in document order."""
    check(r.get('type') == 'result', 'items failed: %s' % tostr(r))
    its = child(child(r, 'pubsub', NS_PS), 'items', NS_PS)
    check(its is not None, tostr(r))
    return [(i.get('id'), (list(i) or [None])[0]) for i in its if i.tag == '{%s}item' % NS_PS]


def app_error(r):
    """(condition, pubsub#errors child local name or None)."""
    err = child(r, 'error')
    app = None
    if err is not None:
        for e in err:
            if e.tag.startswith('{%s}' % NS_ERRORS):
                app = e.tag.split('}', 1)[1]
    return error_condition(r), app


def owner_iq(c, type_, inner, to=None):
    return c.iq(type_, to, "<pubsub xmlns='%s'>%s</pubsub>" % (NS_OWNER, inner))


def is_event(frm, node, kind='items'):
    """Predicate: a headline event message from frm about node."""
    def pred(m):
        ev = child(m, 'event', NS_EVENT)
        if ev is None or m.get('from') != frm:
            return False
        el = child(ev, kind, NS_EVENT)
        return el is not None and el.get('node') == node
    return pred


def event_items(m):
    its = child(child(m, 'event', NS_EVENT), 'items', NS_EVENT)
    return [(i.get('id'), (list(i) or [None])[0]) for i in its if i.tag == '{%s}item' % NS_EVENT]


class Caps:
    """A client's disco#info and its XEP-0115 §5.1 ver (SHA-1)."""

    def __init__(self, features, identities=(('client', 'pc', None, 'PepTest'),), node='urn:test:client',
                 forms=()):
        self.features = list(features)
        self.identities = list(identities)
        self.node = node
        self.forms = list(forms)  # [(FORM_TYPE, {var: [values]})]
        self.ver = self.compute()

    def compute(self):
        s = ''
        for cat, typ, lang, name in sorted(self.identities, key=lambda i: (i[0], i[1], i[2] or '', i[3] or '')):
            s += '%s/%s/%s/%s<' % (cat, typ, lang or '', name or '')
        for f in sorted(self.features):
            s += f + '<'
        for ft, fields in sorted(self.forms, key=lambda f: f[0]):
            s += ft + '<'
            for var in sorted(fields):
                s += var + '<'
                for v in sorted(fields[var]):
                    s += v + '<'
        return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()

    def element(self, ver=None):
        return "<c xmlns='%s' hash='sha-1' node=%s ver=%s/>" % (NS_CAPS, quoteattr(self.node),
                                                                quoteattr(ver or self.ver))

    def query(self, node_attr):
        q = "<query xmlns='%s' node=%s>" % (NS_INFO, quoteattr(node_attr))
        for cat, typ, lang, name in self.identities:
            q += '<identity category=%s type=%s%s%s/>' % (
                quoteattr(cat), quoteattr(typ), ' xml:lang=%s' % quoteattr(lang) if lang else '',
                ' name=%s' % quoteattr(name) if name else '')
        for f in self.features:
            q += '<feature var=%s/>' % quoteattr(f)
        for ft, fields in self.forms:
            q += "<x xmlns='%s' type='result'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % (
                NS_DATA, ft)
            for var, vals in fields.items():
                q += '<field var=%s>%s</field>' % (quoteattr(var), ''.join('<value>%s</value>' % v for v in vals))
            q += '</x>'
        return q + '</query>'


def caps_query(c, timeout=5, raise_=True):
    """The server's disco#info to c about its caps node, or None."""
    return c.wait_for('iq', lambda e: e.get('type') == 'get' and child(e, 'query', NS_INFO) is not None,
                      timeout=timeout, raise_=raise_)


def answer_caps(c, q, caps):
    """Answers the server's disco#info q with caps' features."""
    node = child(q, 'query', NS_INFO).get('node')
    check(node == '%s#%s' % (caps.node, caps.ver), 'asked for the wrong node: %s' % tostr(q))
    c.send("<iq type='result' id=%s to=%s>%s</iq>" % (quoteattr(q.get('id')), quoteattr(q.get('from')),
                                                      caps.query(node)))


def login_caps(srv, user, res, caps, expect_query=True):
    """Logs in announcing caps; answers the server's disco#info if it asks
    (expect_query: it must ask; False: it must not; None: either)."""
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    c.send('<presence>%s</presence>' % caps.element())
    q = caps_query(c, timeout=5 if expect_query else 1.5, raise_=False)
    if expect_query is True:
        check(q is not None, 'the server did not ask %s for its caps' % user)
    elif expect_query is False:
        check(q is None, 'the server asked again for known caps: %s' % (tostr(q) if q is not None else ''))
    if q is not None:
        answer_caps(c, q, caps)
    sync(c)
    return c
