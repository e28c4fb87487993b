/* config: the JSON configuration file, loaded strictly (see mtlsd/config.h and
 * docs/configuration.md).
 *
 * The file is parsed by cJSON and then walked by hand, object by object: each object's
 * keys are first checked against the keys it may hold (so a typo or a duplicate is
 * reported before any value is looked at), then each value is checked for its type and
 * range. The walk keeps the JSON path of the value it is on ("listeners[1].listen"), so
 * every message can say where the problem is. The first problem ends the load; there is
 * no partial configuration. */
#include "mtlsd/config.h"
#include "mtlsd/file.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "mtlsd/identity.h"
#include "mtlsd/inject.h"
#include "mtlsd/iptables.h"
#include "mtlsd/json_syntax.h"

enum {
  CONFIG_FILE_MAX = 16 << 20, /* Far beyond any real configuration. */
  JSON_PATH_MAX = 256,
  PROBLEM_MAX = 768,
  QUOTED_MAX = 160,  /* A value quoted in a message is cut beyond this many bytes. */
  NAME_LEN_MAX = 64, /* Listener names end up in metric labels and log lines. */
  KEY_SUGGEST_MAX = 64,
  WORKERS_MAX = 256,
  MAX_CONNECTIONS_MAX = 1000000,
  POLL_INTERVAL_MIN_MS = 100,
};

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_ADMIN_LISTEN "127.0.0.1:15000"

static const duration_ms kMsPerSecond = 1000;
static const duration_ms kMsPerMinute = (duration_ms)60 * 1000;
static const duration_ms kMsPerHour = (duration_ms)60 * 60 * 1000;
static const duration_ms kMaxDuration = (duration_ms)8760 * 60 * 60 * 1000;

/* The TLS 1.2 suites the configuration accepts: ECDHE key exchange with an AEAD cipher,
 * in the order BoringSSL prefers them. It is also the default. */
static const char *const kCipherSuites[] = {
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
};

/* TLS 1.3 suites are always AEAD and BoringSSL does not let them be configured; naming
 * one deserves a clearer message than "unsupported". */
static const char *const kTls13Suites[] = {
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
};

static const char *const kGroups[] = {"X25519", "P-256", "P-384"};

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The keys each object may hold, in the order config_to_json writes them. */
static const char *const kTopKeys[] = {"trust_domain", "admin",     "health", "certs",
                                       "tls",          "listeners", "limits", "workers",
                                       "access_log",   "sandbox",   NULL};
static const char *const kAdminKeys[] = {"listen", "lifecycle", NULL};
static const char *const kHealthKeys[] = {"listen", NULL};
static const char *const kCertsKeys[] = {"dir",           "cert_file",      "key_file", "ca_file",
                                         "poll_interval", "expiry_warning", NULL};
static const char *const kTlsKeys[] = {"min_version", "max_version",        "cipher_suites",
                                       "groups",      "session_resumption", "close_on_peer_expiry",
                                       NULL};
static const char *const kListenerKeys[] = {"name",
                                            "mode",
                                            "listen",
                                            "transparent",
                                            "max_connections",
                                            "upstream",
                                            "server_identity",
                                            "forward",
                                            "forward_host",
                                            "allow",
                                            "proxy_protocol",
                                            "permissive",
                                            NULL};
static const char *const kLimitsKeys[] = {"max_connections",   "max_handshaking", "connect_timeout",
                                          "handshake_timeout", "idle_timeout",    "drain_timeout",
                                          "detect_timeout",    "hello_timeout",   NULL};

/* Where a key misplaced at the wrong level belongs, for "unknown key" hints. */
static const struct {
  const char *where;
  const char *const *keys;
} kSections[] = {
    {"at the top level", kTopKeys},   {"in \"admin\"", kAdminKeys}, {"in \"health\"", kHealthKeys},
    {"in \"certs\"", kCertsKeys},     {"in \"tls\"", kTlsKeys},     {"in \"limits\"", kLimitsKeys},
    {"in a listener", kListenerKeys},
};

/* --- allocation ------------------------------------------------------------------- */

/* Allocation failure is an error path like any other. The unit test sets
 * |config_alloc_budget| to fail the Nth allocation (curl's "torture" tests); -1, the
 * only value outside tests, never fails. */
static long config_alloc_budget = -1;

static bool config_alloc_ok(void) {
  if (config_alloc_budget == 0) {
    return false;
  }
  if (config_alloc_budget > 0) {
    config_alloc_budget--;
  }
  return true;
}

static void *config_calloc(size_t n, size_t size) {
  return config_alloc_ok() ? calloc(n, size) : NULL;
}

static char *config_strdup(const char *s) {
  return config_alloc_ok() ? strdup(s) : NULL;
}

static void free_string_list(char **list, size_t count) {
  if (list == NULL) {
    return;
  }
  for (size_t i = 0; i < count; i++) {
    free(list[i]);
  }
  free(list);
}

static void free_app_probes(struct app_probe *probes, size_t count) {
  for (size_t i = 0; i < count; i++) {
    struct app_probe *a = &probes[i];
    free(a->key);
    free(a->container);
    free(a->kind);
    free(a->host);
    free(a->path);
    for (size_t h = 0; h < a->header_count; h++) {
      free(a->headers[h].name);
      free(a->headers[h].value);
    }
    free(a->headers);
    free(a->service);
  }
  free(probes);
}

void config_free(struct config *cfg) {
  if (cfg == NULL) {
    return;
  }
  free(cfg->path);
  free(cfg->trust_domain);
  free(cfg->certs.dir);
  free(cfg->certs.cert_file);
  free(cfg->certs.key_file);
  free(cfg->certs.ca_file);
  free_string_list(cfg->tls.cipher_suites, cfg->tls.cipher_suite_count);
  free_string_list(cfg->tls.groups, cfg->tls.group_count);
  for (size_t i = 0; i < cfg->listener_count; i++) {
    struct listener_config *l = &cfg->listeners[i];
    free(l->name);
    free(l->forward_host);
    free_string_list(l->allow, l->allow_count);
    free(l->server_identity);
  }
  free(cfg->listeners);
  free_app_probes(cfg->app_probes, cfg->app_probe_count);
  free(cfg->app_metrics.path);
  free(cfg->access_log_path);
  free(cfg);
}

const char *const *config_default_cipher_suites(size_t *out_count) {
  *out_count = ARRAY_LEN(kCipherSuites);
  return kCipherSuites;
}

/* --- durations -------------------------------------------------------------------- */

static bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

/* parse_duration is config_parse_duration with a reason: NULL on success, else a static
 * message. A fraction is accepted when it comes to a whole number of milliseconds
 * ("1.5s", "0.25s"), as Go's and Envoy's operators are used to writing them. */
static const char *parse_duration(duration_ms *out, const char *text) {
  static const char kInvalid[] =
      "invalid duration (expected a number and a unit: ms, s, m or h, e.g. \"250ms\", "
      "\"1.5s\", \"1h\")";
  const char *p = text;
  if (!is_digit(*p)) {
    return kInvalid;
  }
  uint64_t whole = 0;
  bool overflow = false;
  for (; is_digit(*p); p++) {
    unsigned digit = (unsigned)(*p - '0');
    if (whole > (UINT64_MAX - digit) / 10) {
      overflow = true;
    } else {
      whole = whole * 10 + digit;
    }
  }
  /* Nine fraction digits are more than any unit needs: an hour has 3.6e6 ms, so a
   * fraction with six or more significant digits can never be a whole number of ms. */
  uint64_t frac = 0;
  uint64_t frac_div = 1;
  bool inexact = false;
  if (*p == '.') {
    p++;
    if (!is_digit(*p)) {
      return kInvalid;
    }
    for (; is_digit(*p); p++) {
      if (frac_div < 1000000000) {
        frac = frac * 10 + (uint64_t)(*p - '0');
        frac_div *= 10;
      } else if (*p != '0') {
        inexact = true;
      }
    }
  }
  duration_ms unit;
  if (strcmp(p, "ms") == 0) {
    unit = 1;
  } else if (strcmp(p, "s") == 0) {
    unit = kMsPerSecond;
  } else if (strcmp(p, "m") == 0) {
    unit = kMsPerMinute;
  } else if (strcmp(p, "h") == 0) {
    unit = kMsPerHour;
  } else {
    return kInvalid;
  }
  if (inexact || (frac * unit) % frac_div != 0) {
    return "not a whole number of milliseconds";
  }
  uint64_t frac_ms = frac * unit / frac_div;
  if (overflow || whole > (UINT64_MAX - frac_ms) / unit) {
    return "duration too large";
  }
  *out = whole * unit + frac_ms;
  return NULL;
}

bool config_parse_duration(duration_ms *out, const char *text) {
  return text != NULL && parse_duration(out, text) == NULL;
}

/* The largest unit that divides |ms| exactly, so that config_to_json's output reads as a
 * person would write it and parses back the same. */
void config_format_duration(char *out, size_t out_len, duration_ms ms) {
  if (ms != 0 && ms % kMsPerHour == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "h", ms / kMsPerHour);
  } else if (ms != 0 && ms % kMsPerMinute == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "m", ms / kMsPerMinute);
  } else if (ms != 0 && ms % kMsPerSecond == 0) {
    (void)snprintf(out, out_len, "%" PRIu64 "s", ms / kMsPerSecond);
  } else {
    (void)snprintf(out, out_len, "%" PRIu64 "ms", ms);
  }
}

