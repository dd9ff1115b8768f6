/* mod_time - XEP-0202 Entity Time of the server (UTC, XEP-0082 format). */
#include <magpie/magpie.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#define NS_TIME "urn:xmpp:time"

static void entity_time(mp_stanza *iq, void *ud)
{
    (void)ud;
    struct timeval tv;
    struct tm tm;
    char utc[40];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    size_t n = strftime(utc, sizeof utc, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(utc + n, sizeof utc - n, ".%03ldZ", (long)(tv.tv_usec / 1000));

    mp_stanza *r = mp_iq_result(iq);
    mp_xml *t = mp_xml_add_child(r, mp_stanza_root(r), "time", NS_TIME);
    mp_xml_add_text(r, mp_xml_add_child(r, t, "tzo", NULL), "+00:00", 6);
    mp_xml_add_text(r, mp_xml_add_child(r, t, "utc", NULL), utc, strlen(utc));
    mp_iq_reply(r);
}

static int load(mp_module *m)
{
    mp_disco_feature_add(m, MP_DISCO_SERVER, NS_TIME);
    return mp_iq_register(m, MP_IQ_GET, NS_TIME, MP_IQ_SERVER, entity_time, NULL);
}

MP_MODULE_DECLARE("time", "XEP-0202 Entity Time", NULL, load, NULL, NULL);
