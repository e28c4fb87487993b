/* exposition: which of an application's metrics may follow mtlsd's own on the health
 * port's /metrics, and which texts are refused. */
#include "mtlsd/base/exposition.h"

#include <stdlib.h>

#include "test.h"

/* A piece of mtlsd's own text: a counter, a histogram and the process families a Go
 * application exports too. */
static const char kOwn[] =
    "# HELP mtlsd_connections_total Connections.\n"
    "# TYPE mtlsd_connections_total counter\n"
    "mtlsd_connections_total{listener=\"in\"} 3\n"
    "# HELP mtlsd_handshake_duration_seconds Handshakes.\n"
    "# TYPE mtlsd_handshake_duration_seconds histogram\n"
    "mtlsd_handshake_duration_seconds_bucket{listener=\"in\",le=\"+Inf\"} 1\n"
    "mtlsd_handshake_duration_seconds_sum{listener=\"in\"} 0.1\n"
    "mtlsd_handshake_duration_seconds_count{listener=\"in\"} 1\n"
    "# HELP process_open_fds Number of open file descriptors.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds 22\n"
    "# HELP process_cpu_seconds_total CPU.\n"
    "# TYPE process_cpu_seconds_total counter\n"
    "process_cpu_seconds_total 0.5\n";

/* Filters |app| against kOwn; the kept text, or NULL with the reason in |out->why|. */
static bool filter(const char *app, struct exposition_filter *out) {
  return exposition_filter(kOwn, sizeof(kOwn) - 1, app, strlen(app), out);
}

/* The application's own families pass whole, comments, blank lines, labels with escapes,
 * special values and timestamps included; a last line without its newline gets one. */
TEST(keeps_valid_families) {
  static const char kApp[] =
      "# A comment the application wrote.\n"
      "# HELP http_requests_total Requests, \\\\ and \\n escaped.\n"
      "# TYPE http_requests_total counter\n"
      "http_requests_total{code=\"200\",path=\"/a \\\"b\\\"\\\\\\n\"} 1027 1395066363000\n"
      "http_requests_total{code=\"500\",} 3\n"
      "\n"
      "# TYPE rpc_duration_seconds summary\n"
      "rpc_duration_seconds{quantile=\"0.5\"} 4773\n"
      "rpc_duration_seconds_sum 1.7560473e+07\n"
      "rpc_duration_seconds_count 2693\n"
      "# TYPE latency histogram\n"
      "latency_bucket{le=\"0.1\"} 1\n"
      "latency_bucket{le=\"+Inf\"} 2\n"
      "latency_sum 0.3\n"
      "latency_count 2\n"
      "  untyped_metric\t-Inf\n"
      "temperature NaN -1\n"
      "go_goroutines 12";
  struct exposition_filter out;
  CHECK(filter(kApp, &out));
  CHECK_STREQ(out.why, "");
  CHECK_INTEQ(out.dropped, 0);
  CHECK_INTEQ(out.len, sizeof(kApp));
  if (out.text != NULL) {
    CHECK(memcmp(out.text, kApp, sizeof(kApp) - 1) == 0);
    CHECK_STREQ(out.text + sizeof(kApp) - 1, "\n");
  }
  free(out.text);

  CHECK(filter("", &out));
  CHECK_STREQ(out.text, "");
  CHECK_INTEQ(out.len, 0);
  free(out.text);
}

/* A family of a name mtlsd exports, or whose series clash with mtlsd's, or in mtlsd's own
 * namespace, is left out whole, HELP, TYPE, samples and the comments among them; the
 * families around it stay. */