/* --- the parser and its messages -------------------------------------------------- */

struct parser {
  const char *file;
  char *err;
  size_t err_len;
  char path[JSON_PATH_MAX]; /* The JSON path of the value being checked; "" at the top. */
  size_t path_len;
};

static bool fail(struct parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* fail writes "FILE: JSON.PATH: problem" and returns false, so that callers can
 * "return fail(...)". */
static bool fail(struct parser *p, const char *fmt, ...) {
  char problem[PROBLEM_MAX];
  va_list ap;
  va_start(ap, fmt);
  (void)vsnprintf(problem, sizeof(problem), fmt, ap);
  va_end(ap);
  if (p->err != NULL && p->err_len > 0) {
    (void)snprintf(p->err, p->err_len, "%s: %s: %s", p->file,
                   p->path_len > 0 ? p->path : "top level", problem);
  }
  return false;
}

static bool fail_oom(struct parser *p) {
  return fail(p, "out of memory");
}

/* quote writes |s| as a JSON-like quoted string for a message: quotes, backslashes and
 * control bytes are escaped so that a hostile value cannot forge a log line, and a long
 * value is cut with "...". */
static const char *quote(char *out, size_t out_len, const char *s) {
  static const char hex[] = "0123456789abcdef";
  size_t n = 0;
  out[n++] = '"';
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (n + 8 >= out_len || n > QUOTED_MAX) {
      memcpy(out + n, "...", 3);
      n += 3;
      break;
    }
    if (*c == '"' || *c == '\\') {
      out[n++] = '\\';
      out[n++] = (char)*c;
    } else if (*c < 0x20 || *c == 0x7f) {
      out[n++] = '\\';
      out[n++] = 'x';
      out[n++] = hex[*c >> 4];
      out[n++] = hex[*c & 0xf];
    } else {
      out[n++] = (char)*c;
    }
  }
  out[n++] = '"';
  out[n] = '\0';
  return out;
}

enum { QUOTE_BUF = QUOTED_MAX + 16 };

static bool fail_value(struct parser *p, const char *value, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* fail_value is fail with the offending value quoted first: "\"x\": problem". */
static bool fail_value(struct parser *p, const char *value, const char *fmt, ...) {
  char problem[PROBLEM_MAX];
  char quoted[QUOTE_BUF];
  va_list ap;
  va_start(ap, fmt);
  (void)vsnprintf(problem, sizeof(problem), fmt, ap);
  va_end(ap);
  return fail(p, "%s: %s", quote(quoted, sizeof(quoted), value), problem);
}

static void path_append(struct parser *p, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void path_append(struct parser *p, const char *fmt, ...) {
  size_t room = sizeof(p->path) - p->path_len;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(p->path + p->path_len, room, fmt, ap);
  va_end(ap);
  if (n > 0) {
    p->path_len += (size_t)n < room ? (size_t)n : room - 1;
  }
}

static bool is_plain_key(const char *key) {
  size_t len = strlen(key);
  return len > 0 && len <= KEY_SUGGEST_MAX &&
         strspn(key, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == len;
}

/* path_push_key appends ".key" (or ["odd key"]) to the path and returns the length to
 * hand back to path_pop. */
static size_t path_push_key(struct parser *p, const char *key) {
  size_t saved = p->path_len;
  if (is_plain_key(key)) {
    path_append(p, "%s%s", p->path_len > 0 ? "." : "", key);
  } else {
    char quoted[QUOTE_BUF];
    path_append(p, "[%s]", quote(quoted, sizeof(quoted), key));
  }
  return saved;
}

static size_t path_push_index(struct parser *p, size_t index) {
  size_t saved = p->path_len;
  path_append(p, "[%zu]", index);
  return saved;
}

static void path_pop(struct parser *p, size_t saved) {
  p->path_len = saved;
  p->path[saved] = '\0';
}

static const char *json_type_name(const cJSON *v) {
  if (cJSON_IsString(v)) {
    return "string";
  }
  if (cJSON_IsNumber(v)) {
    return "number";
  }
  if (cJSON_IsBool(v)) {
    return "boolean";
  }
  if (cJSON_IsNull(v)) {
    return "null";
  }
  if (cJSON_IsArray(v)) {
    return "array";
  }
  if (cJSON_IsObject(v)) {
    return "object";
  }
  return "invalid value";
}

/* edit_distance is the optimal string alignment distance (Levenshtein plus adjacent
 * transpositions), the usual measure of a typo. Both strings are short. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a);
  size_t lb = strlen(b);
  if (la > KEY_SUGGEST_MAX || lb > KEY_SUGGEST_MAX) {
    return SIZE_MAX;
  }
  size_t rows[3][KEY_SUGGEST_MAX + 1];
  size_t *prev2 = rows[0];
  size_t *prev = rows[1];
  size_t *cur = rows[2];
  for (size_t j = 0; j <= lb; j++) {
    prev[j] = j;
  }
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      size_t best = prev[j] + 1;
      if (cur[j - 1] + 1 < best) {
        best = cur[j - 1] + 1;
      }
      if (prev[j - 1] + cost < best) {
        best = prev[j - 1] + cost;
      }
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          prev2[j - 2] + 1 < best) {
        best = prev2[j - 2] + 1;
      }
      cur[j] = best;
    }
    size_t *tmp = prev2;
    prev2 = prev;
    prev = cur;
    cur = tmp;
  }
  return prev[lb];
}

static bool key_in(const char *key, const char *const *keys) {
  for (size_t i = 0; keys[i] != NULL; i++) {
    if (strcmp(key, keys[i]) == 0) {
      return true;
    }
  }
  return false;
}

static bool fail_unknown_key(struct parser *p, const char *key, const char *const *known) {
  const char *best = NULL;
  size_t best_distance = SIZE_MAX;
  for (size_t i = 0; known[i] != NULL; i++) {
    size_t d = edit_distance(key, known[i]);
    if (d < best_distance) {
      best_distance = d;
      best = known[i];
    }
  }
  /* Two edits is a typo; more on a short key is a different word. */
  if (best != NULL && best_distance <= 2 && best_distance * 3 <= strlen(best)) {
    return fail(p, "unknown key (did you mean \"%s\"?)", best);
  }
  for (size_t i = 0; i < ARRAY_LEN(kSections); i++) {
    if (kSections[i].keys != known && key_in(key, kSections[i].keys)) {
      return fail(p, "unknown key (it belongs %s)", kSections[i].where);
    }
  }
  return fail(p, "unknown key");
}

/* check_keys refuses, in document order, the first key of |obj| that is a duplicate of
 * an earlier one (cJSON keeps both, and which one wins would be an accident) or is not in
 * |known|. Since |known| is short, a long object fails within its first few keys, so the
 * quadratic duplicate search stays cheap. */
static bool check_keys(struct parser *p, const cJSON *obj, const char *const *known) {
  for (const cJSON *c = obj->child; c != NULL; c = c->next) {
    size_t saved = path_push_key(p, c->string);
    for (const cJSON *d = obj->child; d != c; d = d->next) {
      if (strcmp(d->string, c->string) == 0) {
        return fail(p, "duplicate key");
      }
    }
    if (!key_in(c->string, known)) {
      return fail_unknown_key(p, c->string, known);
    }
    path_pop(p, saved);
  }
  return true;
}

static bool expect_object(struct parser *p, const cJSON *v) {
  if (!cJSON_IsObject(v)) {
    return fail(p, "expected an object, got %s", json_type_name(v));
  }
  return true;
}

/* check_text refuses what no configured string may hold: nothing at all, and control
 * characters, which would end up raw in log lines and file names. */
/* check_chars refuses control characters in |s|. */
static bool check_chars(struct parser *p, const char *s) {
  for (const unsigned char *c = (const unsigned char *)s; *c != '\0'; c++) {
    if (*c < 0x20 || *c == 0x7f) {
      return fail_value(p, s, "control characters are not allowed");
    }
  }
  return true;
}

static bool check_text(struct parser *p, const char *s) {
  return *s != '\0' ? check_chars(p, s) : fail(p, "must not be empty");
}

static bool expect_text(struct parser *p, const cJSON *v) {
  if (!cJSON_IsString(v)) {
    return fail(p, "expected a string, got %s", json_type_name(v));
  }
  return check_text(p, v->valuestring);
}

/* replace_string frees |*out| and replaces it with a copy of |s|. */
static bool replace_string(struct parser *p, char **out, const char *s) {
  char *copy = config_strdup(s);
  if (copy == NULL) {
    return fail_oom(p);
  }
  free(*out);
  *out = copy;
  return true;
}

/* --- typed getters: each leaves |*out| alone when |key| is absent ----------------- */

static bool get_string(struct parser *p, const cJSON *obj, const char *key, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!expect_text(p, v) || !replace_string(p, out, v->valuestring)) {
    return false;
  }
  path_pop(p, saved);
  return true;
}

/* get_string_or_empty is get_string for values the Kubernetes API writes as "" when
 * unset (a gRPC probe's service, a header's value): "" and null read as "". */
static bool get_string_or_empty(struct parser *p, const cJSON *obj, const char *key, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  const char *s = v == NULL || cJSON_IsNull(v) ? "" : NULL;
  size_t saved = path_push_key(p, key);
  if (s == NULL) {
    if (!cJSON_IsString(v)) {
      return fail(p, "expected a string, got %s", json_type_name(v));
    }
    if (!check_chars(p, v->valuestring)) {
      return false;
    }
    s = v->valuestring;
  }
  path_pop(p, saved);
  return replace_string(p, out, s);
}

static bool get_bool(struct parser *p, const cJSON *obj, const char *key, bool *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!cJSON_IsBool(v)) {
    return fail(p, "expected a boolean, got %s", json_type_name(v));
  }
  *out = cJSON_IsTrue(v);
  path_pop(p, saved);
  return true;
}

