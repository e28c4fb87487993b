/* stats_render: the JSON (/stats) and Prometheus (/metrics) renderings of the metrics
 * (see mtlsd/stats.h): a snapshot of every worker's blocks, walked by one table of metric
 * definitions. */
#include "mtlsd/base/textbuf.h"
#include "mtlsd/net/stats.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static const char *const injection_names[INJECTION_COUNT] = {"injected", "skipped", "failed"};

/* ---- Rendering ----
 *
 * A scrape first takes a snapshot (every worker's blocks summed per listener, the global
 * values and the process's own figures from /proc), then one table of metric
 * definitions walks the snapshot for either format, so that /stats and /metrics can never
 * disagree on a name or a label. */

/* Values that are not per listener: the process-wide ones and the process metrics. */
enum scalar {
  SC_RELOADS_OK,
  SC_RELOADS_FAILED,
  SC_CERT_EXPIRY,
  SC_CERT_GENERATION,
  SC_DRAINING,
  SC_SANDBOX,
  SC_APP_METRICS_OK,
  SC_APP_METRICS_FAILED,
  SC_INJECTED,
  SC_SKIPPED,
  SC_FAILED,
  SC_CPU_SECONDS,
  SC_OPEN_FDS,
  SC_MAX_FDS,
  SC_VIRTUAL_MEMORY,
  SC_RESIDENT_MEMORY,
  SC_START_TIME,
  SC_COUNT
};

struct scalar_value {
  bool present; /* False when /proc could not tell. */
  bool is_float;
  int64_t i;
  double f;
};

struct root_snapshot {
  char root[sizeof(((struct root_counter *)0)->root)];
  uint64_t count;
};

struct listener_snapshot {
  uint64_t counters[LC_COUNT];
  uint64_t buckets[HIST_KINDS][STATS_BUCKETS + 1]; /* Cumulative. */
  uint64_t sum_us[HIST_KINDS];
  struct root_snapshot *roots;
  size_t root_count;
};

struct snapshot {
  size_t listeners;
  struct listener_snapshot *l;      /* [listeners + 1]: the last one is the total. */
  struct listener_snapshot process; /* The process-wide histograms. */
  struct scalar_value scalars[SC_COUNT];
};

/* Where a metric's values come from. */
enum metric_source {
  SRC_COUNTER,          /* Listener counters first .. first + value_count - 1. */
  SRC_HISTOGRAM,        /* Listener histogram |first|. */
  SRC_ROOTS,            /* The listener's peer roots, one series per root seen. */
  SRC_SCALAR,           /* Scalars first .. first + value_count - 1. */
  SRC_APP_PROBES,       /* Per application probe (container, kind) and result. */
  SRC_PROCESS_HISTOGRAM /* Process-wide histogram |first|. */
};

struct metric_def {
  const char *name;
  const char *type; /* "counter", "gauge" or "histogram" */
  const char *help;
  enum metric_source source;
  int first;
  size_t value_count;
  const char *label; /* The label beside "listener" (or alone for scalars); NULL if none. */
  const char *(*label_value)(size_t i);
  bool permissive_only; /* Only permissive listeners have its series (docs/admin.md). */
  bool webhook_only;    /* Only the webhook has it; the webhook has no per-listener ones. */
};

static const char *result_label(size_t i) {
  return i == 0 ? "ok" : "failed";
}

static const char *side_label(size_t i) {
  return i == 0 ? "downstream" : "upstream";
}

static const char *tls_failure_label(size_t i) {
  return tls_failure_name((enum tls_failure)i);
}

static const char *upstream_failure_label(size_t i) {
  return upstream_failure_name((enum upstream_failure)i);
}

static const char *refusal_label(size_t i) {
  return refusal_name((enum refusal)i);
}

static const char *injection_label(size_t i) {
  return injection_names[i];
}

/* The label tables above rely on these pairs being adjacent, "ok" or "downstream" first. */
_Static_assert(LC_HANDSHAKES_FAILED == LC_HANDSHAKES_OK + 1, "handshake results are adjacent");
_Static_assert(LC_BYTES_RECEIVED_UPSTREAM == LC_BYTES_RECEIVED_DOWNSTREAM + 1,
               "received sides are adjacent");
