"""Helpers for the MUC tests (tests/integration/test_3x_muc_*.py): raw
XEP-0045 stanzas and what to read back from them."""

from common import check, child, error_condition, local, tostr, body_of  # noqa: F401
from magpie_fixture import esc

MUC = 'conference.localhost'
NS_MUC = 'http://jabber.org/protocol/muc'
NS_USER = 'http://jabber.org/protocol/muc#user'
NS_ADMIN = 'http://jabber.org/protocol/muc#admin'
NS_OWNER = 'http://jabber.org/protocol/muc#owner'
NS_XDATA = 'jabber:x:data'
NS_DELAY = 'urn:xmpp:delay'
NS_OID = 'urn:xmpp:occupant-id:0'
DISCO_INFO = 'http://jabber.org/protocol/disco#info'
DISCO_ITEMS = 'http://jabber.org/protocol/disco#items'
ROOMCONFIG = 'http://jabber.org/protocol/muc#roomconfig'


def room_jid(room):
    return '%s@%s' % (room, MUC)


def occ(room, nick):
    return '%s@%s/%s' % (room, MUC, nick)


def codes(el):
    """Status codes in the stanza's <x xmlns=muc#user/>."""
    x = child(el, 'x', NS_USER)
    return set() if x is None else {int(s.get('code')) for s in x if local(s.tag) == 'status'}


def item(el):
    x = child(el, 'x', NS_USER)
    return None if x is None else child(x, 'item', NS_USER)


def occupant_id(el):
    o = child(el, 'occupant-id', NS_OID)
    return None if o is None else o.get('id')


def send_join(c, room, nick, muc=True, password=None, history=None, extra=''):
    x = ''
    if muc:
        inner = ''
        if password is not None:
            inner += '<password>%s</password>' % esc(password)
        if history is not None:
            inner += '<history %s/>' % ' '.join("%s='%s'" % kv for kv in history.items())
        x = "<x xmlns='%s'>%s</x>" % (NS_MUC, inner)
    c.send("<presence to='%s'>%s%s</presence>" % (occ(room, nick), x, extra))


def join(c, room, nick, **kw):
    """Enters room as nick; returns the self-presence (status 110). Other
    stanzas that arrive meanwhile stay in the backlog."""
    send_join(c, room, nick, **kw)
    return c.wait_for('presence', lambda e: e.get('from') == occ(room, nick) and 110 in codes(e)
                      or e.get('type') == 'error' and e.get('from') == occ(room, nick))


def join_ok(c, room, nick, **kw):
    p = join(c, room, nick, **kw)
    check(p.get('type') != 'error', 'join %s as %s failed: %s' % (room, nick, tostr(p)))
    # and the subject, which comes last
    c.wait_for('message', lambda e: e.get('from', '').startswith(room_jid(room)) and
               child(e, 'subject') is not None and body_of(e) is None)
    return p


def leave(c, room, nick):
    c.send("<presence to='%s' type='unavailable'/>" % occ(room, nick))
    return c.wait_for('presence', lambda e: e.get('from') == occ(room, nick) and
                      e.get('type') == 'unavailable' and 110 in codes(e))


def create(c, room, nick, config=None):
    """Creates a room (locked), then submits config (dict var -> value or
    list of values; None: the empty instant-room form). Returns the
    self-presence."""
    p = join(c, room, nick)
    check(p.get('type') != 'error', 'create %s: %s' % (room, tostr(p)))
    check({110, 201} <= codes(p), 'no 110/201 on creation: %s' % tostr(p))
    c.wait_for('message', lambda e: e.get('from', '').startswith(room_jid(room)) and
               child(e, 'subject') is not None)
    r = configure(c, room, config)
    check(r.get('type') == 'result', 'configuration refused: %s' % tostr(r))
    return p


def configure(c, room, config=None):
    fields = ''
    if config:
        fields = "<field var='FORM_TYPE'><value>%s</value></field>" % ROOMCONFIG
        for var, val in config.items():
            vals = val if isinstance(val, list) else [val]
            fields += "<field var='%s'>%s</field>" % (var, ''.join('<value>%s</value>' % esc(str(v)) for v in vals))
    return c.iq('set', room_jid(room), "<query xmlns='%s'><x xmlns='%s' type='submit'>%s</x></query>"
                % (NS_OWNER, NS_XDATA, fields))


def groupchat(c, room, body, id_=None):
    id_ = id_ or c.next_id()
    c.send("<message to='%s' type='groupchat' id='%s'><body>%s</body></message>"
           % (room_jid(room), id_, esc(body)))
    return id_


def wait_body(c, body, timeout=None):
    return c.wait_for('message', lambda e: body_of(e) == body, timeout=timeout)


def admin(c, room, items):
    """muc#admin set with items (list of dicts; 'reason' becomes a child)."""
    xs = ''
    for it in items:
        it = dict(it)
        reason = it.pop('reason', None)
        attrs = ' '.join("%s='%s'" % kv for kv in it.items())
        xs += '<item %s>%s</item>' % (attrs, '<reason>%s</reason>' % esc(reason) if reason else '')
    return c.iq('set', room_jid(room), "<query xmlns='%s'>%s</query>" % (NS_ADMIN, xs))


def admin_list(c, room, **attr):
    k, v = list(attr.items())[0]
    return c.iq('get', room_jid(room), "<query xmlns='%s'><item %s='%s'/></query>" % (NS_ADMIN, k, v))