/* format_number writes a JSON number for a message: integers as written, the rest in the
 * shortest usual form. */
static const char *format_number(char *out, size_t out_len, double d) {
  if (d == floor(d) && fabs(d) < 1e15) {
    (void)snprintf(out, out_len, "%.0f", d);
  } else {
    (void)snprintf(out, out_len, "%g", d);
  }
  return out;
}

static bool get_uint(struct parser *p, const cJSON *obj, const char *key, uint32_t min,
                     uint32_t max, uint32_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!cJSON_IsNumber(v)) {
    return fail(p, "expected an integer, got %s", json_type_name(v));
  }
  char num[64];
  double d = v->valuedouble;
  if (!isfinite(d) || d != floor(d)) {
    return fail(p, "%s: expected an integer", format_number(num, sizeof(num), d));
  }
  if (d < (double)min || d > (double)max) {
    return fail(p, "%s: out of range (%" PRIu32 " to %" PRIu32 ")",
                format_number(num, sizeof(num), d), min, max);
  }
  *out = (uint32_t)d;
  path_pop(p, saved);
  return true;
}

static bool get_duration(struct parser *p, const cJSON *obj, const char *key, duration_ms min,
                         duration_ms *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!cJSON_IsString(v)) {
    return fail(p, "expected a string with a unit such as \"5s\", got %s", json_type_name(v));
  }
  if (!check_text(p, v->valuestring)) {
    return false;
  }
  duration_ms ms = 0;
  const char *problem = parse_duration(&ms, v->valuestring);
  if (problem != NULL) {
    return fail_value(p, v->valuestring, "%s", problem);
  }
  if (ms == 0) {
    return fail_value(p, v->valuestring, "must be greater than 0");
  }
  if (ms < min) {
    char text[32];
    config_format_duration(text, sizeof(text), min);
    return fail_value(p, v->valuestring, "must be at least %s", text);
  }
  /* Deadlines are computed as now + duration in milliseconds: a bound keeps that sum far
   * from overflowing, and no timeout of a sidecar needs more than a year. */
  if (ms > kMaxDuration) {
    return fail_value(p, v->valuestring, "must be at most 8760h");
  }
  *out = ms;
  path_pop(p, saved);
  return true;
}

/* get_hostport reads a "HOST:PORT" value; |need_ip| is for addresses that are bound,
 * which cannot wait for a name to resolve. */
static bool get_hostport(struct parser *p, const cJSON *obj, const char *key, bool need_ip,
                         struct hostport *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!expect_text(p, v)) {
    return false;
  }
  const char *problem = NULL;
  if (!netaddr_parse_hostport(out, &problem, v->valuestring)) {
    return fail_value(p, v->valuestring, "%s", problem);
  }
  if (need_ip && !out->host_is_ip) {
    return fail_value(p, v->valuestring,
                      "host must be an IP address (a listening address is "
                      "bound, not resolved)");
  }
  path_pop(p, saved);
  return true;
}

/* A string list element validator: |s| is the element, the path points at it. */
typedef bool (*element_check)(struct parser *p, const char *s);

/* get_string_list reads an array of strings, each checked by |check|. An empty array is
 * refused with |empty_hint|: every list here has a default that omitting the key keeps,
 * while an empty one would silently mean "nothing at all". */
static bool get_string_list(struct parser *p, const cJSON *obj, const char *key,
                            element_check check, bool unique, const char *empty_hint, char ***out,
                            size_t *out_count) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!cJSON_IsArray(v)) {
    return fail(p, "expected an array of strings, got %s", json_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    return fail(p, "must not be empty (%s)", empty_hint);
  }
  char **list = config_calloc(count, sizeof(*list));
  if (list == NULL) {
    return fail_oom(p);
  }
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = path_push_index(p, i);
    if (!expect_text(p, e) || !check(p, e->valuestring)) {
      goto err;
    }
    for (size_t j = 0; unique && j < i; j++) {
      if (strcmp(list[j], e->valuestring) == 0) {
        fail_value(p, e->valuestring, "listed twice");
        goto err;
      }
    }
    list[i] = config_strdup(e->valuestring);
    if (list[i] == NULL) {
      fail_oom(p);
      goto err;
    }
    path_pop(p, saved_elem);
  }
  free_string_list(*out, *out_count);
  *out = list;
  *out_count = count;
  path_pop(p, saved);
  return true;

err:
  free_string_list(list, count);
  return false;
}

/* get_choice reads a string that must be one of |names| (NULL-terminated) and stores its
 * index. |what| and |expected| word the message. */
static bool get_choice(struct parser *p, const cJSON *obj, const char *key,
                       const char *const *names, const char *what, const char *expected, int *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!expect_text(p, v)) {
    return false;
  }
  for (int i = 0; names[i] != NULL; i++) {
    if (strcmp(v->valuestring, names[i]) == 0) {
      *out = i;
      path_pop(p, saved);
      return true;
    }
  }
  return fail_value(p, v->valuestring, "%s (expected %s)", what, expected);
}

/* --- element checks ----------------------------------------------------------------- */

static bool check_cipher_suite(struct parser *p, const char *s) {
  for (size_t i = 0; i < ARRAY_LEN(kCipherSuites); i++) {
    if (strcmp(s, kCipherSuites[i]) == 0) {
      return true;
    }
  }
  for (size_t i = 0; i < ARRAY_LEN(kTls13Suites); i++) {
    if (strcmp(s, kTls13Suites[i]) == 0) {
      return fail_value(p, s,
                        "TLS 1.3 suites cannot be configured (all of them are AEAD and "
                        "always enabled); this list is for TLS 1.2");
    }
  }
  char allowed[512];
  size_t n = 0;
  allowed[0] = '\0';
  for (size_t i = 0; i < ARRAY_LEN(kCipherSuites); i++) {
    int w = snprintf(allowed + n, sizeof(allowed) - n, "%s%s", i > 0 ? ", " : "", kCipherSuites[i]);
    if (w > 0 && (size_t)w < sizeof(allowed) - n) {
      n += (size_t)w;
    }
  }
  return fail_value(p, s, "unsupported cipher suite: only ECDHE AEAD suites are allowed (%s)",
                    allowed);
}

static bool check_group(struct parser *p, const char *s) {
  for (size_t i = 0; i < ARRAY_LEN(kGroups); i++) {
    if (strcmp(s, kGroups[i]) == 0) {
      return true;
    }
  }
  return fail_value(p, s, "unsupported group (expected \"X25519\", \"P-256\" or \"P-384\")");
}

static bool check_allow_pattern(struct parser *p, const char *s) {
  const char *problem = "invalid pattern";
  if (!identity_pattern_valid(s, &problem)) {
    return fail_value(p, s, "%s", problem);
  }
  return true;
}

static bool check_listener_name(struct parser *p, const char *s) {
  size_t len = strlen(s);
  if (len > NAME_LEN_MAX ||
      strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len) {
    return fail_value(p, s, "invalid name (at most %d letters, digits, '.', '-' or '_')",
                      NAME_LEN_MAX);
  }
  return true;
}

static bool check_server_identity(struct parser *p, const char *s) {
  /* Anything that looks like a URI is judged as a SPIFFE ID, so that "SPIFFE://x" gets
   * the SPIFFE reason rather than "not a DNS name". */
  if (strncasecmp(s, "spiffe:", 7) == 0 || strstr(s, "://") != NULL) {
    const char *problem = "invalid SPIFFE ID";
    if (!identity_spiffe_valid(s, &problem)) {
      return fail_value(p, s, "%s", problem);
    }
    return true;
  }
  /* Both checks: SANs carry neither a trailing dot nor an all-numeric last label, so a
   * name with either could never match. */
  if (!netaddr_valid_dns_name(s) || !identity_dns_name_valid(s, false, NULL)) {
    return fail_value(p, s, "not a SPIFFE ID or DNS name");
  }
  return true;
}

static bool check_forward_host(struct parser *p, const char *s, bool *is_ip) {
  struct hostport hp;
  const char *ignored = NULL;
  char probe[NETADDR_HOST_MAX + 8];
  /* An IPv6 literal needs brackets to be read with a port; a bare host gets neither. */
  if (strchr(s, ':') != NULL && strchr(s, '[') == NULL) {
    (void)snprintf(probe, sizeof(probe), "[%s]:1", s);
  } else {
    (void)snprintf(probe, sizeof(probe), "%s:1", s);
  }
  if (strlen(s) >= NETADDR_HOST_MAX || strchr(s, '[') != NULL ||
      !netaddr_parse_hostport(&hp, &ignored, probe)) {
    return fail_value(p, s, "invalid host (expected an IP address or a DNS name, without port)");
  }
  *is_ip = hp.host_is_ip;
  return true;
}

