/* mod_register - XEP-0077 in-band registration (opt-in: not in the
 * default module list; loading it opens registration on every host).
 *
 * Before authentication (the core lets jabber:iq:register IQs of an
 * unauthenticated stream through to us, mp_preauth_iq_register):
 *   stream feature <register xmlns='http://jabber.org/features/iq-register'/>;
 *   IQ get: the fields, <username/> and <password/>, with instructions
 *     and the same as a XEP-0004 form (FORM_TYPE jabber:iq:register);
 *   IQ set with <username/> and <password/> (or a submitted form):
 *     creates the account with SCRAM credentials (mp_account_create);
 *     it can log in at once. A name nodeprep refuses, a missing field or
 *     a password shorter than `min_password_length` characters gets
 *     modify/not-acceptable, a name taken cancel/conflict, and a second
 *     registration from one address within `interval` seconds
 *     wait/resource-constraint. The stream's input is held while the
 *     account is written, so a client that pipelines its SASL <auth/>
 *     behind the set logs in to the new account.
 * Once authenticated (IQ to the host or without 'to'):
 *   IQ get: <registered/> with the account's <username/>;
 *   IQ set <username/><password/>: changes the password (the username
 *     must be the sender's own: else not-allowed);
 *   IQ set <remove/>: deletes the account (mp_account_remove): the
 *     answer goes first, then every session of the account ends
 *     (not-authorized) and the modules drop its data (account_deleted). */
#include <magpie/magpie.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define NS_REGISTER "jabber:iq:register"
#define NS_FEATURE  "http://jabber.org/features/iq-register"

static const struct mp_option options[] = {
    {"interval", MP_OPT_INT, "300",
     "Seconds between two registrations from one IP address (0: no limit)", 0, 86400 * 30},
    {"min_password_length", MP_OPT_INT, "8", "Shortest password accepted, in characters", 1, 1024},
    {"form", MP_OPT_BOOL, "true",
     "Also offer the fields as a XEP-0004 data form (clients may answer either way)", 0, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};

static mp_module *self;
static mp_counter *c_created, *c_changed, *c_removed, *c_limited;

/* ---- per-address rate ---- */

/* Addresses that registered (or are registering) within `interval`. */
struct recent {
    char *addr;
    double at;
    struct recent *next;
};
static struct recent *recents;
static pthread_mutex_t recent_lock = PTHREAD_MUTEX_INITIALIZER;

static double now_s(void)
{
    return (double)mp_now_us() / 1e6;
}

/* Takes addr's turn: 1, or 0 when it registered less than `interval`
 * seconds ago. Old entries are dropped on the way. */
static int rate_take(const char *addr)
{
    long long interval = mp_module_opt_int(self, "interval");
    if (interval <= 0)
        return 1;
    double now = now_s();
    int ok = 1;
    pthread_mutex_lock(&recent_lock);
    for (struct recent **pp = &recents; *pp;) {
        struct recent *r = *pp;
        if (now - r->at >= (double)interval) {
            *pp = r->next;
            free(r->addr);
            free(r);
            continue;
        }
        if (strcmp(r->addr, addr) == 0)
            ok = 0;
        pp = &r->next;
    }
    if (ok) {
        struct recent *r = mp_calloc(1, sizeof *r);
        r->addr = mp_strdup(addr);
        r->at = now;
        r->next = recents;
        recents = r;
    }
    pthread_mutex_unlock(&recent_lock);
    return ok;
}

/* Gives addr's turn back (the registration failed). */
static void rate_refund(const char *addr)
{
    pthread_mutex_lock(&recent_lock);
    for (struct recent **pp = &recents; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->addr, addr) == 0) {
            struct recent *r = *pp;
            *pp = r->next;
            free(r->addr);
            free(r);
            break;
        }
    pthread_mutex_unlock(&recent_lock);
}

/* ---- reading a request ---- */

