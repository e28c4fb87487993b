/* tls_bio: the bytes under a tls_conn. A socket BIO of mtlsd's own, which gathers
 * records for one send(2), and the calls that move records through it:
 * tls_conn_read, tls_conn_write, tls_conn_flush and tls_conn_shutdown, with
 * tls_conn_map_error, which turns their SSL errors into IO_* results.
 *
 * These are the relay's per-record path, and they sit in one file on purpose: the
 * gathering buffer's helpers (wbuf_take, wbuf_give, wbuf_flush) stay static, and
 * tls_conn_map_error sits beside its hot callers, so the compiler can inline them as it
 * did before the TLS code was split; keep them together.
 *
 * The BIO borrows its tls_conn (BIO_set_data); the SSL owns the BIO and frees it in
 * SSL_free. A gathering buffer belongs to its connection while bytes wait in it, then
 * goes back to its thread's spare slot (tls_bio_release, tls_thread_release). */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>

#include "tls_internal.h"

/* BoringSSL's own socket BIO makes one write(2) per TLS record. This one gathers the
 * records of one tls_conn_write call and of a handshake flight and hands them to the
 * kernel with one send(2): on a bulk transfer a quarter of the system calls, and of the
 * wake-ups of the reader on the other side. The buffer exists only while bytes wait in
 * it, so an idle connection holds none. */

/* Room for the records that one relay buffer makes, with their overhead: a write of a
 * full relay buffer then costs one send(2). */
enum { WBUF_CAP = 80 * 1024 };
_Static_assert(WBUF_CAP >= IO_RELAY_BUFFER_SIZE +
                               (IO_RELAY_BUFFER_SIZE / IO_TLS_RECORD_MAX) *
                                   (SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD),
               "the gathering buffer holds the records of one relay buffer");

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

/* One spare gathering buffer per thread: a bulk transfer takes and returns it per write,
 * which must not cost a malloc, a free and the heap trimming that follows each time. */
static _Thread_local uint8_t *t_spare_wbuf;

static uint8_t *wbuf_take(void) {
  uint8_t *buf = t_spare_wbuf;
  t_spare_wbuf = NULL;
  return buf != NULL ? buf : malloc(WBUF_CAP);
}

void tls_thread_release(void) {
  free(t_spare_wbuf);
  t_spare_wbuf = NULL;
}

static void wbuf_give(uint8_t *buf) {
  if (t_spare_wbuf == NULL) {
    t_spare_wbuf = buf;
  } else {
    free(buf);
  }
}

/* Sends what is buffered: 1 when all of it went out, 0 when the socket is full, -1 on an
 * error (errno set). */
static int wbuf_flush(struct tls_conn *conn) {
  while (conn->woff < conn->wlen) {
    ssize_t n = send(conn->fd, conn->wbuf + conn->woff, conn->wlen - conn->woff, MSG_NOSIGNAL);
    if (n > 0) {
      conn->woff += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    } else {
      return -1;
    }
  }
  if (conn->wbuf != NULL) {
    wbuf_give(conn->wbuf);
  }
  conn->wbuf = NULL;
  conn->wlen = 0;
  conn->woff = 0;
  return 1;
}

static int bio_sock_write(BIO *bio, const char *data, int len) {
  struct tls_conn *conn = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  size_t n = (size_t)len;
  if (!conn->gather && conn->wbuf == NULL) {
    /* A single record (a small message, a handshake flight): straight to the socket;
     * only what the socket does not take is buffered. */
    ssize_t sent;
    do {
      sent = send(conn->fd, data, n, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return -1;
    }
    size_t taken = sent > 0 ? (size_t)sent : 0;
    if (taken == n) {
      return len;
    }
    data += taken;
    n -= taken;
  }
  if (conn->wlen - conn->woff + n > WBUF_CAP) {
    if (wbuf_flush(conn) < 0) {
      return -1;
    }
    if (conn->wlen - conn->woff + n > WBUF_CAP) {
      BIO_set_retry_write(bio);
      return -1;
    }
  }
  if (conn->wbuf == NULL) {
    conn->wbuf = wbuf_take();
    if (conn->wbuf == NULL) {
      return -1;
    }
  } else if (conn->wlen + n > WBUF_CAP) {
    memmove(conn->wbuf, conn->wbuf + conn->woff, conn->wlen - conn->woff);
    conn->wlen -= conn->woff;
    conn->woff = 0;
  }
  memcpy(conn->wbuf + conn->wlen, data, n);
  conn->wlen += n;
  return len;
}

static int bio_sock_read(BIO *bio, char *out, int len) {
  struct tls_conn *conn = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  for (;;) {
    ssize_t n = recv(conn->fd, out, (size_t)len, 0);
    if (n >= 0) {
      return (int)n;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(bio);
    }
    return -1;
  }
}

static long bio_sock_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  struct tls_conn *conn = BIO_get_data(bio);
  if (cmd != BIO_CTRL_FLUSH) {
    return 0;
  }
  BIO_clear_retry_flags(bio);
  int r = wbuf_flush(conn);
  if (r == 0) {
    BIO_set_retry_write(bio);
  }
  return r;
}

