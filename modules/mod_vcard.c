/* mod_vcard - XEP-0054 vcard-temp.
 *
 * One vCard per account, kept as the serialised <vCard xmlns='vcard-temp'/>
 * element in the keyval store "vcard" (key = username).
 *
 *   IQ get vcard-temp (account scope): the vCard of the account the IQ is
 *     addressed to (the sender's own with no 'to'); an account without one
 *     gets an empty <vCard/> (§3.1). The router has already checked that
 *     the account exists.
 *   IQ set vcard-temp (account scope): only the owner, to their own bare
 *     JID or with no 'to' (others: forbidden); a vCard larger than
 *     `max_size` bytes serialised gets not-acceptable. The answer is sent
 *     once the write is done.
 *   account_deleted: the vCard goes. */
#include <magpie/magpie.h>
#include <stdlib.h>
#include <string.h>

#define NS_VCARD "vcard-temp"
#define STORE    "vcard"

static const struct mp_option options[] = {
    {"max_size", MP_OPT_INT, "32768", "Largest vCard a user may store (bytes, serialised)", 256,
     1048576},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;

/* The account an IQ is about: its 'to' or, without one, its sender. */
static const mp_jid *target_of(mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    return env->to.domain ? &env->to : &env->from;
}

static void got(void *ud, int rc, const void *data, size_t len)
{
    mp_stanza *iq = ud;
    mp_stanza *doc = NULL;
    if (rc == MAGPIE_OK && !(doc = mp_stanza_parse(data, len))) {
        mp_log(MP_LOG_WARN, "vcard: unreadable vCard of %s", target_of(iq)->bare);
        rc = MAGPIE_ERR;
    }
    if (rc == MAGPIE_ERR) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    } else {
        mp_stanza *r = mp_iq_result(iq);
        if (doc)
            mp_xml_add_copy(r, mp_stanza_root(r), mp_stanza_root(doc));
        else
            mp_xml_add_child(r, mp_stanza_root(r), "vCard", NS_VCARD);
        mp_iq_reply(r);
    }
    if (doc)
        mp_stanza_unref(doc);
    mp_stanza_unref(iq);
}

static void vcard_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    const mp_jid *t = target_of(iq);
    if (strcmp(q->name, "vCard") != 0 || !t->local) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (mp_kv_get(t->domain, STORE, t->local, got, mp_stanza_ref(iq)) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
    }
}

static void stored(void *ud, int rc)
{
    mp_stanza *iq = ud;
    if (rc == MAGPIE_OK)
        mp_iq_reply(mp_iq_result(iq));
    else
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    mp_stanza_unref(iq);
}

static void vcard_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (!env->from.local || (env->to.domain && strcmp(env->to.bare, env->from.bare) != 0)) {
        mp_iq_reply_error(iq, "auth", "forbidden");
        return;
    }
    if (strcmp(q->name, "vCard") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    char *doc = mp_xml_to_string(q, NULL);
    size_t len = strlen(doc);
    if (len > (size_t)mp_module_opt_int(self, "max_size")) {
        mp_iq_reply_error(iq, "modify", "not-acceptable");
    } else if (mp_kv_set(env->from.domain, STORE, env->from.local, doc, len, stored,
                         mp_stanza_ref(iq)) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "wait", "internal-server-error");
        mp_stanza_unref(iq);
    }
    free(doc);
}

static void account_deleted(const char *domain, const char *user, void *ud)
{
    (void)ud;
    mp_kv_del(domain, STORE, user, NULL, NULL);
}

static const struct mp_notify notify = {
    .account_deleted = account_deleted,
};

static int load(mp_module *m)
{
    self = m;
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_VCARD);
    mp_disco_feature_add(m, MP_DISCO_ACCOUNT, NS_VCARD);
    mp_notify_add(m, &notify, NULL);
    if (mp_iq_register(m, MP_IQ_GET, NS_VCARD, MP_IQ_ACCOUNT, vcard_get, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, NS_VCARD, MP_IQ_ACCOUNT, vcard_set, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

MP_MODULE_DECLARE("vcard", "XEP-0054 vcard-temp", options, load, NULL, NULL);
