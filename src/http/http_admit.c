/* http_admit: who gets a place on a full HTTP port (see http_server.c's top comment): per
 * source address counts, and the connection that gives way to a newcomer (idle before
 * busy, the heaviest address first, the oldest first), else a 503. */
#include "mtlsd/http/http_server.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <uv.h>

#include "http_internal.h"
#include "mtlsd/base/list.h"
#include "mtlsd/base/log.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/net/acceptor.h"
#include "mtlsd/net/transport.h"
#include "mtlsd/tls/tls.h"

/* Over the connection limit: answer 503 if the socket takes it at once, and close. On
 * HTTPS the client sees the connection close instead: no hconn_handshake is spent on it. */
static void refuse_connection(struct http_server *server, int fd) {
  if (server->cfg.tls == NULL) {
    char body[64], msg[256];
    int body_len = snprintf(body, sizeof(body), "too many %s connections\n", server->cfg.name);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: " HTTP_CT_TEXT
                     "\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
                     body_len, body);
    (void)!send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  close(fd);
}

/* What a connection is doing, for choosing which gives its place to a newcomer
 * (sooner_victim): its last answer written and closing (lingering); nothing (idle:
 * between requests, or silent past FRESH_MS); or something, from the least to the most
 * deserving of its place: a request still arriving (or a hconn_handshake under way), an answer
 * the client is slow to read, just accepted and not heard from yet (a kubelet's probe
 * sends its request at once, but the loop may not have read it before the next accept),
 * an answer a route is preparing (http_defer: a probe runs for it). */
enum victim_rank {
  RANK_LINGERING,
  RANK_IDLE,
  RANK_RECEIVING,
  RANK_ANSWERING,
  RANK_FRESH,
  RANK_DEFERRED,
  RANK_NEVER /* A route runs for it right now. */
};

/* How long a new connection may be silent and still count as one about to speak. */
enum { FRESH_MS = 1000 };

static enum victim_rank victim_rank(const struct http_conn *c, uint64_t now) {
  if (c->lingering) {
    return RANK_LINGERING;
  }
  if (c->in_route) {
    return RANK_NEVER;
  }
  if (c->deferred) {
    return RANK_DEFERRED;
  }
  bool silent = c->handshaking ? !c->hello_seen : !c->served && c->len == 0 && !c->head_done;
  if (silent) {
    return now - c->since < FRESH_MS ? RANK_FRESH : RANK_IDLE;
  }
  if (c->handshaking) {
    return RANK_RECEIVING;
  }
  if (hconn_answering(c) || c->close_after_write) {
    return RANK_ANSWERING;
  }
  return c->len == 0 && !c->head_done ? RANK_IDLE : RANK_RECEIVING;
}

/* Finds the entry of |addr| into |*out|; false when it has no connection open. A linear
 * search: a port has a few hundred connections at most, and this runs once per
 * accept. */
static bool source_find(struct http_server *server, const struct sockaddr_storage *addr,
                        struct http_source **out) {
  for (struct list_node *n = server->sources.next; n != &server->sources; n = n->next) {
    struct http_source *src = LIST_ENTRY(n, struct http_source, link);
    if (netaddr_same_host((const struct sockaddr *)&src->addr, (const struct sockaddr *)addr)) {
      *out = src;
      return true;
    }
  }
  *out = NULL;
  return false;
}

/* Whether |a| should give its place before |b| (NULL: none yet). A lingering connection
 * first, then an idle one, then one doing something; within idle and within busy, the
 * one whose address holds the most connections (so that no flood, from one address or
 * many, pushes out a client with a few: the kubelet, the API server's requests in
 * flight), then by victim_rank, then the one longest in its state. Candidates are
 * visited from the oldest on, so of two alike the older one, found first, stays
 * chosen. */
static bool sooner_victim(const struct http_conn *a, const struct http_conn *b, uint64_t now) {
  enum victim_rank ra = victim_rank(a, now);
  if (ra == RANK_NEVER) {
    return false;
  }
  if (b == NULL) {
    return true;
  }
  enum victim_rank rb = victim_rank(b, now);
  int tier_a = ra == RANK_LINGERING ? 0 : ra == RANK_IDLE ? 1 : 2;
  int tier_b = rb == RANK_LINGERING ? 0 : rb == RANK_IDLE ? 1 : 2;
  if (tier_a != tier_b) {
    return tier_a < tier_b;
  }
  if (a->source->count != b->source->count) {
    return a->source->count > b->source->count;
  }
  if (ra != rb) {
    return ra < rb;
  }
  return a->since < b->since;
}

