/* module.c - the module loader and the registries modules fill: hooks, IQ
 * handlers, stream features and elements, disco features/identities,
 * counters.
 *
 * Modules are loaded before the workers start and unloaded after they stop,
 * so the registries are written single-threaded and read lock-free by the
 * workers. Every registration records its module, so unloading a module
 * removes exactly what it registered. */
#include "base/base.h"
#include "base/table.h"
#include "core/modules.h"
#include "core/router.h"
#include <magpie/proto.h>

#include <dlfcn.h>
#include <errno.h>
#include <event2/buffer.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mp_module {
    const struct mp_module_desc *desc;
    void *handle;
    int index; /* slot in session data arrays */
    size_t n_opts;
    long long *ival; /* per option: int/bool value */
    char **sval;     /* per option: string value */
    void *data;
    int loaded;
};

struct hook_entry {
    int priority;
    mp_hook_fn fn;
    void *ud;
    mp_module *m;
};

struct hook_list {
    struct hook_entry *v;
    size_t n;
};

struct route_entry {
    int priority; /* first: priority_slot */
    const struct mp_route_hooks *h;
    void *ud;
    mp_module *m;
};

struct iq_entry {
    mp_iq_fn fn;
    void *ud;
    mp_module *m;
};

struct feature_entry {
    enum mp_feature_stage stage;
    mp_feature_fn fn;
    void *ud;
    mp_module *m;
};

struct element_entry {
    mp_stream_element_fn fn;
    void *ud;
    mp_module *m;
    int unbound; /* also before resource binding */
};

/* The stream management module's hooks (mp_stream_mgmt_set), or none. */
static const struct mp_stream_mgmt *sm_hooks;
static void *sm_ud;
static mp_module *sm_module;

struct preauth_entry {
    char *ns;
    mp_preauth_iq_fn fn;
    void *ud;
    mp_module *m;
};

struct disco_entry {
    enum mp_disco_scope scope;
    char *var;                    /* feature, or NULL for identities */
    char *category, *type, *name; /* identity */
    mp_module *m;
    char *item; /* disco#items entry (var NULL, name optional) */
    char *form; /* a service domain's XEP-0128 field: FORM_TYPE (var, value in name) */
};

struct filter_entry {
    int priority;
    mp_filter_fn fn;
    void *ud;
    mp_module *m;
};

struct filter_list {
    struct filter_entry *v;
    size_t n;
};

struct notify_entry {
    const struct mp_notify *n;
    void *ud;
    mp_module *m;
};

struct mp_domain {
    char *name;
    mp_domain_fn fn;
    void *ud;
    mp_module *m;
    mp_table *iqs; /* "type|ns" -> struct iq_entry */
    struct disco_entry *discos;
    size_t n_discos;
};

struct counter_slot {
    atomic_ullong v;
} __attribute__((aligned(64))); /* one cache line per thread slot */

struct mp_counter {
    char *name, *help;
    struct counter_slot *value; /* MP_STAT_SLOTS per-thread slots, summed on read */
    mp_module *m;
    struct mp_counter *next;
};

static mp_module **modules;
static size_t n_modules;
static mp_table *hooks;            /* name -> struct hook_list */
static struct route_entry *routes; /* by decreasing priority */
static size_t n_routes;
static mp_table *iqs; /* "get|ns|scope" -> struct iq_entry */
static struct feature_entry *features;
static size_t n_features;
static struct disco_entry *discos;
static size_t n_discos;
struct disco_node_entry {
    enum mp_disco_scope scope;
    mp_disco_node_fn fn;
    void *ud;
    mp_module *m;
};
static struct disco_node_entry *disco_nodes;
static size_t n_disco_nodes;
static struct mp_adhoc_cmd *adhoc; /* ad-hoc commands (adhoc.c runs them) */
static size_t n_adhoc;
static struct mp_counter *counters;
static struct filter_list filters[2]; /* by enum mp_filter_dir */
struct query_entry {
    const struct mp_queries *q;
    void *ud;
    mp_module *m;
};
static struct query_entry *queries;
static size_t n_queries;
static struct notify_entry *notifies;
static size_t n_notifies;
static mp_table *domains;              /* name -> mp_domain */
static mp_table *elements;             /* "ns|name" -> struct element_entry */
static struct preauth_entry *preauths; /* a handful at most: searched in order */
static size_t n_preauths;

static struct {
    mp_module *m;
    mp_roster_contacts_fn fn;
    void *ud;
} roster_provider;

size_t mp_modules_count(void)
{
    return n_modules;
}

int mp_module_index(mp_module *m)
{
    return m->index;
}

/* ---- options ---- */

static int opt_index(mp_module *m, const char *name)
{
    for (size_t i = 0; i < m->n_opts; i++)
        if (strcmp(m->desc->options[i].name, name) == 0)
            return (int)i;
    return -1;
}

long long mp_module_opt_int(mp_module *m, const char *name)
{
    int i = opt_index(m, name);
    if (i < 0) {
        mp_log(MP_LOG_ERROR, "module %s asked for undeclared option %s", m->desc->name, name);
        return 0;
    }
    return m->ival[i];
}

int mp_module_opt_bool(mp_module *m, const char *name)
{
    return mp_module_opt_int(m, name) != 0;
}

const char *mp_module_opt_str(mp_module *m, const char *name)
{
    int i = opt_index(m, name);
    return i < 0 ? NULL : m->sval[i];
}

void mp_module_set_data(mp_module *m, void *data)
{
    m->data = data;
}

void *mp_module_data(mp_module *m)
{
    return m->data;
}

/* Parses one textual option value into slot i. Returns MAGPIE_OK or
 * MAGPIE_ERR with a message in err. */
