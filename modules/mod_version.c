/* mod_version - XEP-0092 Software Version of the server. */
#include <magpie/magpie.h>
#include <string.h>
#include <sys/utsname.h>

#define NS_VERSION "jabber:iq:version"

static void add_text_child(mp_stanza *st, mp_xml *parent, const char *name, const char *text)
{
    mp_xml_add_text(st, mp_xml_add_child(st, parent, name, NULL), text, strlen(text));
}

static void version(mp_stanza *iq, void *ud)
{
    mp_module *m = ud;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *q = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_VERSION);
    add_text_child(r, q, "name", mp_module_opt_str(m, "name"));
    add_text_child(r, q, "version", MAGPIE_VERSION_STRING);
    struct utsname u;
    if (mp_module_opt_bool(m, "show_os") && uname(&u) == 0)
        add_text_child(r, q, "os", u.sysname);
    mp_iq_reply(r);
}

static int load(mp_module *m)
{
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_VERSION);
    return mp_iq_register(m, MP_IQ_GET, NS_VERSION, MP_IQ_SERVER, version, m);
}

static const struct mp_option options[] = {
    {"name", MP_OPT_STRING, "Magpie", "Software name reported to clients", 0, 0},
    {"show_os", MP_OPT_BOOL, "false", "Also report the operating system (uname)", 0, 1},
    {NULL, 0, NULL, NULL, 0, 0},
};

MP_MODULE_DECLARE("version", "XEP-0092 Software Version", options, load, NULL, NULL);
