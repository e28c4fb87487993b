/* proxy: one relayed connection, from accept to close: the upstream's resolution and
 * connection, the TLS handshake on the mTLS side, the PROXY protocol header, and the
 * relay of bytes both ways with half-close, backpressure and timeouts.
 *
 * Owns struct conn; a connection frees itself in its last handle's close callback. */
#ifndef MTLSD_PROXY_H
#define MTLSD_PROXY_H

#include <stdbool.h>

struct worker;
struct worker_listener;

/* proxy_accept takes over the accepted socket |fd| of listener |l|; it always consumes
 * |fd| (closing it on any failure). */
void proxy_accept(struct worker_listener *l, int fd);

/* proxy_close_all closes every connection of |w| at once, with the result |reason|. */
void proxy_close_all(struct worker *w, const char *reason);

#endif
