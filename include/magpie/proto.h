/* proto.h - protocol helpers shared by modules: XEP-0082 date/time,
 * XEP-0203 delayed delivery, XEP-0004 data forms, XEP-0059 result set
 * management. They build and read stanza trees (xml.h) and keep no state. */
#ifndef MAGPIE_PROTO_H
#define MAGPIE_PROTO_H

#include <stdint.h>
#include <magpie/xml.h>

#define MP_NS_DATA  "jabber:x:data"
#define MP_NS_RSM   "http://jabber.org/protocol/rsm"
#define MP_NS_DELAY "urn:xmpp:delay"

/* ---- XEP-0082 date/time ---- */

/* Current UTC time in microseconds since the epoch. */
int64_t mp_now_us(void);

/* Writes us (microseconds since the epoch, UTC) as an XEP-0082 DateTime,
 * "2026-12-02T18:05:28.123456Z" (fraction only when non-zero), into buf
 * (MP_DATETIME_MAX bytes are enough). Returns buf. */
#define MP_DATETIME_MAX 32
char *mp_datetime_format(int64_t us, char *buf, size_t len);

/* Parses an XEP-0082 DateTime ("CCYY-MM-DDThh:mm:ss[.sss]TZD", TZD 'Z' or
 * +hh:mm / -hh:mm; fraction digits beyond microseconds ignored). Returns 0
 * and sets *us (UTC microseconds), or -1 if s is not such a string. */
int mp_datetime_parse(const char *s, int64_t *us);

/* ---- XEP-0203 delayed delivery ---- */

/* Adds <delay xmlns='urn:xmpp:delay' from= stamp=>[reason]</delay> to
 * parent (an unshared stanza's element, usually the root) unless it already
 * has a delay from that entity. from and reason may be NULL. */
mp_xml *mp_delay_add(mp_stanza *st, mp_xml *parent, const char *from, int64_t us,
                     const char *reason);

/* ---- XEP-0004 data forms ---- */

/* Adds <x xmlns='jabber:x:data' type=type> to parent, with <title/> when
 * title is not NULL and a hidden FORM_TYPE field when form_type is not NULL. */
mp_xml *mp_form_add(mp_stanza *st, mp_xml *parent, const char *type, const char *form_type,
                    const char *title);
/* Adds <field var= type= label=> (each may be NULL) with one <value/> when
 * value is not NULL. Returns the field, for more values or options. */
mp_xml *mp_form_field_add(mp_stanza *st, mp_xml *form, const char *var, const char *type,
                          const char *label, const char *value);
/* Adds one more <value/> to a field. */
void mp_form_value_add(mp_stanza *st, mp_xml *field, const char *value);
/* Adds <option label=><value/></option> to a list field. */
void mp_form_option_add(mp_stanza *st, mp_xml *field, const char *label, const char *value);

/* The first data form child of parent (any type), or NULL. */
mp_xml *mp_form_find(const mp_xml *parent);
/* The form's type attribute ("form", "submit", "cancel", "result"; "" if absent). */
const char *mp_form_type(const mp_xml *form);
/* The value of the form's FORM_TYPE field, or NULL. */
const char *mp_form_form_type(mp_stanza *st, const mp_xml *form);
/* The field with that var, or NULL. */
mp_xml *mp_form_field(const mp_xml *form, const char *var);
/* The first value of field var, or NULL when the field or its value is
 * absent. Lives as long as st. */
const char *mp_form_value(mp_stanza *st, const mp_xml *form, const char *var);
/* A boolean field's value: 1 for "1"/"true", 0 for "0"/"false", def when
 * absent, -1 when present but not a boolean. */
int mp_form_bool(mp_stanza *st, const mp_xml *form, const char *var, int def);

/* ---- XEP-0059 result set management ---- */

struct mp_rsm {
    int max;            /* -1: no <max/> given */
    int index;          /* -1: no <index/> given */
    const char *after;  /* NULL: no <after/> */
    const char *before; /* NULL: no <before/>; "" for an empty <before/> (last page) */
};

/* Reads <set xmlns='http://jabber.org/protocol/rsm'> among parent's
 * children into out (all unset when there is none). Returns 0, or -1 when
 * the set is malformed (a max or index that is not a non-negative number,
 * both after and before): answer bad-request. Strings live as long as st. */
int mp_rsm_parse(mp_stanza *st, const mp_xml *parent, struct mp_rsm *out);

/* Adds a result <set/> to parent: <first index=first_index> and <last> when
 * first is not NULL (an empty page has neither), <count> when count >= 0
 * (first_index < 0 leaves out the index attribute). */
mp_xml *mp_rsm_add_result(mp_stanza *st, mp_xml *parent, const char *first, int first_index,
                          const char *last, int count);

#endif
