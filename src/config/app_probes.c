/* app_probes: MTLSD_APP_PROBES and MTLSD_APP_METRICS, read strictly (see
 * mtlsd/app_probes.h). */
#include "mtlsd/config/app_probes.h"

#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/jsonread.h"

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

bool app_probes_dns_label_valid(const char *s, size_t len) {
  if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-') {
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-')) {
      return false;
    }
  }
  return true;
}

/* A port of a probe handler: a number, as named ports were resolved by the injector. */
static bool get_probe_port(struct jsonread *p, const cJSON *handler, uint16_t *out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(handler, "port");
  if (v == NULL) {
    return jr_fail(p, "missing required key \"port\"");
  }
  if (cJSON_IsString(v)) {
    jr_push_key(p, "port");
    return jr_fail_value(p, v->valuestring,
                         "a named port: resolve it to the container's port number");
  }
  uint32_t port = 0;
  if (!jr_get_uint(p, handler, "port", 1, 65535, &port)) {
    return false;
  }
  *out = (uint16_t)port;
  return true;
}

static bool get_probe_headers(struct jsonread *p, const cJSON *handler, struct app_probe *a) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(handler, "httpHeaders");
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, "httpHeaders");
  if (!cJSON_IsArray(v)) {
    return jr_fail(p, "expected an array of {\"name\", \"value\"}, got %s", jr_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    jr_pop(p, saved);
    return true;
  }
  a->headers = jr_calloc(count, sizeof(*a->headers));
  if (a->headers == NULL) {
    return jr_fail_oom(p);
  }
  for (const cJSON *e = v->child; e != NULL; e = e->next) {
    size_t saved_elem = jr_push_index(p, a->header_count);
    struct app_probe_header *hd = &a->headers[a->header_count++];
    if (!jr_expect_object(p, e) || !jr_check_keys(p, e, kHeaderKeys) ||
        !jr_get_string(p, e, "name", &hd->name) ||
        !jr_get_string_or_empty(p, e, "value", &hd->value)) {
      return false;
    }
    if (hd->name == NULL) {
      return jr_fail(p, "missing required key \"name\"");
    }
    /* Control characters never get this far (check_text refuses them in any string). */
    if (hd->name[0] == '\0' || strpbrk(hd->name, " :") != NULL) {
      jr_push_key(p, "name");
      return jr_fail_value(p, hd->name, "not an HTTP header name");
    }
    jr_pop(p, saved_elem);
  }
  jr_pop(p, saved);
  return true;
}

static bool parse_http_get(struct jsonread *p, const cJSON *v, struct app_probe *a) {
  static const char *const kSchemes[] = {"HTTP", "HTTPS", NULL};
  int scheme = 0;
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kHttpGetKeys) ||
      !get_probe_port(p, v, &a->port) || !jr_get_string(p, v, "path", &a->path) ||
      !jr_get_string(p, v, "host", &a->host) ||
      !jr_get_choice(p, v, "scheme", kSchemes, "invalid scheme", "\"HTTP\" or \"HTTPS\"",
                     &scheme) ||
      !get_probe_headers(p, v, a)) {
    return false;
  }
  a->https = scheme == 1;
  if (a->path == NULL) {
    return jr_replace_string(p, &a->path, "/");
  }
  if (strchr(a->path, ' ') != NULL) {
    jr_push_key(p, "path");
    return jr_fail_value(p, a->path, "a path cannot hold spaces");
  }
  if (a->path[0] != '/') {
    /* The kubelet adds the leading slash itself. */
    char *absolute = jr_calloc(1, strlen(a->path) + 2);
    if (absolute == NULL) {
      return jr_fail_oom(p);
    }
    absolute[0] = '/';
    memcpy(absolute + 1, a->path, strlen(a->path) + 1);
    free(a->path);
    a->path = absolute;
  }
  return true;
}

