/* dial: original destinations, the loop check and the dialer (see mtlsd/dial.h). */
#include "mtlsd/net/dial.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "mtlsd/base/log.h"

/* From linux/netfilter_ipv4.h (and, with the same number, IP6T_SO_ORIGINAL_DST from
 * linux/netfilter_ipv6/ip6_tables.h), whose headers clash with glibc's. */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif

bool dial_original_destination(int fd, const struct sockaddr_storage *local,
                               struct sockaddr_storage *out, socklen_t *out_len) {
  socklen_t len = sizeof(*out);
  /* An IPv4 connection on a dual-stack socket was tracked, and NATed, as IPv4. */
  bool v6 = local->ss_family == AF_INET6 &&
            !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)local)->sin6_addr);
  /* The option has one number in both families (IP6T_SO_ORIGINAL_DST ==
   * SO_ORIGINAL_DST); only the level differs. */
  bool ok = getsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, SO_ORIGINAL_DST, out, &len) == 0;
  *out_len = len;
  return ok;
}

/* Tells whether |sa| is one of this network namespace's own addresses: the kernel routes
 * a local address to itself, so a UDP socket "connected" to it (no packet is sent) takes
 * that very address as its source. No bind: the sandbox allows none once serving. */
static bool is_local_address(const struct sockaddr_storage *sa) {
  struct sockaddr_storage probe = *sa;
  socklen_t len;
  if (probe.ss_family == AF_INET) {
    ((struct sockaddr_in *)&probe)->sin_port = htons(9); /* Any port: nothing is sent. */
    len = sizeof(struct sockaddr_in);
  } else {
    ((struct sockaddr_in6 *)&probe)->sin6_port = htons(9);
    len = sizeof(struct sockaddr_in6);
  }
  int fd = socket(probe.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return true; /* Cannot tell: refusing is the safe side. */
  }
  struct sockaddr_storage source;
  socklen_t source_len = sizeof(source);
  bool local = connect(fd, (struct sockaddr *)&probe, len) != 0 ||
               getsockname(fd, (struct sockaddr *)&source, &source_len) != 0 ||
               netaddr_same_host((const struct sockaddr *)&source, (const struct sockaddr *)sa);
  close(fd);
  return local;
}

/* Coming in, an own port is a loop whatever the address: relaying it would let a peer
 * use an outbound listener (and so the pod's identity) or the admin port. Going out,
 * only when the destination is this pod itself (without a redirect, the listener's own
 * address): another pod's port of the same number is no loop, and its sidecar guards
 * it. */
bool dial_is_loop(const struct config *cfg, enum listener_mode mode,
                  const struct sockaddr_storage *target) {
  const struct sockaddr *sa = (const struct sockaddr *)target;
  if (!config_is_own_port(cfg, netaddr_port(sa))) {
    return false;
  }
  return mode == LISTENER_INBOUND || netaddr_is_loopback(sa) || is_local_address(target);
}

static void format_target(struct dialer *d) {
  char buf[NETADDR_STR_MAX];
  snprintf(d->upstream, sizeof(d->upstream), "%s",
           netaddr_format(buf, (const struct sockaddr *)&d->target));
}

enum dial_plan dialer_plan(struct dialer *d, const struct listener_config *lc) {
  d->failure = UPSTREAM_FAIL_UNREACHABLE;
  d->host[0] = '\0';
  struct hostport overridden;
  const struct hostport *hp = NULL;
  if (lc->mode == LISTENER_OUTBOUND && lc->has_upstream) {
    hp = &lc->upstream;
  } else if (lc->mode == LISTENER_INBOUND && lc->has_forward) {
    hp = &lc->forward;
  } else if (lc->forward_host != NULL) {
    /* Transparent inbound with forward_host: the operator chose another host (such as
     * loopback) for the port the caller meant to reach. */
    memset(&overridden, 0, sizeof(overridden));
    snprintf(overridden.host, sizeof(overridden.host), "%s", lc->forward_host);
    overridden.port = netaddr_port((const struct sockaddr *)&d->target);
    overridden.host_is_ip = lc->forward_host_is_ip;
    hp = &overridden;
  }
  if (hp == NULL) {
    /* Transparent: the original destination, which for inbound is the pod's own
     * address, so a port the app bound to loopback only is not reachable. */
    format_target(d);
    return DIAL_CONNECT;
  }
  return dialer_plan_hostport(d, hp);
}