TEST(drops_clashing_families) {
  static const char kApp[] =
      "# HELP go_goroutines Goroutines.\n"
      "# TYPE go_goroutines gauge\n"
      "go_goroutines 12\n"
      "# HELP process_open_fds Number of open file descriptors.\n"
      "# TYPE process_open_fds gauge\n"
      "# a comment inside the family\n"
      "process_open_fds 9\n"
      "# HELP process_cpu_seconds_total Total user and system CPU time.\n"
      "# TYPE process_cpu_seconds_total counter\n"
      "process_cpu_seconds_total 0.02\n"
      "# TYPE app_ok gauge\n"
      "app_ok 1\n"
      "mtlsd_handshake_duration_seconds_count 5\n"
      "# TYPE mtlsd_app_probes_total counter\n"
      "mtlsd_app_probes_total{container=\"x\",kind=\"livez\",result=\"ok\"} 1000\n"
      "# TYPE mtlsd_made_up gauge\n"
      "mtlsd_made_up 1\n"
      "# TYPE process gauge\n"
      "process 1\n";
  struct exposition_filter out;
  CHECK(filter(kApp, &out));
  CHECK_STREQ(out.text,
              "# HELP go_goroutines Goroutines.\n"
              "# TYPE go_goroutines gauge\n"
              "go_goroutines 12\n"
              "# TYPE app_ok gauge\n"
              "app_ok 1\n"
              "# TYPE process gauge\n"
              "process 1\n");
  CHECK_INTEQ(out.dropped, 5);
  CHECK_STREQ(out.first_dropped, "process_open_fds");
  free(out.text);

  /* A histogram of the application whose series would be mtlsd's: its family name is
   * its own, one of its series names is not. */
  static const char kDerived[] =
      "# TYPE process_cpu_seconds histogram\n"
      "process_cpu_seconds_bucket{le=\"+Inf\"} 1\n"
      "process_cpu_seconds_sum 1\n"
      "process_cpu_seconds_count 1\n"
      "# TYPE process_open summary\n"
      "process_open_sum 1\n"
      "process_open_fds 3\n"
      "after 1\n";
  CHECK(filter(kDerived, &out));
  CHECK_STREQ(out.text,
              "# TYPE process_cpu_seconds histogram\n"
              "process_cpu_seconds_bucket{le=\"+Inf\"} 1\n"
              "process_cpu_seconds_sum 1\n"
              "process_cpu_seconds_count 1\n"
              "# TYPE process_open summary\n"
              "process_open_sum 1\n"
              "after 1\n");
  CHECK_INTEQ(out.dropped, 1);
  CHECK_STREQ(out.first_dropped, "process_open_fds");
  free(out.text);
}

/* What would make a scraper refuse the whole answer is refused, naming the line. */
TEST(refuses_invalid_text) {
  static const struct {
    const char *app;
    const char *why;
  } kBad[] = {
      {"a 1\nb{x=\"1\"} one\n", "not text format 0.0.4: \"b{x=\"1\"} one\""},
      {"1abc 2\n", "not text format 0.0.4: \"1abc 2\""},
      {"a{1x=\"v\"} 1\n", "not text format 0.0.4: \"a{1x=\"v\"} 1\""},
      {"a{x=v} 1\n", "not text format 0.0.4: \"a{x=v} 1\""},
      {"a{x=\"v} 1\n", "not text format 0.0.4: \"a{x=\"v} 1\""},
      {"a{x=\"\\t\"} 1\n", "not text format 0.0.4: \"a{x=\"\\t\"} 1\""},
      {"a 1 2 3\n", "not text format 0.0.4: \"a 1 2 3\""},
      {"a 1 1.5\n", "not text format 0.0.4: \"a 1 1.5\""},
      {"a\n", "not text format 0.0.4: \"a\""},
      {"a 1\r\n", "not text format 0.0.4: \"a 1\r\""},
      {"# TYPE a gaugee\na 1\n", "not text format 0.0.4: \"# TYPE a gaugee\""},
      {"# TYPE a\n", "not text format 0.0.4: \"# TYPE a\""},
      {"# HELP a bad \\escape\n", "not text format 0.0.4: \"# HELP a bad \\escape\""},
      {"<html><body>Not found</body></html>\n",
       "not text format 0.0.4: \"<html><body>Not found</body></html>\""},
      {"{\"metrics\": []}\n", "not text format 0.0.4: \"{\"metrics\": []}\""},
      {"a{x=\"\xff\"} 1\n", "not text format 0.0.4: not UTF-8, or a NUL byte"},
      {"a{x=\"\xed\xa0\x80\"} 1\n", "not text format 0.0.4: not UTF-8, or a NUL byte"},
      {"a{x=\"\xc0\xaf\"} 1\n", "not text format 0.0.4: not UTF-8, or a NUL byte"},
  };
  for (size_t i = 0; i < sizeof(kBad) / sizeof(kBad[0]); i++) {
    struct exposition_filter out;
    CHECK(!filter(kBad[i].app, &out));
    CHECK(out.text == NULL);
    CHECK_STREQ(out.why, kBad[i].why);
  }
  /* A NUL inside the text (strlen would stop at it). */
  struct exposition_filter out;
  static const char kNul[] = "a 1\n\0b 2\n";
  CHECK(!exposition_filter(kOwn, sizeof(kOwn) - 1, kNul, sizeof(kNul) - 1, &out));
  CHECK_STREQ(out.why, "not text format 0.0.4: not UTF-8, or a NUL byte");
  /* Valid UTF-8 in a label value and a HELP text passes. */
  CHECK(filter("# HELP a caf\xc3\xa9 \xf0\x9f\x98\x80\na{x=\"\xe2\x82\xac\"} 1\n", &out));
  free(out.text);
}

TEST_MAIN(TEST_ENTRY(keeps_valid_families), TEST_ENTRY(drops_clashing_families),
          TEST_ENTRY(refuses_invalid_text))