/* --- objects ------------------------------------------------------------------------ */

static bool parse_admin(struct parser *p, const cJSON *v, struct config *cfg) {
  return expect_object(p, v) && check_keys(p, v, kAdminKeys) &&
         get_hostport(p, v, "listen", true, &cfg->admin.listen) &&
         get_bool(p, v, "lifecycle", &cfg->admin.lifecycle);
}

static bool has_key(const cJSON *obj, const char *key) {
  return cJSON_GetObjectItemCaseSensitive(obj, key) != NULL;
}

static bool same_address(const struct hostport *a, const struct hostport *b);

static bool parse_health(struct parser *p, const cJSON *v, struct config *cfg) {
  if (!expect_object(p, v) || !check_keys(p, v, kHealthKeys)) {
    return false;
  }
  if (!has_key(v, "listen")) {
    return fail(p, "missing required key \"listen\" (omit \"health\" to leave the port off)");
  }
  if (!get_hostport(p, v, "listen", true, &cfg->health.listen)) {
    return false;
  }
  cfg->health.enabled = true;
  if (same_address(&cfg->health.listen, &cfg->admin.listen)) {
    path_push_key(p, "listen");
    char where[NETADDR_HOSTPORT_MAX];
    netaddr_format_hostport(where, sizeof(where), &cfg->health.listen);
    return fail_value(p, where, "address already used by admin.listen");
  }
  return true;
}

static bool parse_certs(struct parser *p, const cJSON *v, struct config *cfg) {
  return expect_object(p, v) && check_keys(p, v, kCertsKeys) &&
         get_string(p, v, "dir", &cfg->certs.dir) &&
         get_string(p, v, "cert_file", &cfg->certs.cert_file) &&
         get_string(p, v, "key_file", &cfg->certs.key_file) &&
         get_string(p, v, "ca_file", &cfg->certs.ca_file) &&
         get_duration(p, v, "poll_interval", POLL_INTERVAL_MIN_MS, &cfg->certs.poll_interval) &&
         get_duration(p, v, "expiry_warning", 1, &cfg->certs.expiry_warning);
}

static const char *const kTlsVersionNames[] = {"1.2", "1.3", NULL};

const char *config_tls_version_name(enum tls_version version) {
  return kTlsVersionNames[version];
}

static bool parse_tls(struct parser *p, const cJSON *v, struct config *cfg) {
  int min = (int)cfg->tls.min_version;
  int max = (int)cfg->tls.max_version;
  if (!expect_object(p, v) || !check_keys(p, v, kTlsKeys) ||
      !get_choice(p, v, "min_version", kTlsVersionNames, "unsupported TLS version",
                  "\"1.2\" or \"1.3\"", &min) ||
      !get_choice(p, v, "max_version", kTlsVersionNames, "unsupported TLS version",
                  "\"1.2\" or \"1.3\"", &max) ||
      !get_string_list(p, v, "cipher_suites", check_cipher_suite, true,
                       "omit it for the default AEAD suites", &cfg->tls.cipher_suites,
                       &cfg->tls.cipher_suite_count) ||
      !get_string_list(p, v, "groups", check_group, true, "omit it for X25519 and P-256",
                       &cfg->tls.groups, &cfg->tls.group_count) ||
      !get_bool(p, v, "session_resumption", &cfg->tls.session_resumption) ||
      !get_bool(p, v, "close_on_peer_expiry", &cfg->tls.close_on_peer_expiry)) {
    return false;
  }
  if (min > max) {
    size_t saved = path_push_key(p, "min_version");
    fail_value(p, kTlsVersionNames[min], "higher than max_version \"%s\"", kTlsVersionNames[max]);
    path_pop(p, saved);
    return false;
  }
  cfg->tls.min_version = (enum tls_version)min;
  cfg->tls.max_version = (enum tls_version)max;
  return true;
}

static bool parse_limits(struct parser *p, const cJSON *v, struct config *cfg) {
  return expect_object(p, v) && check_keys(p, v, kLimitsKeys) &&
         get_uint(p, v, "max_connections", 1, MAX_CONNECTIONS_MAX, &cfg->limits.max_connections) &&
         get_uint(p, v, "max_handshaking", 1, MAX_CONNECTIONS_MAX, &cfg->limits.max_handshaking) &&
         get_duration(p, v, "connect_timeout", 1, &cfg->limits.connect_timeout) &&
         get_duration(p, v, "handshake_timeout", 1, &cfg->limits.handshake_timeout) &&
         get_duration(p, v, "idle_timeout", 1, &cfg->limits.idle_timeout) &&
         get_duration(p, v, "drain_timeout", 1, &cfg->limits.drain_timeout) &&
         get_duration(p, v, "detect_timeout", 1, &cfg->limits.detect_timeout) &&
         get_duration(p, v, "hello_timeout", 1, &cfg->limits.hello_timeout);
}

static bool parse_access_log(struct parser *p, const cJSON *root, struct config *cfg) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "access_log");
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, "access_log");
  if (!expect_text(p, v)) {
    return false;
  }
  const char *s = v->valuestring;
  if (strcmp(s, "stdout") == 0) {
    cfg->access_log = ACCESS_LOG_TARGET_STDOUT;
  } else if (strcmp(s, "stderr") == 0) {
    cfg->access_log = ACCESS_LOG_TARGET_STDERR;
  } else if (strcmp(s, "off") == 0) {
    cfg->access_log = ACCESS_LOG_TARGET_OFF;
  } else if (s[strlen(s) - 1] == '/') {
    return fail_value(p, s,
                      "expected \"stdout\", \"stderr\", \"off\" or a file path, not a "
                      "directory");
  } else {
    if (!replace_string(p, &cfg->access_log_path, s)) {
      return false;
    }
    cfg->access_log = ACCESS_LOG_TARGET_FILE;
  }
  path_pop(p, saved);
  return true;
}

/* refuse_keys fails on the first of |keys| that |obj| holds, with |why|. */
static bool refuse_keys(struct parser *p, const cJSON *obj, const char *const *keys,
                        const char *why) {
  for (size_t i = 0; keys[i] != NULL; i++) {
    if (has_key(obj, keys[i])) {
      path_push_key(p, keys[i]);
      return fail(p, "%s", why);
    }
  }
  return true;
}

static const char *const kModeNames[] = {"outbound", "inbound", NULL};

const char *config_mode_name(enum listener_mode mode) {
  return kModeNames[mode];
}

static bool parse_listener(struct parser *p, const cJSON *v, struct listener_config *l) {
  static const char *const kRequired[] = {"name", "mode", "listen", NULL};
  static const char *const kInboundOnly[] = {"forward",        "forward_host", "allow",
                                             "proxy_protocol", "permissive",   NULL};
  static const char *const kOutboundOnly[] = {"upstream", "server_identity", NULL};
  static const char *const kNotTransparent[] = {"upstream", "forward", NULL};
  static const char *const kTransparentOnly[] = {"forward_host", NULL};

  if (!expect_object(p, v) || !check_keys(p, v, kListenerKeys)) {
    return false;
  }
  for (size_t i = 0; kRequired[i] != NULL; i++) {
    if (!has_key(v, kRequired[i])) {
      return fail(p, "missing required key \"%s\"", kRequired[i]);
    }
  }
  int mode = 0;
  if (!get_string(p, v, "name", &l->name)) {
    return false;
  }
  size_t saved = path_push_key(p, "name");
  if (!check_listener_name(p, l->name)) {
    return false;
  }
  path_pop(p, saved);
  if (!get_choice(p, v, "mode", kModeNames, "invalid mode", "\"outbound\" or \"inbound\"", &mode) ||
      !get_hostport(p, v, "listen", true, &l->listen) ||
      !get_bool(p, v, "transparent", &l->transparent) ||
      !get_uint(p, v, "max_connections", 1, MAX_CONNECTIONS_MAX, &l->max_connections)) {
    return false;
  }
  l->mode = (enum listener_mode)mode;

  bool outbound = l->mode == LISTENER_OUTBOUND;
  if (!refuse_keys(
          p, v, outbound ? kInboundOnly : kOutboundOnly,
          outbound ? "only valid on inbound listeners" : "only valid on outbound listeners")) {
    return false;
  }
  if (l->transparent) {
    if (!refuse_keys(p, v, kNotTransparent,
                     "cannot be combined with \"transparent\": true (a transparent listener "
                     "uses the original destination)")) {
      return false;
    }
  } else if (!refuse_keys(p, v, kTransparentOnly,
                          "only valid on a transparent listener (an explicit one uses "
                          "\"forward\")")) {
    return false;
  }

  if (outbound) {
    if (!l->transparent && !has_key(v, "upstream")) {
      return fail(p,
                  "missing required key \"upstream\" (an outbound listener needs it unless "
                  "\"transparent\" is true)");
    }
    l->has_upstream = has_key(v, "upstream");
    if (!get_hostport(p, v, "upstream", false, &l->upstream) ||
        !get_string(p, v, "server_identity", &l->server_identity)) {
      return false;
    }
    if (l->server_identity != NULL) {
      saved = path_push_key(p, "server_identity");
      if (!check_server_identity(p, l->server_identity)) {
        return false;
      }
      path_pop(p, saved);
    }
    return true;
  }

  if (!l->transparent && !has_key(v, "forward")) {
    return fail(p,
                "missing required key \"forward\" (an inbound listener needs it unless "
                "\"transparent\" is true)");
  }
  l->has_forward = has_key(v, "forward");
  if (!get_hostport(p, v, "forward", false, &l->forward)) {
    return false;
  }
  if (l->transparent) {
    if (!get_string(p, v, "forward_host", &l->forward_host)) {
      return false;
    }
    if (l->forward_host != NULL) {
      saved = path_push_key(p, "forward_host");
      if (!check_forward_host(p, l->forward_host, &l->forward_host_is_ip)) {
        return false;
      }
      path_pop(p, saved);
    }
  }
  return get_string_list(p, v, "allow", check_allow_pattern, false,
                         "omit it to allow any identity in the trust domain", &l->allow,
                         &l->allow_count) &&
         get_bool(p, v, "proxy_protocol", &l->proxy_protocol) &&
         get_bool(p, v, "permissive", &l->permissive);
}

