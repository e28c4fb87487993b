/* transport: the plain TCP and the TLS implementations (see mtlsd/transport.h). */
#include "mtlsd/net/transport.h"

#include <errno.h>
#include <sys/socket.h>

#include "mtlsd/tls/tls.h"

/* ---- Plain TCP ---- */

static ssize_t plain_read(struct transport *t, void *buf, size_t cap, int *next) {
  *next = IO_OK;
  for (;;) {
    ssize_t n = recv(t->fd, buf, cap, 0);
    if (n > 0) {
      if ((size_t)n < cap) {
        /* A short read emptied the socket's queue: the next one would say EAGAIN. */
        *next = IO_WANT_READ;
      }
      return n;
    }
    if (n == 0) {
      return t->peer_reset ? IO_ERROR : IO_EOF;
    }
    if (errno != EINTR) {
      return errno == EAGAIN || errno == EWOULDBLOCK ? IO_WANT_READ : IO_ERROR;
    }
  }
}

static ssize_t plain_write(struct transport *t, const void *buf, size_t len) {
  for (;;) {
    ssize_t n = send(t->fd, buf, len, MSG_NOSIGNAL);
    if (n >= 0) {
      return n;
    }
    if (errno != EINTR) {
      return errno == EAGAIN || errno == EWOULDBLOCK ? IO_WANT_WRITE : IO_ERROR;
    }
  }
}

static int plain_flush(struct transport *t) {
  (void)t;
  return IO_OK;
}

static int send_fin(int fd) {
  return shutdown(fd, SHUT_WR) == 0 || errno == ENOTCONN ? IO_OK : IO_ERROR;
}

static int plain_shutdown(struct transport *t) {
  return send_fin(t->fd);
}

static const struct transport_ops kPlainOps = {
    .read = plain_read,
    .write = plain_write,
    .flush = plain_flush,
    .shutdown = plain_shutdown,
    .error_result = "reset",
    .secure = false,
};

void transport_init_plain(struct transport *t, int fd) {
  t->ops = &kPlainOps;
  t->fd = fd;
  t->tls = NULL;
  t->peer_reset = false;
}

/* ---- TLS ---- */

/* TLS hands out one record per read: this gathers records until the buffer could not
 * take another whole one, and remembers why it stopped for the caller's next read. */
static ssize_t tls_read(struct transport *t, void *buf, size_t cap, int *next) {
  *next = IO_OK;
  ssize_t n = tls_conn_read(t->tls, buf, cap);
  if (n <= 0) {
    return n;
  }
  size_t len = (size_t)n;
  while (len + IO_TLS_RECORD_MAX <= cap) {
    ssize_t m = tls_conn_read(t->tls, (char *)buf + len, cap - len);
    if (m <= 0) {
      *next = (int)m;
      break;
    }
    len += (size_t)m;
  }
  /* Reading can make TLS answer (a KeyUpdate, an alert): best effort, as whoever writes
   * this stream flushes it too. */
  if (tls_conn_flush(t->tls) == IO_ERROR) {
    *next = IO_ERROR;
  }
  return (ssize_t)len;
}

static ssize_t tls_write(struct transport *t, const void *buf, size_t len) {
  return tls_conn_write(t->tls, buf, len);
}

static int tls_flush(struct transport *t) {
  return tls_conn_flush(t->tls);
}

static int tls_shutdown(struct transport *t) {
  int r = tls_conn_shutdown(t->tls);
  return r == IO_OK ? send_fin(t->fd) : r;
}

static const struct transport_ops kTlsOps = {
    .read = tls_read,
    .write = tls_write,
    .flush = tls_flush,
    .shutdown = tls_shutdown,
    .error_result = "tls_error",
    .secure = true,
};

void transport_init_tls(struct transport *t, int fd, struct tls_conn *tls) {
  t->ops = &kTlsOps;
  t->fd = fd;
  t->tls = tls;
  t->peer_reset = false;
}
