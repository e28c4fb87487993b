/* certwatch: watches the certificate directory (SPEC section 4) with libuv's fs events
 * and a poll_interval fallback, debounces bursts of writes, and asks the server to
 * reload when the files' contents change.
 *
 * Owns struct certwatch and its handles, on the main thread's loop. */
#ifndef MTLSD_CERTWATCH_H
#define MTLSD_CERTWATCH_H

#include <stddef.h>

struct server;
struct certwatch;

/* certwatch_start begins watching |srv->cfg->certs.dir|. Returns NULL on allocation
 * failure; a directory that does not exist yet is not an error (it is polled). */
struct certwatch *certwatch_start(struct server *srv);

/* certwatch_close stops watching; memory is released from the close callbacks. NULL is a
 * no-op. */
void certwatch_close(struct certwatch *watch);

#endif