/* Makes room for a newcomer from |src| (NULL: an address with no connection yet): past
 * limits.max_per_source connections from that address, one of them is closed; past
 * limits.max_connections, one of all (sooner_victim chooses). Returns false (nothing closed) when
 * the newcomer must be refused because a route runs for every candidate (which cannot happen
 * between two loop callbacks, but costs nothing to respect). */
static bool make_room(struct http_server *server, struct http_source *src) {
  const struct http_server_limits *limits = &server->cfg.limits;
  bool over_source =
      limits->max_per_source != 0 && src != NULL && src->count >= limits->max_per_source;
  if (!over_source && server->conn_count < limits->max_connections) {
    return true;
  }
  struct http_conn *victim = NULL;
  uint64_t now = uv_now(server->loop);
  for (struct list_node *n = server->conns.prev; n != &server->conns; n = n->prev) {
    struct http_conn *c = LIST_ENTRY(n, struct http_conn, link);
    if ((!over_source || c->source == src) && sooner_victim(c, victim, now)) {
      victim = c;
    }
  }
  if (victim == NULL) {
    return false;
  }
  LOG_DEBUGF(server->cfg.name, "%s: closed to make room for a newcomer", victim->peer);
  hconn_close(victim);
  return true;
}

/* The entry of |addr|, counting one more connection; made when it has none yet. NULL
 * when out of memory. */
static struct http_source *source_get(struct http_server *server,
                                      const struct sockaddr_storage *addr) {
  struct http_source *src;
  if (!source_find(server, addr, &src)) {
    src = calloc(1, sizeof(*src));
    if (src == NULL) {
      return NULL;
    }
    src->addr = *addr;
    list_insert_head(&server->sources, &src->link);
  }
  src->count++;
  return src;
}

void hserver_on_accept(struct acceptor *a, int fd) {
  struct http_server *server = a->data;
  if (server->closing) {
    close(fd);
    return;
  }
  struct sockaddr_storage peer = {0};
  socklen_t peer_len = sizeof(peer);
  if (getpeername(fd, (struct sockaddr *)&peer, &peer_len) != 0) {
    close(fd); /* Reset before it was accepted. */
    return;
  }
  struct http_source *known;
  source_find(server, &peer, &known);
  if (!make_room(server, known)) {
    LOG_DEBUGF(server->cfg.name, "refusing a connection: %zu open", server->conn_count);
    refuse_connection(server, fd);
    return;
  }
  struct http_source *src = source_get(server, &peer);
  if (src == NULL) {
    refuse_connection(server, fd);
    return;
  }
  struct tls_contexts *ctxs = NULL;
  if (server->cfg.tls != NULL) {
    ctxs = server->cfg.tls(server->cfg.arg);
    if (ctxs == NULL) {
      LOG_DEBUGF(server->cfg.name, "refusing a connection: no certificate loaded");
      hsource_put(src);
      close(fd);
      return;
    }
  }
  struct http_conn *c = calloc(1, sizeof(*c));
  /* Sessions resume only on this server: a ticket from the mesh must not resume here. */
  static const struct tls_peer_policy kPolicy = {.session_context = "http_server"};
  struct tls_conn *tls = ctxs != NULL && c != NULL ? tls_conn_new_server(ctxs, fd, &kPolicy) : NULL;
  tls_contexts_free(ctxs);
  if (c == NULL || (ctxs != NULL && tls == NULL) || uv_poll_init(server->loop, &c->poll, fd) != 0) {
    hsource_put(src);
    tls_conn_free(tls);
    free(c);
    refuse_connection(server, fd);
    return;
  }
  c->fd = fd;
  c->server = server;
  c->source = src;
  c->tls = tls;
  c->since = uv_now(server->loop);
  c->handshaking = tls != NULL;
  transport_init_plain(&c->xprt, fd);
  uv_timer_init(server->loop, &c->timer);
  c->poll.data = c;
  c->timer.data = c;
  http_parser_init(&c->parser, server->cfg.limits.max_body);
  server->open_handles++;
  server->conn_count++;
  list_insert_head(&server->conns, &c->link);
  netaddr_format(c->peer, (struct sockaddr *)&peer);
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (server->cfg.limits.send_buffer > 0) {
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &server->cfg.limits.send_buffer,
                     sizeof(server->cfg.limits.send_buffer));
  }
  hconn_restart_timer(c, server->cfg.limits.timeout_ms);
  hconn_pump(c);
}