_Static_assert(LC_BYTES_SENT_UPSTREAM == LC_BYTES_SENT_DOWNSTREAM + 1, "sent sides are adjacent");
_Static_assert(SC_RELOADS_FAILED == SC_RELOADS_OK + 1, "reload results are adjacent");
_Static_assert(SC_APP_METRICS_FAILED == SC_APP_METRICS_OK + 1, "fetch results are adjacent");
_Static_assert(SC_FAILED - SC_INJECTED == INJECTION_FAILED - INJECTION_INJECTED &&
                   SC_SKIPPED - SC_INJECTED == INJECTION_SKIPPED - INJECTION_INJECTED,
               "injection results are in the order of their labels");

static const struct metric_def kMetrics[] = {
    {"mtlsd_connections_total", "counter",
     "Connections accepted by the listener, including those refused at once.", SRC_COUNTER,
     LC_CONNECTIONS_TOTAL, 1, NULL, NULL, false, false},
    {"mtlsd_connections_active", "gauge", "Connections open now.", SRC_COUNTER,
     LC_CONNECTIONS_ACTIVE, 1, NULL, NULL, false, false},
    {"mtlsd_connections_refused_total", "counter",
     "Connections closed before any handshake, by reason.", SRC_COUNTER, LC_REFUSED_FIRST,
     REFUSED_COUNT, "reason", refusal_label, false, false},
    {"mtlsd_handshakes_total", "counter", "TLS handshakes completed, by result.", SRC_COUNTER,
     LC_HANDSHAKES_OK, 2, "result", result_label, false, false},
    {"mtlsd_handshake_failures_total", "counter", "Failed TLS handshakes, by reason.", SRC_COUNTER,
     LC_HANDSHAKE_FAILURE_FIRST, TLS_FAIL_COUNT, "reason", tls_failure_label, false, false},
    {"mtlsd_handshake_duration_seconds", "histogram",
     "Time from the start of a TLS handshake to its successful end.", SRC_HISTOGRAM, HIST_HANDSHAKE,
     0, NULL, NULL, false, false},
    {"mtlsd_tls_resumptions_total", "counter", "TLS handshakes that resumed a session.",
     SRC_COUNTER, LC_RESUMPTIONS, 1, NULL, NULL, false, false},
    {"mtlsd_upstream_connect_failures_total", "counter",
     "Failed connections to the upstream, by reason.", SRC_COUNTER, LC_UPSTREAM_FAILURE_FIRST,
     UPSTREAM_FAIL_COUNT, "reason", upstream_failure_label, false, false},
    {"mtlsd_bytes_received_total", "counter",
     "Bytes read from the downstream (client) or the upstream (server) side.", SRC_COUNTER,
     LC_BYTES_RECEIVED_DOWNSTREAM, 2, "side", side_label, false, false},
    {"mtlsd_bytes_sent_total", "counter",
     "Bytes written to the downstream (client) or the upstream (server) side.", SRC_COUNTER,
     LC_BYTES_SENT_DOWNSTREAM, 2, "side", side_label, false, false},
    {"mtlsd_connection_duration_seconds", "histogram",
     "Lifetime of closed connections, from accept to close.", SRC_HISTOGRAM, HIST_CONNECTION, 0,
     NULL, NULL, false, false},
    {"mtlsd_plaintext_connections_total", "counter",
     "Connections a permissive listener relayed as plaintext, without TLS.", SRC_COUNTER,
     LC_PLAINTEXT, 1, NULL, NULL, true, false},
    {"mtlsd_peer_roots_total", "counter",
     "Verified peers by the SHA-256 prefix of the root CA that verified them.", SRC_ROOTS, 0, 0,
     "root", NULL, false, false},
    {"mtlsd_cert_reloads_total", "counter", "Certificate set loads, by result.", SRC_SCALAR,
     SC_RELOADS_OK, 2, "result", result_label, false, false},
    {"mtlsd_cert_expiry_timestamp_seconds", "gauge",
     "Expiry of the loaded leaf certificate in Unix seconds; 0 before any valid set.", SRC_SCALAR,
     SC_CERT_EXPIRY, 1, NULL, NULL, false, false},
    {"mtlsd_cert_generation", "gauge",
     "Successful certificate loads so far; the first valid set is generation 1.", SRC_SCALAR,
     SC_CERT_GENERATION, 1, NULL, NULL, false, false},
    {"mtlsd_draining", "gauge", "1 while a graceful drain is under way, else 0.", SRC_SCALAR,
     SC_DRAINING, 1, NULL, NULL, false, false},
    {"mtlsd_sandbox_active", "gauge",
     "1 when the process is confined (no_new_privs, seccomp, Landlock where the kernel has it).",
     SRC_SCALAR, SC_SANDBOX, 1, NULL, NULL, false, false},
    {"mtlsd_app_probes_total", "counter",
     "Runs of the application containers' own probes from the health port, by result.",
     SRC_APP_PROBES, 0, 2, "result", result_label, false, false},
    {"mtlsd_app_metrics_scrapes_total", "counter",
     "Fetches of the application's own metrics (MTLSD_APP_METRICS) for the health port's "
     "/metrics, by result.",
     SRC_SCALAR, SC_APP_METRICS_OK, 2, "result", result_label, false, false},
    {"mtlsd_injections_total", "counter", "AdmissionReviews the webhook answered, by result.",
     SRC_SCALAR, SC_INJECTED, INJECTION_COUNT, "result", injection_label, false, true},
    {"mtlsd_webhook_request_duration_seconds", "histogram",
     "Time from a complete AdmissionReview request to its answer.", SRC_PROCESS_HISTOGRAM,
     HIST_WEBHOOK_REQUEST, 0, NULL, NULL, false, true},
    {"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.",
     SRC_SCALAR, SC_CPU_SECONDS, 1, NULL, NULL, false, false},
    {"process_open_fds", "gauge", "Number of open file descriptors.", SRC_SCALAR, SC_OPEN_FDS, 1,
     NULL, NULL, false, false},
    {"process_max_fds", "gauge", "Maximum number of open file descriptors.", SRC_SCALAR, SC_MAX_FDS,
     1, NULL, NULL, false, false},
    {"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", SRC_SCALAR,
     SC_VIRTUAL_MEMORY, 1, NULL, NULL, false, false},
    {"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", SRC_SCALAR,
     SC_RESIDENT_MEMORY, 1, NULL, NULL, false, false},
    {"process_start_time_seconds", "gauge",
     "Start time of the process since the Unix epoch in seconds.", SRC_SCALAR, SC_START_TIME, 1,
     NULL, NULL, false, false},
};