static bool parse_app_probe(struct jsonread *p, const cJSON *v, struct app_probe *a) {
  a->key = jr_strdup(v->string);
  if (a->key == NULL) {
    return jr_fail_oom(p);
  }
  const char *slash = strchr(a->key, '/');
  bool hook = slash != NULL && jr_key_in(slash + 1, kHookKinds);
  bool kind_ok = slash != NULL && (hook || jr_key_in(slash + 1, kProbeKinds));
  if (!kind_ok || slash == a->key ||
      !app_probes_dns_label_valid(a->key, (size_t)(slash - a->key))) {
    return jr_fail(p,
                   "expected \"<container>/<livez|readyz|startupz|poststartz|prestopz>\", with "
                   "the container's name");
  }
  a->container = jr_calloc(1, (size_t)(slash - a->key) + 1);
  if (a->container == NULL || !jr_replace_string(p, &a->kind, slash + 1)) {
    return jr_fail_oom(p);
  }
  memcpy(a->container, a->key, (size_t)(slash - a->key));
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kProbeKeys)) {
    return false;
  }
  static const char *const kHandlers[] = {"httpGet", "tcpSocket", "grpc", NULL};
  int handlers = 0;
  for (size_t i = 0; kHandlers[i] != NULL; i++) {
    handlers += jr_has_key(v, kHandlers[i]) ? 1 : 0;
  }
  if (jr_has_key(v, "exec")) {
    jr_push_key(p, "exec");
    return jr_fail(p,
                   "exec probes run in the container itself; the sidecar runs httpGet, "
                   "tcpSocket and grpc only");
  }
  if (hook && jr_has_key(v, "grpc")) {
    jr_push_key(p, "grpc");
    return jr_fail(p, "a lifecycle hook has no grpc handler (httpGet or tcpSocket only)");
  }
  if (handlers != 1) {
    return jr_fail(p, "expected exactly one of \"httpGet\", \"tcpSocket\" or \"grpc\"");
  }
  uint32_t timeout_s = hook ? kHookTimeoutSeconds : 1;
  if (!jr_get_uint(p, v, "timeoutSeconds", 1, APP_PROBE_TIMEOUT_MAX_S, &timeout_s)) {
    return false;
  }
  a->timeout = (duration_ms)timeout_s * DURATION_SECOND;
  const cJSON *h = cJSON_GetObjectItemCaseSensitive(v, "httpGet");
  size_t saved = 0;
  if (h != NULL) {
    a->type = APP_PROBE_HTTP;
    saved = jr_push_key(p, "httpGet");
    if (!parse_http_get(p, h, a)) {
      return false;
    }
  } else if ((h = cJSON_GetObjectItemCaseSensitive(v, "tcpSocket")) != NULL) {
    a->type = APP_PROBE_TCP;
    saved = jr_push_key(p, "tcpSocket");
    if (!jr_expect_object(p, h) || !jr_check_keys(p, h, kTcpSocketKeys) ||
        !get_probe_port(p, h, &a->port) || !jr_get_string(p, h, "host", &a->host)) {
      return false;
    }
  } else {
    h = cJSON_GetObjectItemCaseSensitive(v, "grpc");
    a->type = APP_PROBE_GRPC;
    saved = jr_push_key(p, "grpc");
    if (!jr_expect_object(p, h) || !jr_check_keys(p, h, kGrpcKeys) ||
        !get_probe_port(p, h, &a->port) || !jr_get_string_or_empty(p, h, "service", &a->service)) {
      return false;
    }
  }
  if (a->host != NULL && (a->host[0] == '\0' || strpbrk(a->host, " /") != NULL)) {
    jr_push_key(p, "host");
    return jr_fail_value(p, a->host, "not a host name or address");
  }
  jr_pop(p, saved);
  return true;
}

bool config_parse_app_probes(struct config *cfg, const char *name, const char *json, size_t len,
                             char *err, size_t err_len) {
  struct jsonread p = {.file = name, .err = err, .err_len = err_len, .hints = config_key_hints()};
  cJSON *root = jr_parse_document(&p, json, len);
  if (root == NULL) {
    return false;
  }
  struct app_probe *probes = NULL;
  size_t count = 0;
  bool ok = jr_expect_object(&p, root);
  size_t total = ok ? (size_t)cJSON_GetArraySize(root) : 0;
  if (total > 0) {
    probes = jr_calloc(total, sizeof(*probes));
    if (probes == NULL) {
      cJSON_Delete(root);
      return jr_fail_oom(&p);
    }
  }
  for (const cJSON *v = ok ? root->child : NULL; ok && v != NULL && count < total; v = v->next) {
    size_t saved = jr_push_key(&p, v->string);
    struct app_probe *a = &probes[count++];
    ok = parse_app_probe(&p, v, a);
    for (size_t i = 0; ok && i + 1 < count; i++) {
      if (strcmp(probes[i].key, a->key) == 0) {
        ok = jr_fail(&p, "listed twice");
      }
    }
    jr_pop(&p, saved);
  }
  cJSON_Delete(root);
  if (!ok) {
    config_free_app_probes(probes, count);
    return false;
  }
  config_free_app_probes(cfg->app_probes, cfg->app_probe_count);
  cfg->app_probes = probes;
  cfg->app_probe_count = count;
  return true;
}

/* The longest application metrics path: it goes into a request line, which the
 * application's server bounds too (Go's at 1 MiB of head, many at 8 KiB). */

static bool parse_app_metrics(struct jsonread *p, const cJSON *root, uint16_t *port, char **path) {
  if (!jr_expect_object(p, root) || !jr_check_keys(p, root, kAppMetricsKeys) ||
      !get_probe_port(p, root, port) || !jr_get_string(p, root, "path", path)) {
    return false;
  }
  if (*path == NULL) {
    /* prometheus.io/path's own default. */
    return jr_replace_string(p, path, "/metrics");
  }
  jr_push_key(p, "path");
  if ((*path)[0] != '/') {
    return jr_fail_value(p, *path, "the path must start with '/'");
  }
  if (strchr(*path, ' ') != NULL) {
    return jr_fail_value(p, *path, "a path cannot hold spaces");
  }
  if (strlen(*path) > APP_METRICS_PATH_MAX) {
    return jr_fail(p, "longer than %d bytes", APP_METRICS_PATH_MAX);
  }
  return true;
}

bool config_parse_app_metrics(struct config *cfg, const char *name, const char *json, size_t len,
                              char *err, size_t err_len) {
  struct jsonread p = {.file = name, .err = err, .err_len = err_len, .hints = config_key_hints()};
  cJSON *root = jr_parse_document(&p, json, len);
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