static int set_option(mp_module *m, size_t i, const char *value, char *err, size_t errlen)
{
    const struct mp_option *o = &m->desc->options[i];
    free(m->sval[i]);
    m->sval[i] = mp_strdup(value);
    switch (o->type) {
    case MP_OPT_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            m->ival[i] = 1;
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            m->ival[i] = 0;
        else {
            snprintf(err, errlen, "option '%s' of module %s must be true or false", o->name,
                     m->desc->name);
            return MAGPIE_ERR;
        }
        break;
    case MP_OPT_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || end == value || *end || v < o->min || v > o->max) {
            snprintf(err, errlen,
                     "option '%s' of module %s must be an integer between %lld and %lld", o->name,
                     m->desc->name, o->min, o->max);
            return MAGPIE_ERR;
        }
        m->ival[i] = v;
        break;
    }
    case MP_OPT_STRING:
        break;
    }
    return MAGPIE_OK;
}

static void module_free(mp_module *m)
{
    for (size_t i = 0; i < m->n_opts; i++)
        free(m->sval[i]);
    free(m->sval);
    free(m->ival);
    if (m->handle)
        dlclose(m->handle);
    free(m);
}

/* Opens mod_<name>.so, checks its descriptor and applies its options.
 * Returns a new module (not yet loaded) or NULL with err set. */
static mp_module *module_open(const struct mp_config *cfg, const struct mp_config_module *cm,
                              char *err, size_t errlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/mod_%s.so", cfg->module_dir, cm->name);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(err, errlen, "%s: cannot load module '%s': %s", cfg->file, cm->name, dlerror());
        return NULL;
    }
    const struct mp_module_desc *d = dlsym(h, "mp_module_descriptor");
    if (!d) {
        snprintf(err, errlen, "%s: %s is not a Magpie module (no mp_module_descriptor)", cfg->file,
                 path);
        dlclose(h);
        return NULL;
    }
    if (d->api_version != MP_MODULE_API_VERSION) {
        snprintf(err, errlen, "%s: module %s was built for module API %u, this server has %u",
                 cfg->file, path, d->api_version, MP_MODULE_API_VERSION);
        dlclose(h);
        return NULL;
    }
    mp_module *m = mp_calloc(1, sizeof *m);
    m->desc = d;
    m->handle = h;
    while (d->options && d->options[m->n_opts].name)
        m->n_opts++;
    m->ival = mp_calloc(m->n_opts, sizeof *m->ival);
    m->sval = mp_calloc(m->n_opts, sizeof *m->sval);
    char msg[256];
    for (size_t i = 0; i < m->n_opts; i++)
        if (set_option(m, i, d->options[i].def ? d->options[i].def : "", msg, sizeof msg) !=
            MAGPIE_OK) {
            snprintf(err, errlen, "%s: bad default: %s", path, msg);
            module_free(m);
            return NULL;
        }
    for (const struct mp_config_setting *s = cm->options; s; s = s->next) {
        int i = opt_index(m, s->name);
        if (i < 0) {
            snprintf(err, errlen, "%s:%d: unknown option '%s' for module %s", cfg->file, s->line,
                     s->name, cm->name);
            module_free(m);
            return NULL;
        }
        const struct mp_option *o = &d->options[i];
        int type_ok = (o->type == MP_OPT_BOOL && s->is_bool) ||
                      (o->type == MP_OPT_INT && s->is_int) ||
                      (o->type == MP_OPT_STRING && s->is_string);
        if (!type_ok || set_option(m, (size_t)i, s->value, msg, sizeof msg) != MAGPIE_OK) {
            if (type_ok)
                snprintf(err, errlen, "%s:%d: %s", cfg->file, s->line, msg);
            else
                snprintf(err, errlen, "%s:%d: option '%s' of module %s must be %s", cfg->file,
                         s->line, s->name, cm->name,
                         o->type == MP_OPT_BOOL  ? "a boolean"
                         : o->type == MP_OPT_INT ? "an integer"
                                                 : "a string");
            module_free(m);
            return NULL;
        }
    }
    return m;
}

/* Drops every registration made by m. */
static void unregister_all(mp_module *m);

/* Only modules call the protocol helpers (proto.h); naming one here keeps
 * their object file, and so all of them, in the daemon's link (the static
 * core library would otherwise leave it out and loading a module that
 * uses them would fail on an undefined symbol). */
int64_t (*const mp_proto_linked)(void) = mp_now_us;

int mp_modules_load(const struct mp_config *cfg)
{
    char err[PATH_MAX * 2];
    hooks = mp_table_new(32);
    iqs = mp_table_new(64);
    domains = mp_table_new(8);
    elements = mp_table_new(8);
    for (size_t i = 0; i < cfg->n_modules; i++) {
        for (size_t j = 0; j < n_modules; j++)
            if (strcmp(modules[j]->desc->name, cfg->modules[i].name) == 0) {
                mp_log(MP_LOG_ERROR, "%s: module '%s' listed twice", cfg->file,
                       cfg->modules[i].name);
                return MAGPIE_ERR;
            }
        mp_module *m = module_open(cfg, &cfg->modules[i], err, sizeof err);
        if (!m) {
            mp_log(MP_LOG_ERROR, "%s", err);
            return MAGPIE_ERR;
        }
        m->index = (int)n_modules;
        modules = mp_realloc(modules, (n_modules + 1) * sizeof *modules);
        modules[n_modules++] = m;
        if (m->desc->load && m->desc->load(m) != MAGPIE_OK) {
            mp_log(MP_LOG_ERROR, "module %s failed to load", m->desc->name);
            unregister_all(m);
            return MAGPIE_ERR;
        }
        m->loaded = 1;
        mp_log(MP_LOG_DEBUG, "loaded module %s", m->desc->name);
    }
    return MAGPIE_OK;
}

static void free_hook_list(void *v)
{
    struct hook_list *l = v;
    free(l->v);
    free(l);
}

