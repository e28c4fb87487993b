/* stats: every counter, gauge and histogram mtlsd exports (docs/admin.md), and their
 * JSON and Prometheus renderings (stats_render.c).
 *
 * Owns struct stats. Data-path counters live per worker and per listener, and each is
 * written by one worker thread only, with relaxed atomic loads and stores (plain moves on
 * x86-64 and arm64): no lock and no shared cache line on the data path. Readers (the
 * admin thread) sum the workers' values. One table of metric definitions drives both
 * output formats. */
#ifndef MTLSD_STATS_H
#define MTLSD_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mtlsd/config/config.h"
#include "mtlsd/tls/tls.h"

/* Why an upstream connection failed: the labels of mtlsd_upstream_connect_failures_total. */
enum upstream_failure {
  UPSTREAM_FAIL_REFUSED,
  UPSTREAM_FAIL_TIMEOUT,
  UPSTREAM_FAIL_UNREACHABLE,
  UPSTREAM_FAIL_DNS,
  UPSTREAM_FAIL_COUNT
};

const char *upstream_failure_name(enum upstream_failure failure);

/* Why a connection was refused before any handshake. */
enum refusal {
  REFUSED_LIMIT,
  REFUSED_LOOP,
  REFUSED_NO_CERT,
  REFUSED_NO_DESTINATION,
  REFUSED_COUNT
};

const char *refusal_name(enum refusal refusal);

enum listener_counter {
  LC_CONNECTIONS_TOTAL,
  LC_CONNECTIONS_ACTIVE, /* A gauge: incremented and decremented by the same worker. */
  LC_HANDSHAKES_OK,
  LC_HANDSHAKES_FAILED,
  LC_HANDSHAKE_FAILURE_FIRST,
  LC_RESUMPTIONS = LC_HANDSHAKE_FAILURE_FIRST + TLS_FAIL_COUNT,
  LC_UPSTREAM_FAILURE_FIRST,
  LC_REFUSED_FIRST = LC_UPSTREAM_FAILURE_FIRST + UPSTREAM_FAIL_COUNT,
  LC_BYTES_RECEIVED_DOWNSTREAM = LC_REFUSED_FIRST + REFUSED_COUNT,
  LC_BYTES_RECEIVED_UPSTREAM,
  LC_BYTES_SENT_DOWNSTREAM,
  LC_BYTES_SENT_UPSTREAM,
  LC_PLAINTEXT, /* Permissive listeners: connections relayed without TLS. */
  LC_COUNT
};

enum histogram_kind {
  HIST_HANDSHAKE,
  HIST_CONNECTION,
  HIST_COUNT, /* The kinds above are per listener; those below, process-wide. */
  HIST_WEBHOOK_REQUEST = HIST_COUNT,
  HIST_KINDS
};

/* The results of mtlsd_injections_total (the webhook's). */
enum injection_result { INJECTION_INJECTED, INJECTION_SKIPPED, INJECTION_FAILED, INJECTION_COUNT };

/* Upper bounds in seconds; the last bucket is +Inf. */
#define STATS_BUCKETS 14

struct histogram {
  _Atomic uint64_t buckets[STATS_BUCKETS + 1]; /* Not cumulative; summed on output. */
  _Atomic uint64_t count;
  _Atomic uint64_t sum_us;
};

/* At most this many distinct roots are counted per listener; more go under "other". */
#define STATS_ROOTS_MAX 8

struct root_counter {
  char root[TLS_PEER_ROOT_HEX +
            1]; /* SHA-256 prefix; "" marks a free slot. Written once, then read-only. */
  _Atomic uint64_t count;
};

struct listener_stats {
  _Atomic uint64_t counters[LC_COUNT];
  struct histogram hist[HIST_COUNT];
  struct root_counter roots[STATS_ROOTS_MAX + 1];
  _Atomic int roots_used; /* Slots published to readers. */
} __attribute__((aligned(64)));

/* Process-wide values, written by the main thread. */
struct stats_global {
  _Atomic uint64_t cert_reloads_ok;
  _Atomic uint64_t cert_reloads_failed;
  _Atomic int64_t cert_expiry; /* Unix seconds, 0 before a valid set. */
  _Atomic uint64_t cert_generation;
  _Atomic int draining;
  int64_t start_time; /* Unix seconds. */
  /* mtlsd_app_probes_total: [probe * 2 + (ok ? 0 : 1)], probes as in cfg->app_probes. */
  _Atomic uint64_t *app_probe_results;
  /* mtlsd_app_metrics_scrapes_total: [ok ? 0 : 1]. */
  _Atomic uint64_t app_metrics_fetches[2];
  /* The webhook's: mtlsd_injections_total and the time to answer each review. */
  _Atomic uint64_t injections[INJECTION_COUNT];
  struct histogram webhook_requests;
  _Atomic int sandbox_active; /* mtlsd_sandbox_active: 1 once the process is confined. */
};

struct stats {
  const struct config *cfg;
  unsigned workers;
  size_t listeners;
  struct listener_stats *per_worker; /* [worker * listeners + listener] */
  struct stats_global global;
};

/* stats_new allocates zeroed stats for every worker and listener of |cfg|, which must
 * outlive it. Free with stats_free. */
struct stats *stats_new(const struct config *cfg);
void stats_free(struct stats *stats);

/* stats_for returns the block that worker |worker| writes for listener |listener|. */
static inline struct listener_stats *stats_for(struct stats *stats, unsigned worker,
                                               size_t listener) {
  return &stats->per_worker[(size_t)worker * stats->listeners + listener];
}

/* Single-writer increment: a relaxed load and store, no read-modify-write instruction. */
static inline void stats_add_u64(_Atomic uint64_t *v, uint64_t n) {
  atomic_store_explicit(v, atomic_load_explicit(v, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void stats_add(struct listener_stats *s, enum listener_counter c, uint64_t n) {
  stats_add_u64(&s->counters[c], n);
}

/* stats_count_app_probe counts one run of the application probe cfg->app_probes[|probe|]
 * with its result. Called on the main thread. */
void stats_count_app_probe(struct stats *stats, size_t probe, bool ok);

/* stats_count_app_metrics_fetch counts one fetch of the application's metrics
 * (MTLSD_APP_METRICS) with its result. Called on the main thread. */
void stats_count_app_metrics_fetch(struct stats *stats, bool ok);

/* stats_observe records |seconds| in histogram |kind| of |s|. */
void stats_observe(struct listener_stats *s, enum histogram_kind kind, double seconds);

/* stats_count_review counts one AdmissionReview the webhook answered in |seconds|. */
void stats_count_review(struct stats *stats, enum injection_result result, double seconds);

/* stats_count_root counts one peer verified by the root whose SHA-256 prefix is |root|. */
void stats_count_root(struct listener_stats *s, const char *root);

/* stats_bucket_bound returns the upper bound, in seconds, of bucket |i| (below
 * STATS_BUCKETS) of histograms of |kind|. */
double stats_bucket_bound(enum histogram_kind kind, size_t i);

/* stats_render_json returns every metric as a JSON text (per listener and in total);
 * stats_render_prometheus returns the Prometheus text format 0.0.4. The caller frees the
 * result with free(); NULL on allocation failure. */
char *stats_render_json(const struct stats *stats);
char *stats_render_prometheus(const struct stats *stats);

#endif
