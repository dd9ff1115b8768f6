/* proto.c - XEP-0082 date/time, XEP-0203 delay, XEP-0004 forms and
 * XEP-0059 result sets for modules (include/magpie/proto.h). */
#include <magpie/proto.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t mp_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

char *mp_datetime_format(int64_t us, char *buf, size_t len)
{
    int64_t sec = us / 1000000, frac = us % 1000000;
    if (frac < 0) {
        frac += 1000000;
        sec--;
    }
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    if (frac)
        snprintf(buf + n, len - n, ".%06dZ", (int)frac);
    else
        snprintf(buf + n, len - n, "Z");
    return buf;
}

/* n decimal digits at *p into *v; advances *p. */
static int digits(const char **p, int n, int *v)
{
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        x = x * 10 + (c - '0');
    }
    *p += n;
    *v = x;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return -1;
    (*p)++;
    return 0;
}

int mp_datetime_parse(const char *s, int64_t *us)
{
    int y, mo, d, h, mi, se;
    const char *p = s;
    if (!s || digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) || expect(&p, '-') ||
        digits(&p, 2, &d) || expect(&p, 'T') || digits(&p, 2, &h) || expect(&p, ':') ||
        digits(&p, 2, &mi) || expect(&p, ':') || digits(&p, 2, &se))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
        return -1;
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return -1;
        int64_t scale = 100000;
        for (; *p >= '0' && *p <= '9'; p++) {
            frac += (*p - '0') * scale;
            scale /= 10;
        }
    }
    long off = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int sign = *p == '-' ? -1 : 1, oh, om;
        p++;
        if (digits(&p, 2, &oh) || expect(&p, ':') || digits(&p, 2, &om) || oh > 23 || om > 59)
            return -1;
        off = sign * (oh * 3600L + om * 60L);
    } else {
        return -1;
    }
    if (*p)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                    .tm_hour = h, .tm_min = mi, .tm_sec = se};
    *us = ((int64_t)timegm(&tm) - off) * 1000000 + frac;
    return 0;
}

mp_xml *mp_delay_add(mp_stanza *st, mp_xml *parent, const char *from, int64_t us,
                     const char *reason)
{
    for (mp_xml *d = mp_xml_find(parent, "delay", MP_NS_DELAY); d;
         d = mp_xml_find_next(d, "delay", MP_NS_DELAY)) {
        const char *f = mp_xml_get_attr(d, "from");
        if ((!f && !from) || (f && from && !strcmp(f, from)))
            return d;
    }
    char stamp[MP_DATETIME_MAX];
    mp_xml *d = mp_xml_add_child(st, parent, "delay", MP_NS_DELAY);
    if (from)
        mp_xml_set_attr(st, d, "from", from);
    mp_xml_set_attr(st, d, "stamp", mp_datetime_format(us, stamp, sizeof stamp));
    if (reason)
        mp_xml_add_text(st, d, reason, strlen(reason));
    return d;
}

/* ---- data forms ---- */

mp_xml *mp_form_add(mp_stanza *st, mp_xml *parent, const char *type, const char *form_type,
                    const char *title)
{
    mp_xml *x = mp_xml_add_child(st, parent, "x", MP_NS_DATA);
    mp_xml_set_attr(st, x, "type", type);
    if (title)
        mp_xml_add_text(st, mp_xml_add_child(st, x, "title", NULL), title, strlen(title));
    if (form_type)
        mp_form_field_add(st, x, "FORM_TYPE", "hidden", NULL, form_type);
    return x;
}

mp_xml *mp_form_field_add(mp_stanza *st, mp_xml *form, const char *var, const char *type,
                          const char *label, const char *value)
{
    mp_xml *f = mp_xml_add_child(st, form, "field", NULL);
    if (var)
        mp_xml_set_attr(st, f, "var", var);
    if (type)
        mp_xml_set_attr(st, f, "type", type);
    if (label)
        mp_xml_set_attr(st, f, "label", label);
    if (value)
        mp_form_value_add(st, f, value);
    return f;
}

void mp_form_value_add(mp_stanza *st, mp_xml *field, const char *value)
{
    mp_xml_add_text(st, mp_xml_add_child(st, field, "value", NULL), value, strlen(value));
}