#define METRIC_COUNT (sizeof(kMetrics) / sizeof(kMetrics[0]))

/* ---- Snapshot ---- */

static void set_int(struct scalar_value *v, int64_t i) {
  v->present = true;
  v->is_float = false;
  v->i = i;
}

static void set_float(struct scalar_value *v, double f) {
  v->present = true;
  v->is_float = true;
  v->f = f;
}

/* Adds |count| under |root| in |snap|, whose roots array has room for one more. */
static void add_root(struct listener_snapshot *snap, const char *root, uint64_t count) {
  for (size_t i = 0; i < snap->root_count; i++) {
    if (strcmp(snap->roots[i].root, root) == 0) {
      snap->roots[i].count += count;
      return;
    }
  }
  struct root_snapshot *r = &snap->roots[snap->root_count++];
  snprintf(r->root, sizeof(r->root), "%s", root);
  r->count = count;
}

/* Sums worker |w|'s block |s| into |snap| (buckets not yet cumulative). */
static void add_block(struct listener_snapshot *snap, const struct listener_stats *s) {
  for (size_t c = 0; c < LC_COUNT; c++) {
    /* Unsigned wraparound makes the active-connections gauge come out right. */
    snap->counters[c] += atomic_load_explicit(&s->counters[c], memory_order_relaxed);
  }
  for (size_t k = 0; k < HIST_COUNT; k++) {
    for (size_t b = 0; b <= STATS_BUCKETS; b++) {
      snap->buckets[k][b] += atomic_load_explicit(&s->hist[k].buckets[b], memory_order_relaxed);
    }
    snap->sum_us[k] += atomic_load_explicit(&s->hist[k].sum_us, memory_order_relaxed);
  }
  /* Acquire: pairs with stats_count_root's release, so the slot names read are whole. */
  int used = atomic_load_explicit(&s->roots_used, memory_order_acquire);
  for (int i = 0; i < used && i < STATS_ROOTS_MAX; i++) {
    uint64_t n = atomic_load_explicit(&s->roots[i].count, memory_order_relaxed);
    if (n > 0) {
      add_root(snap, s->roots[i].root, n);
    }
  }
  /* The overflow slot's name is written by the worker without a barrier; its meaning is
   * fixed, so the name is not read at all. */
  uint64_t other = atomic_load_explicit(&s->roots[STATS_ROOTS_MAX].count, memory_order_relaxed);
  if (other > 0) {
    add_root(snap, "other", other);
  }
}

