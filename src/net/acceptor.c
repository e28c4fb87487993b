/* acceptor: a listening socket and its accept loop (see mtlsd/acceptor.h). */
#include "mtlsd/net/acceptor.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mtlsd/base/log.h"

/* How many accepts one readiness event may take before other work gets a turn. */
enum { ACCEPT_BATCH = 64 };
/* How long accepting pauses after the process ran out of file descriptors. */
enum { ACCEPT_RETRY_MS = 250 };

/* Takes a descriptor to hold back when none is held (at the start, or after another
 * thread took the slot while it was let go). */
static void hold_reserve(struct acceptor *a) {
  if (a->reserve_fd < 0) {
    a->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
}

int acceptor_open(struct acceptor *a, const struct hostport *address, bool reuseport, int backlog,
                  char *err, size_t err_len) {
  memset(a, 0, sizeof(*a));
  a->fd = -1;
  a->reserve_fd = -1;
  struct sockaddr_storage addr;
  socklen_t len;
  char where[NETADDR_HOSTPORT_MAX];
  netaddr_format_hostport(where, sizeof(where), address);
  if (!netaddr_to_sockaddr(&addr, &len, address)) {
    snprintf(err, err_len, "cannot listen on %s: not an IP address", where);
    return -EINVAL;
  }
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  /* "[::]:15006" means IPv6 only, so that "0.0.0.0:15006" can be a listener of its own,
   * and each family reads its original destination the way it must. libuv has no flag
   * for SO_REUSEPORT, hence the raw socket. */
  if (fd < 0 ||
      (addr.ss_family == AF_INET6 &&
       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) ||
      setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
      bind(fd, (struct sockaddr *)&addr, len) != 0 || listen(fd, backlog) != 0) {
    int e = errno;
    snprintf(err, err_len, "cannot listen on %s: %s", where, strerror(e));
    if (fd >= 0) {
      close(fd);
    }
    return -e;
  }
  a->fd = fd;
  snprintf(a->where, sizeof(a->where), "%s", where);
  hold_reserve(a);
  return 0;
}

static void on_readable(uv_poll_t *handle, int status, int events);

static void on_retry(uv_timer_t *timer) {
  struct acceptor *a = timer->data;
  hold_reserve(a);
  if (a->paused && uv_poll_start(&a->poll, UV_READABLE, on_readable) == 0) {
    a->paused = false;
  }
}

/* What refuse_one did: refused a caller (or was interrupted: accept again), found nobody
 * waiting, or could not let a descriptor go. */
enum spare_refusal { SPARE_REFUSED_ONE, SPARE_NOBODY_WAITING, SPARE_IMPOSSIBLE };

/* Out of descriptors: lets the one held back go for a moment to accept the next caller,
 * refuses it (which frees the slot again), then holds the slot back once more. */
static enum spare_refusal refuse_one(struct acceptor *a) {
  hold_reserve(a);
  if (a->reserve_fd < 0) {
    return SPARE_IMPOSSIBLE;
  }
  close(a->reserve_fd);
  a->reserve_fd = -1;
  int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  int accept_errno = errno;
  if (fd >= 0) {
    if (!a->refusing) {
      a->refusing = true;
      log_write(LOG_WARN, "accept", "%s: out of file descriptors: refusing new connections at once",
                a->where);
    }
    if (a->on_refuse != NULL) {
      a->on_refuse(a, fd);
    } else {
      close(fd);
    }
  }
  hold_reserve(a);
  if (fd >= 0 || accept_errno == EINTR || accept_errno == ECONNABORTED) {
    return SPARE_REFUSED_ONE;
  }
  return accept_errno == EAGAIN || accept_errno == EWOULDBLOCK ? SPARE_NOBODY_WAITING
                                                               : SPARE_IMPOSSIBLE;
}

static void on_readable(uv_poll_t *handle, int status, int events) {
  struct acceptor *a = handle->data;
  (void)events;
  if (status < 0) {
    /* libuv has stopped the handle on the socket's error: watch it again in a moment. */
    log_write(LOG_WARN, "accept", "%s: listening socket: %s; retrying in %d ms", a->where,
              uv_strerror(status), ACCEPT_RETRY_MS);
    a->paused = true;
    uv_timer_start(&a->retry, on_retry, ACCEPT_RETRY_MS, 0);
    return;
  }
  for (int i = 0; i < ACCEPT_BATCH && !a->paused && a->fd >= 0; i++) {
    int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (a->refusing) {
        a->refusing = false;
        log_write(LOG_INFO, "accept", "%s: descriptors free again: accepting", a->where);
      }
      hold_reserve(a);
      /* The callback may close the acceptor (a drain): the loop checks the fd. */
      a->on_accept(a, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED) {
      continue;
    }
    int accept_errno = errno;
    if (accept_errno == EMFILE || accept_errno == ENFILE) {
      enum spare_refusal r = refuse_one(a);
      if (r == SPARE_REFUSED_ONE) {
        continue;
      }
      if (r == SPARE_NOBODY_WAITING) {
        return;
      }
    }
    if (accept_errno == EMFILE || accept_errno == ENFILE || accept_errno == ENOBUFS ||
        accept_errno == ENOMEM) {
      log_write(LOG_WARN, "accept", "%s: accept: %s; pausing accepts for %d ms", a->where,
                strerror(accept_errno), ACCEPT_RETRY_MS);
      a->paused = true;
      uv_poll_stop(&a->poll);
      uv_timer_start(&a->retry, on_retry, ACCEPT_RETRY_MS, 0);
    }
    return;
  }
}

int acceptor_start(struct acceptor *a, uv_loop_t *loop, acceptor_cb on_accept) {
  a->on_accept = on_accept;
  int r = uv_poll_init(loop, &a->poll, a->fd);
  if (r != 0) {
    return r;
  }
  uv_timer_init(loop, &a->retry);
  a->poll.data = a;
  a->retry.data = a;
  a->started = true;
  return uv_poll_start(&a->poll, UV_READABLE, on_readable);
}

static void close_fds(struct acceptor *a) {
  if (a->fd >= 0) {
    close(a->fd);
    a->fd = -1;
  }
  if (a->reserve_fd >= 0) {
    close(a->reserve_fd);
    a->reserve_fd = -1;
  }
}

static void on_handle_closed(uv_handle_t *handle) {
  struct acceptor *a = handle->data;
  if (--a->open_handles > 0) {
    return;
  }
  close_fds(a);
  if (a->on_closed != NULL) {
    a->on_closed(a);
  }
}

void acceptor_close(struct acceptor *a, void (*on_closed)(struct acceptor *a)) {
  if (a->open_handles > 0) {
    return; /* Closing already. */
  }
  a->on_closed = on_closed;
  if (!a->started) {
    close_fds(a);
    if (on_closed != NULL) {
      on_closed(a);
    }
    return;
  }
  a->started = false;
  a->paused = true;
  a->open_handles = 2;
  uv_close((uv_handle_t *)&a->poll, on_handle_closed);
  uv_close((uv_handle_t *)&a->retry, on_handle_closed);
}