static bool same_address(const struct hostport *a, const struct hostport *b) {
  struct sockaddr_storage sa;
  struct sockaddr_storage sb;
  socklen_t la = 0;
  socklen_t lb = 0;
  if (!netaddr_to_sockaddr(&sa, &la, a) || !netaddr_to_sockaddr(&sb, &lb, b)) {
    return strcmp(a->host, b->host) == 0 && a->port == b->port;
  }
  /* Both were zeroed and filled field by field, so comparing the bytes compares the
   * family, the port and the address, whatever way the address was written. */
  return la == lb && memcmp(&sa, &sb, la) == 0;
}

/* check_listener_clashes refuses a name or a listening address that listener |i| shares
 * with an earlier listener or with the admin port. */
static bool check_listener_clashes(struct parser *p, const cJSON *v, const struct config *cfg,
                                   size_t i) {
  const struct listener_config *l = &cfg->listeners[i];
  const char *listen = cJSON_GetObjectItemCaseSensitive(v, "listen")->valuestring;
  for (size_t j = 0; j < i; j++) {
    /* Every earlier listener was read whole, so its name is set. */
    if (cfg->listeners[j].name != NULL && strcmp(cfg->listeners[j].name, l->name) == 0) {
      path_push_key(p, "name");
      return fail_value(p, l->name, "name already used by listeners[%zu]", j);
    }
  }
  for (size_t j = 0; j < i; j++) {
    if (same_address(&cfg->listeners[j].listen, &l->listen)) {
      path_push_key(p, "listen");
      return fail_value(p, listen, "address already used by listeners[%zu]", j);
    }
  }
  if (same_address(&cfg->admin.listen, &l->listen)) {
    path_push_key(p, "listen");
    return fail_value(p, listen, "address already used by admin.listen");
  }
  if (cfg->health.enabled && same_address(&cfg->health.listen, &l->listen)) {
    path_push_key(p, "listen");
    return fail_value(p, listen, "address already used by health.listen");
  }
  return true;
}

/* check_listener_limit refuses a listener cap above the process-wide one (limits are
 * read before listeners), which could never be reached. */
static bool check_listener_limit(struct parser *p, const struct config *cfg, size_t i) {
  uint32_t cap = cfg->listeners[i].max_connections;
  if (cap > cfg->limits.max_connections) {
    path_push_key(p, "max_connections");
    return fail(p, "%" PRIu32 ": higher than limits.max_connections (%" PRIu32 ")", cap,
                cfg->limits.max_connections);
  }
  return true;
}

bool config_is_own_port(const struct config *cfg, uint16_t port) {
  if (port == cfg->admin.listen.port || (cfg->health.enabled && port == cfg->health.listen.port)) {
    return true;
  }
  for (size_t i = 0; i < cfg->listener_count; i++) {
    if (cfg->listeners[i].listen.port == port) {
      return true;
    }
  }
  return false;
}

static bool parse_listeners(struct parser *p, const cJSON *root, struct config *cfg) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "listeners");
  if (v == NULL) {
    return fail(p, "missing required key \"listeners\"");
  }
  size_t saved = path_push_key(p, "listeners");
  if (!cJSON_IsArray(v)) {
    return fail(p, "expected an array of listeners, got %s", json_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    return fail(p, "at least one listener is required");
  }
  cfg->listeners = config_calloc(count, sizeof(*cfg->listeners));
  if (cfg->listeners == NULL) {
    return fail_oom(p);
  }
  /* Counted before they are filled, so that config_free releases a half-read one. */
  cfg->listener_count = count;
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = path_push_index(p, i);
    if (!parse_listener(p, e, &cfg->listeners[i]) || !check_listener_clashes(p, e, cfg, i) ||
        !check_listener_limit(p, cfg, i)) {
      return false;
    }
    path_pop(p, saved_elem);
  }
  path_pop(p, saved);
  return true;
}

static bool section(struct parser *p, const cJSON *root, const char *key,
                    bool (*parse)(struct parser *, const cJSON *, struct config *),
                    struct config *cfg) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!parse(p, v, cfg)) {
    return false;
  }
  path_pop(p, saved);
  return true;
}

static bool set_defaults(struct parser *p, struct config *cfg) {
  const char *ignored = NULL;
  netaddr_parse_hostport(&cfg->admin.listen, &ignored, DEFAULT_ADMIN_LISTEN);
  cfg->admin.lifecycle = true;
  cfg->certs.poll_interval = 5 * kMsPerSecond;
  cfg->certs.expiry_warning = 24 * kMsPerHour;
  cfg->tls.min_version = TLS_VERSION_1_2;
  cfg->tls.max_version = TLS_VERSION_1_3;
  cfg->tls.session_resumption = true;
  cfg->tls.close_on_peer_expiry = true;
  cfg->limits.max_connections = 16384;
  cfg->limits.max_handshaking = 1024;
  cfg->limits.connect_timeout = 5 * kMsPerSecond;
  cfg->limits.handshake_timeout = 10 * kMsPerSecond;
  cfg->limits.idle_timeout = kMsPerHour;
  cfg->limits.drain_timeout = 20 * kMsPerSecond;
  cfg->limits.detect_timeout = kMsPerSecond;
  cfg->limits.hello_timeout = kMsPerSecond;
  cfg->access_log = ACCESS_LOG_TARGET_STDOUT;
  cfg->sandbox = true;

  cfg->tls.groups = config_calloc(2, sizeof(char *));
  if (cfg->tls.groups == NULL) {
    return fail_oom(p);
  }
  cfg->tls.group_count = 2;
  return replace_string(p, &cfg->tls.groups[0], "X25519") &&
         replace_string(p, &cfg->tls.groups[1], "P-256") &&
         replace_string(p, &cfg->trust_domain, DEFAULT_TRUST_DOMAIN) &&
         replace_string(p, &cfg->certs.dir, "/var/run/mtlsd/certs") &&
         replace_string(p, &cfg->certs.cert_file, "tls.crt") &&
         replace_string(p, &cfg->certs.key_file, "tls.key") &&
         replace_string(p, &cfg->certs.ca_file, "ca.crt");
}

/* cpus_within_quota caps |cpus| by a cgroup v2 cpu.max line ("QUOTA PERIOD", or "max
 * PERIOD" for none), rounding the quota up: a pod limited to 1.5 CPUs gets 2 workers. */
static unsigned cpus_within_quota(unsigned cpus, const char *cpu_max) {
  unsigned long long quota = 0, period = 0;
  if (cpu_max == NULL || sscanf(cpu_max, "%llu %llu", &quota, &period) != 2 || quota == 0 ||
      period == 0) {
    return cpus;
  }
  unsigned long long allowed = (quota + period - 1) / period;
  return allowed < cpus ? (unsigned)allowed : cpus;
}

/* available_cpus counts the CPUs this process may run on: its affinity mask (a cpuset),
 * capped by its cgroup's CPU quota (a Kubernetes CPU limit). The online count alone is
 * the node's, and would give a sidecar on a 64-core node 64 threads. */
static unsigned available_cpus(void) {
  cpu_set_t set;
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned cpus = online < 1 ? 1 : (unsigned)online;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) {
    cpus = (unsigned)CPU_COUNT(&set);
  }
  char line[64];
  FILE *f = fopen("/sys/fs/cgroup/cpu.max", "re");
  if (f != NULL) {
    if (fgets(line, sizeof(line), f) != NULL) {
      cpus = cpus_within_quota(cpus, line);
    }
    fclose(f);
  }
  return cpus;
}