static void bio_method_init(void) {
  g_bio_method = BIO_meth_new(BIO_TYPE_SOCKET, "mtlsd socket");
  if (g_bio_method != NULL) {
    BIO_meth_set_write(g_bio_method, bio_sock_write);
    BIO_meth_set_read(g_bio_method, bio_sock_read);
    BIO_meth_set_ctrl(g_bio_method, bio_sock_ctrl);
  }
}

bool tls_bio_attach(struct tls_conn *conn) {
  pthread_once(&g_bio_once, bio_method_init);
  BIO *bio = g_bio_method != NULL ? BIO_new(g_bio_method) : NULL;
  if (bio == NULL) {
    return false;
  }
  BIO_set_data(bio, conn);
  BIO_set_init(bio, 1);
  SSL_set_bio(conn->ssl, bio, bio);
  return true;
}

void tls_bio_release(struct tls_conn *conn) {
  if (conn->wbuf != NULL) {
    wbuf_give(conn->wbuf);
  }
}

/* ---- The record path ---- */

int tls_conn_map_error(struct tls_conn *conn, int ret) {
  int code = SSL_get_error(conn->ssl, ret);
  switch (code) {
    case SSL_ERROR_WANT_READ:
      return IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
      return IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
      return IO_EOF;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0 && (ret == 0 || errno == 0)) {
        ERR_clear_error();
        tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "connection closed by peer");
        /* A peer that closes TCP without close_notify still ended its stream. */
        return IO_EOF;
      }
      tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, strerror(errno));
      ERR_clear_error();
      return IO_ERROR;
    default: {
      uint32_t e = ERR_peek_error();
      if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
          ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        tls_conn_set_failure(conn, TLS_FAIL_NO_PEER_CERT, "peer sent no certificate");
      } else {
        const char *reason = ERR_reason_error_string(e);
        tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, reason != NULL ? reason : "TLS error");
      }
      ERR_clear_error();
      return IO_ERROR;
    }
  }
}

ssize_t tls_conn_read(struct tls_conn *conn, void *buf, size_t len) {
  int ret = SSL_read(conn->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  return ret > 0 ? ret : tls_conn_map_error(conn, ret);
}

ssize_t tls_conn_write(struct tls_conn *conn, const void *buf, size_t len) {
  const uint8_t *bytes = buf;
  size_t done = 0;
  conn->gather = len > IO_TLS_RECORD_MAX;
  /* One record per SSL_write (partial writes), gathered in the BIO until it is full. */
  while (done < len) {
    size_t chunk = len - done > INT32_MAX ? INT32_MAX : len - done;
    int ret = SSL_write(conn->ssl, bytes + done, (int)chunk);
    if (ret <= 0) {
      int result = tls_conn_map_error(conn, ret);
      if (done == 0) {
        return result;
      }
      /* Report the progress; the call that follows retries and meets the same state. */
      break;
    }
    done += (size_t)ret;
  }
  conn->gather = false;
  if (wbuf_flush(conn) < 0) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, strerror(errno));
    return IO_ERROR;
  }
  return (ssize_t)done;
}

int tls_conn_flush(struct tls_conn *conn) {
  if (conn->wbuf == NULL) {
    return IO_OK;
  }
  int r = wbuf_flush(conn);
  return r > 0 ? IO_OK : r == 0 ? IO_WANT_WRITE : IO_ERROR;
}

int tls_conn_shutdown(struct tls_conn *conn) {
  /* Once close_notify is queued, only flushing remains: a second SSL_shutdown would read
   * and discard the peer's data, which half-close must still deliver. */
  if (!conn->close_notify_queued) {
    int ret = SSL_shutdown(conn->ssl);
    if (ret < 0) {
      int result = tls_conn_map_error(conn, ret);
      if (result != IO_EOF) {
        return result;
      }
    }
    conn->close_notify_queued = true;
  }
  return tls_conn_flush(conn);
}
