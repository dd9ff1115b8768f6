/* module.c - the module loader and the registries modules fill: hooks, IQ
 * handlers, stream features, disco features/identities, counters.
 *
 * Modules are loaded before the workers start and unloaded after they stop,
 * so the registries are written single-threaded and read lock-free by the
 * workers. Every registration records its module, so unloading a module
 * removes exactly what it registered. */
#include "core.h"

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

struct disco_entry {
    enum mp_disco_scope scope;
    char *var;                    /* feature, or NULL for identities */
    char *category, *type, *name; /* identity */
    mp_module *m;
};

struct mp_counter {
    char *name, *help;
    atomic_ullong value;
    mp_module *m;
    struct mp_counter *next;
};

static mp_module **modules;
static size_t n_modules;
static mp_table *hooks; /* name -> struct hook_list */
static mp_table *iqs;   /* "get|ns|scope" -> struct iq_entry */
static struct feature_entry *features;
static size_t n_features;
static struct disco_entry *discos;
static size_t n_discos;
static struct mp_counter *counters;

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

int mp_modules_load(const struct mp_config *cfg)
{
    char err[PATH_MAX * 2];
    hooks = mp_table_new(32);
    iqs = mp_table_new(64);
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
    free(features);
    features = NULL;
    free(discos);
    discos = NULL;
}

/* ---- hooks ---- */

int mp_hook_add(mp_module *m, const char *hook, int priority, mp_hook_fn fn, void *ud)
{
    struct hook_list *l = mp_table_get(hooks, hook);
    if (!l) {
        l = mp_calloc(1, sizeof *l);
        mp_table_put(hooks, hook, l);
    }
    l->v = mp_realloc(l->v, (l->n + 1) * sizeof *l->v);
    size_t pos = l->n;
    /* keep sorted by decreasing priority; equal priorities in order added */
    while (pos > 0 && l->v[pos - 1].priority < priority) {
        l->v[pos] = l->v[pos - 1];
        pos--;
    }
    l->v[pos] = (struct hook_entry){priority, fn, ud, m};
    l->n++;
    return MAGPIE_OK;
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

int mp_iq_dispatch(mp_stanza *iq, enum mp_iq_scope scope)
{
    mp_xml *root = mp_stanza_root(iq);
    const char *type = mp_xml_get_attr(root, "type");
    mp_xml *child = mp_xml_first_element(root);
    if (!iqs || !type || !child)
        return MAGPIE_NOTFOUND;
    int t;
    if (strcmp(type, "get") == 0)
        t = MP_IQ_GET;
    else if (strcmp(type, "set") == 0)
        t = MP_IQ_SET;
    else
        return MAGPIE_NOTFOUND;
    char key[512];
    iq_key(key, sizeof key, t, child->ns ? child->ns : "", scope);
    struct iq_entry *e = mp_table_get(iqs, key);
    if (!e)
        return MAGPIE_NOTFOUND;
    e->fn(iq, e->ud);
    return MAGPIE_OK;
}

void mp_iq_reply(mp_stanza *reply)
{
    mp_route(reply);
}

void mp_iq_reply_error(const mp_stanza *iq, const char *type, const char *condition)
{
    mp_stanza *e = mp_stanza_copy(iq);
    mp_stanza_make_error(e, type, condition, NULL);
    mp_route(e);
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

/* ---- disco ---- */

static void disco_add(struct disco_entry e)
{
    discos = mp_realloc(discos, (n_discos + 1) * sizeof *discos);
    discos[n_discos++] = e;
}

int mp_disco_feature_add(mp_module *m, enum mp_disco_scope scope, const char *var)
{
    disco_add((struct disco_entry){scope, mp_strdup(var), NULL, NULL, NULL, m});
    return MAGPIE_OK;
}

int mp_disco_identity_add(mp_module *m, enum mp_disco_scope scope, const char *category,
                          const char *type, const char *name)
{
    disco_add((struct disco_entry){scope, NULL, mp_strdup(category), mp_strdup(type),
                                   name ? mp_strdup(name) : NULL, m});
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
        if (discos[i].scope == scope && !discos[i].var)
            fn(ud, discos[i].category, discos[i].type, discos[i].name);
}

/* ---- counters ---- */

mp_counter *mp_counter_new(mp_module *m, const char *name, const char *help)
{
    mp_counter *c = mp_calloc(1, sizeof *c);
    char full[256];
    snprintf(full, sizeof full, "%s_%s", m->desc->name, name);
    c->name = mp_strdup(full);
    c->help = mp_strdup(help ? help : "");
    c->m = m;
    c->next = counters;
    counters = c;
    return c;
}

void mp_counter_add(mp_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

void mp_module_counters_write(struct evbuffer *out)
{
    for (mp_counter *c = counters; c; c = c->next)
        evbuffer_add_printf(
            out, "%s %llu\n", c->name,
            (unsigned long long)atomic_load_explicit(&c->value, memory_order_relaxed));
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
    mp_table_foreach(hooks, strip_hooks, m);
    struct iq_sweep sw = {m, NULL, 0};
    mp_table_foreach(iqs, collect_iq, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        free(mp_table_del(iqs, sw.keys[i]));
        free(sw.keys[i]);
    }
    free(sw.keys);
    size_t j = 0;
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
        } else {
            discos[j++] = discos[i];
        }
    }
    n_discos = j;
    for (mp_counter **pp = &counters; *pp;) {
        mp_counter *c = *pp;
        if (c->m == m) {
            *pp = c->next;
            free(c->name);
            free(c->help);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}