def form_values(x):
    out = {}
    for f in x:
        if local(f.tag) == 'field':
            out[f.get('var')] = [v.text or '' for v in f if local(v.tag) == 'value']
    return out


def expect_presence_error(c, room, nick, cond):
    p = c.wait_for('presence', lambda e: e.get('type') == 'error' and e.get('from') == occ(room, nick))
    check(error_condition(p) == cond, 'expected %s, got %s' % (cond, tostr(p)))
    return p


# ---- XEP-0359 stanza ids, XEP-0313 archives, XEP-0425 moderation ----

NS_SID = 'urn:xmpp:sid:0'
NS_MAM = 'urn:xmpp:mam:2'
NS_RSM = 'http://jabber.org/protocol/rsm'
NS_FORWARD = 'urn:xmpp:forward:0'
NS_MODERATE = 'urn:xmpp:message-moderate:1'
NS_RETRACT = 'urn:xmpp:message-retract:1'


def stanza_ids(el):
    """{by: id} of the <stanza-id/> children of a message."""
    return {s.get('by'): s.get('id') for s in el if s.tag == '{%s}stanza-id' % NS_SID}


def room_sid(el, room):
    """The stanza id room gave the message (None if none)."""
    return stanza_ids(el).get(room_jid(room))


def sid_time(sid):
    """The time part (µs) of one of mod_muc's stanza ids."""
    return int(sid.split('-')[0], 16)


def mam_query(c, room, form=None, rsm=None, flip=False, queryid=None, timeout=None):
    """Runs an XEP-0313 query on room's JID. form: dict var -> value or list;
    rsm: raw XML inside <set/> (e.g. '<max>10</max><before/>'). Returns
    (iq reply, [forwarded <message/> elements in the order received],
    [result ids]). Raises nothing on an error reply: check iq.get('type')."""
    qid = queryid or 'q' + c.next_id()
    fields = ''
    if form:
        fields = "<x xmlns='%s' type='submit'><field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % (
            NS_XDATA, NS_MAM)
        for var, val in form.items():
            vals = val if isinstance(val, list) else [val]
            fields += "<field var='%s'>%s</field>" % (var, ''.join('<value>%s</value>' % esc(str(v)) for v in vals))
        fields += '</x>'
    if rsm is not None:
        fields += "<set xmlns='%s'>%s</set>" % (NS_RSM, rsm)
    if flip:
        fields += '<flip-page/>'
    r = c.iq('set', room_jid(room), "<query xmlns='%s' queryid='%s'>%s</query>" % (NS_MAM, qid, fields),
             timeout=timeout)
    msgs, ids = [], []
    while True:
        m = c.wait_for('message', lambda e: child(e, 'result', NS_MAM) is not None and
                       child(e, 'result', NS_MAM).get('queryid') == qid, timeout=0, raise_=False)
        if m is None:
            break
        check(m.get('from') == room_jid(room), 'result not from the room: %s' % tostr(m))
        res = child(m, 'result', NS_MAM)
        fw = child(res, 'forwarded', NS_FORWARD)
        check(fw is not None and child(fw, 'delay', NS_DELAY) is not None, 'no forwarded/delay: %s' % tostr(m))
        msgs.append(child(fw, 'message'))
        ids.append(res.get('id'))
    return r, msgs, ids


def fin(r):
    """(complete, first, last) of a query's final IQ."""
    f = child(r, 'fin', NS_MAM)
    check(f is not None, 'no <fin/>: %s' % tostr(r))
    s = child(f, 'set', NS_RSM)
    first = child(s, 'first', NS_RSM) if s is not None else None
    last = child(s, 'last', NS_RSM) if s is not None else None
    return (f.get('complete') == 'true', first.text if first is not None else None,
            last.text if last is not None else None)


def moderate(c, room, sid, reason=None, retract=True):
    inner = "<retract xmlns='%s'/>" % NS_RETRACT if retract else ''
    if reason:
        inner += '<reason>%s</reason>' % esc(reason)
    return c.iq('set', room_jid(room), "<moderate xmlns='%s' id='%s'>%s</moderate>" % (NS_MODERATE, sid, inner))


def run_suite(R, args, num, name, tests, users, modules=None, storage='sqlite'):
    """Starts a server with mod_muc (modules: the module list, entries may
    be '{ name = "muc"; ... }'), creates users (password user-pw) and logs
    each in as resource 'p', runs tests [(label, fn)] with u (user name ->
    client, 'srv' -> the server) and reports as '<num>.NN <name>_<label>'."""
    from common import MagpieServer, online, closeall
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, storage=storage,
                           modules=modules or ['disco', 'ping', 'version', 'time', 'muc'])
        srv.__enter__()
    except Exception as e:
        R.fail('%d.00 %s_server_start' % (num, name), e)
        R.exit()
    u = {}
    try:
        for n in users:
            srv.add_user(n, n + '-pw')
        u = {n: online(srv, n, n + '-pw', 'p') for n in users}
        u['srv'] = srv
        for i, (label, fn) in enumerate(tests, 1):
            R.run('%d.%02d %s_%s' % (num, i, name, label), fn, u, server=srv)
    except Exception as e:
        R.fail('%d.00 %s_setup' % (num, name), e)
    closeall(*[c for k, c in u.items() if k != 'srv'])
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('%d.99 %s_clean_shutdown' % (num, name), e)
    R.exit()