static bool parse_root(struct parser *p, const cJSON *root, struct config *cfg) {
  if (!expect_object(p, root) || !check_keys(p, root, kTopKeys) ||
      !get_string(p, root, "trust_domain", &cfg->trust_domain)) {
    return false;
  }
  if (!identity_trust_domain_valid(cfg->trust_domain)) {
    path_push_key(p, "trust_domain");
    return fail_value(p, cfg->trust_domain,
                      "invalid trust domain (lowercase letters, digits, '.', '-' and '_' only)");
  }
  uint32_t workers = 0;
  if (!section(p, root, "admin", parse_admin, cfg) ||
      !section(p, root, "health", parse_health, cfg) ||
      !section(p, root, "certs", parse_certs, cfg) || !section(p, root, "tls", parse_tls, cfg) ||
      !section(p, root, "limits", parse_limits, cfg) ||
      !get_uint(p, root, "workers", 0, WORKERS_MAX, &workers) || !parse_access_log(p, root, cfg) ||
      !get_bool(p, root, "sandbox", &cfg->sandbox) || !parse_listeners(p, root, cfg)) {
    return false;
  }
  cfg->workers_configured = workers;
  cfg->workers = workers;
  if (workers == 0) {
    unsigned cpus = available_cpus();
    cfg->workers = cpus > WORKERS_MAX ? WORKERS_MAX : cpus;
  }
  return true;
}

/* --- application probes (MTLSD_APP_PROBES) ----------------------------------------- */

/* The members of a Kubernetes Probe, and of its handlers that the sidecar runs. */
static const char *const kProbeKeys[] = {"httpGet",
                                         "tcpSocket",
                                         "grpc",
                                         "exec",
                                         "initialDelaySeconds",
                                         "timeoutSeconds",
                                         "periodSeconds",
                                         "successThreshold",
                                         "failureThreshold",
                                         "terminationGracePeriodSeconds",
                                         NULL};
static const char *const kHttpGetKeys[] = {"path", "port", "host", "scheme", "httpHeaders", NULL};
static const char *const kTcpSocketKeys[] = {"port", "host", NULL};
static const char *const kGrpcKeys[] = {"port", "service", NULL};
static const char *const kHeaderKeys[] = {"name", "value", NULL};
static const char *const kProbeKinds[] = {"livez", "readyz", "startupz", NULL};
/* Lifecycle hooks (postStart, preStop) are kept beside the probes, under these kinds. */
static const char *const kHookKinds[] = {"poststartz", "prestopz", NULL};
static const char *const kAppMetricsKeys[] = {"port", "path", NULL};
/* A hook has no timeout of its own: the kubelet bounds preStop by the pod's
 * terminationGracePeriodSeconds, whose default this is. */
static const uint32_t kHookTimeoutSeconds = 30;

static cJSON *parse_document(struct parser *p, const char *json, size_t json_len);

/* A Kubernetes container name: an RFC 1123 label (lowercase letters, digits and '-', at
 * most 63, starting and ending with a letter or digit). */
static bool is_dns_label(const char *s, size_t len) {
  if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-') {
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    if (!((s[i] >= 'a' && s[i] <= 'z') || is_digit(s[i]) || s[i] == '-')) {
      return false;
    }
  }
  return true;
}

/* A port of a probe handler: a number, as named ports were resolved by the injector. */
static bool get_probe_port(struct parser *p, const cJSON *handler, uint16_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(handler, "port");
  if (v == NULL) {
    return fail(p, "missing required key \"port\"");
  }
  if (cJSON_IsString(v)) {
    path_push_key(p, "port");
    return fail_value(p, v->valuestring, "a named port: resolve it to the container's port number");
  }
  uint32_t port = 0;
  if (!get_uint(p, handler, "port", 1, 65535, &port)) {
    return false;
  }
  *out = (uint16_t)port;
  return true;
}

static bool get_probe_headers(struct parser *p, const cJSON *handler, struct app_probe *a) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(handler, "httpHeaders");
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, "httpHeaders");
  if (!cJSON_IsArray(v)) {
    return fail(p, "expected an array of {\"name\", \"value\"}, got %s", json_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    path_pop(p, saved);
    return true;
  }
  a->headers = config_calloc(count, sizeof(*a->headers));
  if (a->headers == NULL) {
    return fail_oom(p);
  }
  for (const cJSON *e = v->child; e != NULL; e = e->next) {
    size_t saved_elem = path_push_index(p, a->header_count);
    struct app_probe_header *hd = &a->headers[a->header_count++];
    if (!expect_object(p, e) || !check_keys(p, e, kHeaderKeys) ||
        !get_string(p, e, "name", &hd->name) || !get_string_or_empty(p, e, "value", &hd->value)) {
      return false;
    }
    if (hd->name == NULL) {
      return fail(p, "missing required key \"name\"");
    }
    /* Control characters never get this far (check_text refuses them in any string). */
    if (hd->name[0] == '\0' || strpbrk(hd->name, " :") != NULL) {
      path_push_key(p, "name");
      return fail_value(p, hd->name, "not an HTTP header name");
    }
    path_pop(p, saved_elem);
  }
  path_pop(p, saved);
  return true;
}

static bool parse_http_get(struct parser *p, const cJSON *v, struct app_probe *a) {
  static const char *const kSchemes[] = {"HTTP", "HTTPS", NULL};
  int scheme = 0;
  if (!expect_object(p, v) || !check_keys(p, v, kHttpGetKeys) || !get_probe_port(p, v, &a->port) ||
      !get_string(p, v, "path", &a->path) || !get_string(p, v, "host", &a->host) ||
      !get_choice(p, v, "scheme", kSchemes, "invalid scheme", "\"HTTP\" or \"HTTPS\"", &scheme) ||
      !get_probe_headers(p, v, a)) {
    return false;
  }
  a->https = scheme == 1;
  if (a->path == NULL) {
    return replace_string(p, &a->path, "/");
  }
  if (strchr(a->path, ' ') != NULL) {
    path_push_key(p, "path");
    return fail_value(p, a->path, "a path cannot hold spaces");
  }
  if (a->path[0] != '/') {
    /* The kubelet adds the leading slash itself. */
    char *absolute = config_calloc(1, strlen(a->path) + 2);
    if (absolute == NULL) {
      return fail_oom(p);
    }
    absolute[0] = '/';
    memcpy(absolute + 1, a->path, strlen(a->path) + 1);
    free(a->path);
    a->path = absolute;
  }
  return true;
}

static bool parse_app_probe(struct parser *p, const cJSON *v, struct app_probe *a) {
  a->key = config_strdup(v->string);
  if (a->key == NULL) {
    return fail_oom(p);
  }
  const char *slash = strchr(a->key, '/');
  bool hook = slash != NULL && key_in(slash + 1, kHookKinds);
  bool kind_ok = slash != NULL && (hook || key_in(slash + 1, kProbeKinds));
  if (!kind_ok || slash == a->key || !is_dns_label(a->key, (size_t)(slash - a->key))) {
    return fail(p,
                "expected \"<container>/<livez|readyz|startupz|poststartz|prestopz>\", with "
                "the container's name");
  }
  a->container = config_calloc(1, (size_t)(slash - a->key) + 1);
  if (a->container == NULL || !replace_string(p, &a->kind, slash + 1)) {
    return fail_oom(p);
  }
  memcpy(a->container, a->key, (size_t)(slash - a->key));
  if (!expect_object(p, v) || !check_keys(p, v, kProbeKeys)) {
    return false;
  }
  static const char *const kHandlers[] = {"httpGet", "tcpSocket", "grpc", NULL};
  int handlers = 0;
  for (size_t i = 0; kHandlers[i] != NULL; i++) {
    handlers += has_key(v, kHandlers[i]) ? 1 : 0;
  }
  if (has_key(v, "exec")) {
    path_push_key(p, "exec");
    return fail(p,
                "exec probes run in the container itself; the sidecar runs httpGet, "
                "tcpSocket and grpc only");
  }
  if (hook && has_key(v, "grpc")) {
    path_push_key(p, "grpc");
    return fail(p, "a lifecycle hook has no grpc handler (httpGet or tcpSocket only)");
  }
  if (handlers != 1) {
    return fail(p, "expected exactly one of \"httpGet\", \"tcpSocket\" or \"grpc\"");
  }
  uint32_t timeout_s = hook ? kHookTimeoutSeconds : 1;
  if (!get_uint(p, v, "timeoutSeconds", 1, 86400, &timeout_s)) {
    return false;
  }
  a->timeout = (duration_ms)timeout_s * kMsPerSecond;
  const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "httpGet");
  size_t saved = 0;
  if (h != NULL) {
    a->type = APP_PROBE_HTTP;
    saved = path_push_key(p, "httpGet");
    if (!parse_http_get(p, h, a)) {
      return false;
    }
  } else if ((h = cJSON_GetObjectItemCaseSensitive(v, "tcpSocket")) != NULL) {
    a->type = APP_PROBE_TCP;
    saved = path_push_key(p, "tcpSocket");
    if (!expect_object(p, h) || !check_keys(p, h, kTcpSocketKeys) ||
        !get_probe_port(p, h, &a->port) || !get_string(p, h, "host", &a->host)) {
      return false;
    }
  } else {
    h = cJSON_GetObjectItemCaseSensitive(v, "grpc");
    a->type = APP_PROBE_GRPC;
    saved = path_push_key(p, "grpc");
    if (!expect_object(p, h) || !check_keys(p, h, kGrpcKeys) || !get_probe_port(p, h, &a->port) ||
        !get_string_or_empty(p, h, "service", &a->service)) {
      return false;
    }
  }
  if (a->host != NULL && (a->host[0] == '\0' || strpbrk(a->host, " /") != NULL)) {
    path_push_key(p, "host");
    return fail_value(p, a->host, "not a host name or address");
  }
  path_pop(p, saved);
  return true;
}

