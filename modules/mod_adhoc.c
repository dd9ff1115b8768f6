/* mod_adhoc - XEP-0050 Ad-Hoc Commands: the protocol front of the commands
 * other modules register with mp_adhoc_command_add (magpie/adhoc.h).
 *
 * Answers <iq type='set'><command/></iq> to a host (the core checks the
 * requester, the session and the action, and calls the command's
 * handler), advertises http://jabber.org/protocol/commands, lists the
 * commands the requester may run on disco#items node
 * http://jabber.org/protocol/commands, and describes each command node on
 * disco#info. */
#include <magpie/magpie.h>
#include <string.h>

#define NS_INFO  "http://jabber.org/protocol/disco#info"
#define NS_ITEMS "http://jabber.org/protocol/disco#items"

static void execute(mp_stanza *iq, void *ud)
{
    (void)ud;
    mp_adhoc_dispatch(iq);
}

struct list {
    mp_stanza *st;
    mp_xml *query;
    const char *host;
};

static void add_item(void *ud, const char *node, const char *name)
{
    struct list *l = ud;
    mp_xml *it = mp_xml_add_child(l->st, l->query, "item", NULL);
    mp_xml_set_attr(l->st, it, "jid", l->host);
    mp_xml_set_attr(l->st, it, "node", node);
    mp_xml_set_attr(l->st, it, "name", name);
}

static void add_identity(mp_stanza *r, mp_xml *q, const char *type, const char *name)
{
    mp_xml *id = mp_xml_add_child(r, q, "identity", NULL);
    mp_xml_set_attr(r, id, "category", "automation");
    mp_xml_set_attr(r, id, "type", type);
    if (name)
        mp_xml_set_attr(r, id, "name", name);
}

static void add_feature(mp_stanza *r, mp_xml *q, const char *var)
{
    mp_xml_set_attr(r, mp_xml_add_child(r, q, "feature", NULL), "var", var);
}

/* disco#info / disco#items on the commands node and on each command. A
 * command the requester may not run is an unknown node to them. */
static int node_query(mp_stanza *iq, const char *node, int items, void *ud)
{
    (void)ud;
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    const mp_jid *from = &env->from;
    char name[256];
    int is_list = strcmp(node, MP_NS_COMMANDS) == 0;
    if (!is_list && mp_adhoc_command_lookup(node, from, name, sizeof name) != MAGPIE_OK)
        return HOOK_PASS;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "query", items ? NS_ITEMS : NS_INFO);
    mp_xml_set_attr(r, q, "node", node);
    if (items && is_list) {
        struct list l = {r, q, env->to.domain ? env->to.bare : from->domain};
        mp_adhoc_commands_foreach(from, add_item, &l);
    } else if (!items && is_list) {
        add_identity(r, q, "command-list", "Commands");
        add_feature(r, q, NS_ITEMS);
    } else if (!items) {
        add_identity(r, q, "command-node", name);
        add_feature(r, q, MP_NS_COMMANDS);
        add_feature(r, q, MP_NS_DATA);
    }
    /* disco#items of a command node: none */
    mp_iq_reply(r);
    return HOOK_HANDLED;
}

static int load(mp_module *m)
{
    mp_disco_feature_add(m, MP_DISCO_SERVER, MP_NS_COMMANDS);
    if (mp_disco_node_add(m, MP_DISCO_SERVER, node_query, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, MP_NS_COMMANDS, MP_IQ_SERVER, execute, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

MP_MODULE_DECLARE("adhoc", "XEP-0050 Ad-Hoc Commands", NULL, load, NULL, NULL);
