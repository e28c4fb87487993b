/* health_metrics: the health port's /metrics (see mtlsd/health_metrics.h). */
#include "mtlsd/proxy/health_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mtlsd/base/exposition.h"
#include "mtlsd/base/list.h"
#include "mtlsd/base/log.h"
#include "mtlsd/http/prober.h"
#include "mtlsd/net/stats.h"

/* How long an answer is served again: a scraper asks every few seconds at most. */
enum { ANSWER_TTL_MS = 1000 };
/* How much longer than the fetch a scrape may wait for its answer: the fetch always ends
 * first, and answers it. */
enum { ANSWER_GRACE_MS = 1000 };

struct waiter {
  struct list_node link;
  struct http_conn *x;
};

struct health_metrics {
  uv_loop_t *loop;
  struct runtime *rt;
  char default_host[64];
  /* The fetch's request: an httpGet of the application's port and path that asks for
   * text format 0.0.4 (a client library that could answer OpenMetrics or protobuf answers
   * that instead) and says who asks. */
  struct app_probe fetch;
  struct app_probe_header headers[2];
  struct prober *running;
  struct list_node waiters;
  char *text; /* The last answer, rendered at |at|; NULL before the first. */
  size_t len;
  uint64_t at;
  bool last_ok;      /* Whether the last fetch passed: a change is logged. */
  bool told_dropped; /* Whether families left out of the merge were logged. */
};

static const char kAccept[] = "text/plain;version=0.0.4";
static const char kUserAgent[] = "mtlsd/" MTLSD_VERSION;

struct health_metrics *health_metrics_new(uv_loop_t *loop, struct runtime *rt) {
  struct health_metrics *m = calloc(1, sizeof(*m));
  if (m == NULL) {
    return NULL;
  }
  m->loop = loop;
  m->rt = rt;
  m->last_ok = true;
  list_init(&m->waiters);
  prober_default_host(m->default_host, sizeof(m->default_host));
  const struct config *cfg = rt->cfg;
  m->headers[0] = (struct app_probe_header){(char *)"Accept", (char *)kAccept};
  m->headers[1] = (struct app_probe_header){(char *)"User-Agent", (char *)kUserAgent};
  m->fetch = (struct app_probe){
      .key = (char *)"MTLSD_APP_METRICS",
      .type = APP_PROBE_HTTP,
      .port = cfg->app_metrics.port,
      .path = cfg->app_metrics.path,
      .headers = m->headers,
      .header_count = 2,
      .timeout = HEALTH_METRICS_FETCH_TIMEOUT_MS,
  };
  return m;
}

/* Renders mtlsd's own metrics, then |app| (|app_len| bytes), as the answer of the next
 * second; false when out of memory. */
static bool render(struct health_metrics *m, const char *app, size_t app_len) {
  char *own = stats_render_prometheus(m->rt->stats);
  size_t own_len = own != NULL ? strlen(own) : 0;
  char *text = own != NULL ? realloc(own, own_len + app_len + 1) : NULL;
  if (text == NULL) {
    free(own);
    return false;
  }
  if (app_len > 0) {
    memcpy(text + own_len, app, app_len);
  }
  text[own_len + app_len] = '\0';
  free(m->text);
  m->text = text;
  m->len = own_len + app_len;
  m->at = uv_now(m->loop);
  return true;
}

static void answer(struct health_metrics *m, struct http_conn *x, bool rendered) {
  if (!rendered) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  struct http_response r = {200, HTTP_CT_PROMETHEUS, m->text, m->len, false};
  http_respond(x, &r);
}

/* Judges the application's |body|: its families that can follow mtlsd's go into |*kept|
 * (whose text the caller frees); false with the reason in |reason| when it cannot be
 * served. */
static bool filter_app(struct health_metrics *m, const char *body, size_t len,
                       const char *content_type, struct exposition_filter *kept, char *reason,
                       size_t reason_len) {
  /* text/plain, with or without its version and charset, or nothing said: the parse
   * judges. OpenMetrics and protobuf do not fit in text format 0.0.4. */
  if (content_type[0] != '\0' && strncasecmp(content_type, "text/plain", 10) != 0) {
    snprintf(reason, reason_len, "Content-Type %s, not text format 0.0.4", content_type);
    return false;
  }
  /* Only the names of mtlsd's own text matter here, and they are the same in the text
   * rendered to serve. */
  char *own = stats_render_prometheus(m->rt->stats);
  if (own == NULL) {
    snprintf(reason, reason_len, "out of memory");
    return false;
  }
  bool ok = exposition_filter(own, strlen(own), body, len, kept);
  free(own);
  if (!ok) {
    snprintf(reason, reason_len, "%s", kept->why);
    return false;
  }
  if (kept->dropped > 0 && !m->told_dropped) {
    m->told_dropped = true;
    log_write(LOG_INFO, "health",
              "the application's metrics: %zu famil%s left out, as mtlsd exports the same names "
              "(the first: %s)",
              kept->dropped, kept->dropped == 1 ? "y" : "ies", kept->first_dropped);
  }
  return true;
}

static void on_fetched(void *arg, bool ok, const char *reason, char *body, size_t len,
                       const char *content_type) {
  struct health_metrics *m = arg;
  m->running = NULL;
  char why[300];
  snprintf(why, sizeof(why), "%s", reason);
  struct exposition_filter kept = {0};
  ok = ok && filter_app(m, body, len, content_type, &kept, why, sizeof(why));
  free(body);
  /* Counted before the answer is rendered, so that the answer shows this fetch. */
  stats_count_app_metrics_fetch(m->rt->stats, ok);
  if (ok != m->last_ok) {
    m->last_ok = ok;
    log_write(ok ? LOG_INFO : LOG_WARN, "health", "the application's metrics (port %u, %s): %s%s",
              m->fetch.port, m->fetch.path, ok ? "served again: " : "not served: ", why);
  }
  bool rendered = render(m, kept.text, kept.len);
  free(kept.text);
  struct list_node done;
  list_init(&done);
  list_splice(&done, &m->waiters);
  while (!list_empty(&done)) {
    struct waiter *w = LIST_ENTRY(done.next, struct waiter, link);
    list_remove(&w->link);
    struct http_conn *x = w->x;
    free(w);
    answer(m, x, rendered);
  }
}

static void on_waiter_abort(void *arg) {
  struct waiter *w = arg;
  list_remove(&w->link);
  free(w);
}

void health_metrics_serve(struct health_metrics *m, struct http_conn *x) {
  if (m->text != NULL && uv_now(m->loop) - m->at < ANSWER_TTL_MS) {
    answer(m, x, true);
    return;
  }
  if (m->fetch.port == 0) {
    answer(m, x, render(m, NULL, 0));
    return;
  }
  struct waiter *w = malloc(sizeof(*w));
  if (w == NULL) {
    http_respond_text(x, 500, "out of memory");
    return;
  }
  if (m->running == NULL) {
    m->running = prober_fetch(m->loop, &m->fetch, m->default_host, HEALTH_METRICS_APP_BODY_MAX,
                              on_fetched, m);
    if (m->running == NULL) {
      free(w);
      http_respond_text(x, 500, "out of memory");
      return;
    }
  }
  w->x = x;
  list_insert_head(&m->waiters, &w->link);
  http_defer(x, HEALTH_METRICS_FETCH_TIMEOUT_MS + ANSWER_GRACE_MS, on_waiter_abort, w);
}

void health_metrics_free(struct health_metrics *m) {
  if (m == NULL) {
    return;
  }
  if (m->running != NULL) {
    prober_cancel(m->running);
  }
  free(m->text);
  free(m);
}