/* Reads utime, stime, starttime, vsize and rss from /proc/self/stat. */
static void read_proc_stat(struct snapshot *snap) {
  char buf[1024];
  FILE *f = fopen("/proc/self/stat", "re");
  if (f == NULL) {
    return;
  }
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  /* The command name (field 2) is in parentheses and may hold spaces or ')'. */
  char *p = strrchr(buf, ')');
  if (p == NULL) {
    return;
  }
  p++;
  /* Fields from 3 (state) on; field k is fields[k - 3]. */
  unsigned long long fields[22] = {0};
  for (size_t i = 0; i < 22; i++) {
    while (*p == ' ') {
      p++;
    }
    if (*p == '\0') {
      return;
    }
    char *end = p;
    fields[i] = i == 0 ? 0 : strtoull(p, &end, 10);
    while (*end != ' ' && *end != '\0') {
      end++;
    }
    p = end;
  }
  long ticks = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  if (ticks <= 0 || page <= 0) {
    return;
  }
  set_float(&snap->scalars[SC_CPU_SECONDS], (double)(fields[14 - 3] + fields[15 - 3]) / ticks);
  set_int(&snap->scalars[SC_VIRTUAL_MEMORY], (int64_t)fields[23 - 3]);
  set_int(&snap->scalars[SC_RESIDENT_MEMORY], (int64_t)fields[24 - 3] * page);

  /* starttime counts ticks since boot; /proc/stat's btime is the boot time. */
  f = fopen("/proc/stat", "re");
  if (f == NULL) {
    return;
  }
  char line[256];
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "btime ", 6) == 0) {
      unsigned long long btime = strtoull(line + 6, NULL, 10);
      set_float(&snap->scalars[SC_START_TIME], (double)btime + (double)fields[22 - 3] / ticks);
      break;
    }
  }
  fclose(f);
}

static void read_process(struct snapshot *snap) {
  read_proc_stat(snap);
  DIR *dir = opendir("/proc/self/fd");
  if (dir != NULL) {
    int64_t count = 0;
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
      if (e->d_name[0] != '.') {
        count++;
      }
    }
    closedir(dir);
    /* Not counting the descriptor opendir itself held. */
    set_int(&snap->scalars[SC_OPEN_FDS], count > 0 ? count - 1 : 0);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    set_int(&snap->scalars[SC_MAX_FDS],
            rl.rlim_cur == RLIM_INFINITY ? INT64_MAX : (int64_t)rl.rlim_cur);
  }
}

static void snapshot_free(struct snapshot *snap) {
  if (snap->l != NULL) {
    for (size_t i = 0; i <= snap->listeners; i++) {
      free(snap->l[i].roots);
    }
    free(snap->l);
  }
}

