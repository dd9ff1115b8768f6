/* mod_admin_adhoc - XEP-0133 Service Administration over ad-hoc commands
 * (XEP-0050, through mod_adhoc), for the server's admins only.
 *
 * Each command answers the first request with its form and acts on the
 * submitted form (a request that already carries a submitted form is acted
 * on at once). Account changes go through the core's asynchronous account
 * calls, so the answer comes when the storage write is done:
 *   #add-user              accountjid, password, password-verify
 *   #delete-user           accountjids (the accounts' sessions end)
 *   #change-user-password  accountjid, password
 *   #end-user-session      accountjids (bare: every session; full: one)
 *   #announce              subject, body: a message to every online session
 *                          of the host
 *   #get-online-users-num  the number of online users of the host
 *   #get-online-users-list max_items, then their JIDs */
#include <magpie/magpie.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NS_ADMIN "http://jabber.org/protocol/admin"

/* ---- shared pieces ---- */

/* The submitted form of r, or NULL. */
static mp_xml *submitted(mp_adhoc_req *r)
{
    mp_xml *f = mp_adhoc_form(r);
    return f && strcmp(mp_form_type(f), "submit") == 0 ? f : NULL;
}

/* Answers r with its form (status executing, action complete). build adds
 * the fields. */
static void send_form(mp_adhoc_req *r, const char *title, const char *instructions,
                      void (*build)(mp_stanza *st, mp_xml *form))
{
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(r, MP_ADHOC_EXECUTING, &cmd);
    mp_adhoc_actions(r, reply, cmd, MP_ADHOC_ALLOW(MP_ADHOC_COMPLETE), MP_ADHOC_COMPLETE);
    mp_xml *form = mp_form_add(reply, cmd, "form", NS_ADMIN, title);
    if (instructions) {
        mp_xml *i = mp_xml_add_child(reply, form, "instructions", NULL);
        mp_xml_add_text(reply, i, instructions, strlen(instructions));
    }
    build(reply, form);
    mp_adhoc_send(r, reply);
}

static mp_xml *required(mp_stanza *st, mp_xml *form, const char *var, const char *type,
                        const char *label)
{
    mp_xml *f = mp_form_field_add(st, form, var, type, label, NULL);
    mp_xml_add_child(st, f, "required", NULL);
    return f;
}

/* Parses s as an account JID of a host of this server (bare, with a
 * localpart) into j. MAGPIE_OK or MAGPIE_ERR (j left empty). */
static int account_jid(const char *s, mp_jid *j, int allow_full)
{
    if (!s || mp_jid_parse(j, s) != MAGPIE_OK)
        return MAGPIE_ERR;
    if (!j->local || (j->resource && !allow_full) || !mp_host_is_local(j->domain)) {
        mp_jid_free(j);
        memset(j, 0, sizeof *j);
        return MAGPIE_ERR;
    }
    return MAGPIE_OK;
}

/* Runs fn on r once the form is submitted; sends the form before. */
#define FORM_STAGE(r, title, instr, build)                                                         \
    mp_xml *form = submitted(r);                                                                   \
    if (!form) {                                                                                   \
        send_form(r, title, instr, build);                                                         \
        return;                                                                                    \
    }

static void account_done(void *ud, int rc, const char *ok)
{
    mp_adhoc_req *r = ud;
    if (rc == MAGPIE_OK)
        mp_adhoc_complete_note(r, "info", ok);
    else if (rc == MAGPIE_AGAIN)
        mp_adhoc_error(r, "cancel", "conflict", NULL);
    else if (rc == MAGPIE_NOTFOUND)
        mp_adhoc_error(r, "cancel", "item-not-found", NULL);
    else
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
}

/* ---- add-user ---- */

static void add_user_form(mp_stanza *st, mp_xml *form)
{
    required(st, form, "accountjid", "jid-single", "The Jabber ID for the account to be added");
    required(st, form, "password", "text-private", "The password for this account");
    required(st, form, "password-verify", "text-private", "Retype password");
    mp_form_field_add(st, form, "email", "text-single", "Email address", NULL);
    mp_form_field_add(st, form, "given_name", "text-single", "Given name", NULL);
    mp_form_field_add(st, form, "surname", "text-single", "Family name", NULL);
}