bool config_parse_app_probes(struct config *cfg, const char *name, const char *json, size_t len,
                             char *err, size_t err_len) {
  struct parser p = {.file = name, .err = err, .err_len = err_len};
  cJSON *root = parse_document(&p, json, len);
  if (root == NULL) {
    return false;
  }
  struct app_probe *probes = NULL;
  size_t count = 0;
  bool ok = expect_object(&p, root);
  size_t total = ok ? (size_t)cJSON_GetArraySize(root) : 0;
  if (total > 0) {
    probes = config_calloc(total, sizeof(*probes));
    if (probes == NULL) {
      cJSON_Delete(root);
      return fail_oom(&p);
    }
  }
  for (const cJSON *v = ok ? root->child : NULL; ok && v != NULL && count < total; v = v->next) {
    size_t saved = path_push_key(&p, v->string);
    struct app_probe *a = &probes[count++];
    ok = parse_app_probe(&p, v, a);
    for (size_t i = 0; ok && i + 1 < count; i++) {
      if (strcmp(probes[i].key, a->key) == 0) {
        ok = fail(&p, "listed twice");
      }
    }
    path_pop(&p, saved);
  }
  cJSON_Delete(root);
  if (!ok) {
    free_app_probes(probes, count);
    return false;
  }
  free_app_probes(cfg->app_probes, cfg->app_probe_count);
  cfg->app_probes = probes;
  cfg->app_probe_count = count;
  return true;
}

/* The longest application metrics path: it goes into a request line, which the
 * application's server bounds too (Go's at 1 MiB of head, many at 8 KiB). */
enum { APP_METRICS_PATH_MAX = 1024 };

static bool parse_app_metrics(struct parser *p, const cJSON *root, uint16_t *port, char **path) {
  if (!expect_object(p, root) || !check_keys(p, root, kAppMetricsKeys) ||
      !get_probe_port(p, root, port) || !get_string(p, root, "path", path)) {
    return false;
  }
  if (*path == NULL) {
    /* prometheus.io/path's own default. */
    return replace_string(p, path, "/metrics");
  }
  path_push_key(p, "path");
  if ((*path)[0] != '/') {
    return fail_value(p, *path, "the path must start with '/'");
  }
  if (strchr(*path, ' ') != NULL) {
    return fail_value(p, *path, "a path cannot hold spaces");
  }
  if (strlen(*path) > APP_METRICS_PATH_MAX) {
    return fail(p, "longer than %d bytes", APP_METRICS_PATH_MAX);
  }
  return true;
}

bool config_parse_app_metrics(struct config *cfg, const char *name, const char *json, size_t len,
                              char *err, size_t err_len) {
  struct parser p = {.file = name, .err = err, .err_len = err_len};
  cJSON *root = parse_document(&p, json, len);
  if (root == NULL) {
    return false;
  }
  uint16_t port = 0;
  char *path = NULL;
  bool ok = parse_app_metrics(&p, root, &port, &path);
  cJSON_Delete(root);
  if (!ok) {
    free(path);
    return false;
  }
  free(cfg->app_metrics.path);
  cfg->app_metrics.port = port;
  cfg->app_metrics.path = path;
  return true;
}

const struct app_probe *config_find_app_probe(const struct config *cfg, const char *key,
                                              size_t key_len) {
  for (size_t i = 0; i < cfg->app_probe_count; i++) {
    const struct app_probe *a = &cfg->app_probes[i];
    if (strlen(a->key) == key_len && memcmp(a->key, key, key_len) == 0) {
      return a;
    }
  }
  return NULL;
}

/* --- the injector's configuration file --------------------------------------------- */

static const char *const kInjectorKeys[] = {"image",
                                            "image_pull_policy",
                                            "trust_domain",
                                            "namespace",
                                            "native_sidecar",
                                            "resources",
                                            "certs",
                                            "exclude_inbound_ports",
                                            "exclude_outbound_ports",
                                            "exclude_outbound_cidrs",
                                            "include_outbound_cidrs",
                                            "exclude_api_server",
                                            "ipv6",
                                            "sidecar",
                                            NULL};
/* What an operator may set in every injected sidecar's configuration: all but what the
 * injection decides itself (addresses, listeners, the certificate directory), which the
 * interception rules and the probe rewrite depend on. */
static const char *const kSidecarKeys[] = {"tls",   "limits", "workers", "access_log",
                                           "admin", "certs",  NULL};
static const char *const kSidecarAdminKeys[] = {"lifecycle", NULL};
static const char *const kSidecarCertsKeys[] = {"poll_interval", "expiry_warning", NULL};
static const char *const kResourceKeys[] = {"requests", "limits", NULL};
static const char *const kQuantityKeys[] = {"cpu", "memory", NULL};
static const char *const kInjectorCertKeys[] = {"csi_driver", NULL};

void config_free_injector(struct injector_file *f) {
  if (f == NULL) {
    return;
  }
  char *strings[] = {f->image,
                     f->pull_policy,
                     f->trust_domain,
                     f->namespace,
                     f->cpu_request,
                     f->memory_request,
                     f->cpu_limit,
                     f->memory_limit,
                     f->csi_driver,
                     f->exclude_inbound_ports,
                     f->exclude_outbound_ports,
                     f->exclude_outbound_cidrs,
                     f->include_outbound_cidrs,
                     f->sidecar};
  for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
    free(strings[i]);
  }
  free(f);
}

static bool check_quantity(struct parser *p, const char *s) {
  return inject_quantity_valid(s) ? true
                                  : fail_value(p, s, "not a resource quantity (e.g. 100m, 64Mi)");
}

static bool check_cidr(struct parser *p, const char *s) {
  return iptables_cidr_valid(s) ? true : fail_value(p, s, "not a CIDR");
}

/* Reads a list (of strings checked by |check|, or with |ports| of port numbers) into
 * one comma-separated string, the form of the annotations and of the iptables options. */
static bool get_joined_list(struct parser *p, const cJSON *obj, const char *key, bool ports,
                            element_check check, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
    return fail(p, "expected a non-empty array of %s", ports ? "port numbers" : "strings");
  }
  char joined[4096] = "";
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = path_push_index(p, i);
    char item[300];
    if (ports) {
      if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 1 ||
          e->valuedouble > 65535) {
        return fail(p, "expected a port number (1 to 65535)");
      }
      snprintf(item, sizeof(item), "%d", (int)e->valuedouble);
    } else {
      if (!expect_text(p, e) || !check(p, e->valuestring)) {
        return false;
      }
      snprintf(item, sizeof(item), "%s", e->valuestring);
    }
    size_t used = strlen(joined);
    if (used + strlen(item) + 2 >= sizeof(joined)) {
      return fail(p, "too many entries");
    }
    snprintf(joined + used, sizeof(joined) - used, "%s%s", used > 0 ? "," : "", item);
    path_pop(p, saved_elem);
  }
  path_pop(p, saved);
  return replace_string(p, out, joined);
}

static bool get_quantities(struct parser *p, const cJSON *obj, const char *key, char **cpu,
                           char **memory) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!expect_object(p, v) || !check_keys(p, v, kQuantityKeys) || !get_string(p, v, "cpu", cpu) ||
      !get_string(p, v, "memory", memory)) {
    return false;
  }
  const char *values[] = {*cpu, *memory};
  const char *names[] = {"cpu", "memory"};
  for (size_t i = 0; i < 2; i++) {
    if (values[i] != NULL) {
      size_t inner = path_push_key(p, names[i]);
      if (!check_quantity(p, values[i])) {
        return false;
      }
      path_pop(p, inner);
    }
  }
  path_pop(p, saved);
  return true;
}

/* Checks that |obj|'s member |key|, when present, is an object of |known| keys only. */
static bool check_section(struct parser *p, const cJSON *obj, const char *key,
                          const char *const *known) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, key);
  if (!expect_object(p, v) || !check_keys(p, v, known)) {
    return false;
  }
  path_pop(p, saved);
  return true;
}

/* Reads "sidecar", the base of every injected sidecar's configuration, and validates it
 * the way the sidecar will read it (with a listener, as a whole document must have). */
static bool parse_sidecar_base(struct parser *p, const cJSON *root, struct injector_file *f) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "sidecar");
  if (v == NULL) {
    return true;
  }
  size_t saved = path_push_key(p, "sidecar");
  if (!expect_object(p, v) || !check_keys(p, v, kSidecarKeys) ||
      !check_section(p, v, "admin", kSidecarAdminKeys) ||
      !check_section(p, v, "certs", kSidecarCertsKeys)) {
    return false;
  }
  cJSON *doc = cJSON_Duplicate(v, true);
  cJSON *listener = cJSON_Parse(
      "[{\"name\":\"outbound\",\"mode\":\"outbound\","
      "\"listen\":\"127.0.0.1:15001\",\"transparent\":true}]");
  bool built = doc != NULL && listener != NULL && cJSON_AddItemToObject(doc, "listeners", listener);
  if (!built) {
    cJSON_Delete(listener);
  }
  char *text = built ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  f->sidecar = cJSON_PrintUnformatted(v);
  if (text == NULL || f->sidecar == NULL) {
    free(text);
    return fail_oom(p);
  }
  char where[1024];
  snprintf(where, sizeof(where), "%s: sidecar", p->file);
  struct config *cfg = config_parse(where, text, strlen(text), p->err, p->err_len);
  free(text);
  config_free(cfg);
  if (cfg == NULL) {
    return false;
  }
  path_pop(p, saved);
  return true;
}