void mp_modules_unload(void)
{
    for (size_t i = n_modules; i-- > 0;) {
        mp_module *m = modules[i];
        if (m->loaded && m->desc->unload)
            m->desc->unload(m);
        unregister_all(m);
        module_free(m);
    }
    free(modules);
    modules = NULL;
    n_modules = 0;
    mp_table_free(hooks, free_hook_list);
    mp_table_free(iqs, free);
    hooks = iqs = NULL;
    mp_table_free(domains, NULL); /* emptied by unregister_all */
    domains = NULL;
    mp_table_free(elements, free);
    elements = NULL;
    free(preauths);
    preauths = NULL;
    n_preauths = 0;
    for (int d = 0; d < 2; d++) {
        free(filters[d].v);
        filters[d] = (struct filter_list){NULL, 0};
    }
    free(notifies);
    notifies = NULL;
    n_notifies = 0;
    free(queries);
    queries = NULL;
    n_queries = 0;
    free(routes);
    routes = NULL;
    n_routes = 0;
    free(features);
    features = NULL;
    free(discos);
    discos = NULL;
    free(disco_nodes);
    disco_nodes = NULL;
    n_disco_nodes = 0;
    for (size_t i = 0; i < n_adhoc; i++) {
        free(adhoc[i].node);
        free(adhoc[i].name);
    }
    free(adhoc);
    adhoc = NULL;
    n_adhoc = 0;
}

/* ---- hooks ---- */

/* Grows the array *v of *n elements of `size` bytes, each starting with its
 * int priority and kept sorted by decreasing priority, by one slot placed
 * after every element of equal or higher priority (equal priorities run in
 * the order added). Returns the slot, for the caller to fill. */
static void *priority_slot(void **v, size_t *n, size_t size, int priority)
{
    char *a = mp_realloc(*v, (*n + 1) * size);
    size_t pos = *n;
    for (; pos > 0; pos--) {
        int p;
        memcpy(&p, a + (pos - 1) * size, sizeof p);
        if (p >= priority)
            break;
    }
    memmove(a + (pos + 1) * size, a + pos * size, (*n - pos) * size);
    *v = a;
    (*n)++;
    return a + pos * size;
}

int mp_hook_add(mp_module *m, const char *hook, int priority, mp_hook_fn fn, void *ud)
{
    struct hook_list *l = mp_table_get(hooks, hook);
    if (!l) {
        l = mp_calloc(1, sizeof *l);
        mp_table_put(hooks, hook, l);
    }
    void *v = l->v;
    struct hook_entry *e = priority_slot(&v, &l->n, sizeof *l->v, priority);
    l->v = v;
    *e = (struct hook_entry){priority, fn, ud, m};
    return MAGPIE_OK;
}

void mp_hook_run_all(const char *hook, mp_session *s, mp_stanza *st, void *data)
{
    struct hook_list *l = hooks ? mp_table_get(hooks, hook) : NULL;
    struct mp_hook_event ev = {s, st, data};
    for (size_t i = 0; l && i < l->n; i++)
        l->v[i].fn(&ev, l->v[i].ud);
}

int mp_hook_run(const char *hook, mp_session *s, mp_stanza *st, void *data)
{
    if (!hooks)
        return HOOK_PASS;
    struct hook_list *l = mp_table_get(hooks, hook);
    if (!l)
        return HOOK_PASS;
    struct mp_hook_event ev = {s, st, data};
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].fn(&ev, l->v[i].ud) == HOOK_HANDLED)
            return HOOK_HANDLED;
    return HOOK_PASS;
}

/* ---- routing hooks ---- */

int mp_route_hooks_add(mp_module *m, const struct mp_route_hooks *h, int priority, void *ud)
{
    if (!h)
        return MAGPIE_ERR;
    void *v = routes;
    struct route_entry *e = priority_slot(&v, &n_routes, sizeof *routes, priority);
    routes = v;
    *e = (struct route_entry){priority, h, ud, m};
    return MAGPIE_OK;
}

static int (*route_fn(const struct mp_route_hooks *h, enum mp_route_point p))(mp_stanza *, void *)
{
    switch (p) {
    case MP_ROUTE_MESSAGE_OFFLINE:
        return h->message_offline;
    case MP_ROUTE_PRESENCE_SUBSCRIPTION:
        return h->presence_subscription;
    case MP_ROUTE_PRESENCE_PROBE:
        return h->presence_probe;
    case MP_ROUTE_IQ_RESULT:
        return h->iq_result;
    case MP_ROUTE_TO_HOST:
        return h->to_host;
    case MP_ROUTE_REMOTE:
        return h->remote;
    case MP_ROUTE_MESSAGE_ACCOUNT:
        return h->message_account;
    case MP_ROUTE_IQ_ACCOUNT:
        return h->iq_account;
    }
    return NULL;
}

int mp_route_hooks_run(enum mp_route_point p, mp_session *s, mp_stanza *st)
{
    static const char *const legacy[] = {
        [MP_ROUTE_MESSAGE_OFFLINE] = "message-offline",
        [MP_ROUTE_PRESENCE_SUBSCRIPTION] = "presence-subscription",
        [MP_ROUTE_PRESENCE_PROBE] = "presence-probe",
        [MP_ROUTE_IQ_RESULT] = "iq-result",
        [MP_ROUTE_TO_HOST] = NULL, /* message-to-server / presence-to-server */
        [MP_ROUTE_REMOTE] = "route-remote",
        [MP_ROUTE_MESSAGE_ACCOUNT] = NULL, /* typed only */
        [MP_ROUTE_IQ_ACCOUNT] = NULL,      /* typed only */
    };
    for (size_t i = 0; i < n_routes; i++) {
        int (*fn)(mp_stanza *, void *) = route_fn(routes[i].h, p);
        if (fn && fn(st, routes[i].ud) == HOOK_HANDLED)
            return HOOK_HANDLED;
    }
    const char *name = legacy[p];
    if (p == MP_ROUTE_MESSAGE_ACCOUNT || p == MP_ROUTE_IQ_ACCOUNT)
        return HOOK_PASS;
    if (p == MP_ROUTE_TO_HOST)
        name = mp_stanza_envelope(st)->kind == MP_KIND_MESSAGE ? "message-to-server"
                                                               : "presence-to-server";
    return mp_hook_run(name, s, st, NULL);
}