static bool snapshot_take(struct snapshot *snap, const struct stats *stats) {
  memset(snap, 0, sizeof(*snap));
  snap->listeners = stats->listeners;
  snap->l = calloc(stats->listeners + 1, sizeof(*snap->l));
  if (snap->l == NULL) {
    return false;
  }
  /* Each worker contributes at most every slot of its block (the overflow included). */
  size_t per_listener = (size_t)stats->workers * (STATS_ROOTS_MAX + 1);
  struct listener_snapshot *total = &snap->l[stats->listeners];
  total->roots = calloc(per_listener * stats->listeners + 1, sizeof(*total->roots));
  if (total->roots == NULL) {
    goto err;
  }
  for (size_t i = 0; i < stats->listeners; i++) {
    struct listener_snapshot *l = &snap->l[i];
    l->roots = calloc(per_listener + 1, sizeof(*l->roots));
    if (l->roots == NULL) {
      goto err;
    }
    for (unsigned w = 0; w < stats->workers; w++) {
      add_block(l, &stats->per_worker[(size_t)w * stats->listeners + i]);
    }
    for (size_t c = 0; c < LC_COUNT; c++) {
      total->counters[c] += l->counters[c];
    }
    for (size_t k = 0; k < HIST_COUNT; k++) {
      for (size_t b = 0; b <= STATS_BUCKETS; b++) {
        total->buckets[k][b] += l->buckets[k][b];
      }
      total->sum_us[k] += l->sum_us[k];
    }
    for (size_t r = 0; r < l->root_count; r++) {
      add_root(total, l->roots[r].root, l->roots[r].count);
    }
  }
  for (size_t i = 0; i <= stats->listeners; i++) {
    for (size_t k = 0; k < HIST_COUNT; k++) {
      for (size_t b = 1; b <= STATS_BUCKETS; b++) {
        snap->l[i].buckets[k][b] += snap->l[i].buckets[k][b - 1];
      }
    }
  }

  const struct stats_global *g = &stats->global;
  set_int(&snap->scalars[SC_RELOADS_OK], (int64_t)atomic_load(&g->cert_reloads_ok));
  set_int(&snap->scalars[SC_RELOADS_FAILED], (int64_t)atomic_load(&g->cert_reloads_failed));
  set_int(&snap->scalars[SC_CERT_EXPIRY], atomic_load(&g->cert_expiry));
  set_int(&snap->scalars[SC_CERT_GENERATION], (int64_t)atomic_load(&g->cert_generation));
  set_int(&snap->scalars[SC_DRAINING], atomic_load(&g->draining) != 0);
  set_int(&snap->scalars[SC_SANDBOX], atomic_load(&g->sandbox_active) != 0);
  for (size_t r = 0; r < 2; r++) {
    set_int(&snap->scalars[SC_APP_METRICS_OK + r],
            (int64_t)atomic_load(&g->app_metrics_fetches[r]));
  }
  for (size_t r = 0; r < INJECTION_COUNT; r++) {
    set_int(&snap->scalars[SC_INJECTED + r], (int64_t)atomic_load(&g->injections[r]));
  }
  const struct histogram *h = &g->webhook_requests;
  uint64_t *buckets = snap->process.buckets[HIST_WEBHOOK_REQUEST];
  for (size_t b = 0; b <= STATS_BUCKETS; b++) {
    buckets[b] = atomic_load(&h->buckets[b]) + (b > 0 ? buckets[b - 1] : 0);
  }
  snap->process.sum_us[HIST_WEBHOOK_REQUEST] = atomic_load(&h->sum_us);
  read_process(snap);
  if (!snap->scalars[SC_START_TIME].present && g->start_time > 0) {
    set_int(&snap->scalars[SC_START_TIME], g->start_time);
  }
  return true;

err:
  snapshot_free(snap);
  return false;
}

static void out_value(struct textbuf *b, const struct scalar_value *v) {
  if (!v->present) {
    textbuf_str(b, "null");
  } else if (v->is_float) {
    textbuf_printf(b, "%.6f", v->f);
  } else {
    textbuf_printf(b, "%lld", (long long)v->i);
  }
}

/* A listener counter as a scalar: the gauge is signed (a sum that wrapped around). */
static struct scalar_value counter_value(const struct metric_def *m, uint64_t raw) {
  struct scalar_value v = {.present = true};
  v.i = strcmp(m->type, "gauge") == 0 ? (int64_t)raw : (int64_t)(raw & INT64_MAX);
  return v;
}

/* ---- JSON ---- */