/* Characters (UTF-8 code points) in s. */
static size_t utf8_chars(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* The text of query's child name, or of the submitted form's field of that
 * var; NULL when absent. */
static const char *field(mp_stanza *iq, mp_xml *query, const char *name)
{
    mp_xml *form = mp_form_find(query);
    if (form && strcmp(mp_form_type(form), "submit") == 0) {
        const char *v = mp_form_value(iq, form, name);
        if (v)
            return v;
    }
    mp_xml *el = mp_xml_find(query, name, NS_REGISTER);
    return el ? mp_xml_text(iq, el) : NULL;
}

/* An error reply to iq (not taken), for a stream that is not bound. */
static mp_stanza *error_of(const mp_stanza *iq, const char *type, const char *cond,
                           const char *text)
{
    mp_stanza *e = mp_stanza_copy(iq);
    mp_stanza_make_error(e, type, cond, text);
    return e;
}

/* ---- before authentication ---- */

static void add_fields(mp_stanza *r, mp_xml *q)
{
    static const char instructions[] = "Choose a username and password for use with this server.";
    mp_xml *ins = mp_xml_add_child(r, q, "instructions", NULL);
    mp_xml_add_text(r, ins, instructions, strlen(instructions));
    mp_xml_add_child(r, q, "username", NULL);
    mp_xml_add_child(r, q, "password", NULL);
    if (!mp_module_opt_bool(self, "form"))
        return;
    mp_xml *x = mp_form_add(r, q, "form", NS_REGISTER, "Account registration");
    mp_xml *i = mp_xml_add_child(r, x, "instructions", NULL);
    mp_xml_add_text(r, i, instructions, strlen(instructions));
    mp_xml *f = mp_form_field_add(r, x, "username", "text-single", "Username", NULL);
    mp_xml_add_child(r, f, "required", NULL);
    f = mp_form_field_add(r, x, "password", "text-private", "Password", NULL);
    mp_xml_add_child(r, f, "required", NULL);
}

struct pending {
    uint64_t sid;
    mp_stanza *iq; /* referenced */
    char *addr;
};

static void created(void *ud, int rc)
{
    struct pending *p = ud;
    mp_session *s = mp_session_find_stream(p->sid);
    mp_stanza *r;
    if (rc == MAGPIE_OK) {
        mp_counter_add(c_created, 1);
        r = mp_iq_result(p->iq);
    } else {
        rate_refund(p->addr);
        r = rc == MAGPIE_AGAIN ? error_of(p->iq, "cancel", "conflict", NULL)
                               : error_of(p->iq, "wait", "internal-server-error", NULL);
    }
    if (s) {
        mp_session_send(s, r);
        mp_session_release(s);
    } else {
        mp_stanza_unref(r);
    }
    mp_stanza_unref(p->iq);
    free(p->addr);
    free(p);
}

/* Checks a password against the options: NULL if fine, else why not. */
static const char *password_problem(const char *password)
{
    if (!password || !*password)
        return "A password is required";
    if (utf8_chars(password) < (size_t)mp_module_opt_int(self, "min_password_length"))
        return "The password is too short";
    return NULL;
}

static void register_new(mp_session *s, mp_stanza *iq, mp_xml *q, const char *host,
                         const char *addr)
{
    const char *user = field(iq, q, "username");
    const char *password = field(iq, q, "password");
    char norm[MP_JID_PART_MAX + 1];
    mp_jid j = {0};
    if (!user || !*user || mp_jid_nodeprep(user, norm, sizeof norm) != MAGPIE_OK ||
        mp_jid_set(&j, norm, host, NULL) != MAGPIE_OK) {
        mp_jid_free(&j);
        mp_session_send(
            s, error_of(iq, "modify", "not-acceptable",
                        user && *user ? "That username is not valid" : "A username is required"));
        return;
    }
    mp_jid_free(&j);
    const char *why = password_problem(password);
    if (why) {
        mp_session_send(s, error_of(iq, "modify", "not-acceptable", why));
        return;
    }
    if (!rate_take(addr)) {
        mp_counter_add(c_limited, 1);
        mp_session_send(s, error_of(iq, "wait", "resource-constraint",
                                    "Too many registrations from your address; try later"));
        return;
    }
    struct pending *p = mp_calloc(1, sizeof *p);
    p->addr = mp_strdup(addr);
    p->sid = mp_session_id(s);
    p->iq = mp_stanza_ref(iq);
    if (mp_account_create(host, norm, password, created, p) != MAGPIE_OK) {
        rate_refund(addr);
        mp_session_send(s,
                        error_of(iq, "modify", "not-acceptable", "Invalid username or password"));
        mp_stanza_unref(p->iq);
        free(p->addr);
        free(p);
        return;
    }
    mp_session_hold(s);
}

static void preauth_iq(mp_session *s, mp_stanza *iq, const char *host, const char *addr, void *ud)
{
    (void)ud;
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    const char *type = mp_xml_get_attr(mp_stanza_root(iq), "type");
    if (strcmp(q->name, "query") != 0) {
        mp_session_send(s, error_of(iq, "modify", "bad-request", NULL));
    } else if (strcmp(type, "get") == 0) {
        mp_stanza *r = mp_iq_result(iq);
        add_fields(r, mp_xml_add_child(r, mp_stanza_root(r), "query", NS_REGISTER));
        mp_session_send(s, r);
    } else if (mp_xml_find(q, "remove", NS_REGISTER)) {
        /* only an authenticated user may cancel an account */
        mp_session_send(s, error_of(iq, "auth", "not-authorized", NULL));
    } else {
        register_new(s, iq, q, host, addr);
    }
}

static void add_feature(mp_session *s, mp_stanza *st, mp_xml *features, void *ud)
{
    (void)s;
    (void)ud;
    mp_xml_add_child(st, features, "register", NS_FEATURE);
}

/* ---- once authenticated ---- */

/* The sender of an IQ to the server, if it is a local account. */
static int own_account(mp_stanza *iq, const mp_jid **from)
{
    const struct mp_envelope *env = mp_stanza_envelope(iq);
    *from = &env->from;
    return env->from.local && mp_host_is_local(env->from.domain) &&
           (!env->to.domain || (!env->to.local && strcmp(env->to.domain, env->from.domain) == 0));
}

/* The <query/> of an authenticated user's request about their own
 * account (*from), or NULL when the request was answered with an error. */
static mp_xml *account_query(mp_stanza *iq, const mp_jid **from)
{
    mp_xml *q = mp_xml_first_element(mp_stanza_root(iq));
    if (strcmp(q->name, "query") != 0) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return NULL;
    }
    if (!own_account(iq, from)) {
        mp_iq_reply_error(iq, "cancel", "service-unavailable");
        return NULL;
    }
    return q;
}

