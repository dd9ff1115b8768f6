#!/usr/bin/python3
"""08: the module loader: the descriptor's API version is checked before any
module code runs, module options are validated against the option table
(unknown option, wrong type, out of range: an error naming file and line),
defaults apply, and a hook/IQ module written against the public headers
only works end to end."""

import os
import re
import shutil
import subprocess
import tempfile

from common import MagpieServer, Results, parse_args, check, sync, online, closeall, SRCDIR

args = parse_args()
R = Results()
TMP = tempfile.mkdtemp(prefix='mpmod-')

# A module built in the test from the public headers only.
EXAMPLE = r'''
#include <magpie/magpie.h>
#include <string.h>
static mp_counter *seen;
static void answer(mp_stanza *iq, void *ud)
{
    mp_module *m = ud;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "query", "urn:example:echo");
    const char *w = mp_module_opt_str(m, "word");
    mp_xml_add_text(r, q, w, strlen(w));
    mp_iq_reply(r);
}
static int count_in(struct mp_hook_event *ev, void *ud)
{
    (void)ud;
    mp_xml *b = mp_xml_find(mp_stanza_root(ev->stanza), "body", NULL);
    if (b && strcmp(mp_xml_text(ev->stanza, b), "swallow me") == 0) {
        mp_counter_add(seen, 1);
        return HOOK_HANDLED;     /* consumed: never routed */
    }
    return HOOK_PASS;
}
static int load(mp_module *m)
{
    seen = mp_counter_new(m, "swallowed", "messages consumed by the test hook");
    mp_disco_feature_add(m, MP_DISCO_SERVER, "urn:example:echo");
    mp_hook_add(m, "stanza-in", 10, count_in, NULL);
    return mp_iq_register(m, MP_IQ_GET, "urn:example:echo", MP_IQ_SERVER, answer, m);
}
static const struct mp_option opts[] = {
    { "word", MP_OPT_STRING, "hello", "word to echo", 0, 0 },
    { "level", MP_OPT_INT, "3", "a bounded integer", 1, 5 },
    { "flag", MP_OPT_BOOL, "false", "a boolean", 0, 1 },
    { NULL, 0, NULL, NULL, 0, 0 },
};
MP_MODULE_DECLARE("example", "test module", opts, load, NULL, NULL);
'''

BADAPI = r'''
#include <magpie/magpie.h>
#include <stdlib.h>
static int load(mp_module *m) { (void)m; abort(); }
const struct mp_module_desc mp_module_descriptor = { 999, "badapi", "wrong API", NULL, load, NULL, NULL };
'''


