/* transport: one non-blocking byte stream over a connected socket, plain TCP or TLS,
 * behind one ops table (HAProxy's xprt_ops), so that the relay is written once and never
 * looks at which kind it moves bytes through.
 *
 * A struct transport is embedded by its user and borrows its socket and its tls_conn:
 * the user creates and frees both (transport_init_* only records them). */
#ifndef MTLSD_TRANSPORT_H
#define MTLSD_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mtlsd/base/io.h"

struct tls_conn;
struct transport;

struct transport_ops {
  /* read fills |buf| with up to |cap| bytes: a positive count, or IO_WANT_READ,
   * IO_WANT_WRITE, IO_EOF or IO_ERROR. With a positive count it may also say in |*next|
   * what the next read would return (IO_WANT_*, IO_EOF or IO_ERROR), learnt while it
   * gathered; IO_OK there means "unknown: read again". A TLS transport gathers several
   * records into one read, so that each write hands the kernel as much as possible. */
  ssize_t (*read)(struct transport *t, void *buf, size_t cap, int *next);
  /* write sends up to |len| bytes: a positive count taken (maybe fewer), or IO_WANT_*
   * or IO_ERROR; after a WANT result the same bytes are offered again. */
  ssize_t (*write)(struct transport *t, const void *buf, size_t len);
  /* flush hands bytes that a write took but buffered to the kernel: IO_OK once none is
   * left, IO_WANT_WRITE, or IO_ERROR. */
  int (*flush)(struct transport *t);
  /* shutdown ends the stream in this direction (close_notify then a FIN on TLS, a FIN
   * on plain TCP): IO_OK, IO_WANT_*, or IO_ERROR. */
  int (*shutdown)(struct transport *t);
  /* The result a connection ends with when this transport fails: "reset", "tls_error". */
  const char *error_result;
  /* Whether a failure of this transport outranks the other side's in that result. */
  bool secure;
};

struct transport {
  const struct transport_ops *ops;
  int fd;
  struct tls_conn *tls; /* For the TLS implementation; NULL on plain TCP. */
  /* Plain TCP: the peer reset the stream, learnt before its bytes were read (see
   * CONNECT_OK_THEN_RESET), so their end is an error, not an end of stream. */
  bool peer_reset;
};

/* transport_init_plain makes |t| plain TCP over the connected socket |fd|. */
void transport_init_plain(struct transport *t, int fd);

/* transport_init_tls makes |t| TLS through |tls|, a connection on |fd| whose handshake
 * has completed. */
void transport_init_tls(struct transport *t, int fd, struct tls_conn *tls);

static inline ssize_t transport_read(struct transport *t, void *buf, size_t cap, int *next) {
  return t->ops->read(t, buf, cap, next);
}

static inline ssize_t transport_write(struct transport *t, const void *buf, size_t len) {
  return t->ops->write(t, buf, len);
}

static inline int transport_flush(struct transport *t) {
  return t->ops->flush(t);
}

static inline int transport_shutdown(struct transport *t) {
  return t->ops->shutdown(t);
}

#endif