static void account_get(mp_stanza *iq, void *ud)
{
    (void)ud;
    const mp_jid *from;
    if (!account_query(iq, &from))
        return;
    mp_stanza *r = mp_iq_result(iq);
    mp_xml *rq = mp_xml_add_child(r, mp_stanza_root(r), "query", NS_REGISTER);
    mp_xml_add_child(r, rq, "registered", NULL);
    mp_xml *u = mp_xml_add_child(r, rq, "username", NULL);
    mp_xml_add_text(r, u, from->local, strlen(from->local));
    mp_xml_add_child(r, rq, "password", NULL);
    mp_iq_reply(r);
}

static void account_done(void *ud, int rc)
{
    mp_stanza *iq = ud;
    if (rc == MAGPIE_OK)
        mp_iq_reply(mp_iq_result(iq));
    else if (rc == MAGPIE_NOTFOUND)
        mp_iq_reply_error(iq, "cancel", "item-not-found");
    else
        mp_iq_reply_error(iq, "wait", "internal-server-error");
    mp_stanza_unref(iq);
}

static void password_changed(void *ud, int rc)
{
    if (rc == MAGPIE_OK)
        mp_counter_add(c_changed, 1);
    account_done(ud, rc);
}

static void account_removed(void *ud, int rc)
{
    if (rc == MAGPIE_OK)
        mp_counter_add(c_removed, 1);
    account_done(ud, rc);
}

static void account_set(mp_stanza *iq, void *ud)
{
    (void)ud;
    const mp_jid *from;
    mp_xml *q = account_query(iq, &from);
    if (!q)
        return;
    if (mp_xml_find(q, "remove", NS_REGISTER)) {
        if (mp_account_remove(from->domain, from->local, account_removed, mp_stanza_ref(iq)) !=
            MAGPIE_OK) {
            mp_iq_reply_error(iq, "wait", "internal-server-error");
            mp_stanza_unref(iq);
        }
        return;
    }
    const char *user = field(iq, q, "username");
    const char *password = field(iq, q, "password");
    char norm[MP_JID_PART_MAX + 1];
    if (!user || !password) {
        mp_iq_reply_error(iq, "modify", "bad-request");
        return;
    }
    if (mp_jid_nodeprep(user, norm, sizeof norm) != MAGPIE_OK || strcmp(norm, from->local) != 0) {
        mp_iq_reply_error(iq, "cancel", "not-allowed");
        return;
    }
    if (password_problem(password)) {
        mp_iq_reply_error(iq, "modify", "not-acceptable");
        return;
    }
    if (mp_account_set_password(from->domain, from->local, password, password_changed,
                                mp_stanza_ref(iq)) != MAGPIE_OK) {
        mp_iq_reply_error(iq, "modify", "not-acceptable");
        mp_stanza_unref(iq);
    }
}

static int load(mp_module *m)
{
    self = m;
    c_created = mp_counter_new(m, "register_accounts_created", "Accounts created in-band");
    c_changed = mp_counter_new(m, "register_passwords_changed", "Passwords changed in-band");
    c_removed = mp_counter_new(m, "register_accounts_removed", "Accounts cancelled in-band");
    c_limited = mp_counter_new(m, "register_rate_limited",
                               "Registrations refused by the per-address interval");
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_REGISTER);
    mp_stream_feature_add(m, MP_FEATURES_PRE_AUTH, add_feature, NULL);
    if (mp_preauth_iq_register(m, NS_REGISTER, preauth_iq, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_GET, NS_REGISTER, MP_IQ_SERVER, account_get, NULL) != MAGPIE_OK ||
        mp_iq_register(m, MP_IQ_SET, NS_REGISTER, MP_IQ_SERVER, account_set, NULL) != MAGPIE_OK)
        return MAGPIE_ERR;
    return MAGPIE_OK;
}

static void unload(mp_module *m)
{
    (void)m;
    pthread_mutex_lock(&recent_lock);
    while (recents) {
        struct recent *r = recents;
        recents = r->next;
        free(r->addr);
        free(r);
    }
    pthread_mutex_unlock(&recent_lock);
}

MP_MODULE_DECLARE("register", "XEP-0077 in-band registration", options, load, unload, NULL);