static void json_string(struct textbuf *b, const char *s) {
  textbuf_str(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
    if (*p == '"' || *p == '\\') {
      char esc[2] = {'\\', (char)*p};
      textbuf_append(b, esc, 2);
    } else if (*p < 0x20) {
      textbuf_printf(b, "\\u%04x", *p);
    } else {
      textbuf_append(b, (const char *)p, 1);
    }
  }
  textbuf_str(b, "\"");
}

static void json_key(struct textbuf *b, bool *first, const char *key) {
  textbuf_str(b, *first ? "" : ",");
  *first = false;
  json_string(b, key);
  textbuf_str(b, ":");
}

static void json_histogram(struct textbuf *b, const struct listener_snapshot *l, size_t kind) {
  textbuf_printf(b, "{\"count\":%llu,\"sum\":%.6f,\"buckets\":{",
                 (unsigned long long)l->buckets[kind][STATS_BUCKETS],
                 (double)l->sum_us[kind] / 1e6);
  for (size_t i = 0; i < STATS_BUCKETS; i++) {
    textbuf_printf(b, "\"%g\":%llu,", stats_bucket_bound(kind, i),
                   (unsigned long long)l->buckets[kind][i]);
  }
  textbuf_printf(b, "\"+Inf\":%llu}}", (unsigned long long)l->buckets[kind][STATS_BUCKETS]);
}

static bool per_listener(const struct metric_def *m) {
  return m->source != SRC_SCALAR && m->source != SRC_APP_PROBES &&
         m->source != SRC_PROCESS_HISTOGRAM;
}

/* Whether |stats|'s process has metric |m|: a webhook has no listeners or application
 * probes, a sidecar no webhook. */
static bool has_metric(const struct stats *stats, const struct metric_def *m) {
  if (m->source == SRC_SCALAR && m->first == SC_APP_METRICS_OK) {
    /* Only a sidecar told where the application's metrics are fetches them. */
    return stats->cfg->app_metrics.port != 0;
  }
  if (stats->cfg->webhook) {
    return m->webhook_only || (!per_listener(m) && m->source != SRC_APP_PROBES);
  }
  return !m->webhook_only;
}

static uint64_t app_probe_count(const struct stats *stats, size_t probe, size_t result) {
  return atomic_load_explicit(&stats->global.app_probe_results[probe * 2 + result],
                              memory_order_relaxed);
}

/* Whether listener |lc| (NULL: the total) has series of |m|. */
static bool has_series(const struct metric_def *m, const struct listener_config *lc) {
  return per_listener(m) && (!m->permissive_only || lc == NULL || lc->permissive);
}

/* Writes one listener's (|lc|; NULL for the total) metrics as a JSON object. */
static void json_listener(struct textbuf *b, const struct listener_config *lc,
                          const struct listener_snapshot *l) {
  bool first = true;
  textbuf_str(b, "{");
  for (size_t i = 0; i < METRIC_COUNT; i++) {
    const struct metric_def *m = &kMetrics[i];
    if (!has_series(m, lc)) {
      continue;
    }
    json_key(b, &first, m->name);
    if (m->source == SRC_HISTOGRAM) {
      json_histogram(b, l, (size_t)m->first);
    } else if (m->source == SRC_ROOTS) {
      bool first_root = true;
      textbuf_str(b, "{");
      for (size_t r = 0; r < l->root_count; r++) {
        json_key(b, &first_root, l->roots[r].root);
        textbuf_printf(b, "%llu", (unsigned long long)l->roots[r].count);
      }
      textbuf_str(b, "}");
    } else if (m->label == NULL) {
      struct scalar_value v = counter_value(m, l->counters[m->first]);
      out_value(b, &v);
    } else {
      bool first_value = true;
      textbuf_str(b, "{");
      for (size_t v = 0; v < m->value_count; v++) {
        json_key(b, &first_value, m->label_value(v));
        struct scalar_value value = counter_value(m, l->counters[(size_t)m->first + v]);
        out_value(b, &value);
      }
      textbuf_str(b, "}");
    }
  }
  textbuf_str(b, "}");
}