enum dial_plan dialer_plan_hostport(struct dialer *d, const struct hostport *hp) {
  d->failure = UPSTREAM_FAIL_UNREACHABLE;
  d->host[0] = '\0';
  if (hp->host_is_ip) {
    if (!netaddr_to_sockaddr(&d->target, &d->target_len, hp)) {
      return DIAL_UNREACHABLE;
    }
    format_target(d);
    d->target_tried = false;
    return DIAL_CONNECT;
  }
  snprintf(d->upstream, sizeof(d->upstream), "%s:%u", hp->host, hp->port);
  snprintf(d->host, sizeof(d->host), "%s", hp->host);
  d->port = hp->port;
  return DIAL_RESOLVE;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  struct dialer *d = req->data;
  d->gai_pending = false;
  d->addrs = res;
  d->next_addr = res;
  if (status == 0 && res == NULL) {
    status = UV_EAI_NONAME;
  }
  if (status != 0) {
    d->failure = UPSTREAM_FAIL_DNS;
  }
  d->on_resolved(d, status);
}

int dialer_resolve(struct dialer *d, uv_loop_t *loop, dialer_resolved_cb cb) {
  char port[8];
  snprintf(port, sizeof(port), "%u", d->port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  d->gai.data = d;
  d->on_resolved = cb;
  int r = uv_getaddrinfo(loop, &d->gai, on_resolved, d->host, port, &hints);
  if (r != 0) {
    d->failure = UPSTREAM_FAIL_DNS;
    return r;
  }
  d->gai_pending = true;
  return 0;
}

static enum upstream_failure classify_connect_error(int err) {
  switch (err) {
    case ECONNREFUSED:
      return UPSTREAM_FAIL_REFUSED;
    case ETIMEDOUT:
      return UPSTREAM_FAIL_TIMEOUT;
    default:
      return UPSTREAM_FAIL_UNREACHABLE;
  }
}

static bool next_sockaddr(struct dialer *d, const struct sockaddr **sa, socklen_t *len) {
  if (d->addrs != NULL) {
    while (d->next_addr != NULL) {
      const struct addrinfo *ai = d->next_addr;
      d->next_addr = ai->ai_next;
      if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
        *sa = ai->ai_addr;
        *len = ai->ai_addrlen;
        return true;
      }
    }
    return false;
  }
  if (d->target_tried || d->host[0] != '\0') {
    return false;
  }
  d->target_tried = true;
  *sa = (const struct sockaddr *)&d->target;
  *len = d->target_len;
  return true;
}

int dialer_next(struct dialer *d) {
  const struct sockaddr *sa;
  socklen_t len;
  while (next_sockaddr(d, &sa, &len)) {
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      log_write(LOG_WARN, "dial", "%s: cannot open a socket: %s", d->upstream, strerror(errno));
      d->failure = UPSTREAM_FAIL_UNREACHABLE;
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
      d->failure = classify_connect_error(errno);
      close(fd);
      continue;
    }
    return fd;
  }
  return -1;
}

enum connect_outcome dialer_connect_result(struct dialer *d, int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
    err = errno;
  }
  if (err == 0) {
    return CONNECT_OK;
  }
  /* A reset that refuses a connect reads as ECONNREFUSED: these came after it (EPIPE:
   * after the peer's FIN too). */
  if (err == ECONNRESET || err == EPIPE) {
    return CONNECT_OK_THEN_RESET;
  }
  d->failure = classify_connect_error(err);
  LOG_DEBUGF("dial", "connect to %s: %s", d->upstream, strerror(err));
  return CONNECT_FAILED;
}

void dialer_release(struct dialer *d) {
  if (d->addrs != NULL) {
    uv_freeaddrinfo(d->addrs);
    d->addrs = NULL;
  }
}