/* ---- questions between modules ---- */

int mp_queries_add(mp_module *m, const struct mp_queries *q, void *ud)
{
    if (!q)
        return MAGPIE_ERR;
    queries = mp_realloc(queries, (n_queries + 1) * sizeof *queries);
    queries[n_queries++] = (struct query_entry){q, ud, m};
    return MAGPIE_OK;
}

int mp_query_roster_item(const char *host, const char *user, const char *contact,
                         mp_roster_item_cb cb, void *ud)
{
    for (size_t i = 0; i < n_queries; i++)
        if (queries[i].q->roster_item)
            return queries[i].q->roster_item(host, user, contact, cb, ud, queries[i].ud) ==
                           MAGPIE_OK
                       ? MAGPIE_OK
                       : MAGPIE_ERR;
    return MAGPIE_NOTFOUND;
}

int mp_route_hooks_any(enum mp_route_point p)
{
    for (size_t i = 0; i < n_routes; i++)
        if (route_fn(routes[i].h, p))
            return 1;
    return 0;
}

/* ---- filters and notifications ---- */

int mp_filter_add(mp_module *m, enum mp_filter_dir dir, int priority, mp_filter_fn fn, void *ud)
{
    if (dir != MP_FILTER_IN && dir != MP_FILTER_OUT)
        return MAGPIE_ERR;
    struct filter_list *l = &filters[dir];
    void *v = l->v;
    struct filter_entry *e = priority_slot(&v, &l->n, sizeof *l->v, priority);
    l->v = v;
    *e = (struct filter_entry){priority, fn, ud, m};
    return MAGPIE_OK;
}

int mp_filters_run(enum mp_filter_dir dir, mp_session *s, mp_stanza *st)
{
    const struct filter_list *l = &filters[dir];
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].fn(s, st, l->v[i].ud) == MP_FILTER_STOP)
            return MP_FILTER_STOP;
    /* the older string hook, after the typed filters */
    if (dir == MP_FILTER_IN && mp_hook_run("stanza-in", s, st, NULL) == HOOK_HANDLED)
        return MP_FILTER_STOP;
    return MP_FILTER_PASS;
}

int mp_notify_add(mp_module *m, const struct mp_notify *n, void *ud)
{
    notifies = mp_realloc(notifies, (n_notifies + 1) * sizeof *notifies);
    notifies[n_notifies++] = (struct notify_entry){n, ud, m};
    return MAGPIE_OK;
}

void mp_notify_session_started(mp_session *s)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->session_started)
            notifies[i].n->session_started(s, notifies[i].ud);
    mp_hook_run_all("session-started", s, NULL, NULL);
}

void mp_notify_session_ended(mp_session *s)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->session_ended)
            notifies[i].n->session_ended(s, notifies[i].ud);
    mp_hook_run_all("session-ended", s, NULL, NULL);
}

void mp_notify_session_resumed(mp_session *s)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->session_resumed)
            notifies[i].n->session_resumed(s, notifies[i].ud);
}

void mp_notify_presence_changed(mp_session *s, mp_stanza *presence, int available)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->presence_changed)
            notifies[i].n->presence_changed(s, presence, available, notifies[i].ud);
}

void mp_notify_account_deleted(const char *domain, const char *user)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->account_deleted)
            notifies[i].n->account_deleted(domain, user, notifies[i].ud);
}

void mp_notify_message_held(mp_session *s, mp_stanza *message)
{
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].n->message_held)
            notifies[i].n->message_held(s, message, notifies[i].ud);
}

/* ---- IQ handlers ---- */

static void iq_key(char *buf, size_t len, int type, const char *ns, int scope)
{
    snprintf(buf, len, "%d|%d|%s", type, scope, ns);
}

int mp_iq_register(mp_module *m, enum mp_iq_type type, const char *ns, enum mp_iq_scope scope,
                   mp_iq_fn fn, void *ud)
{
    char key[512];
    iq_key(key, sizeof key, type, ns, scope);
    if (mp_table_get(iqs, key)) {
        mp_log(MP_LOG_ERROR, "module %s: an IQ handler for %s is already registered", m->desc->name,
               ns);
        return MAGPIE_ERR;
    }
    struct iq_entry *e = mp_malloc(sizeof *e);
    *e = (struct iq_entry){fn, ud, m};
    mp_table_put(iqs, key, e);
    return MAGPIE_OK;
}

/* Finds the handler of iq in table (keys from iq_key with scope) and
 * calls it: MAGPIE_OK, or MAGPIE_NOTFOUND. */
static int iq_dispatch_in(mp_table *table, mp_stanza *iq, int scope)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *child = mp_xml_first_element(mp_stanza_root(iq));
    if (!table || !child)
        return MAGPIE_NOTFOUND;
    int t;
    if (env->type == MP_TYPE_GET)
        t = MP_IQ_GET;
    else if (env->type == MP_TYPE_SET)
        t = MP_IQ_SET;
    else
        return MAGPIE_NOTFOUND;
    char key[512];
    iq_key(key, sizeof key, t, child->ns ? child->ns : "", scope);
    struct iq_entry *e = mp_table_get(table, key);
    if (!e)
        return MAGPIE_NOTFOUND;
    e->fn(iq, e->ud);
    return MAGPIE_OK;
}

int mp_iq_dispatch(mp_stanza *iq, enum mp_iq_scope scope)
{
    return iq_dispatch_in(iqs, iq, scope);
}

/* ---- stream features ---- */