char *stats_render_json(const struct stats *stats) {
  struct snapshot snap;
  if (!snapshot_take(&snap, stats)) {
    return NULL;
  }
  struct textbuf b = {0};
  bool first = true;
  textbuf_str(&b, "{\"listeners\":{");
  for (size_t i = 0; i < snap.listeners; i++) {
    json_key(&b, &first, stats->cfg->listeners[i].name);
    json_listener(&b, &stats->cfg->listeners[i], &snap.l[i]);
  }
  textbuf_str(&b, "},\"total\":");
  json_listener(&b, NULL, &snap.l[snap.listeners]);
  textbuf_str(&b, ",\"global\":{");
  first = true;
  for (size_t i = 0; i < METRIC_COUNT; i++) {
    const struct metric_def *m = &kMetrics[i];
    if (per_listener(m) || !has_metric(stats, m)) {
      continue;
    }
    json_key(&b, &first, m->name);
    if (m->source == SRC_PROCESS_HISTOGRAM) {
      json_histogram(&b, &snap.process, (size_t)m->first);
      continue;
    }
    if (m->source == SRC_APP_PROBES) {
      /* {"<container>/<kind>": {"ok": N, "failed": N}, ...} */
      bool first_probe = true;
      textbuf_str(&b, "{");
      for (size_t p = 0; p < stats->cfg->app_probe_count; p++) {
        json_key(&b, &first_probe, stats->cfg->app_probes[p].key);
        textbuf_printf(&b, "{\"ok\":%llu,\"failed\":%llu}",
                       (unsigned long long)app_probe_count(stats, p, 0),
                       (unsigned long long)app_probe_count(stats, p, 1));
      }
      textbuf_str(&b, "}");
      continue;
    }
    if (m->label == NULL) {
      out_value(&b, &snap.scalars[m->first]);
      continue;
    }
    bool first_value = true;
    textbuf_str(&b, "{");
    for (size_t v = 0; v < m->value_count; v++) {
      json_key(&b, &first_value, m->label_value(v));
      out_value(&b, &snap.scalars[(size_t)m->first + v]);
    }
    textbuf_str(&b, "}");
  }
  textbuf_str(&b, "}}\n");
  snapshot_free(&snap);
  return textbuf_finish(&b);
}

/* ---- Prometheus text format 0.0.4 ---- */

/* Label values escape backslash, double quote and line feed; HELP text escapes
 * backslash and line feed only. */
static void prom_escaped(struct textbuf *b, const char *s, bool quote) {
  for (const char *p = s; *p != '\0'; p++) {
    if (*p == '\\') {
      textbuf_str(b, "\\\\");
    } else if (*p == '\n') {
      textbuf_str(b, "\\n");
    } else if (*p == '"' && quote) {
      textbuf_str(b, "\\\"");
    } else {
      textbuf_append(b, p, 1);
    }
  }
}

/* Writes "name{listener="x",label="v"} " (without the value); NULL parts are left out. */
static void prom_series(struct textbuf *b, const char *name, const char *suffix,
                        const char *listener, const char *label, const char *value,
                        const char *le) {
  textbuf_str(b, name);
  textbuf_str(b, suffix);
  const char *keys[3] = {listener != NULL ? "listener" : NULL, label, le != NULL ? "le" : NULL};
  const char *values[3] = {listener, value, le};
  bool open = false;
  for (size_t i = 0; i < 3; i++) {
    if (keys[i] == NULL) {
      continue;
    }
    textbuf_str(b, open ? "," : "{");
    open = true;
    textbuf_str(b, keys[i]);
    textbuf_str(b, "=\"");
    prom_escaped(b, values[i], true);
    textbuf_str(b, "\"");
  }
  textbuf_str(b, open ? "} " : " ");
}

/* mtlsd_app_probes_total{container="...",kind="...",result="..."}, two per probe. */
static void prom_app_probes(struct textbuf *b, const struct metric_def *m,
                            const struct stats *stats) {
  for (size_t p = 0; p < stats->cfg->app_probe_count; p++) {
    const struct app_probe *a = &stats->cfg->app_probes[p];
    for (size_t r = 0; r < 2; r++) {
      textbuf_printf(b, "%s{container=\"", m->name);
      prom_escaped(b, a->container, true);
      textbuf_str(b, "\",kind=\"");
      prom_escaped(b, a->kind, true);
      textbuf_printf(b, "\",%s=\"%s\"} %llu\n", m->label, m->label_value(r),
                     (unsigned long long)app_probe_count(stats, p, r));
    }
  }
}

