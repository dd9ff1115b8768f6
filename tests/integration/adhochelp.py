"""Helpers for the XEP-0050 / XEP-0133 tests (test_65..67): raw ad-hoc
command stanzas and their answers."""

from xml.sax.saxutils import escape, quoteattr

from common import check, child, error_condition, tostr

NS_CMD = 'http://jabber.org/protocol/commands'
NS_DATA = 'jabber:x:data'
NS_ADMIN = 'http://jabber.org/protocol/admin'
NS_INFO = 'http://jabber.org/protocol/disco#info'
NS_ITEMS = 'http://jabber.org/protocol/disco#items'


def form(fields, form_type=NS_ADMIN, type_='submit'):
    """A data form; fields: list of (var, value or list of values)."""
    out = ["<x xmlns='%s' type='%s'>" % (NS_DATA, type_)]
    if form_type:
        out.append("<field var='FORM_TYPE' type='hidden'><value>%s</value></field>" % form_type)
    for var, val in fields:
        vals = val if isinstance(val, (list, tuple)) else [val]
        out.append('<field var=%s>%s</field>' % (
            quoteattr(var), ''.join('<value>%s</value>' % escape(v) for v in vals)))
    out.append('</x>')
    return ''.join(out)


def command(c, node, action=None, sessionid=None, payload='', to='localhost'):
    """Sends <command/> and returns the IQ answer (result or error)."""
    attrs = ' node=%s' % quoteattr(node)
    if action:
        attrs += ' action=%s' % quoteattr(action)
    if sessionid:
        attrs += ' sessionid=%s' % quoteattr(sessionid)
    return c.iq('set', to, "<command xmlns='%s'%s>%s</command>" % (NS_CMD, attrs, payload),
                timeout=20)


def cmd_el(iq):
    check(iq.get('type') == 'result', 'expected a result: %s' % tostr(iq))
    el = child(iq, 'command', NS_CMD)
    check(el is not None, 'no <command/> in %s' % tostr(iq))
    return el


def field_vars(x):
    return [f.get('var') for f in x.findall('{%s}field' % NS_DATA)]


def field_values(x, var):
    for f in x.findall('{%s}field' % NS_DATA):
        if f.get('var') == var:
            return [v.text or '' for v in f.findall('{%s}value' % NS_DATA)]
    return None


def expect_cmd_error(iq, cond, specific=None):
    check(iq.get('type') == 'error', 'expected an error: %s' % tostr(iq))
    check(error_condition(iq) == cond, 'expected %s: %s' % (cond, tostr(iq)))
    if specific:
        err = child(iq, 'error')
        check(err is not None and err.find('{%s}%s' % (NS_CMD, specific)) is not None,
              'expected <%s/> in %s' % (specific, tostr(iq)))


def run_form_command(c, node, fields, to='localhost'):
    """Executes node, checks that a form comes back (status executing, with a
    sessionid), submits fields with action complete, returns the final
    <command/> element (or the error IQ)."""
    first = cmd_el(command(c, node, 'execute', to=to))
    check(first.get('status') == 'executing', tostr(first))
    sid = first.get('sessionid')
    check(sid, 'no sessionid: %s' % tostr(first))
    x = child(first, 'x', NS_DATA)
    check(x is not None and x.get('type') == 'form', 'no form: %s' % tostr(first))
    for var, _ in fields:
        check(var in field_vars(x), 'form lacks %s: %s' % (var, tostr(first)))
    r = command(c, node, 'complete', sid, form(fields), to=to)
    if r.get('type') == 'error':
        return r
    el = cmd_el(r)
    check(el.get('sessionid') == sid, 'sessionid changed: %s' % tostr(el))
    return el


def note(el):
    n = child(el, 'note', NS_CMD)
    return None if n is None else (n.get('type'), n.text or '')