int mp_stream_feature_add(mp_module *m, enum mp_feature_stage stage, mp_feature_fn fn, void *ud)
{
    features = mp_realloc(features, (n_features + 1) * sizeof *features);
    features[n_features++] = (struct feature_entry){stage, fn, ud, m};
    return MAGPIE_OK;
}

void mp_stream_features_add(mp_session *s, mp_stanza *st, mp_xml *el, enum mp_feature_stage stage)
{
    for (size_t i = 0; i < n_features; i++)
        if (features[i].stage == stage)
            features[i].fn(s, st, el, features[i].ud);
}

/* ---- stream elements ---- */

/* "ns|name" into buf; MAGPIE_ERR if it does not fit. */
static int element_key(char *buf, size_t len, const char *ns, const char *name)
{
    int n = snprintf(buf, len, "%s|%s", ns, name);
    return n < 0 || (size_t)n >= len ? MAGPIE_ERR : MAGPIE_OK;
}

static int element_add(mp_module *m, const char *ns, const char *name, mp_stream_element_fn fn,
                       void *ud, int unbound)
{
    char key[512];
    if (!ns || !name || !fn || !*ns || !*name || strcmp(ns, MP_NS_CLIENT) == 0 ||
        element_key(key, sizeof key, ns, name) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (mp_table_get(elements, key)) {
        mp_log(MP_LOG_ERROR, "module %s: a handler for <%s xmlns='%s'/> is already registered",
               m->desc->name, name, ns);
        return MAGPIE_ERR;
    }
    struct element_entry *e = mp_malloc(sizeof *e);
    *e = (struct element_entry){fn, ud, m, unbound};
    mp_table_put(elements, key, e);
    return MAGPIE_OK;
}

int mp_stream_element_add(mp_module *m, const char *ns, const char *name, mp_stream_element_fn fn,
                          void *ud)
{
    return element_add(m, ns, name, fn, ud, 0);
}

int mp_stream_element_add_unbound(mp_module *m, const char *ns, const char *name,
                                  mp_stream_element_fn fn, void *ud)
{
    return element_add(m, ns, name, fn, ud, 1);
}

int mp_stream_element_dispatch(mp_session *s, mp_stanza *el, int bound)
{
    const mp_xml *root = mp_stanza_root(el);
    char key[512];
    if (!elements || !root->ns || element_key(key, sizeof key, root->ns, root->name) != MAGPIE_OK)
        return HOOK_PASS;
    const struct element_entry *e = mp_table_get(elements, key);
    return e && (bound || e->unbound) ? e->fn(s, el, e->ud) : HOOK_PASS;
}

/* ---- stream management ---- */

int mp_stream_mgmt_set(mp_module *m, const struct mp_stream_mgmt *h, void *ud)
{
    if (!h || sm_hooks) {
        mp_log(MP_LOG_ERROR, "module %s: stream management hooks %s", m->desc->name,
               h ? "are already registered" : "missing");
        return MAGPIE_ERR;
    }
    sm_hooks = h;
    sm_ud = ud;
    sm_module = m;
    return MAGPIE_OK;
}

int mp_sm_sent(mp_session *s, mp_stanza *st)
{
    return sm_hooks && sm_hooks->sent ? sm_hooks->sent(s, st, sm_ud) : MP_FILTER_PASS;
}

void mp_sm_handled(mp_session *s, uint32_t handled)
{
    if (sm_hooks && sm_hooks->handled)
        sm_hooks->handled(s, handled, sm_ud);
}

void mp_sm_resumed(mp_session *s, void *arg)
{
    if (sm_hooks && sm_hooks->resumed)
        sm_hooks->resumed(s, arg, sm_ud);
}

void mp_sm_closing(mp_session *s)
{
    if (sm_hooks && sm_hooks->closing)
        sm_hooks->closing(s, sm_ud);
}

void mp_sm_resume_failed(mp_session *from, void *arg)
{
    if (sm_hooks && sm_hooks->resume_failed)
        sm_hooks->resume_failed(from, arg, sm_ud);
}

/* ---- IQs before authentication ---- */

int mp_preauth_iq_register(mp_module *m, const char *ns, mp_preauth_iq_fn fn, void *ud)
{
    if (!ns || !*ns || !fn)
        return MAGPIE_ERR;
    for (size_t i = 0; i < n_preauths; i++)
        if (strcmp(preauths[i].ns, ns) == 0) {
            mp_log(MP_LOG_ERROR, "module %s: a pre-auth IQ handler for %s is already registered",
                   m->desc->name, ns);
            return MAGPIE_ERR;
        }
    preauths = mp_realloc(preauths, (n_preauths + 1) * sizeof *preauths);
    preauths[n_preauths++] = (struct preauth_entry){mp_strdup(ns), fn, ud, m};
    return MAGPIE_OK;
}

int mp_preauth_iq_known(const char *ns)
{
    for (size_t i = 0; i < n_preauths; i++)
        if (strcmp(preauths[i].ns, ns) == 0)
            return 1;
    return 0;
}

int mp_preauth_iq_dispatch(mp_session *s, mp_stanza *iq, const char *host, const char *addr)
{
    const mp_xml *child = mp_xml_first_element(mp_stanza_root(iq));
    if (!child || !child->ns)
        return HOOK_PASS;
    for (size_t i = 0; i < n_preauths; i++)
        if (strcmp(preauths[i].ns, child->ns) == 0) {
            preauths[i].fn(s, iq, host, addr, preauths[i].ud);
            return HOOK_HANDLED;
        }
    return HOOK_PASS;
}

/* ---- disco ---- */

static void disco_add(struct disco_entry e)
{
    discos = mp_realloc(discos, (n_discos + 1) * sizeof *discos);
    discos[n_discos++] = e;
}

int mp_disco_feature_add(mp_module *m, enum mp_disco_scope scope, const char *var)
{
    disco_add((struct disco_entry){scope, mp_strdup(var), NULL, NULL, NULL, m, NULL, NULL});
    return MAGPIE_OK;
}

int mp_disco_identity_add(mp_module *m, enum mp_disco_scope scope, const char *category,
                          const char *type, const char *name)
{
    disco_add((struct disco_entry){scope, NULL, mp_strdup(category), mp_strdup(type),
                                   name ? mp_strdup(name) : NULL, m, NULL, NULL});
    return MAGPIE_OK;
}

void mp_disco_features_foreach(enum mp_disco_scope scope, void (*fn)(void *, const char *),
                               void *ud)
{
    for (size_t i = 0; i < n_discos; i++)
        if (discos[i].scope == scope && discos[i].var)
            fn(ud, discos[i].var);
}

void mp_disco_identities_foreach(enum mp_disco_scope scope,
                                 void (*fn)(void *, const char *, const char *, const char *),
                                 void *ud)
{
    for (size_t i = 0; i < n_discos; i++)
        if (discos[i].scope == scope && !discos[i].var && !discos[i].item)
            fn(ud, discos[i].category, discos[i].type, discos[i].name);
}

int mp_disco_item_add(mp_module *m, enum mp_disco_scope scope, const char *jid, const char *name)
{
    disco_add((struct disco_entry){scope, NULL, NULL, NULL, name ? mp_strdup(name) : NULL, m,
                                   mp_strdup(jid), NULL});
    return MAGPIE_OK;
}

void mp_disco_items_foreach(enum mp_disco_scope scope,
                            void (*fn)(void *ud, const char *jid, const char *name), void *ud)
{
    for (size_t i = 0; i < n_discos; i++)
        if (discos[i].scope == scope && discos[i].item)
            fn(ud, discos[i].item, discos[i].name);
}

int mp_disco_node_add(mp_module *m, enum mp_disco_scope scope, mp_disco_node_fn fn, void *ud)
{
    if (!fn)
        return MAGPIE_ERR;
    disco_nodes = mp_realloc(disco_nodes, (n_disco_nodes + 1) * sizeof *disco_nodes);
    disco_nodes[n_disco_nodes++] = (struct disco_node_entry){scope, fn, ud, m};
    return MAGPIE_OK;
}

int mp_disco_node_dispatch(enum mp_disco_scope scope, mp_stanza *iq, const char *node, int items)
{
    for (size_t i = 0; i < n_disco_nodes; i++)
        if (disco_nodes[i].scope == scope &&
            disco_nodes[i].fn(iq, node, items, disco_nodes[i].ud) == HOOK_HANDLED)
            return HOOK_HANDLED;
    return HOOK_PASS;
}

/* ---- ad-hoc commands (the registry; adhoc.c has the sessions) ---- */

const struct mp_adhoc_cmd *mp_adhoc_cmd_find(const char *node)
{
    for (size_t i = 0; i < n_adhoc; i++)
        if (strcmp(adhoc[i].node, node) == 0)
            return &adhoc[i];
    return NULL;
}

const struct mp_adhoc_cmd *mp_adhoc_cmd_nth(size_t i)
{
    return i < n_adhoc ? &adhoc[i] : NULL;
}

int mp_adhoc_command_add(mp_module *m, const char *node, const char *name,
                         enum mp_adhoc_access access, mp_adhoc_fn fn, void *ud)
{
    if (!node || !*node || !name || !fn || mp_adhoc_cmd_find(node)) {
        mp_log(MP_LOG_ERROR, "ad-hoc command %s: invalid or already registered",
               node ? node : "(null)");
        return MAGPIE_ERR;
    }
    adhoc = mp_realloc(adhoc, (n_adhoc + 1) * sizeof *adhoc);
    adhoc[n_adhoc++] =
        (struct mp_adhoc_cmd){mp_strdup(node), mp_strdup(name), access, fn, ud, m, NULL, NULL};
    return MAGPIE_OK;
}

int mp_adhoc_command_allow(mp_module *m, const char *node,
                           int (*allow)(const mp_jid *requester, void *ud), void *ud)
{
    struct mp_adhoc_cmd *c = node ? (struct mp_adhoc_cmd *)mp_adhoc_cmd_find(node) : NULL;
    if (!c || c->m != m)
        return MAGPIE_ERR;
    c->allow = allow;
    c->allow_ud = ud;
    return MAGPIE_OK;
}

/* ---- roster queries ---- */

int mp_roster_provider_set(mp_module *m, mp_roster_contacts_fn fn, void *provider_ud)
{
    if (roster_provider.fn) {
        mp_log(MP_LOG_ERROR, "module %s: a roster provider is already registered", m->desc->name);
        return MAGPIE_ERR;
    }
    roster_provider.m = m;
    roster_provider.fn = fn;
    roster_provider.ud = provider_ud;
    return MAGPIE_OK;
}

int mp_roster_contacts(const char *host, const char *user, mp_roster_contacts_cb cb, void *ud)
{
    if (!roster_provider.fn || !host || !user)
        return MAGPIE_ERR;
    return roster_provider.fn(host, user, cb, ud, roster_provider.ud);
}

/* ---- service domains ---- */

mp_domain *mp_domain_add(mp_module *m, const char *name, mp_domain_fn fn, void *ud)
{
    char norm[MP_JID_PART_MAX + 1];
    if (!fn || mp_jid_nameprep(name, norm, sizeof norm) != MAGPIE_OK) {
        mp_log(MP_LOG_ERROR, "module %s: '%s' is not a valid domain", m->desc->name, name);
        return NULL;
    }
    if (mp_host_is_local(norm) || mp_table_get(domains, norm)) {
        mp_log(MP_LOG_ERROR, "module %s: domain %s is already served", m->desc->name, norm);
        return NULL;
    }
    mp_domain *d = mp_calloc(1, sizeof *d);
    d->name = mp_strdup(norm);
    d->fn = fn;
    d->ud = ud;
    d->m = m;
    d->iqs = mp_table_new(8);
    mp_table_put(domains, norm, d);
    return d;
}

const char *mp_domain_name(const mp_domain *d)
{
    return d->name;
}

int mp_domain_iq_register(mp_domain *d, enum mp_iq_type type, const char *ns, mp_iq_fn fn, void *ud)
{
    char key[512];
    iq_key(key, sizeof key, type, ns, 0);
    if (mp_table_get(d->iqs, key)) {
        mp_log(MP_LOG_ERROR, "module %s: an IQ handler for %s on %s is already registered",
               d->m->desc->name, ns, d->name);
        return MAGPIE_ERR;
    }
    struct iq_entry *e = mp_malloc(sizeof *e);
    *e = (struct iq_entry){fn, ud, d->m};
    mp_table_put(d->iqs, key, e);
    return MAGPIE_OK;
}

static void domain_disco_add(mp_domain *d, struct disco_entry e)
{
    d->discos = mp_realloc(d->discos, (d->n_discos + 1) * sizeof *d->discos);
    d->discos[d->n_discos++] = e;
}

int mp_domain_disco_identity(mp_domain *d, const char *category, const char *type, const char *name)
{
    domain_disco_add(d, (struct disco_entry){0, NULL, mp_strdup(category), mp_strdup(type),
                                             name ? mp_strdup(name) : NULL, d->m, NULL, NULL});
    return MAGPIE_OK;
}

int mp_domain_disco_feature(mp_domain *d, const char *var)
{
    domain_disco_add(d,
                     (struct disco_entry){0, mp_strdup(var), NULL, NULL, NULL, d->m, NULL, NULL});
    return MAGPIE_OK;
}

int mp_domain_disco_field(mp_domain *d, const char *form_type, const char *var, const char *value)
{
    if (!form_type || !var || !value)
        return MAGPIE_ERR;
    domain_disco_add(d, (struct disco_entry){0, mp_strdup(var), NULL, NULL, mp_strdup(value), d->m,
                                             NULL, mp_strdup(form_type)});
    return MAGPIE_OK;
}

/* Adds the XEP-0128 forms of d's disco#info to query rq of r: one form per
 * FORM_TYPE, in the order first registered. */
static void domain_disco_forms(mp_domain *d, mp_stanza *r, mp_xml *rq)
{
    for (size_t i = 0; i < d->n_discos; i++) {
        const char *ft = d->discos[i].form;
        int seen = 0;
        for (size_t j = 0; ft && j < i && !seen; j++)
            seen = d->discos[j].form && !strcmp(d->discos[j].form, ft);
        if (!ft || seen)
            continue;
        mp_xml *x = mp_form_add(r, rq, "result", ft, NULL);
        for (size_t j = i; j < d->n_discos; j++)
            if (d->discos[j].form && !strcmp(d->discos[j].form, ft))
                mp_form_field_add(r, x, d->discos[j].var, NULL, NULL, d->discos[j].name);
    }
}

mp_domain *mp_domain_find(const char *name)
{
    return domains && mp_table_count(domains) ? mp_table_get(domains, name) : NULL;
}

#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"

/* Answers a disco#info query to d (without node) from its registrations. */
/* The answer to a disco#info query for d itself from its registrations:
 * a new stanza for the caller to route, or NULL (not such a query, or d
 * registered no disco items). */
static mp_stanza *domain_disco_info(mp_domain *d, mp_stanza *iq)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (env->type != MP_TYPE_GET || !q || strcmp(q->name, "query") != 0 || !q->ns ||
        strcmp(q->ns, NS_DISCO_INFO) != 0 || d->n_discos == 0)
        return NULL;
    if (mp_xml_get_attr(q, "node")) {
        mp_stanza *e = mp_stanza_copy(iq);
        mp_stanza_make_error(e, "cancel", "item-not-found", NULL);
        return e;
    }
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_DISCO_INFO);
    for (size_t i = 0; i < d->n_discos; i++)
        if (!d->discos[i].var && !d->discos[i].form) {
            mp_xml *id = mp_xml_add_child(r, rq, "identity", NULL);
            mp_xml_set_attr(r, id, "category", d->discos[i].category);
            mp_xml_set_attr(r, id, "type", d->discos[i].type);
            if (d->discos[i].name)
                mp_xml_set_attr(r, id, "name", d->discos[i].name);
        }
    mp_xml_set_attr(r, mp_xml_add_child(r, rq, "feature", NULL), "var", NS_DISCO_INFO);
    for (size_t i = 0; i < d->n_discos; i++)
        if (d->discos[i].var && !d->discos[i].form && strcmp(d->discos[i].var, NS_DISCO_INFO) != 0)
            mp_xml_set_attr(r, mp_xml_add_child(r, rq, "feature", NULL), "var", d->discos[i].var);
    domain_disco_forms(d, r, rq);
    return r;
}

