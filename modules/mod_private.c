/* mod_private - XEP-0049 Private XML Storage (jabber:iq:private).
 *
 * A user stores XML fragments on the server, each named by the name and
 * namespace of its root element. They live in the map store "private"
 * (key = username, field = "<namespace> <local name>", value = the
 * serialised element).
 *
 *   IQ get jabber:iq:private (account scope): <query/> with exactly one
 *     child element; the answer holds the stored fragment, or that child
 *     as sent (empty) when nothing is stored under its name.
 *   IQ set jabber:iq:private (account scope): <query/> with one or more
 *     child elements, each stored in place of what was stored under its
 *     name; the answer goes once every write is done.
 *   Both only for the account itself (no 'to', or the user's own bare
 *   JID): anyone else gets forbidden. A fragment in a 'jabber:' namespace
 *   (or with none: it would inherit jabber:iq:private) gets not-acceptable
 *   (§2.3: those namespaces are reserved); one larger than `max_size`
 *   bytes serialised, not-acceptable as well.
 *   account_deleted: every fragment of the user goes. */
#include <magpie/magpie.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_PRIVATE "jabber:iq:private"
#define STORE      "private"

static const struct mp_option options[] = {
    {"max_size", MP_OPT_INT, "65536", "Largest fragment a user may store (bytes, serialised)", 64,
     1048576},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;

/* A set in progress: the answer goes when the last write is done. */
struct set_op {
    mp_stanza *iq; /* referenced */
    int pending;
    int failed;
};

/* Returns a malloc'd "ns name" field for el (caller frees). */
static char *field_of(const mp_xml *el)
{
    size_t n = strlen(el->ns) + 1 + strlen(el->name) + 1;
    char *f = mp_malloc(n);
    snprintf(f, n, "%s %s", el->ns, el->name);
    return f;
}

/* 0 if el may be stored, else answers the error and returns -1. */
static int check_fragment(mp_stanza *iq, const mp_xml *el)
{
    if (!el->ns[0] || strncmp(el->ns, "jabber:", 7) == 0) {
        mp_iq_reply_error(iq, "modify", "not-acceptable");
        return -1;
    }
    return 0;
}

/* 0 if the IQ is the account's own, else answers forbidden. */
static int check_owner(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    if (!env->from.local || (env->to.domain && strcmp(env->to.bare, env->from.bare) != 0)) {
        mp_iq_reply_error(iq, "cancel", "forbidden");
        return -1;
    }
    return 0;
}

static mp_xml *query_of(mp_stanza *iq)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (strcmp(q->name, "query") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return NULL;
    }
    return q;
}

static void got(void *ud, int rc, const void *data, size_t len)
{
    mp_stanza *iq = ud;
    mp_stanza *doc = NULL;
    if (rc == MAGPIE_OK && !(doc = mp_stanza_parse(data, len)))
        rc = MAGPIE_ERR;
    if (rc == MAGPIE_ERR) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    } else {
        mp_stanza *r = mp_iq_result(iq);
        mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_PRIVATE);
        const mp_xml *asked = mp_xml_first_element(mp_xml_first_element(mp_stanza_root(iq)));
        mp_xml_add_copy(r, q, doc ? mp_stanza_root(doc) : asked);
        mp_iq_reply(r);
    }
    if (doc)
        mp_stanza_unref(doc);
    mp_stanza_unref(iq);
}

static void private_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *q;
    if (check_owner(iq) || !(q = query_of(iq)))
        return;
    mp_xml *el = mp_xml_first_element(q);
    if (!el || mp_xml_find_next(el, NULL, NULL)) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (check_fragment(iq, el))
        return;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    char *field = field_of(el);
    if (mp_map_get(env->from.domain, STORE, env->from.local, field, got, mp_stanza_ref(iq)) !=
        MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
    }
    free(field);
}

static void stored(void *ud, int rc)
{
    struct set_op *op = ud;
    if (rc != MAGPIE_OK)
        op->failed = 1;
    if (--op->pending > 0)
        return;
    if (op->failed)
        mp_iq_reply_error(op->iq, "wait", "internal-server-error");
    else
        mp_iq_reply(mp_iq_result(op->iq));
    mp_stanza_unref(op->iq);
    free(op);
}

static void private_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *q;
    if (check_owner(iq) || !(q = query_of(iq)))
        return;
    mp_xml *el = mp_xml_first_element(q);
    if (!el) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    /* everything is checked before anything is written */
    size_t n = 0;
    char **docs = NULL;
    size_t max = (size_t)mp_module_opt_int(self, "max_size");
    for (mp_xml *e = el; e; e = mp_xml_find_next(e, NULL, NULL)) {
        if (check_fragment(iq, e))
            goto out;
        docs = mp_realloc(docs, (n + 1) * sizeof *docs);
        docs[n++] = mp_xml_to_string(e, NULL);
        if (strlen(docs[n - 1]) > max) {
            mp_iq_reply_error(iq, "modify", "not-acceptable");
            goto out;
        }
    }
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    struct set_op *op = mp_calloc(1, sizeof *op);
    op->iq = mp_stanza_ref(iq);
    op->pending = 1; /* held until every write is issued */
    size_t i = 0;
    for (mp_xml *e = el; e; e = mp_xml_find_next(e, NULL, NULL), i++) {
        char *field = field_of(e);
        op->pending++;
        if (mp_map_set(env->from.domain, STORE, env->from.local, field, docs[i], strlen(docs[i]),
                       stored, op) != MAGPIE_OK) {
            op->pending--;
            op->failed = 1;
        }
        free(field);
    }
    stored(op, MAGPIE_OK);
out:
    for (size_t k = 0; k < n; k++)
        free(docs[k]);
    free(docs);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_map_del(domain, STORE, user, NULL, NULL, NULL);
}

static const struct mp_notify notify = {
    .account_deleted = account_deleted,
};

static int load(mp_module *m)
{
    self = m;
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_PRIVATE);
    mp_notify_add(m, &notify, NULL);
    if (mp_iq_register(m, MP_IQ_GET, NS_PRIVATE, MP_IQ_ACCOUNT, private_get, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, NS_PRIVATE, MP_IQ_ACCOUNT, private_set, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

MP_MODULE_DECLARE("private", "XEP-0049 Private XML Storage", options, load, NULL, NULL);
