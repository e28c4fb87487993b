/* stats rendering: both formats from a fabricated set of counters on two workers, so
 * that summing, labels, histograms and roots are checked without a running proxy. */
#include "mtlsd/net/stats.h"

#include <cjson/cJSON.h>

#include "mtlsd/config/app_probes.h"
#include "test.h"

static struct config *two_listeners(void) {
  static const char kJson[] =
      "{\"workers\":2,\"listeners\":["
      "{\"name\":\"in\",\"mode\":\"inbound\",\"listen\":\"0.0.0.0:15006\",\"transparent\":true},"
      "{\"name\":\"out\",\"mode\":\"outbound\",\"listen\":\"127.0.0.1:15001\","
      "\"transparent\":true}]}";
  char err[256];
  struct config *cfg = config_parse("c.json", kJson, sizeof(kJson) - 1, err, sizeof(err));
  if (cfg == NULL) {
    fprintf(stderr, "  config: %s\n", err);
  }
  return cfg;
}

/* Fills worker 0 and 1 of listener "in" and worker 1 of the second listener. */
static void fabricate(struct stats *s) {
  struct listener_stats *w0 = stats_for(s, 0, 0), *w1 = stats_for(s, 1, 0);
  stats_add(w0, LC_CONNECTIONS_TOTAL, 5);
  stats_add(w1, LC_CONNECTIONS_TOTAL, 2);
  stats_add(w0, LC_CONNECTIONS_ACTIVE, 3);
  stats_add(w1, LC_CONNECTIONS_ACTIVE, 1);
  stats_add(w1, LC_CONNECTIONS_ACTIVE, (uint64_t)-1); /* a gauge going down */
  stats_add(w0, LC_HANDSHAKE_FAILURE_FIRST + TLS_FAIL_IDENTITY_DENIED, 4);
  stats_add(w1, LC_REFUSED_FIRST + REFUSED_LOOP, 1);
  stats_add(w0, LC_BYTES_RECEIVED_DOWNSTREAM, 1000);
  stats_observe(w0, HIST_HANDSHAKE, 0.0004);
  stats_observe(w1, HIST_HANDSHAKE, 100.0);
  stats_count_root(w0, "0123456789abcdef");
  stats_count_root(w1, "0123456789abcdef");
  stats_add(stats_for(s, 1, 1), LC_CONNECTIONS_TOTAL, 9);
  atomic_store(&s->global.cert_reloads_ok, 3);
  atomic_store(&s->global.cert_generation, 2);
}

static double number_at(cJSON *root, const char *const *path) {
  cJSON *node = root;
  for (; *path != NULL; path++) {
    node = cJSON_GetObjectItemCaseSensitive(node, *path);
  }
  return node != NULL ? cJSON_GetNumberValue(node) : -1;
}

TEST(json_sums_workers_per_listener_and_in_total) {
  struct config *cfg = two_listeners();
  CHECK(cfg != NULL);
  struct stats *s = stats_new(cfg);
  fabricate(s);
  char *text = stats_render_json(s);
  cJSON *j = cJSON_Parse(text);
  CHECK(j != NULL);
  CHECK(number_at(j, (const char *[]){"listeners", "in", "mtlsd_connections_total", NULL}) == 7);
  CHECK(number_at(j, (const char *[]){"listeners", "in", "mtlsd_connections_active", NULL}) == 3);
  CHECK(number_at(j, (const char *[]){"listeners", "out", "mtlsd_connections_total", NULL}) == 9);
  CHECK(number_at(j, (const char *[]){"total", "mtlsd_connections_total", NULL}) == 16);
  CHECK(number_at(j, (const char *[]){"listeners", "in", "mtlsd_handshake_failures_total",
                                      "identity_denied", NULL}) == 4);
  CHECK(number_at(j, (const char *[]){"listeners", "in", "mtlsd_connections_refused_total", "loop",
                                      NULL}) == 1);
  CHECK(number_at(j, (const char *[]){"global", "mtlsd_cert_reloads_total", "ok", NULL}) == 3);
  CHECK(number_at(j, (const char *[]){"global", "mtlsd_cert_generation", NULL}) == 2);
  cJSON_Delete(j);
  free(text);
  stats_free(s);
  config_free(cfg);
}