int mp_domain_dispatch(mp_domain *d, mp_stanza *st, mp_stanza **reply)
{
    const struct mp_envelope *env = mp_stanza_envelope(st);
    int req = env->kind == MP_KIND_IQ && (env->type == MP_TYPE_GET || env->type == MP_TYPE_SET);
    *reply = NULL;
    if (req && iq_dispatch_in(d->iqs, st, 0) == MAGPIE_OK)
        return HOOK_HANDLED;
    if (req && (*reply = domain_disco_info(d, st)) != NULL)
        return HOOK_HANDLED;
    return d->fn(st, d->ud);
}

static void domain_free(mp_domain *d)
{
    mp_table_free(d->iqs, free);
    for (size_t i = 0; i < d->n_discos; i++) {
        free(d->discos[i].var);
        free(d->discos[i].category);
        free(d->discos[i].type);
        free(d->discos[i].name);
        free(d->discos[i].form);
    }
    free(d->discos);
    free(d->name);
    free(d);
}

struct domain_sweep {
    mp_module *m;
    mp_domain **v;
    size_t n;
};

static void collect_domain(void *ud, const char *key, void *value)
{
    (void)key;
    struct domain_sweep *sw = ud;
    mp_domain *d = value;
    if (d->m == sw->m) {
        sw->v = mp_realloc(sw->v, (sw->n + 1) * sizeof *sw->v);
        sw->v[sw->n++] = d;
    }
}