def build_module(name, source):
    src = os.path.join(TMP, name + '.c')
    with open(src, 'w') as f:
        f.write(source)
    out = os.path.join(TMP, 'mod_%s.so' % name)
    p = subprocess.run(['cc', '-std=c11', '-Wall', '-Werror', '-shared', '-fPIC',
                        '-I', os.path.join(SRCDIR, 'include'), '-o', out, src],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError('cannot build test module %s: %s' % (name, p.stderr))
    return out


def module_dir(srv):
    """A module dir with the real modules plus the test ones."""
    d = os.path.join(TMP, 'modules')
    if not os.path.isdir(d):
        os.makedirs(d)
        for f in os.listdir(srv.module_dir):
            if f.endswith('.so'):
                shutil.copy(os.path.join(srv.module_dir, f), d)
        shutil.copy(build_module('example', EXAMPLE), d)
        shutil.copy(build_module('badapi', BADAPI), d)
    return d


def check_config(modules):
    srv = MagpieServer(args.builddir, modules=modules)
    srv.module_dir = module_dir(srv)
    srv.write_config()
    p = srv.run_tool([srv.magpied, '--check-config', '-c', srv.config_path])
    text = srv.config_text()
    reports = srv.sanitizer_reports()
    srv.cleanup(force_keep=bool(reports))
    # a sanitizer report fails the test, whatever the exit status
    check(not reports, 'sanitizer report from magpied --check-config:\n' + '\n'.join(reports))
    return p, text


def line_of(path_text, needle):
    for i, l in enumerate(path_text.splitlines(), 1):
        if needle in l:
            return i
    return None


def t01_api_version_refused():
    p, path = check_config(['badapi'])
    out = p.stdout + p.stderr
    check(p.returncode == 1, 'check-config exit %d, want 1: %s' % (p.returncode, out))
    with open(os.path.join(SRCDIR, 'include', 'magpie', 'module.h')) as f:
        ver = re.search(r'#define MP_MODULE_API_VERSION (\d+)', f.read()).group(1)
    check('module API 999' in out and 'this server has %s' % ver in out, 'unclear error: %s' % out)
    check('Aborted' not in out and p.returncode != -6, 'module code ran: %s' % out)


def t02_unknown_option():
    p, text = check_config(['{ name = "example"; wrod = "x"; }'])
    out = p.stdout + p.stderr
    check(p.returncode == 1, 'exit %d: %s' % (p.returncode, out))
    check("unknown option 'wrod'" in out, 'no unknown-option error: %s' % out)
    line = line_of(text, 'wrod')
    check('magpie.conf:%d:' % line in out, 'error does not name magpie.conf:%d: %s' % (line, out))


def t03_out_of_range_and_type():
    p, _ = check_config(['{ name = "example"; level = 9; }'])
    out = p.stdout + p.stderr
    check(p.returncode == 1 and 'between 1 and 5' in out, 'range not checked: %s' % out)
    p, _ = check_config(['{ name = "example"; flag = "yes"; }'])
    out = p.stdout + p.stderr
    check(p.returncode == 1 and 'must be a boolean' in out, 'type not checked: %s' % out)
    p, _ = check_config(['nosuchmodule'])
    out = p.stdout + p.stderr
    check(p.returncode == 1 and "cannot load module 'nosuchmodule'" in out, 'missing module: %s' % out)
    p, _ = check_config(['{ name = "example"; level = 5; flag = true; word = "x"; }'])
    check(p.returncode == 0, 'valid options refused: %s' % (p.stdout + p.stderr))


def t04_module_works_end_to_end():
    srv = MagpieServer(args.builddir, workers=args.workers,
                       modules=['disco', 'ping', '{ name = "example"; word = "magpie"; }'])
    srv.module_dir = module_dir(srv)
    srv.write_config()
    with srv:
        srv.add_user('alice', 'pw')
        srv.add_user('bob', 'pw')
        a = online(srv, 'alice', 'pw', 'r1')
        b = online(srv, 'bob', 'pw', 'r1')
        try:
            r = a.iq('get', 'localhost', "<query xmlns='urn:example:echo'/>")
            check(r is not None and r.get('type') == 'result', 'no result from module IQ')
            q = r.find('{urn:example:echo}query')
            check(q is not None and q.text == 'magpie', 'option value not used: %s' % (q.text if q is not None else None))
            info = a.iq('get', 'localhost', "<query xmlns='http://jabber.org/protocol/disco#info'/>")
            feats = {f.get('var') for f in info.iter('{http://jabber.org/protocol/disco#info}feature')}
            check('urn:example:echo' in feats, 'module disco feature missing: %s' % feats)
            a.send("<message to='bob@localhost/r1'><body>swallow me</body></message>")
            a.send("<message to='bob@localhost/r1'><body>pass me</body></message>")
            m = b.wait_for('message', timeout=5)
            check(m is not None, 'second message not delivered')
            body = m.find('{jabber:client}body')
            check(body is not None and body.text == 'pass me', 'hook did not consume the first message')
            st = srv.ctl('status').stdout
            check('example_swallowed 1' in st, 'module counter not in status: %s' % st)
        finally:
            closeall(a, b)
        srv.stop()


R.run('08-1 module with another API version is refused before it runs', t01_api_version_refused)
R.run('08-2 unknown module option is an error naming the file', t02_unknown_option)
R.run('08-3 option range and type checked; missing module reported', t03_out_of_range_and_type)
R.run('08-4 module from public headers: IQ handler, option, disco, hook, counter', t04_module_works_end_to_end)
shutil.rmtree(TMP, ignore_errors=True)
R.exit()
