/* mam.h - the XEP-0313 Message Archive Management query engine that the
 * archive modules share (user archives in mod_mam, room archives in
 * mod_muc). A module keeps its own store and its own item format; the
 * engine reads the query (the XEP-0004 form: with, start, end, before-id,
 * after-id, ids; XEP-0059 paging: max, after, before, index; flip-page),
 * turns the client's stanza ids into archive ids, reads the page, sends
 * each item as <message><result><forwarded><delay/>...</forwarded></result>
 * </message> and answers the IQ with <fin/> and its result set.
 *
 * The archive is one mp_archive store key (storage.h) whose items carry
 * their stanza id in the module's own format; the stanza id must name the
 * item's archive timestamp (ops.sid_ts), so that a client's id is found by
 * one exact-time lookup. */
#ifndef MAGPIE_MAM_H
#define MAGPIE_MAM_H

#include <stdint.h>
#include <magpie/storage.h>
#include <magpie/xml.h>

#define MP_NS_MAM     "urn:xmpp:mam:2"
#define MP_NS_FORWARD "urn:xmpp:forward:0"

/* Where a query's 'with' field points the store; set by ops.with. */
struct mp_mam_with {
    char *exact;  /* malloc'd or NULL: items whose archive 'with' is this */
    char *has;    /* malloc'd or NULL: items whose 'with' contains this */
    int filtered; /* ops.item also filters (its *in_set): the store cannot
                     count the result set, so <fin/> has no <count/> */
};

struct mp_mam_ops {
    /* Reads stored item it: returns the message as the result forwards it
     * (a new stanza the engine owns: the module's private data removed,
     * decorated for the asker) with *sid its stanza id (living as long as
     * the stanza), or NULL when the item is not readable (skipped; an id
     * that names it is not found). *in_set (preset to 1): 0 when the item
     * is outside the result set by a 'with' rule the store cannot apply;
     * looked at on page reads only, not for ids. */
    mp_stanza *(*item)(void *ud, const mp_archive_item *it, const char **sid, int *in_set);
    /* The archive timestamp (unix microseconds) a stanza id names, or -1
     * when it is not one of this archive's ids (item-not-found). */
    int64_t (*sid_ts)(const char *sid);
    /* The 'with' field's value v (not empty): fills w, returns NULL, or an
     * error condition (with its type in *type, preset to "modify"). */
    const char *(*with)(void *ud, const char *v, struct mp_mam_with *w, const char **type);
    /* The query is over: rc MAGPIE_OK when <fin/> went out, MAGPIE_ERR when
     * an error was answered. Called exactly once; frees ud if it must. */
    void (*done)(void *ud, int rc);
};

/* Behaviours that differ between archives (mp_mam_archive.flags). */
enum {
    /* an 'end' in whole seconds includes that second (else that instant) */
    MP_MAM_END_SECOND = 1,
    /* XEP-0059 positions: RSM <index/> is accepted (up to index_max items
     * skipped; else feature-not-implemented), <first/> of a forward page
     * has its index, the count is of the set the whole form selects
     * (after-id and before-id included), an 'ids' query counts its items,
     * and a failed count fails the query (else <fin/> without <count/>) */
    MP_MAM_INDEX = 2,
    /* <fin/> repeats the query's queryid */
    MP_MAM_FIN_QUERYID = 4,
};

/* One archive and how it is queried; strings are copied. */
struct mp_mam_archive {
    const char *host, *store, *key; /* the mp_archive store key */
    const char *jid;                /* the archive's JID: results come from it */
    size_t page_max;                /* most items of a page (and of 'ids') */
    long index_max;                 /* MP_MAM_INDEX: the largest RSM index */
    int64_t ts_min; /* retention: older items are never returned (0: none) */
    unsigned flags; /* MP_MAM_* */
};

/* Answers the XEP-0313 query iq (type set) whose <query/> is query, on
 * archive a: results to the asker, then the IQ result with <fin/>, or an
 * IQ error. Asynchronous (storage calls); ops->done(ud, rc) ends it. The
 * caller keeps its own reference to iq. */
void mp_mam_query(mp_stanza *iq, const mp_xml *query, const struct mp_mam_archive *a,
                  const struct mp_mam_ops *ops, void *ud);

/* Adds the query form (XEP-0313 §4.1.5, the answer to an iq get) to
 * parent of res: <query><x type='form'> with FORM_TYPE, with, start, end,
 * before-id, after-id and ids. Returns the ids field, for more on it. */
mp_xml *mp_mam_form_add(mp_stanza *res, mp_xml *parent);

/* Answers an XEP-0313 §5 metadata request (iq get): the first and the last
 * readable item of archive a (ops->item; only a->host, store, key and
 * ts_min, which bounds the first, are used). ops->done ends it as above. */
void mp_mam_metadata(mp_stanza *iq, const struct mp_mam_archive *a,
                     const struct mp_mam_ops *ops, void *ud);

#endif
