/* net/tls.h - TLS contexts and channel binding. */
#ifndef MAGPIE_NET_TLS_H
#define MAGPIE_NET_TLS_H

#include <openssl/ssl.h>
#include "auth/sasl.h"
#include "conf/config.h"

/* Loads (or generates self-signed) certificates for every host and builds
 * the SSL_CTXs. Returns MAGPIE_OK or MAGPIE_ERR (logged). Callable again on
 * SIGHUP: new contexts replace the old ones for new connections. */
int mp_tls_init(const struct mp_config *cfg);
void mp_tls_shutdown(void);
/* Returns a new server-side SSL for an accepted connection (SNI picks the
 * host's certificate), or NULL. */
SSL *mp_tls_new_ssl(const char *default_host);
/* Fills channel binding data of an established TLS connection. */
void mp_tls_channel_binding(SSL *ssl, struct mp_sasl_cb *cb);

#endif
