/* store.c - persistent rooms (muc#roomconfig_persistentroom) in the
 * keyval store "muc_rooms" of the service domain, one document per room
 * keyed by its localpart: the configuration, the affiliations, the
 * subject and the occupant-id salt, as a small XML element
 *
 *   <room xmlns='urn:magpie:muc:0' v='1' salt='..' name='..' persistent='1' ...>
 *     <subject nick='..'>text</subject>
 *     <affil jid='..' affiliation='owner' nick='..' reason='..'/>
 *   </room>
 *
 * Saving is asynchronous (mp_kv_set from the room's worker; writes to one
 * key complete in issue order, so the last save wins); loading is
 * synchronous, in load(), before the workers start. */
#include "muc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE    "muc_rooms"
#define NS_STORE "urn:magpie:muc:0"

static void set_int(mp_stanza *st, mp_xml *el, const char *name, long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%ld", v);
    mp_xml_set_attr(st, el, name, buf);
}

/* Returns the room's document, malloc'd (caller frees). */
static char *serialize(struct muc_room *r)
{
    const struct muc_config *c = &r->cfg;
    mp_stanza *st = mp_stanza_new("room", NS_STORE);
    mp_xml *root = mp_stanza_root(st);
    mp_xml_set_attr(st, root, "v", "1");
    mp_xml_set_attr(st, root, "salt", r->salt);
    if (c->name)
        mp_xml_set_attr(st, root, "name", c->name);
    if (c->desc)
        mp_xml_set_attr(st, root, "desc", c->desc);
    if (c->password)
        mp_xml_set_attr(st, root, "password", c->password);
    set_int(st, root, "persistent", c->persistent);
    set_int(st, root, "public", c->public_);
    set_int(st, root, "membersonly", c->members_only);
    set_int(st, root, "moderated", c->moderated);
    set_int(st, root, "whoisanyone", c->whois_anyone);
    set_int(st, root, "changesubject", c->change_subject);
    set_int(st, root, "allowinvites", c->allow_invites);
    set_int(st, root, "allowpm", c->allow_pm);
    set_int(st, root, "maxusers", c->max_users);
    set_int(st, root, "history", c->history_len);
    set_int(st, root, "mam", c->mam);
    if (r->subject) {
        mp_xml *s = mp_xml_add_child(st, root, "subject", NULL);
        if (r->subject_nick)
            mp_xml_set_attr(st, s, "nick", r->subject_nick);
        mp_xml_add_text(st, s, r->subject, strlen(r->subject));
    }
    for (size_t i = 0; i < r->n_aff; i++) {
        mp_xml *a = mp_xml_add_child(st, root, "affil", NULL);
        mp_xml_set_attr(st, a, "jid", r->aff[i].jid);
        mp_xml_set_attr(st, a, "affiliation", muc_affil_name(r->aff[i].affil));
        if (r->aff[i].nick)
            mp_xml_set_attr(st, a, "nick", r->aff[i].nick);
        if (r->aff[i].reason)
            mp_xml_set_attr(st, a, "reason", r->aff[i].reason);
    }
    char *s = mp_xml_to_string(root, NULL);
    mp_stanza_unref(st);
    return s;
}

static long get_int(const mp_xml *el, const char *name, long def)
{
    const char *v = mp_xml_get_attr(el, name);
    return v ? strtol(v, NULL, 10) : def;
}

