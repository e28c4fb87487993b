/* admin: the local admin port (SPEC section 5): an HTTP/1.1 server on admin.listen, run
 * on the main thread's loop so that a heavy scrape never delays a worker.
 *
 * Owns struct admin, its listening socket and its client connections. */
#ifndef MTLSD_ADMIN_H
#define MTLSD_ADMIN_H

#include <stddef.h>

struct server;
struct admin;

/* admin_start binds admin.listen on |srv|'s main loop and starts serving. On failure it
 * returns NULL and writes the reason into |err|. */
struct admin *admin_start(struct server *srv, char *err, size_t err_len);

/* admin_close stops serving and closes every admin connection; the memory is released
 * from the close callbacks, so the main loop must run until they finish. NULL is a
 * no-op. */
void admin_close(struct admin *admin);

#endif
