/* rules.c - the pure rules of XEP-0045 (see rules.h). */
#include "rules.h"
#include <stdio.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const affil_names[] = {"outcast", "none", "member", "admin", "owner"};
static const char *const role_names[] = {"none", "visitor", "participant", "moderator"};

const char *muc_affil_name(enum muc_affil a)
{
    return (unsigned)a <= AFF_OWNER ? affil_names[a] : "none";
}

const char *muc_role_name(enum muc_role r)
{
    return (unsigned)r <= ROLE_MODERATOR ? role_names[r] : "none";
}

int muc_affil_parse(const char *s, enum muc_affil *out)
{
    for (int i = 0; s && i <= AFF_OWNER; i++)
        if (strcmp(s, affil_names[i]) == 0) {
            *out = (enum muc_affil)i;
            return 0;
        }
    return -1;
}

int muc_role_parse(const char *s, enum muc_role *out)
{
    for (int i = 0; s && i <= ROLE_MODERATOR; i++)
        if (strcmp(s, role_names[i]) == 0) {
            *out = (enum muc_role)i;
            return 0;
        }
    return -1;
}

enum muc_role muc_default_role(enum muc_affil a, int moderated)
{
    switch (a) {
    case AFF_OWNER:
    case AFF_ADMIN:
        return ROLE_MODERATOR;
    case AFF_MEMBER:
        return ROLE_PARTICIPANT;
    case AFF_NONE:
        return moderated ? ROLE_VISITOR : ROLE_PARTICIPANT;
    default:
        return ROLE_NONE;
    }
}

const char *muc_may_set_role(enum muc_role actor_role, enum muc_affil actor_aff,
                             enum muc_role target_role, enum muc_affil target_aff,
                             enum muc_role new_role)
{
    if (actor_role != ROLE_MODERATOR)
        return "forbidden";
    /* granting or revoking moderation is for admins and owners (§9.6, §9.7) */
    if ((new_role == ROLE_MODERATOR || target_role == ROLE_MODERATOR) && actor_aff < AFF_ADMIN)
        return target_aff >= AFF_ADMIN ? "not-allowed" : "forbidden";
    /* nobody kicks, silences or demotes someone at or above their own
     * affiliation; admins and owners cannot be kicked or silenced at all
     * (§8.2, §8.4, §9.7) */
    if (new_role < target_role || new_role == ROLE_NONE) {
        if (target_aff >= AFF_ADMIN && (actor_aff <= target_aff || new_role < ROLE_MODERATOR))
            return "not-allowed";
    }
    if (new_role == ROLE_MODERATOR && target_aff == AFF_OUTCAST)
        return "not-allowed";
    return MUC_OK;
}

const char *muc_may_set_affil(enum muc_affil actor_aff, enum muc_affil target_aff,
                              enum muc_affil new_aff)
{
    if (actor_aff == AFF_OWNER)
        return MUC_OK;
    if (actor_aff != AFF_ADMIN)
        return "forbidden";
    /* admins manage members and outcasts only (§9.1-9.5) */
    if (new_aff >= AFF_ADMIN)
        return "forbidden";
    if (target_aff >= AFF_ADMIN)
        return "not-allowed";
    return MUC_OK;
}

const char *muc_may_list_affil(enum muc_affil actor_aff, enum muc_affil list_aff)
{
    (void)list_aff;
    return actor_aff >= AFF_ADMIN ? MUC_OK : "forbidden";
}

const char *muc_may_list_role(enum muc_role actor_role)
{
    return actor_role == ROLE_MODERATOR ? MUC_OK : "forbidden";
}

size_t muc_history_select(const struct muc_hist_meta *items, size_t n, const struct muc_hist_req *req,
                          int64_t now)
{
    size_t first = 0;
    if (req->maxstanzas >= 0 && (size_t)req->maxstanzas < n)
        first = n - (size_t)req->maxstanzas;
    if (req->seconds >= 0)
        while (first < n && items[first].ts < now - req->seconds)
            first++;
    if (req->since >= 0)
        while (first < n && items[first].ts < req->since)
            first++;
    if (req->maxchars >= 0) {
        size_t total = 0, i = n;
        while (i > first && total + items[i - 1].chars <= (size_t)req->maxchars) {
            total += items[i - 1].chars;
            i--;
        }
        first = i;
    }
    return first;
}

/* ---- stanza ids ---- */

int64_t muc_next_ts(int64_t last, int64_t now)
{
    return now > last ? now : last + 1;
}

void muc_sid_format(int64_t ts, const char *rnd, char out[MUC_SID_MAX])
{
    snprintf(out, MUC_SID_MAX, "%llx-%.24s", (unsigned long long)ts, rnd);
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

int64_t muc_sid_ts(const char *s)
{
    if (!s)
        return -1;
    size_t i = 0;
    uint64_t v = 0;
    while (is_hex(s[i]) && i < 16) {
        v = v * 16 + (uint64_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
        i++;
    }
    if (i == 0 || s[i] != '-' || v == 0 || v > (uint64_t)INT64_MAX)
        return -1;
    size_t k = 0;
    for (s += i + 1; s[k]; k++)
        if (!is_hex(s[k]))
            return -1;
    return k >= 8 && k <= 24 ? (int64_t)v : -1;
}