static bool parse_injector(struct parser *p, const cJSON *root, struct injector_file *f) {
  static const char *const kPolicies[] = {"IfNotPresent", "Always", "Never", NULL};
  int policy = -1;
  bool native = false;
  if (!expect_object(p, root) || !check_keys(p, root, kInjectorKeys) ||
      !get_string(p, root, "image", &f->image) ||
      !get_choice(p, root, "image_pull_policy", kPolicies, "invalid pull policy",
                  "\"IfNotPresent\", \"Always\" or \"Never\"", &policy) ||
      !get_string(p, root, "trust_domain", &f->trust_domain) ||
      !get_string(p, root, "namespace", &f->namespace) ||
      !get_bool(p, root, "native_sidecar", &native)) {
    return false;
  }
  if (policy >= 0 && !replace_string(p, &f->pull_policy, kPolicies[policy])) {
    return false;
  }
  f->native_sidecar = has_key(root, "native_sidecar") ? native : -1;
  bool api_server = true;
  if (!get_bool(p, root, "exclude_api_server", &api_server)) {
    return false;
  }
  f->exclude_api_server = api_server;
  bool ipv6 = true;
  if (!get_bool(p, root, "ipv6", &ipv6) || !parse_sidecar_base(p, root, f)) {
    return false;
  }
  f->ipv6 = ipv6;
  if (f->trust_domain != NULL && !identity_trust_domain_valid(f->trust_domain)) {
    path_push_key(p, "trust_domain");
    return fail_value(p, f->trust_domain, "invalid trust domain");
  }
  if (f->namespace != NULL && !is_dns_label(f->namespace, strlen(f->namespace))) {
    path_push_key(p, "namespace");
    return fail_value(p, f->namespace, "not a namespace name");
  }
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "resources");
  if (res != NULL) {
    size_t saved = path_push_key(p, "resources");
    if (!expect_object(p, res) || !check_keys(p, res, kResourceKeys) ||
        !get_quantities(p, res, "requests", &f->cpu_request, &f->memory_request) ||
        !get_quantities(p, res, "limits", &f->cpu_limit, &f->memory_limit)) {
      return false;
    }
    path_pop(p, saved);
  }
  const cJSON *certs = cJSON_GetObjectItemCaseSensitive(root, "certs");
  if (certs != NULL) {
    size_t saved = path_push_key(p, "certs");
    if (!expect_object(p, certs) || !check_keys(p, certs, kInjectorCertKeys) ||
        !get_string(p, certs, "csi_driver", &f->csi_driver)) {
      return false;
    }
    path_pop(p, saved);
  }
  return get_joined_list(p, root, "exclude_inbound_ports", true, NULL, &f->exclude_inbound_ports) &&
         get_joined_list(p, root, "exclude_outbound_ports", true, NULL,
                         &f->exclude_outbound_ports) &&
         get_joined_list(p, root, "exclude_outbound_cidrs", false, check_cidr,
                         &f->exclude_outbound_cidrs) &&
         get_joined_list(p, root, "include_outbound_cidrs", false, check_cidr,
                         &f->include_outbound_cidrs);
}

struct injector_file *config_load_injector(const char *path, char *err, size_t err_len) {
  size_t len = 0;
  uint8_t *text = NULL;
  int r = file_read_all(path, CONFIG_FILE_MAX, 0, &text, &len);
  if (r != 0) {
    (void)snprintf(err, err_len, "%s: cannot read: %s", path, file_error_string(r));
    return NULL;
  }
  struct parser p = {.file = path, .err = err, .err_len = err_len};
  cJSON *root = parse_document(&p, (const char *)text, len);
  free(text);
  struct injector_file *f = root != NULL ? config_calloc(1, sizeof(*f)) : NULL;
  if (root != NULL && f == NULL) {
    fail_oom(&p);
  }
  if (f != NULL) {
    f->native_sidecar = -1;
    if (!parse_injector(&p, root, f)) {
      config_free_injector(f);
      f = NULL;
    }
  }
  cJSON_Delete(root);
  return f;
}

/* --- text positions ----------------------------------------------------------------- */

/* fail_at reports a problem at byte |offset| of |text| as "line L, column C", counting
 * columns in characters (UTF-8 continuation bytes do not count). */
static bool fail_at(struct parser *p, const char *text, size_t offset, const char *problem) {
  unsigned long line = 1;
  unsigned long column = 1;
  for (size_t i = 0; i < offset; i++) {
    if (text[i] == '\n') {
      line++;
      column = 1;
    } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
      column++;
    }
  }
  if (p->err != NULL && p->err_len > 0) {
    (void)snprintf(p->err, p->err_len, "%s: line %lu, column %lu: %s", p->file, line, column,
                   problem);
  }
  return false;
}

static bool is_blank(const char *text, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n') {
      return false;
    }
  }
  return true;
}

/* check_raw_text refuses what cJSON would accept but silently mangle: a NUL byte (the
 * text would end there) and a "\u0000" escape (the string would be cut there, so
 * "a\u0000b" would read as "a"). */
static bool check_raw_text(struct parser *p, const char *text, size_t len) {
  bool in_string = false;
  for (size_t i = 0; i < len; i++) {
    char c = text[i];
    if (c == '\0') {
      return fail_at(p, text, i, "NUL byte in the file");
    }
    if (!in_string) {
      in_string = c == '"';
    } else if (c == '"') {
      in_string = false;
    } else if (c == '\\' && i + 1 < len) {
      if (len - i >= 6 && text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0) {
        return fail_at(p, text, i, "\"\\u0000\" is not allowed in strings");
      }
      i++; /* The escaped character cannot end the string. */
    }
  }
  return true;
}

/* Parses the JSON document |json| as cJSON does, but with the exact place of a syntax
 * error in the message. Returns the tree the caller deletes, or NULL after fail(). */
static cJSON *parse_document(struct parser *p, const char *json, size_t json_len) {
  if (p->err != NULL && p->err_len > 0) {
    p->err[0] = '\0';
  }
  if (!check_raw_text(p, json, json_len)) {
    return NULL;
  }
  if (is_blank(json, json_len)) {
    fail(p, "the file is empty (expected a JSON object)");
    return NULL;
  }
  /* cJSON wants the terminator inside the length to accept the end of the text. */
  char *text = config_calloc(1, json_len + 1);
  if (text == NULL) {
    fail_oom(p);
    return NULL;
  }
  memcpy(text, json, json_len);
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, json_len + 1, &end, true);
  if (root == NULL) {
    size_t offset = end != NULL && end >= text ? (size_t)(end - text) : 0;
    const char *what = NULL;
    char problem[128];
    if (!json_syntax_locate(text, json_len, 0, &offset, &what)) {
      what = "cannot parse it (or out of memory)";
    }
    (void)snprintf(problem, sizeof(problem), "JSON syntax error: %s", what);
    fail_at(p, text, offset < json_len ? offset : json_len, problem);
  }
  free(text);
  return root;
}

struct config *config_parse(const char *path, const char *json, size_t json_len, char *err,
                            size_t err_len) {
  struct parser p = {.file = path, .err = err, .err_len = err_len};
  struct config *cfg = NULL;
  cJSON *root = parse_document(&p, json, json_len);
  if (root == NULL) {
    goto err;
  }
  cfg = config_calloc(1, sizeof(*cfg));
  if (cfg == NULL) {
    fail_oom(&p);
    goto err;
  }
  if (!replace_string(&p, &cfg->path, path) || !set_defaults(&p, cfg) ||
      !parse_root(&p, root, cfg)) {
    goto err;
  }
  cJSON_Delete(root);
  return cfg;

err:
  config_free(cfg);
  cJSON_Delete(root);
  return NULL;
}

struct config *config_serving(const char *certs_dir, char *err, size_t err_len) {
  struct parser p = {.file = certs_dir, .err = err, .err_len = err_len};
  struct config *cfg = config_calloc(1, sizeof(*cfg));
  if (cfg == NULL) {
    fail_oom(&p);
    return NULL;
  }
  if (!replace_string(&p, &cfg->path, certs_dir) || !set_defaults(&p, cfg) ||
      !replace_string(&p, &cfg->certs.dir, certs_dir)) {
    config_free(cfg);
    return NULL;
  }
  free(cfg->certs.ca_file);
  cfg->certs.ca_file = NULL;
  cfg->workers = 1;
  cfg->webhook = true;
  return cfg;
}

struct config *config_load(const char *path, char *err, size_t err_len) {
  size_t len = 0;
  uint8_t *text = NULL;
  int r = file_read_all(path, CONFIG_FILE_MAX, 0, &text, &len);
  if (r != 0) {
    if (err != NULL && err_len > 0) {
      (void)snprintf(err, err_len, "%s: cannot read: %s", path, file_error_string(r));
    }
    return NULL;
  }
  struct config *cfg = config_parse(path, (const char *)text, len, err, err_len);
  free(text);
  return cfg;
}