/* ---- counters ---- */

mp_counter *mp_counter_new(mp_module *m, const char *name, const char *help)
{
    mp_counter *c = mp_calloc(1, sizeof *c);
    char full[256];
    snprintf(full, sizeof full, "%s_%s", m->desc->name, name);
    c->name = mp_strdup(full);
    c->help = mp_strdup(help ? help : "");
    c->value = aligned_alloc(64, MP_STAT_SLOTS * sizeof *c->value);
    if (!c->value)
        abort();
    for (int i = 0; i < MP_STAT_SLOTS; i++)
        atomic_init(&c->value[i].v, 0);
    c->m = m;
    c->next = counters;
    counters = c;
    return c;
}

void mp_counter_add(mp_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value[mp_stat_slot()].v, n, memory_order_relaxed);
}

void mp_module_counters_write(struct evbuffer *out)
{
    for (mp_counter *c = counters; c; c = c->next) {
        unsigned long long sum = 0;
        for (int i = 0; i < MP_STAT_SLOTS; i++)
            sum += atomic_load_explicit(&c->value[i].v, memory_order_relaxed);
        evbuffer_add_printf(out, "%s %llu\n", c->name, sum);
    }
}

/* ---- undo ---- */

struct iq_sweep {
    mp_module *m;
    char **keys;
    size_t n;
};

