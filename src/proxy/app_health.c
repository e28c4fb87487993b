/* app_health: application probes behind the health port (see mtlsd/app_health.h). */
#include "mtlsd/proxy/app_health.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/list.h"
#include "mtlsd/base/log.h"
#include "mtlsd/config/app_probes.h"
#include "mtlsd/http/prober.h"

/* How much longer than the probe's own timeout a request may wait for its answer. */
enum { ANSWER_GRACE_MS = 1000 };

struct probe_run {
  struct app_health *owner;
  size_t index; /* In cfg->app_probes. */
  struct prober *running;
  struct list_node waiters;
};

struct waiter {
  struct list_node link;
  struct http_conn *x;
};

struct app_health {
  uv_loop_t *loop;
  struct runtime *rt;
  char default_host[64];
  struct probe_run *runs;
};

struct app_health *app_health_new(uv_loop_t *loop, struct runtime *rt) {
  const struct config *cfg = rt->cfg;
  struct app_health *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    return NULL;
  }
  h->runs = calloc(cfg->app_probe_count > 0 ? cfg->app_probe_count : 1, sizeof(*h->runs));
  if (h->runs == NULL) {
    free(h);
    return NULL;
  }
  h->loop = loop;
  h->rt = rt;
  prober_default_host(h->default_host, sizeof(h->default_host));
  for (size_t i = 0; i < cfg->app_probe_count; i++) {
    h->runs[i].owner = h;
    h->runs[i].index = i;
    list_init(&h->runs[i].waiters);
  }
  return h;
}

static void on_waiter_abort(void *arg) {
  struct waiter *w = arg;
  list_remove(&w->link);
  free(w);
}

static bool kind_in(const char *kind, size_t len, const char *const *kinds) {
  for (size_t i = 0; kinds[i] != NULL; i++) {
    if (strlen(kinds[i]) == len && memcmp(kinds[i], kind, len) == 0) {
      return true;
    }
  }
  return false;
}

static const char *const kProbeKinds[] = {"livez", "readyz", "startupz", NULL};
static const char *const kHookKinds[] = {"poststartz", "prestopz", NULL};

static bool is_hook(const struct app_probe *probe) {
  return kind_in(probe->kind, strlen(probe->kind), kHookKinds);
}

static void on_run_done(void *arg, bool ok, const char *reason) {
  struct probe_run *run = arg;
  struct app_health *h = run->owner;
  const struct app_probe *probe = &h->rt->cfg->app_probes[run->index];
  run->running = NULL;
  stats_count_app_probe(h->rt->stats, run->index, ok);
  if (is_hook(probe)) {
    /* A hook runs once per container start or stop, and the kubelet shows none of an
     * httpGet hook's answer (it judges only whether one came): the log line is where an
     * operator sees what it did. */
    log_write(ok ? LOG_INFO : LOG_WARN, "health", "lifecycle hook %s %s: %s", probe->key,
              ok ? "passed" : "failed", reason);
  } else if (!ok) {
    log_write(LOG_INFO, "health", "probe %s failed: %s", probe->key, reason);
  }
  char body[600];
  snprintf(body, sizeof(body), "%s: %s\n", ok ? "ok" : "failed", reason);
  /* The waiters of this run only: answering one can bring the next pipelined request of
   * its connection, which waits for a run of its own. */
  struct list_node done;
  list_init(&done);
  list_splice(&done, &run->waiters);
  while (!list_empty(&done)) {
    struct waiter *w = LIST_ENTRY(done.next, struct waiter, link);
    list_remove(&w->link);
    struct http_conn *x = w->x;
    free(w);
    http_respond_text(x, ok ? 200 : 503, body);
  }
}

/* Answers 404 when |key| has no kind that |route| serves, naming the path it needs;
 * returns whether it did. */
static bool refuse_kind(struct http_conn *x, enum app_health_route route, const char *key,
                        size_t key_len) {
  const char *slash = memrchr(key, '/', key_len);
  const char *kind = slash != NULL ? slash + 1 : key + key_len;
  size_t kind_len = (size_t)(key + key_len - kind);
  bool hooks = route == APP_HEALTH_HOOKS;
  if (kind_in(kind, kind_len, hooks ? kHookKinds : kProbeKinds)) {
    return false;
  }
  bool other = kind_in(kind, kind_len, hooks ? kProbeKinds : kHookKinds);
  char body[600];
  snprintf(body, sizeof(body), "\"%.*s\": %s; %s\n", (int)(key_len < 200 ? key_len : 200), key,
           !other  ? "no such kind"
           : hooks ? "a probe, not a lifecycle hook"
                   : "a lifecycle hook, not a probe",
           hooks != other ? "lifecycle hooks are /app-lifecycle/<container>/<poststartz|prestopz>"
                          : "probes are /app-health/<container>/<livez|readyz|startupz>");
  http_respond_text(x, 404, body);
  return true;
}

void app_health_serve(struct app_health *h, struct http_conn *x, enum app_health_route route,
                      const char *key, size_t key_len) {
  const struct config *cfg = h->rt->cfg;
  if (refuse_kind(x, route, key, key_len)) {
    return;
  }
  const struct app_probe *probe = config_find_app_probe(cfg, key, key_len);
  if (probe == NULL) {
    char body[400];
    snprintf(body, sizeof(body), "no %s \"%.*s\" (MTLSD_APP_PROBES has %zu entries)\n",
             route == APP_HEALTH_HOOKS ? "lifecycle hook" : "probe",
             (int)(key_len < 200 ? key_len : 200), key, cfg->app_probe_count);
    http_respond_text(x, 404, body);
    return;
  }
  struct probe_run *run = &h->runs[probe - cfg->app_probes];
  struct waiter *w = malloc(sizeof(*w));
  if (w == NULL) {
    http_respond_text(x, 503, "out of memory");
    return;
  }
  if (run->running == NULL) {
    run->running = prober_start(h->loop, probe, h->default_host, on_run_done, run);
    if (run->running == NULL) {
      free(w);
      http_respond_text(x, 503, "out of memory");
      return;
    }
  }
  w->x = x;
  list_insert_head(&run->waiters, &w->link);
  http_defer(x, probe->timeout + ANSWER_GRACE_MS, on_waiter_abort, w);
}

void app_health_free(struct app_health *h) {
  if (h == NULL) {
    return;
  }
  for (size_t i = 0; i < h->rt->cfg->app_probe_count; i++) {
    if (h->runs[i].running != NULL) {
      prober_cancel(h->runs[i].running);
    }
  }
  free(h->runs);
  free(h);
}