static void prom_histogram(struct textbuf *b, const struct metric_def *m, const char *listener,
                           const struct listener_snapshot *l) {
  size_t kind = (size_t)m->first;
  for (size_t i = 0; i <= STATS_BUCKETS; i++) {
    char le[32];
    if (i < STATS_BUCKETS) {
      snprintf(le, sizeof(le), "%g", stats_bucket_bound(kind, i));
    } else {
      snprintf(le, sizeof(le), "+Inf");
    }
    prom_series(b, m->name, "_bucket", listener, NULL, NULL, le);
    textbuf_printf(b, "%llu\n", (unsigned long long)l->buckets[kind][i]);
  }
  prom_series(b, m->name, "_sum", listener, NULL, NULL, NULL);
  textbuf_printf(b, "%.6f\n", (double)l->sum_us[kind] / 1e6);
  prom_series(b, m->name, "_count", listener, NULL, NULL, NULL);
  textbuf_printf(b, "%llu\n", (unsigned long long)l->buckets[kind][STATS_BUCKETS]);
}

/* Writes every series of metric |m| for one listener. */
static void prom_listener(struct textbuf *b, const struct metric_def *m, const char *listener,
                          const struct listener_snapshot *l) {
  if (m->source == SRC_HISTOGRAM) {
    prom_histogram(b, m, listener, l);
    return;
  }
  if (m->source == SRC_ROOTS) {
    for (size_t r = 0; r < l->root_count; r++) {
      prom_series(b, m->name, "", listener, m->label, l->roots[r].root, NULL);
      textbuf_printf(b, "%llu\n", (unsigned long long)l->roots[r].count);
    }
    return;
  }
  size_t n = m->label != NULL ? m->value_count : 1;
  for (size_t v = 0; v < n; v++) {
    prom_series(b, m->name, "", listener, m->label, m->label != NULL ? m->label_value(v) : NULL,
                NULL);
    struct scalar_value value = counter_value(m, l->counters[(size_t)m->first + v]);
    out_value(b, &value);
    textbuf_str(b, "\n");
  }
}

char *stats_render_prometheus(const struct stats *stats) {
  struct snapshot snap;
  if (!snapshot_take(&snap, stats)) {
    return NULL;
  }
  struct textbuf b = {0};
  for (size_t i = 0; i < METRIC_COUNT; i++) {
    const struct metric_def *m = &kMetrics[i];
    if (!has_metric(stats, m)) {
      continue;
    }
    textbuf_printf(&b, "# HELP %s ", m->name);
    prom_escaped(&b, m->help, false);
    textbuf_printf(&b, "\n# TYPE %s %s\n", m->name, m->type);
    if (m->source == SRC_APP_PROBES) {
      prom_app_probes(&b, m, stats);
      continue;
    }
    if (m->source == SRC_PROCESS_HISTOGRAM) {
      prom_histogram(&b, m, NULL, &snap.process);
      continue;
    }
    if (m->source != SRC_SCALAR) {
      for (size_t l = 0; l < snap.listeners; l++) {
        if (has_series(m, &stats->cfg->listeners[l])) {
          prom_listener(&b, m, stats->cfg->listeners[l].name, &snap.l[l]);
        }
      }
      continue;
    }
    size_t n = m->label != NULL ? m->value_count : 1;
    for (size_t v = 0; v < n; v++) {
      const struct scalar_value *value = &snap.scalars[(size_t)m->first + v];
      if (!value->present) {
        continue;
      }
      prom_series(&b, m->name, "", NULL, m->label, m->label != NULL ? m->label_value(v) : NULL,
                  NULL);
      out_value(&b, value);
      textbuf_str(&b, "\n");
    }
  }
  snapshot_free(&snap);
  return textbuf_finish(&b);
}
