#!/usr/bin/python3
"""56: user archive queries (XEP-0313 §4, XEP-0059): 25 messages paged
forward and backward with max=10 (exact ids and order, complete only on
the last page, first/last of each page), an empty <before/> for the last
page, after-id/before-id, the ids field (#extended) and flip-page, the
'with' filter with a bare JID (any resource) and a full JID (that
resource only), start/end, item-not-found for an unknown RSM or form id,
the query form (type=get), a page never larger than max_page, results to
the asking resource only, and a query on someone else's archive is
refused. Runs with retention_days set (nothing here is that old: every
query and id lookup goes through the cutoff and still finds everything)."""

import datetime
import time

from common import MagpieServer, Results, parse_args, check, child, tostr, closeall, sync, no_message, error_condition
from mamhelp import (NS_MAM, NS_XDATA, login, stanza_id, query, fin, count, bodies, wait_body)

args = parse_args()
R = Results('[workers=%d]' % args.workers)
USERS = ['alice', 'bob', 'carol']
MODULES = ['disco', 'ping', 'roster', 'offline',
           '{ name = "mam"; max_page = 15; retention_days = 3650; }']
N = 25
LIVE = []  # (body, bob's stanza id) in order
T_MID = None


def t01_fill(srv):
    global T_MID
    a = login(srv, 'alice', 'a1')
    a2 = login(srv, 'alice', 'a2')
    b = login(srv, 'bob', 'b')
    try:
        for i in range(N):
            src = a if i % 2 == 0 else a2
            body = 'msg %02d' % i
            src.message('bob@localhost', body)
            m = wait_body(b, body)
            LIVE.append((body, stanza_id(m, 'bob@localhost')))
            if i == 14:
                time.sleep(1.2)
                T_MID = datetime.datetime.now(datetime.timezone.utc)
                time.sleep(1.2)
        check(all(s for _, s in LIVE), LIVE)
        sync(b)
    finally:
        closeall(a, a2, b)


def t02_forward(srv):
    b = login(srv, 'bob', 'fw')
    try:
        got, after, pages = [], None, []
        while True:
            rsm = '<max>10</max>' + ('<after>%s</after>' % after if after else '')
            r, msgs, ids, _ = query(b, rsm=rsm)
            complete, first, last = fin(r)
            pages.append((len(ids), complete))
            check(first == ids[0] and last == ids[-1], 'first/last %s %s vs %s' % (first, last, ids))
            check(count(r) == N, 'count %s, want %d' % (count(r), N))
            got += list(zip(bodies(msgs), ids))
            after = last
            if complete:
                break
            check(len(pages) < 5, 'never complete')
        check(pages == [(10, False), (10, False), (5, True)], 'pages %s' % pages)
        check(got == LIVE, 'forward: %s' % got)
    finally:
        closeall(b)


def t03_backward(srv):
    b = login(srv, 'bob', 'bw')
    try:
        got, before, pages = [], '', []
        while True:
            r, msgs, ids, _ = query(b, rsm='<max>10</max><before>%s</before>' % before)
            complete, first, last = fin(r)
            pages.append((len(ids), complete))
            check(first == ids[0] and last == ids[-1], 'first/last %s %s vs %s' % (first, last, ids))
            got = list(zip(bodies(msgs), ids)) + got  # each page in chronological order
            before = first
            if complete:
                break
            check(len(pages) < 5, 'never complete')
        check(pages == [(10, False), (10, False), (5, True)], 'pages %s' % pages)
        check(got == LIVE, 'backward: %s' % got)
        # flip-page: the last page newest first
        r, msgs, ids, _ = query(b, rsm='<max>3</max><before/>', flip=True)
        check(ids == [s for _, s in LIVE[-3:]][::-1], 'flipped: %s' % ids)
    finally:
        closeall(b)


def t04_ids_and_bounds(srv):
    b = login(srv, 'bob', 'ids')
    try:
        sids = [s for _, s in LIVE]
        r, msgs, ids, _ = query(b, form={'after-id': sids[3], 'before-id': sids[8]})
        check(ids == sids[4:8] and fin(r)[0], 'after/before-id: %s' % ids)
        want = [sids[20], sids[2], sids[11]]
        r, msgs, ids, _ = query(b, form={'ids': want})
        check(ids == want, 'ids: %s' % ids)
        # no <max/>: the server's max_page (15)
        r, msgs, ids, _ = query(b)
        check(ids == sids[:15] and not fin(r)[0], 'default page: %d %s' % (len(ids), fin(r)))
        r, _, _, _ = query(b, rsm='<max>100</max>')
        check(len(_) == 15, 'max over max_page')
        for form, rsm in (({}, '<after>0-deadbeef</after>'), ({}, '<before>nope</before>'),
                          ({'after-id': '1234abcd-00000000'}, None), ({'ids': ['x-1']}, None)):
            r, msgs, _, _ = query(b, form=form or None, rsm=rsm)
            check(r.get('type') == 'error' and error_condition(r) == 'item-not-found' and not msgs,
                  'unknown id: %s' % tostr(r))
    finally:
        closeall(b)