static void add_user_done(void *ud, int rc)
{
    account_done(ud, rc, "The account was created.");
}

static void add_user(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Adding a User", "Fill out this form to add a user.", add_user_form);
    mp_stanza *iq = mp_adhoc_iq(r);
    const char *pw = mp_form_value(iq, form, "password");
    const char *pw2 = mp_form_value(iq, form, "password-verify");
    mp_jid j;
    if (!pw || !*pw || (pw2 && strcmp(pw, pw2) != 0) ||
        account_jid(mp_form_value(iq, form, "accountjid"), &j, 0) != MAGPIE_OK) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    if (mp_account_create(j.domain, j.local, pw, add_user_done, r) != MAGPIE_OK)
        mp_adhoc_error(r, "modify", "not-acceptable", "bad-payload");
    mp_jid_free(&j);
}

/* ---- change-user-password ---- */

static void passwd_form(mp_stanza *st, mp_xml *form)
{
    required(st, form, "accountjid", "jid-single", "The Jabber ID for this account");
    required(st, form, "password", "text-private", "The password for this account");
}

static void passwd_done(void *ud, int rc)
{
    account_done(ud, rc, "The password was changed.");
}

static void change_password(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Changing a User Password", "Fill out this form to change a user's password.",
               passwd_form);
    mp_stanza *iq = mp_adhoc_iq(r);
    const char *pw = mp_form_value(iq, form, "password");
    mp_jid j;
    if (!pw || !*pw || account_jid(mp_form_value(iq, form, "accountjid"), &j, 0) != MAGPIE_OK) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    if (mp_account_set_password(j.domain, j.local, pw, passwd_done, r) != MAGPIE_OK)
        mp_adhoc_error(r, "modify", "not-acceptable", "bad-payload");
    mp_jid_free(&j);
}

/* ---- accountjids: delete-user, end-user-session ---- */

static void accountjids_form(mp_stanza *st, mp_xml *form)
{
    required(st, form, "accountjids", "jid-multi", "The Jabber ID(s)");
}

/* Parses every value of accountjids into a new array (*n entries); NULL
 * when a value is not an account JID of this server or there is none. */
static mp_jid *parse_accountjids(mp_adhoc_req *r, mp_xml *form, size_t *n, int allow_full)
{
    mp_stanza *iq = mp_adhoc_iq(r);
    mp_xml *f = mp_form_field(form, "accountjids");
    size_t cnt = 0;
    for (mp_xml *v = f ? mp_xml_find(f, "value", NULL) : NULL; v; v = mp_xml_find_next(v, "value", NULL))
        cnt++;
    if (!cnt)
        return NULL;
    mp_jid *js = calloc(cnt, sizeof *js);
    if (!js)
        return NULL;
    size_t i = 0;
    for (mp_xml *v = mp_xml_find(f, "value", NULL); v; v = mp_xml_find_next(v, "value", NULL)) {
        if (account_jid(mp_xml_text(iq, v), &js[i], allow_full) != MAGPIE_OK) {
            for (size_t k = 0; k < i; k++)
                mp_jid_free(&js[k]);
            free(js);
            return NULL;
        }
        i++;
    }
    *n = cnt;
    return js;
}

static void free_jids(mp_jid *js, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mp_jid_free(&js[i]);
    free(js);
}

struct delete_job {
    mp_adhoc_req *r;
    size_t pending, deleted, missing, failed;
};

/* One delete finished (or the loop that queues them): answers after the
 * last. */
static void delete_finish(struct delete_job *d)
{
    if (--d->pending)
        return;
    if (d->failed || (!d->deleted && d->missing)) {
        mp_adhoc_error(d->r, d->failed ? "wait" : "cancel",
                       d->failed ? "internal-server-error" : "item-not-found", NULL);
    } else {
        char msg[160];
        snprintf(msg, sizeof msg, "%zu account(s) deleted%s.", d->deleted,
                 d->missing ? "; some did not exist" : "");
        mp_adhoc_complete_note(d->r, "info", msg);
    }
    free(d);
}

static void delete_done(void *ud, int rc)
{
    struct delete_job *d = ud;
    if (rc == MAGPIE_OK)
        d->deleted++;
    else if (rc == MAGPIE_NOTFOUND)
        d->missing++;
    else
        d->failed++;
    delete_finish(d);
}

