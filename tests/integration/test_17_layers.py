#!/usr/bin/python3
"""17: the layout shows the architecture, and the code keeps to it.

src/ is split into layers, lowest first:
    base -> xml -> conf -> storage -> auth -> net -> core -> stream -> http -> server
(tools/, the admin tool, sits on base..auth). A file may include headers of
its own layer and of lower ones only; no function calls go around a loop
among the core's files (upward reporting goes through callbacks and hooks
registered at start); modules include only the public headers
(include/magpie/) and system headers. Reads the sources: needs no server.
The BUILDDIR argument is accepted like every integration test and unused."""

import collections
import os
import re
import sys

from common import Results, SRCDIR, check, parse_args

args = parse_args()
R = Results()

LAYERS = ['base', 'xml', 'conf', 'storage', 'auth', 'net', 'core', 'stream', 'http', 'server']
TOOLS_MAY_USE = {'base', 'xml', 'conf', 'storage', 'auth'}
SRC = os.path.join(SRCDIR, 'src')
INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
COMMENT_RE = re.compile(r'/\*.*?\*/|//[^\n]*', re.S)
DEF_RE = re.compile(r'^[A-Za-z_][\w \*]*?\b(mp_\w+)\s*\([^;{]*\)\s*\{', re.M)
CALL_RE = re.compile(r'\b(mp_\w+)\s*\(')


def source_files(top, exts=('.c', '.h')):
    out = []
    for d, _, files in os.walk(top):
        out += [os.path.join(d, f) for f in files if f.endswith(exts)]
    return sorted(out)


def layer_of(path):
    return os.path.relpath(path, SRC).split(os.sep)[0]


def t01_every_file_in_a_layer():
    stray = [os.path.relpath(f, SRC) for f in source_files(SRC)
             if layer_of(f) not in LAYERS + ['tools'] or os.path.dirname(f) == SRC]
    check(not stray, 'files outside the layer folders: %s' % stray)
    for layer in LAYERS + ['tools']:
        check(os.path.isdir(os.path.join(SRC, layer)), 'layer folder missing: %s' % layer)


def allowed(from_layer, to_layer):
    if from_layer == 'tools':
        return to_layer in TOOLS_MAY_USE
    if to_layer not in LAYERS:
        return False
    return LAYERS.index(to_layer) <= LAYERS.index(from_layer)


def t02_includes_go_downward():
    bad = []
    for f in source_files(SRC):
        for inc in INCLUDE_RE.findall(open(f).read()):
            target = inc.split('/')[0]
            if '/' not in inc or not os.path.exists(os.path.join(SRC, inc)):
                bad.append('%s includes "%s" (not a layer path)' % (os.path.relpath(f, SRC), inc))
            elif not allowed(layer_of(f), target):
                bad.append('%s includes "%s" (upward)' % (os.path.relpath(f, SRC), inc))
    check(not bad, '\n  '.join(bad))


def call_graph():
    """File -> {file it calls: [functions]} over every mp_ function defined
    in src/ (by its definition, not its declaration)."""
    text, defs = {}, {}
    for f in source_files(SRC, ('.c',)):
        t = COMMENT_RE.sub('', open(f).read())
        text[f] = t
        for m in DEF_RE.finditer(t):
            defs.setdefault(m.group(1), f)
    edges = collections.defaultdict(lambda: collections.defaultdict(set))
    for f, t in text.items():
        for m in CALL_RE.finditer(t):
            g = defs.get(m.group(1))
            if g and g != f:
                edges[f][g].add(m.group(1))
    return edges


def t03_calls_go_downward():
    bad = []
    for f, targets in call_graph().items():
        for g, fns in targets.items():
            if not allowed(layer_of(f), layer_of(g)):
                bad.append('%s calls %s in %s' % (os.path.relpath(f, SRC), sorted(fns),
                                                  os.path.relpath(g, SRC)))
    check(not bad, '\n  '.join(bad))


def t04_no_call_loop_among_files():
    edges = call_graph()
    # Tarjan's strongly connected components: any component of more than
    # one file is a loop
    index, low, stack, on, comps = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            comps.append(comp)

    for v in list(edges):
        if v not in index:
            visit(v)
    loops = [sorted(os.path.relpath(f, SRC) for f in c) for c in comps if len(c) > 1]
    detail = []
    for c in loops:
        for f in c:
            for g, fns in edges[os.path.join(SRC, f)].items():
                if os.path.relpath(g, SRC) in c:
                    detail.append('%s -> %s %s' % (f, os.path.relpath(g, SRC), sorted(fns)))
    check(not loops, 'call loops: %s\n  %s' % (loops, '\n  '.join(detail)))


def t05_modules_use_public_headers_only():
    bad = []
    for f in source_files(os.path.join(SRCDIR, 'modules')):
        for inc in INCLUDE_RE.findall(open(f).read()):
            here = os.path.join(os.path.dirname(f), inc)
            if not os.path.exists(here) or os.path.realpath(here).startswith(SRC + os.sep):
                bad.append('%s includes "%s"' % (os.path.relpath(f, SRCDIR), inc))
    check(not bad, '\n  '.join(bad))


def t06_the_check_sees_a_violation():
    """The checks above would fail: an upward include and a loop are
    detected on a synthetic example (so the PASS lines mean something)."""
    check(not allowed('base', 'core') and not allowed('core', 'stream') and allowed('stream', 'core'),
          'layer order')
    check(not allowed('tools', 'core') and allowed('tools', 'auth'), 'tools')
    t = 'static int mp_x(void) {\n  return mp_y();\n}\n'
    check([m.group(1) for m in DEF_RE.finditer(t)] == ['mp_x'], 'definition pattern')
    check('mp_y' in CALL_RE.findall(t), 'call pattern')


R.run('layers: every source file in a layer folder', t01_every_file_in_a_layer)
R.run('layers: includes only of the same or lower layers', t02_includes_go_downward)
R.run('layers: calls only into the same or lower layers', t03_calls_go_downward)
R.run('layers: no call loop among src/ files', t04_no_call_loop_among_files)
R.run('layers: modules include only include/magpie/', t05_modules_use_public_headers_only)
R.run('layers: the checks detect a violation', t06_the_check_sees_a_violation)
R.exit()
