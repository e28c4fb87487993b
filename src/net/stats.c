/* stats: per-worker metric storage and counting (see mtlsd/stats.h; the renderings are
 * stats_render.c's). */
#include "mtlsd/net/stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const upstream_failure_names[UPSTREAM_FAIL_COUNT] = {
    "refused",
    "timeout",
    "unreachable",
    "dns",
};

static const char *const refusal_names[REFUSED_COUNT] = {
    "limit",
    "loop",
    "no_certificate",
    "no_destination",
};

/* Bucket upper bounds in seconds, per histogram kind. */
static const double stats_bucket_bounds[HIST_KINDS][STATS_BUCKETS] = {
    [HIST_HANDSHAKE] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                        10},
    [HIST_CONNECTION] = {0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 600, 1800, 3600, 7200},
    /* The API server gives up after the webhook's timeoutSeconds (5 by default). */
    [HIST_WEBHOOK_REQUEST] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                              0.25, 0.5, 1, 5},
};

const char *upstream_failure_name(enum upstream_failure failure) {
  return failure < UPSTREAM_FAIL_COUNT ? upstream_failure_names[failure] : "unreachable";
}

const char *refusal_name(enum refusal refusal) {
  return refusal < REFUSED_COUNT ? refusal_names[refusal] : "limit";
}

struct stats *stats_new(const struct config *cfg) {
  struct stats *stats = calloc(1, sizeof(*stats));
  if (stats == NULL) {
    return NULL;
  }
  stats->cfg = cfg;
  stats->workers = cfg->workers;
  stats->listeners = cfg->listener_count;
  size_t n = (size_t)cfg->workers * cfg->listener_count;
  stats->per_worker = aligned_alloc(64, n * sizeof(struct listener_stats));
  if (stats->per_worker == NULL) {
    free(stats);
    return NULL;
  }
  memset(stats->per_worker, 0, n * sizeof(struct listener_stats));
  if (cfg->app_probe_count > 0) {
    stats->global.app_probe_results =
        calloc(cfg->app_probe_count * 2, sizeof(*stats->global.app_probe_results));
    if (stats->global.app_probe_results == NULL) {
      stats_free(stats);
      return NULL;
    }
  }
  return stats;
}

void stats_count_app_probe(struct stats *stats, size_t probe, bool ok) {
  stats_add_u64(&stats->global.app_probe_results[probe * 2 + (ok ? 0 : 1)], 1);
}

void stats_count_app_metrics_fetch(struct stats *stats, bool ok) {
  stats_add_u64(&stats->global.app_metrics_fetches[ok ? 0 : 1], 1);
}

void stats_free(struct stats *stats) {
  if (stats == NULL) {
    return;
  }
  free(stats->per_worker);
  free(stats->global.app_probe_results);
  free(stats);
}

static void histogram_observe(struct histogram *h, enum histogram_kind kind, double seconds) {
  size_t i = 0;
  while (i < STATS_BUCKETS && seconds > stats_bucket_bounds[kind][i]) {
    i++;
  }
  stats_add_u64(&h->buckets[i], 1);
  stats_add_u64(&h->count, 1);
  stats_add_u64(&h->sum_us, seconds > 0 ? (uint64_t)(seconds * 1e6) : 0);
}

void stats_observe(struct listener_stats *s, enum histogram_kind kind, double seconds) {
  histogram_observe(&s->hist[kind], kind, seconds);
}

void stats_count_review(struct stats *stats, enum injection_result result, double seconds) {
  stats_add_u64(&stats->global.injections[result], 1);
  histogram_observe(&stats->global.webhook_requests, HIST_WEBHOOK_REQUEST, seconds);
}

void stats_count_root(struct listener_stats *s, const char *root) {
  int used = atomic_load_explicit(&s->roots_used, memory_order_relaxed);
  for (int i = 0; i < used; i++) {
    if (strcmp(s->roots[i].root, root) == 0) {
      stats_add_u64(&s->roots[i].count, 1);
      return;
    }
  }
  if (used < STATS_ROOTS_MAX) {
    snprintf(s->roots[used].root, sizeof(s->roots[used].root), "%s", root);
    stats_add_u64(&s->roots[used].count, 1);
    /* Release: a reader that sees the new count of slots sees the slot's name. */
    atomic_store_explicit(&s->roots_used, used + 1, memory_order_release);
    return;
  }
  /* The last slot counts every root beyond the first STATS_ROOTS_MAX. */
  if (s->roots[STATS_ROOTS_MAX].root[0] == '\0') {
    snprintf(s->roots[STATS_ROOTS_MAX].root, sizeof(s->roots[STATS_ROOTS_MAX].root), "other");
  }
  stats_add_u64(&s->roots[STATS_ROOTS_MAX].count, 1);
}

double stats_bucket_bound(enum histogram_kind kind, size_t i) {
  return stats_bucket_bounds[kind][i];
}