static void delete_user(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Deleting a User", "Fill out this form to delete a user.", accountjids_form);
    size_t n = 0;
    mp_jid *js = parse_accountjids(r, form, &n, 0);
    if (!js) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    struct delete_job *d = calloc(1, sizeof *d);
    if (!d) {
        free_jids(js, n);
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
        return;
    }
    d->r = r;
    d->pending = 1; /* this loop: the answer waits for every queued delete */
    for (size_t i = 0; i < n; i++) {
        if (mp_account_remove(js[i].domain, js[i].local, delete_done, d) == MAGPIE_OK)
            d->pending++;
        else
            d->failed++;
    }
    free_jids(js, n);
    delete_finish(d);
}

static void end_session(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Ending a User Session", "Fill out this form to end a user's session.",
               accountjids_form);
    size_t n = 0;
    mp_jid *js = parse_accountjids(r, form, &n, 1);
    if (!js) {
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    size_t ended = 0;
    for (size_t i = 0; i < n; i++)
        ended += mp_sessions_end(&js[i], NULL, NULL);
    free_jids(js, n);
    char msg[96];
    snprintf(msg, sizeof msg, "%zu session(s) ended.", ended);
    mp_adhoc_complete_note(r, "info", msg);
}

/* ---- announce ---- */

static void announce_form(mp_stanza *st, mp_xml *form)
{
    mp_form_field_add(st, form, "subject", "text-single", "Subject", NULL);
    required(st, form, "body", "text-multi", "Announcement");
}

struct announce {
    mp_adhoc_req *r;
    mp_stanza *msg; /* template: from, subject, body */
};

static void announce_send(void *ud, const char *const *jids, size_t n)
{
    struct announce *a = ud;
    for (size_t i = 0; i < n; i++) {
        mp_stanza *m = mp_stanza_copy(a->msg);
        mp_xml_set_attr(m, mp_stanza_root(m), "to", jids[i]);
        mp_route(m);
    }
    mp_stanza_unref(a->msg);
    char note[96];
    snprintf(note, sizeof note, "Announcement sent to %zu online session(s).", n);
    mp_adhoc_complete_note(a->r, "info", note);
    free(a);
}

static void announce(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Making an Announcement", "Fill out this form to make an announcement to all "
               "active users of this service.", announce_form);
    mp_stanza *iq = mp_adhoc_iq(r);
    const char *subject = mp_form_value(iq, form, "subject");
    mp_xml *bf = mp_form_field(form, "body");
    mp_stanza *msg = mp_stanza_new("message", MP_NS_CLIENT);
    mp_xml *root = mp_stanza_root(msg);
    const char *host = mp_stanza_envelope(iq)->to.domain;
    if (!host)
        host = mp_adhoc_requester(r)->domain;
    mp_xml_set_attr(msg, root, "from", host);
    mp_xml_set_attr(msg, root, "type", "headline");
    if (subject && *subject)
        mp_xml_add_text(msg, mp_xml_add_child(msg, root, "subject", NULL), subject, strlen(subject));
    mp_xml *body = NULL;
    for (mp_xml *v = bf ? mp_xml_find(bf, "value", NULL) : NULL; v;
         v = mp_xml_find_next(v, "value", NULL)) {
        const char *t = mp_xml_text(iq, v);
        if (!body)
            body = mp_xml_add_child(msg, root, "body", NULL);
        else
            mp_xml_add_text(msg, body, "\n", 1);
        mp_xml_add_text(msg, body, t, strlen(t));
    }
    if (!body) {
        mp_stanza_unref(msg);
        mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
        return;
    }
    struct announce *a = calloc(1, sizeof *a);
    if (!a || mp_sessions_list(host, announce_send, a) != MAGPIE_OK) {
        free(a);
        mp_stanza_unref(msg);
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
        return;
    }
    a->r = r;
    a->msg = msg;
}

/* ---- online users ---- */