def t05_with_and_time(srv):
    b = login(srv, 'bob', 'with')
    c = login(srv, 'carol', 'c')
    try:
        c.message('bob@localhost', 'from carol')
        wait_body(b, 'from carol')
        sync(c)
        sync(b)
        r, msgs, ids, _ = query(b, form={'with': 'alice@localhost'})
        check(bodies(msgs) == [x for x, _ in LIVE][:15] and not fin(r)[0], 'bare with: %s' % bodies(msgs))
        check(count(r) == N, 'bare with: count %s' % count(r))
        r, msgs, ids, _ = query(b, form={'with': 'carol@localhost'})
        check(bodies(msgs) == ['from carol'] and count(r) == 1, 'carol: %s %s' % (bodies(msgs), count(r)))
        r, msgs, ids, _ = query(b, form={'with': 'alice@localhost/a2'}, rsm='<max>20</max>')
        check(bodies(msgs) == [x for i, (x, _) in enumerate(LIVE) if i % 2], 'full with: %s' % bodies(msgs))
        check(fin(r)[0], 'full with: not complete')
        odd = [(x, sid) for i, (x, sid) in enumerate(LIVE) if i % 2]
        r, msgs, ids, _ = query(b, form={'with': 'alice@localhost/a2'}, rsm='<max>5</max><before/>')
        check(list(zip(bodies(msgs), ids)) == odd[-5:] and not fin(r)[0], 'full with, last page: %s' % bodies(msgs))
        r, msgs, ids, _ = query(b, form={'with': 'alice@localhost/a2'},
                                rsm='<max>5</max><before>%s</before>' % ids[0])
        check(list(zip(bodies(msgs), ids)) == odd[-10:-5], 'full with, page before: %s' % bodies(msgs))
        r, msgs, ids, _ = query(b, form={'with': 'carol@localhost'})
        check(bodies(msgs) == ['from carol'], 'carol: %s' % bodies(msgs))
        stamp = T_MID.strftime('%Y-%m-%dT%H:%M:%SZ')
        r, msgs, ids, _ = query(b, form={'end': stamp})
        check(bodies(msgs) == [x for x, _ in LIVE][:15], 'end: %s' % bodies(msgs))
        r, msgs, ids, _ = query(b, form={'start': stamp, 'with': 'alice@localhost'})
        check(bodies(msgs) == [x for x, _ in LIVE][15:], 'start: %s' % bodies(msgs))
        r, _, _, _ = query(b, form={'start': 'yesterday'})
        check(r.get('type') == 'error' and error_condition(r) == 'bad-request', tostr(r))
    finally:
        closeall(b, c)


def t06_form_and_privacy(srv):
    b = login(srv, 'bob', 'form')
    b2 = login(srv, 'bob', 'other')
    a = login(srv, 'alice', 'spy')
    try:
        r = b.iq('get', None, "<query xmlns='%s'/>" % NS_MAM)
        x = child(child(r, 'query', NS_MAM), 'x', NS_XDATA)
        check(x is not None, tostr(r))
        vars_ = {f.get('var') for f in x}
        check({'FORM_TYPE', 'with', 'start', 'end', 'before-id', 'after-id', 'ids'} <= vars_, vars_)
        r, msgs, _, _ = query(b, rsm='<max>2</max>')
        check(len(msgs) == 2, msgs)
        no_message(b2, 0.5, lambda e: child(e, 'result', NS_MAM) is not None)
        r, msgs, _, _ = query(a, to='bob@localhost')
        check(r.get('type') == 'error' and error_condition(r) == 'forbidden' and not msgs, tostr(r))
    finally:
        closeall(b, b2, a)


def main():
    try:
        srv = MagpieServer(args.builddir, workers=args.workers, modules=MODULES)
        srv.__enter__()
    except Exception as e:
        R.fail('56.00 mam_paging_server_start', e)
        R.exit()
    try:
        for u in USERS:
            srv.add_user(u, u + '-pw')
        R.run('56.01 mam_fill_25', t01_fill, srv, server=srv)
        R.run('56.02 mam_rsm_forward_pages', t02_forward, srv, server=srv)
        R.run('56.03 mam_rsm_backward_pages_flip', t03_backward, srv, server=srv)
        R.run('56.04 mam_ids_bounds_max_page_item_not_found', t04_ids_and_bounds, srv, server=srv)
        R.run('56.05 mam_with_bare_full_start_end', t05_with_and_time, srv, server=srv)
        R.run('56.06 mam_form_and_privacy', t06_form_and_privacy, srv, server=srv)
    except Exception as e:
        R.fail('56.00 mam_paging_setup', e)
    try:
        srv.__exit__(None, None, None)
    except Exception as e:
        R.fail('56.99 mam_paging_clean_shutdown', e)
    R.exit()


main()