static void collect_iq(void *ud, const char *key, void *value)
{
    struct iq_sweep *sw = ud;
    struct iq_entry *e = value;
    if (e->m == sw->m) {
        sw->keys = mp_realloc(sw->keys, (sw->n + 1) * sizeof *sw->keys);
        sw->keys[sw->n++] = mp_strdup(key);
    }
}

static void collect_element(void *ud, const char *key, void *value)
{
    struct iq_sweep *sw = ud;
    struct element_entry *e = value;
    if (e->m == sw->m) {
        sw->keys = mp_realloc(sw->keys, (sw->n + 1) * sizeof *sw->keys);
        sw->keys[sw->n++] = mp_strdup(key);
    }
}

static void strip_hooks(void *ud, const char *key, void *value)
{
    (void)key;
    mp_module *m = ud;
    struct hook_list *l = value;
    size_t j = 0;
    for (size_t i = 0; i < l->n; i++)
        if (l->v[i].m != m)
            l->v[j++] = l->v[i];
    l->n = j;
}

static void unregister_all(mp_module *m)
{
    if (roster_provider.m == m)
        roster_provider.m = NULL, roster_provider.fn = NULL, roster_provider.ud = NULL;
    mp_table_foreach(hooks, strip_hooks, m);
    if (sm_module == m) {
        sm_hooks = NULL;
        sm_ud = NULL;
        sm_module = NULL;
    }
    for (int d = 0; d < 2; d++) {
        size_t j = 0;
        for (size_t i = 0; i < filters[d].n; i++)
            if (filters[d].v[i].m != m)
                filters[d].v[j++] = filters[d].v[i];
        filters[d].n = j;
    }
    size_t k = 0;
    for (size_t i = 0; i < n_notifies; i++)
        if (notifies[i].m != m)
            notifies[k++] = notifies[i];
    n_notifies = k;
    k = 0;
    for (size_t i = 0; i < n_queries; i++)
        if (queries[i].m != m)
            queries[k++] = queries[i];
    n_queries = k;
    struct domain_sweep ds = {m, NULL, 0};
    mp_table_foreach(domains, collect_domain, &ds);
    for (size_t i = 0; i < ds.n; i++) {
        mp_table_del(domains, ds.v[i]->name);
        domain_free(ds.v[i]);
    }
    free(ds.v);
    struct iq_sweep sw = {m, NULL, 0};
    mp_table_foreach(iqs, collect_iq, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        free(mp_table_del(iqs, sw.keys[i]));
        free(sw.keys[i]);
    }
    free(sw.keys);
    sw = (struct iq_sweep){m, NULL, 0};
    mp_table_foreach(elements, collect_element, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        free(mp_table_del(elements, sw.keys[i]));
        free(sw.keys[i]);
    }
    free(sw.keys);
    size_t j = 0;
    for (size_t i = 0; i < n_preauths; i++) {
        if (preauths[i].m == m)
            free(preauths[i].ns);
        else
            preauths[j++] = preauths[i];
    }
    n_preauths = j;
    j = 0;
    for (size_t i = 0; i < n_features; i++)
        if (features[i].m != m)
            features[j++] = features[i];
    n_features = j;
    j = 0;
    for (size_t i = 0; i < n_discos; i++) {
        if (discos[i].m == m) {
            free(discos[i].var);
            free(discos[i].category);
            free(discos[i].type);
            free(discos[i].name);
            free(discos[i].item);
        } else {
            discos[j++] = discos[i];
        }
    }
    n_discos = j;
    j = 0;
    for (size_t i = 0; i < n_disco_nodes; i++)
        if (disco_nodes[i].m != m)
            disco_nodes[j++] = disco_nodes[i];
    n_disco_nodes = j;
    j = 0;
    for (size_t i = 0; i < n_adhoc; i++) {
        if (adhoc[i].m == m) {
            free(adhoc[i].node);
            free(adhoc[i].name);
        } else {
            adhoc[j++] = adhoc[i];
        }
    }
    n_adhoc = j;
    for (mp_counter **pp = &counters; *pp;) {
        mp_counter *c = *pp;
        if (c->m == m) {
            *pp = c->next;
            free(c->name);
            free(c->help);
            free(c->value);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}
