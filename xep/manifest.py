"""The xep/*/manifest format, read by xep/gen-doap.py (the DOAP file) and
tests/conformance/run.py (which checks every manifest has scripts).

A manifest is "key: value" lines; '#' starts a comment; 'note' may repeat.
Python standard library only."""

KEYS = ('number', 'name', 'version', 'status', 'module')


def read_manifest(path):
    """key: value lines; '#' comments; 'note' may repeat. Raises ValueError."""
    m = {'note': []}
    with open(path, encoding='utf-8') as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith('#'):
                continue
            if ':' not in line:
                raise ValueError('%s:%d: expected "key: value"' % (path, n))
            k, v = (x.strip() for x in line.split(':', 1))
            if k == 'note':
                m['note'].append(v)
            else:
                m[k] = v
    for k in KEYS:
        if not m.get(k):
            raise ValueError('%s: missing %s' % (path, k))
    if m['status'] not in ('complete', 'partial'):
        raise ValueError('%s: status must be complete or partial, not %r' % (path, m['status']))
    return m