struct online {
    mp_adhoc_req *r;
    long max; /* list: most JIDs shown; -1: count only */
};

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns the distinct bare JIDs of jids, sorted (a malloc'd array of *out
 * malloc'd strings), or NULL. */
static char **distinct_bares(const char *const *jids, size_t n, size_t *out)
{
    char **b = calloc(n ? n : 1, sizeof *b);
    size_t k = 0;
    if (!b)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        const char *slash = strchr(jids[i], '/');
        size_t len = slash ? (size_t)(slash - jids[i]) : strlen(jids[i]);
        b[i] = strndup(jids[i], len);
    }
    qsort(b, n, sizeof *b, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (k && strcmp(b[k - 1], b[i]) == 0) {
            free(b[i]);
            continue;
        }
        b[k++] = b[i];
    }
    *out = k;
    return b;
}

static void online_answer(void *ud, const char *const *jids, size_t n)
{
    struct online *o = ud;
    size_t k = 0;
    char **b = distinct_bares(jids, n, &k);
    mp_xml *cmd;
    mp_stanza *reply = mp_adhoc_reply_new(o->r, MP_ADHOC_COMPLETED, &cmd);
    mp_xml *form = mp_form_add(reply, cmd, "result", NS_ADMIN, NULL);
    if (o->max < 0) {
        char num[32];
        snprintf(num, sizeof num, "%zu", k);
        mp_form_field_add(reply, form, "onlineusersnum", NULL, "The number of online users", num);
    } else {
        mp_xml *f = mp_form_field_add(reply, form, "onlineuserjids", "jid-multi",
                                      "The list of all online users", NULL);
        for (size_t i = 0; b && i < k && (long)i < o->max; i++)
            mp_form_value_add(reply, f, b[i]);
    }
    for (size_t i = 0; b && i < k; i++)
        free(b[i]);
    free(b);
    mp_adhoc_send(o->r, reply);
    free(o);
}

static void online_start(mp_adhoc_req *r, long max)
{
    struct online *o = calloc(1, sizeof *o);
    const char *host = mp_stanza_envelope(mp_adhoc_iq(r))->to.domain;
    if (!host)
        host = mp_adhoc_requester(r)->domain;
    if (!o || mp_sessions_list(host, online_answer, o) != MAGPIE_OK) {
        free(o);
        mp_adhoc_error(r, "wait", "internal-server-error", NULL);
        return;
    }
    o->r = r;
    o->max = max;
}

static void online_num(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    online_start(r, -1);
}

static void max_items_form(mp_stanza *st, mp_xml *form)
{
    mp_xml *f = mp_form_field_add(st, form, "max_items", "list-single",
                                  "Maximum number of items to report", "100");
    static const char *const opts[] = {"25", "50", "75", "100", "150", "200", "none"};
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++)
        mp_form_option_add(st, f, opts[i], opts[i]);
}

static void online_list(mp_adhoc_req *r, void *ud)
{
    (void)ud;
    FORM_STAGE(r, "Requesting List of Online Users", NULL, max_items_form);
    const char *v = mp_form_value(mp_adhoc_iq(r), form, "max_items");
    long max = 100;
    if (v && strcmp(v, "none") == 0) {
        max = 1L << 30;
    } else if (v) {
        char *end;
        max = strtol(v, &end, 10);
        if (*end || max < 0) {
            mp_adhoc_error(r, "modify", "bad-request", "bad-payload");
            return;
        }
    }
    online_start(r, max);
}

static const struct {
    const char *node, *name;
    mp_adhoc_fn fn;
} commands[] = {
    {NS_ADMIN "#add-user", "Add User", add_user},
    {NS_ADMIN "#delete-user", "Delete User", delete_user},
    {NS_ADMIN "#change-user-password", "Change User Password", change_password},
    {NS_ADMIN "#end-user-session", "End User Session", end_session},
    {NS_ADMIN "#announce", "Send Announcement to Online Users", announce},
    {NS_ADMIN "#get-online-users-num", "Get Number of Online Users", online_num},
    {NS_ADMIN "#get-online-users-list", "Get List of Online Users", online_list},
};

static int load(mp_module *m)
{
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (mp_adhoc_command_add(m, commands[i].node, commands[i].name, MP_ADHOC_ADMIN,
                                 commands[i].fn, NULL) != MAGPIE_OK)
            return MAGPIE_ERR;
    return MAGPIE_OK;
}

MP_MODULE_DECLARE("admin_adhoc", "XEP-0133 Service Administration", NULL, load, NULL, NULL);
