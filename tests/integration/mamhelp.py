"""Helpers for the user-archive tests (test_55..59, mod_mam: XEP-0313 on
accounts, XEP-0359 stanza ids)."""

from common import RawClient, check, child, tostr, sync
from magpie_fixture import esc

NS_MAM = 'urn:xmpp:mam:2'
NS_SID = 'urn:xmpp:sid:0'
NS_RSM = 'http://jabber.org/protocol/rsm'
NS_XDATA = 'jabber:x:data'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_DELAY = 'urn:xmpp:delay'
NS_HINTS = 'urn:xmpp:hints'


def pw(u):
    return u + '-pw'


def login(srv, user, res, presence=True):
    c = RawClient(srv.c2s_port)
    c.login(user, pw(user), resource=res)
    if presence:
        c.presence()
    sync(c)
    return c


def stanza_id(el, by):
    """The id of the <stanza-id by=by/> of a message, or None."""
    for s in el:
        if s.tag == '{%s}stanza-id' % NS_SID and s.get('by') == by:
            return s.get('id')
    return None


def query(c, form=None, rsm=None, flip=False, queryid=None, to=None, timeout=10):
    """Runs an XEP-0313 query on c's own archive. form: dict var -> value or
    list; rsm: raw XML inside <set/>. Returns (iq reply, [forwarded
    <message/> elements], [result ids], [delay stamps])."""
    qid = queryid or 'q' + c.next_id()
    fields = ''
    if form:
        fields = ("<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'>"
                  "<value>%s</value></field>" % (NS_XDATA, NS_MAM))
        for var, val in form.items():
            vals = val if isinstance(val, list) else [val]
            fields += "<field var='%s'>%s</field>" % (
                var, ''.join('<value>%s</value>' % esc(str(v)) for v in vals))
        fields += '</x>'
    if rsm is not None:
        fields += "<set xmlns='%s'>%s</set>" % (NS_RSM, rsm)
    if flip:
        fields += '<flip-page/>'
    r = c.iq('set', to, "<query xmlns='%s' queryid='%s'>%s</query>" % (NS_MAM, qid, fields),
             timeout=timeout)
    msgs, ids, stamps = [], [], []
    while True:
        m = c.wait_for('message', lambda e: child(e, 'result', NS_MAM) is not None and
                       child(e, 'result', NS_MAM).get('queryid') == qid, timeout=0, raise_=False)
        if m is None:
            break
        check(m.get('to') == c.jid, 'result to %s, not the asker %s' % (m.get('to'), c.jid))
        res = child(m, 'result', NS_MAM)
        fw = child(res, 'forwarded', NS_FORWARD)
        check(fw is not None and child(fw, 'delay', NS_DELAY) is not None,
              'no forwarded/delay: %s' % tostr(m))
        msgs.append(child(fw, 'message'))
        ids.append(res.get('id'))
        stamps.append(child(fw, 'delay', NS_DELAY).get('stamp'))
    return r, msgs, ids, stamps


def fin(r):
    """(complete, first, last) of a query's final IQ."""
    check(r.get('type') == 'result', 'query failed: %s' % tostr(r))
    f = child(r, 'fin', NS_MAM)
    check(f is not None, 'no <fin/>: %s' % tostr(r))
    s = child(f, 'set', NS_RSM)
    first = child(s, 'first', NS_RSM) if s is not None else None
    last = child(s, 'last', NS_RSM) if s is not None else None
    return (f.get('complete') == 'true', first.text if first is not None else None,
            last.text if last is not None else None)


def count(r):
    """The RSM <count/> of a query's <fin/>, or None."""
    s = child(child(r, 'fin', NS_MAM), 'set', NS_RSM)
    c = child(s, 'count', NS_RSM) if s is not None else None
    return int(c.text) if c is not None else None


def bodies(msgs):
    out = []
    for m in msgs:
        b = child(m, 'body')
        out.append(b.text if b is not None else None)
    return out


def wait_body(c, body, timeout=5):
    return c.wait_for('message', lambda e: child(e, 'body') is not None and
                      child(e, 'body').text == body, timeout=timeout)