/* Builds a room from its document; NULL if it does not parse. */
static struct muc_room *deserialize(const char *node, const void *data, size_t len)
{
    mp_stanza *st = mp_stanza_parse(data, len);
    if (!st)
        return NULL;
    mp_xml *root = mp_stanza_root(st);
    if (strcmp(root->name, "room") != 0) {
        mp_stanza_unref(st);
        return NULL;
    }
    struct muc_room *r = muc_room_new(node);
    struct muc_config *c = &r->cfg;
    const char *salt = mp_xml_get_attr(root, "salt");
    if (salt)
        snprintf(r->salt, sizeof r->salt, "%s", salt);
    muc_set_str(&c->name, mp_xml_get_attr(root, "name"));
    muc_set_str(&c->desc, mp_xml_get_attr(root, "desc"));
    muc_set_str(&c->password, mp_xml_get_attr(root, "password"));
    c->persistent = (int)get_int(root, "persistent", 1);
    c->public_ = (int)get_int(root, "public", c->public_);
    c->members_only = (int)get_int(root, "membersonly", c->members_only);
    c->moderated = (int)get_int(root, "moderated", c->moderated);
    c->whois_anyone = (int)get_int(root, "whoisanyone", c->whois_anyone);
    c->change_subject = (int)get_int(root, "changesubject", c->change_subject);
    c->allow_invites = (int)get_int(root, "allowinvites", c->allow_invites);
    c->allow_pm = (int)get_int(root, "allowpm", c->allow_pm);
    c->max_users = get_int(root, "maxusers", c->max_users);
    c->history_len = get_int(root, "history", c->history_len);
    c->mam = (int)get_int(root, "mam", c->mam);
    if (c->history_len > muc_opt_history_max())
        c->history_len = muc_opt_history_max();
    mp_xml *s = mp_xml_find(root, "subject", NULL);
    if (s) {
        muc_set_str(&r->subject, mp_xml_text(st, s));
        muc_set_str(&r->subject_nick, mp_xml_get_attr(s, "nick"));
    }
    for (mp_xml *a = mp_xml_find(root, "affil", NULL); a; a = mp_xml_find_next(a, "affil", NULL)) {
        enum muc_affil af;
        const char *jid = mp_xml_get_attr(a, "jid");
        if (!jid || muc_affil_parse(mp_xml_get_attr(a, "affiliation"), &af) != 0 || af == AFF_NONE)
            continue;
        muc_affil_set(r, jid, af, mp_xml_get_attr(a, "reason"));
        const char *nick = mp_xml_get_attr(a, "nick");
        if (nick)
            for (size_t i = 0; i < r->n_aff; i++)
                if (strcmp(r->aff[i].jid, jid) == 0)
                    muc_set_str(&r->aff[i].nick, nick);
    }
    mp_stanza_unref(st);
    return r;
}

static void saved(void *ud, int rc)
{
    char *node = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "muc: could not save room %s@%s", node, muc_domain());
    free(node);
}

void muc_store_save(struct muc_room *r)
{
    if (!r->cfg.persistent || r->locked)
        return;
    char *doc = serialize(r);
    char *node = mp_strdup(r->node);
    if (mp_kv_set(muc_domain(), STORE, r->node, doc, strlen(doc), saved, node) != MAGPIE_OK) {
        mp_log(MP_LOG_WARN, "muc: could not queue the save of room %s", r->jid);
        free(node);
    }
    free(doc);
}

static void deleted(void *ud, int rc)
{
    char *node = ud;
    if (rc != MAGPIE_OK)
        mp_log(MP_LOG_WARN, "muc: could not delete room %s@%s", node, muc_domain());
    free(node);
}

void muc_store_delete(const char *node)
{
    char *n = mp_strdup(node);
    if (mp_kv_del(muc_domain(), STORE, node, deleted, n) != MAGPIE_OK)
        free(n);
}

struct keys {
    char **v;
    size_t n;
};

static void collect(void *ud, const char *key)
{
    struct keys *k = ud;
    char **v = mp_realloc(k->v, (k->n + 1) * sizeof *v);
    k->v = v;
    k->v[k->n++] = mp_strdup(key);
}

void muc_store_load_all(void)
{
    struct keys k = {NULL, 0};
    if (mp_kv_keys_sync(muc_domain(), STORE, collect, &k) != MAGPIE_OK) {
        /* storage not open (--check-config) or failing: start empty */
        mp_log(MP_LOG_DEBUG, "muc: no stored rooms read");
        return;
    }
    for (size_t i = 0; i < k.n; i++) {
        void *data = NULL;
        size_t len = 0;
        if (mp_kv_get_sync(muc_domain(), STORE, k.v[i], &data, &len) == MAGPIE_OK) {
            struct muc_room *r = deserialize(k.v[i], data, len);
            if (r) {
                muc_log_load_history(r);
                muc_room_put(r);
            }
            else
                mp_log(MP_LOG_WARN, "muc: stored room %s is unreadable, skipped", k.v[i]);
        }
        free(data);
        free(k.v[i]);
    }
    free(k.v);
}