void mp_form_option_add(mp_stanza *st, mp_xml *field, const char *label, const char *value)
{
    mp_xml *o = mp_xml_add_child(st, field, "option", NULL);
    if (label)
        mp_xml_set_attr(st, o, "label", label);
    mp_form_value_add(st, o, value);
}

mp_xml *mp_form_find(const mp_xml *parent)
{
    return parent ? mp_xml_find(parent, "x", MP_NS_DATA) : NULL;
}

const char *mp_form_type(const mp_xml *form)
{
    const char *t = mp_xml_get_attr(form, "type");
    return t ? t : "";
}

mp_xml *mp_form_field(const mp_xml *form, const char *var)
{
    for (mp_xml *f = mp_xml_find(form, "field", MP_NS_DATA); f;
         f = mp_xml_find_next(f, "field", MP_NS_DATA)) {
        const char *v = mp_xml_get_attr(f, "var");
        if (v && !strcmp(v, var))
            return f;
    }
    return NULL;
}

const char *mp_form_value(mp_stanza *st, const mp_xml *form, const char *var)
{
    mp_xml *f = mp_form_field(form, var);
    mp_xml *v = f ? mp_xml_find(f, "value", MP_NS_DATA) : NULL;
    return v ? mp_xml_text(st, v) : NULL;
}

const char *mp_form_form_type(mp_stanza *st, const mp_xml *form)
{
    return mp_form_value(st, form, "FORM_TYPE");
}

int mp_form_bool(mp_stanza *st, const mp_xml *form, const char *var, int def)
{
    const char *v = mp_form_value(st, form, var);
    if (!v)
        return def;
    if (!strcmp(v, "1") || !strcmp(v, "true"))
        return 1;
    if (!strcmp(v, "0") || !strcmp(v, "false"))
        return 0;
    return -1;
}

/* ---- result set management ---- */

/* A non-negative decimal number that fits an int, or -1. */
static int number(const char *s)
{
    long v = 0;
    if (!*s)
        return -1;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
        if (v > 0x7fffffff)
            return -1;
    }
    return (int)v;
}

int mp_rsm_parse(mp_stanza *st, const mp_xml *parent, struct mp_rsm *out)
{
    *out = (struct mp_rsm){.max = -1, .index = -1};
    mp_xml *set = parent ? mp_xml_find(parent, "set", MP_NS_RSM) : NULL;
    if (!set)
        return 0;
    mp_xml *e;
    if ((e = mp_xml_find(set, "max", MP_NS_RSM)) && (out->max = number(mp_xml_text(st, e))) < 0)
        return -1;
    if ((e = mp_xml_find(set, "index", MP_NS_RSM)) &&
        (out->index = number(mp_xml_text(st, e))) < 0)
        return -1;
    if ((e = mp_xml_find(set, "after", MP_NS_RSM))) {
        out->after = mp_xml_text(st, e);
        if (!*out->after)
            return -1; /* XEP-0059 2.1: after needs an id */
    }
    if ((e = mp_xml_find(set, "before", MP_NS_RSM)))
        out->before = mp_xml_text(st, e);
    return out->after && out->before ? -1 : 0;
}

mp_xml *mp_rsm_add_result(mp_stanza *st, mp_xml *parent, const char *first, int first_index,
                          const char *last, int count)
{
    char num[16];
    mp_xml *set = mp_xml_add_child(st, parent, "set", MP_NS_RSM);
    if (first) {
        mp_xml *f = mp_xml_add_child(st, set, "first", NULL);
        if (first_index >= 0) {
            snprintf(num, sizeof num, "%d", first_index);
            mp_xml_set_attr(st, f, "index", num);
        }
        mp_xml_add_text(st, f, first, strlen(first));
        if (last)
            mp_xml_add_text(st, mp_xml_add_child(st, set, "last", NULL), last, strlen(last));
    }
    if (count >= 0) {
        snprintf(num, sizeof num, "%d", count);
        mp_xml_add_text(st, mp_xml_add_child(st, set, "count", NULL), num, strlen(num));
    }
    return set;
}
