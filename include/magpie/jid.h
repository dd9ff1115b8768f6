/* jid.h - JIDs (RFC 7622): parse, normalise, compare.
 *
 * Normalisation uses libidn's stringprep profiles (Nodeprep, Nameprep,
 * Resourceprep of RFC 3920/6122), which accept and map the same strings as
 * PRECIS for everything but rare edge cases; see docs/. */
#ifndef MAGPIE_JID_H
#define MAGPIE_JID_H

#include <stddef.h>

#define MP_JID_PART_MAX 1023 /* bytes, per RFC 7622 §3.1 */

typedef struct mp_jid {
    char *local;    /* NULL if absent */
    char *domain;   /* never NULL after a successful parse */
    char *resource; /* NULL if absent */
    char *bare;     /* "local@domain" or "domain" */
    char *full;     /* bare + "/resource" if a resource exists */
    /* all five point into one buffer owned by the struct */
    char *buf_;
} mp_jid;

/* Parses and normalises s into jid (which the caller must release with
 * mp_jid_free). Returns MAGPIE_OK, or MAGPIE_ERR if s is not a valid JID
 * (empty part, part over 1023 bytes, prohibited characters, ...): callers
 * answer jid-malformed. On error jid is left empty (safe to free). */
int mp_jid_parse(mp_jid *jid, const char *s);

/* Builds a JID from parts (local and resource may be NULL), normalising
 * each. Same return and ownership as mp_jid_parse. */
int mp_jid_set(mp_jid *jid, const char *local, const char *domain, const char *resource);

/* Deep copy into dst (caller frees dst). */
int mp_jid_copy(mp_jid *dst, const mp_jid *src);

void mp_jid_free(mp_jid *jid);

/* Normalises one part in place into out (size outlen). Returns MAGPIE_OK or
 * MAGPIE_ERR. Used for usernames (magpiectl) and domains (config). */
int mp_jid_nodeprep(const char *in, char *out, size_t outlen);
int mp_jid_nameprep(const char *in, char *out, size_t outlen);
int mp_jid_resourceprep(const char *in, char *out, size_t outlen);

#endif
