/* mod_disco - XEP-0030 Service Discovery for the server and for accounts.
 *
 * Answers disco#info with the identities and features every module
 * registered for the scope, and disco#items with the items modules
 * registered (mod_muc adds its conference service). Queries for a node go to
 * the modules' node handlers (mod_adhoc's commands node); unknown nodes get
 * item-not-found. */
#include <magpie/magpie.h>
#include <string.h>

#define NS_INFO  "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

struct build {
    mp_stanza *st;
    mp_xml *query;
};

static void add_identity(void *ud, const char *category, const char *type, const char *name)
{
    struct build *b = ud;
    mp_xml *id = mp_xml_add_child(b->st, b->query, "identity", NULL);
    mp_xml_set_attr(b->st, id, "category", category);
    mp_xml_set_attr(b->st, id, "type", type);
    if (name)
        mp_xml_set_attr(b->st, id, "name", name);
}

static void add_feature(void *ud, const char *var)
{
    struct build *b = ud;
    mp_xml_set_attr(b->st, mp_xml_add_child(b->st, b->query, "feature", NULL), "var", var);
}

/* Returns the query element if the request names no node; else offers it
 * to the modules' node handlers (mp_disco_node_add), answers
 * item-not-found when none knows the node, and returns NULL. */
static mp_xml *plain_query(mp_stanza *iq, enum mp_disco_scope scope, int items)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    const char *node = mp_xml_get_attr(q, "node");
    if (node) {
        if (mp_disco_node_dispatch(scope, iq, node, items) != HOOK_HANDLED)
            mp_iq_reply_error(iq, "cancel", "item-not-found");
        return NULL;
    }
    return q;
}

static void info(mp_stanza *iq, enum mp_disco_scope scope)
{
    if (!plain_query(iq, scope, 0))
        return;
    mp_stanza *r = mp_iq_result(iq);
    struct build b = {r, mp_xml_add_child(r, mp_stanza_root(r), "query", NS_INFO)};
    mp_disco_identities_foreach(scope, add_identity, &b);
    mp_disco_features_foreach(scope, add_feature, &b);
    mp_iq_reply(r);
}

static void server_info(mp_stanza *iq, void *ud)
{
    (void)ud;
    info(iq, MP_DISCO_SERVER);
}

static void account_info(mp_stanza *iq, void *ud)
{
    (void)ud;
    info(iq, MP_DISCO_ACCOUNT);
}

static void add_item(void *ud, const char *jid, const char *name)
{
    struct build *b = ud;
    mp_xml *it = mp_xml_add_child(b->st, b->query, "item", NULL);
    mp_xml_set_attr(b->st, it, "jid", jid);
    if (name)
        mp_xml_set_attr(b->st, it, "name", name);
}

static void items(mp_stanza *iq, enum mp_disco_scope scope)
{
    if (!plain_query(iq, scope, 1))
        return;
    mp_stanza *r = mp_iq_result(iq);
    struct build b = {r, mp_xml_add_child(r, mp_stanza_root(r), "query", NS_ITEMS)};
    mp_disco_items_foreach(scope, add_item, &b);
    mp_iq_reply(r);
}

static void server_items(mp_stanza *iq, void *ud)
{
    (void)ud;
    items(iq, MP_DISCO_SERVER);
}

static void account_items(mp_stanza *iq, void *ud)
{
    (void)ud;
    items(iq, MP_DISCO_ACCOUNT);
}

static int load(mp_module *m)
{
    const char *name = mp_module_opt_str(m, "name");
    mp_disco_identity_add(m, MP_DISCO_SERVER, "server", "im", name);
    mp_disco_identity_add(m, MP_DISCO_ACCOUNT, "account", "registered", NULL);
    for (int scope = MP_DISCO_SERVER; scope <= MP_DISCO_ACCOUNT; scope++) {
        mp_disco_feature_add(m, (enum mp_disco_scope)scope, NS_INFO);
        mp_disco_feature_add(m, (enum mp_disco_scope)scope, NS_ITEMS);
    }
    if (mp_iq_register(m, MP_IQ_GET, NS_INFO, MP_IQ_SERVER, server_info, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_INFO, MP_IQ_ACCOUNT, account_info, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_ITEMS, MP_IQ_SERVER, server_items, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_ITEMS, MP_IQ_ACCOUNT, account_items, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static const struct mp_option options[] = {
    {"name", MP_OPT_STRING, "Magpie", "Name in the server's disco identity", 0, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("disco", "XEP-0030 Service Discovery", options, load, NULL, NULL);