TEST(prometheus_series_labels_and_histograms) {
  struct config *cfg = two_listeners();
  CHECK(cfg != NULL);
  struct stats *s = stats_new(cfg);
  fabricate(s);
  char *text = stats_render_prometheus(s);
  CHECK(text != NULL);
  CHECK(strstr(text, "# TYPE mtlsd_connections_total counter\n") != NULL);
  CHECK(strstr(text, "\nmtlsd_connections_total{listener=\"in\"} 7\n") != NULL);
  CHECK(strstr(text, "\nmtlsd_connections_total{listener=\"out\"} 9\n") != NULL);
  CHECK(strstr(text,
               "\nmtlsd_handshake_failures_total{listener=\"in\",reason=\"identity_denied\"}"
               " 4\n") != NULL);
  CHECK(strstr(text, "\nmtlsd_peer_roots_total{listener=\"in\",root=\"0123456789abcdef\"} 2\n") !=
        NULL);
  /* Buckets are cumulative: the fast handshake in every bucket, the slow one in +Inf. */
  CHECK(
      strstr(text, "\nmtlsd_handshake_duration_seconds_bucket{listener=\"in\",le=\"+Inf\"} 2\n") !=
      NULL);
  CHECK(strstr(text, "\nmtlsd_handshake_duration_seconds_count{listener=\"in\"} 2\n") != NULL);
  CHECK(strstr(text, "\nmtlsd_cert_reloads_total{result=\"ok\"} 3\n") != NULL);
  CHECK(strstr(text, "\nprocess_start_time_seconds ") != NULL);
  free(text);
  stats_free(s);
  config_free(cfg);
}

/* mtlsd_app_metrics_scrapes_total exists only where MTLSD_APP_METRICS is set. */
TEST(app_metrics_fetches_only_when_configured) {
  struct config *cfg = two_listeners();
  CHECK(cfg != NULL);
  struct stats *s = stats_new(cfg);
  char *text = stats_render_prometheus(s);
  CHECK(text != NULL && strstr(text, "mtlsd_app_metrics_scrapes_total") == NULL);
  free(text);
  stats_free(s);
  static const char kMetrics[] = "{\"port\": 9090}";
  char err[256];
  CHECK(config_parse_app_metrics(cfg, "MTLSD_APP_METRICS", kMetrics, sizeof(kMetrics) - 1, err,
                                 sizeof(err)));
  s = stats_new(cfg);
  stats_count_app_metrics_fetch(s, true);
  stats_count_app_metrics_fetch(s, true);
  stats_count_app_metrics_fetch(s, false);
  text = stats_render_prometheus(s);
  CHECK(text != NULL);
  if (text != NULL) {
    CHECK(strstr(text, "# TYPE mtlsd_app_metrics_scrapes_total counter\n") != NULL);
    CHECK(strstr(text, "\nmtlsd_app_metrics_scrapes_total{result=\"ok\"} 2\n") != NULL);
    CHECK(strstr(text, "\nmtlsd_app_metrics_scrapes_total{result=\"failed\"} 1\n") != NULL);
  }
  free(text);
  text = stats_render_json(s);
  CHECK(text != NULL &&
        strstr(text, "\"mtlsd_app_metrics_scrapes_total\":{\"ok\":2,\"failed\":1}") != NULL);
  free(text);
  stats_free(s);
  config_free(cfg);
}

TEST_MAIN(TEST_ENTRY(json_sums_workers_per_listener_and_in_total),
          TEST_ENTRY(prometheus_series_labels_and_histograms),
          TEST_ENTRY(app_metrics_fetches_only_when_configured))
