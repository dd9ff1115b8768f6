/* magpie.h - the public module API of Magpie: return codes and the umbrella
 * include. Modules include only <magpie/...> headers, never anything under src/. */
#ifndef MAGPIE_MAGPIE_H
#define MAGPIE_MAGPIE_H

#include <stddef.h>
#include <stdint.h>

/* One return-code convention across the codebase. */
#define MAGPIE_OK       0
#define MAGPIE_ERR      (-1)
#define MAGPIE_AGAIN    1 /* not finished yet: call again / wait for more */
#define MAGPIE_NOTFOUND 2 /* lookups: nothing stored under that key */

/* Results of hook handlers. */
#define HOOK_PASS    0
#define HOOK_HANDLED 1

#define MAGPIE_VERSION_STRING "0.1.0"

#include <magpie/alloc.h>
#include <magpie/log.h>
#include <magpie/xml.h>
#include <magpie/xmlstream.h>
#include <magpie/proto.h>
#include <magpie/jid.h>
#include <magpie/loop.h>
#include <magpie/storage.h>
#include <magpie/module.h>
#include <magpie/adhoc.h>

#endif
