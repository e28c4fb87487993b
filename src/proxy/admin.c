/* admin: the routes of the admin port and of the health port (see mtlsd/admin.h). */
#include "mtlsd/proxy/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "mtlsd/base/log.h"
#include "mtlsd/base/timefmt.h"
#include "mtlsd/http/http_server.h"
#include "mtlsd/net/stats.h"
#include "mtlsd/proxy/app_health.h"
#include "mtlsd/proxy/health_metrics.h"
#include "mtlsd/tls/tls.h"

/* A pod has a kubelet, a Prometheus and an operator's curl; 64 is plenty for them and
 * bounds what a misbehaving neighbour can hold. Ten seconds for a request to arrive in
 * full and its answer to be written (and an idle keep-alive connection to be kept), two
 * to drain a client's bytes after the last answer. */
static const struct http_server_limits kAdminLimits = {
    .max_connections = 64,
    .max_body = HTTP_MAX_BODY,
    .max_output_in_flight = (uint64_t)8 << 20,
    .send_buffer = 64 * 1024,
    .timeout_ms = 10000,
    .linger_ms = 2000,
};

/* The health port answers the kubelet and Prometheus from outside the pod, and every pod
 * in the cluster can reach it: more room than the admin port, a handful of connections
 * per address (the kubelet's probes are one connection each, rarely more than a dozen
 * at once),
 * requests that arrive quickly (a deferred probe answer waits as long as its probe), and
 * large answers (metrics) bounded together, so that no flood, from one address or many,
 * takes the port or the memory from the kubelet. The output budget holds a few answers
 * with the application's metrics at their cap (HEALTH_METRICS_APP_BODY_MAX) at once: a
 * Prometheus pair and an operator's curl. */
static const struct http_server_limits kHealthLimits = {
    .max_connections = 128,
    .max_per_source = 16,
    .max_body = HTTP_MAX_BODY,
    .max_output_in_flight = (uint64_t)8 << 20,
    .send_buffer = 16 * 1024,
    .timeout_ms = 4000,
    .linger_ms = 1000,
};

struct admin {
  struct runtime *rt;
  const struct admin_control_ops *ops;
  void *arg;
  struct http_server *http;
  struct http_server *health; /* NULL when health.listen is not set. */
  struct app_health *app_health;
  struct health_metrics *health_metrics;
};

void admin_answer_alive(struct http_conn *x) {
  http_respond_text(x, 200, "ok\n");
}

void admin_answer_ready(struct http_conn *x, struct runtime *rt) {
  char reason[600];
  if (runtime_ready(rt, reason, sizeof(reason))) {
    http_respond_text(x, 200, "ready\n");
    return;
  }
  http_respond_text(x, 503, reason);
}

void admin_answer_metrics(struct http_conn *x, struct runtime *rt) {
  http_respond_owned(x, HTTP_CT_PROMETHEUS, stats_render_prometheus(rt->stats));
}

static void handle_healthz(struct http_conn *x, void *arg) {
  (void)arg;
  admin_answer_alive(x);
}

static void handle_ready(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  admin_answer_ready(x, admin->rt);
}

static void handle_stats(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  http_respond_owned(x, HTTP_CT_JSON, stats_render_json(admin->rt->stats));
}

static void handle_prometheus(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  admin_answer_metrics(x, admin->rt);
}

static void handle_health_metrics(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  health_metrics_serve(admin->health_metrics, x);
}

static void handle_config(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  http_respond_owned(x, HTTP_CT_JSON, config_to_json(admin->rt->cfg));
}

static void handle_certs(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  struct runtime *rt = admin->rt;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddNumberToObject(root, "generation", (double)runtime_tls_generation(rt));

  struct runtime_reload last;
  runtime_last_reload(rt, &last);
  if (last.time == 0) {
    cJSON_AddNullToObject(root, "last_reload");
  } else {
    cJSON *entry = cJSON_AddObjectToObject(root, "last_reload");
    char stamp[32];
    timefmt_rfc3339(stamp, sizeof(stamp), last.time);
    cJSON_AddStringToObject(entry, "time", stamp);
    cJSON_AddStringToObject(entry, "result", last.ok ? "ok" : "failed");
    if (last.ok) {
      cJSON_AddNullToObject(entry, "error");
    } else {
      cJSON_AddStringToObject(entry, "error", last.error);
    }
  }

  struct tls_contexts *ctxs = runtime_tls_acquire(rt);
  if (ctxs == NULL) {
    cJSON_AddNullToObject(root, "leaf");
    cJSON_AddArrayToObject(root, "bundle");
  } else if (!tls_certset_add_info(root, tls_contexts_certset(ctxs))) {
    cJSON_Delete(root);
    root = NULL;
  }
  tls_contexts_free(ctxs);
  http_respond_json(x, 200, root);
}

static void handle_server_info(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  struct runtime *rt = admin->rt;
  char started[32];
  timefmt_rfc3339(started, sizeof(started), rt->start_time);
  int64_t uptime = (int64_t)time(NULL) - rt->start_time;

  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "version", MTLSD_VERSION);
  cJSON_AddStringToObject(root, "boringssl", tls_library_version());
  cJSON_AddStringToObject(root, "libuv", uv_version_string());
  cJSON_AddStringToObject(root, "cjson", cJSON_Version());
  cJSON_AddNumberToObject(root, "uptime_seconds", (double)(uptime > 0 ? uptime : 0));
  cJSON_AddStringToObject(root, "start_time", started);
  cJSON_AddNumberToObject(root, "workers", (double)rt->cfg->workers);
  /* limits.max_connections as the open files limit lets it be (runtime_fit_descriptors). */
  cJSON_AddNumberToObject(root, "max_connections", (double)rt->max_connections);
  cJSON_AddStringToObject(root, "state", runtime_draining(rt) ? "draining" : "live");
  cJSON *sandbox = cJSON_AddObjectToObject(root, "sandbox");
  cJSON_AddBoolToObject(sandbox, "active", rt->sandbox.seccomp);
  cJSON_AddBoolToObject(sandbox, "no_new_privs", rt->sandbox.no_new_privs);
  cJSON_AddBoolToObject(sandbox, "seccomp", rt->sandbox.seccomp);
  cJSON_AddNumberToObject(sandbox, "landlock_abi", rt->sandbox.landlock_abi);
  if (rt->sandbox.seccomp && rt->sandbox.landlock_abi == 0) {
    cJSON_AddStringToObject(sandbox, "landlock", rt->sandbox.landlock_detail);
  }
  http_respond_json(x, 200, root);
}

/* Reads ?dry_run: absent, "0" or "false" is a real reload; "1", "true" or a bare
 * "dry_run" only validates. Returns false on any other value. */
static bool parse_dry_run(bool *out, const struct http_conn *x) {
  const char *buf = http_conn_buf(x);
  struct http_span v;
  *out = false;
  if (!http_query_param(&v, buf, http_conn_request(x)->query, "dry_run")) {
    return true;
  }
  if (v.len == 0 || http_span_equal(buf, v, "1") || http_span_equal(buf, v, "true")) {
    *out = true;
    return true;
  }
  return http_span_equal(buf, v, "0") || http_span_equal(buf, v, "false");
}

/* POST /reload: 200 when the set is valid (and, unless a dry run, loaded), 422 when the
 * files are invalid: the request was fine, what it asked to load was not. */
static void handle_reload(struct http_conn *x, void *arg) {
  struct admin *admin = arg;
  bool dry_run;
  if (!parse_dry_run(&dry_run, x)) {
    http_respond_text(x, 400, "dry_run must be 1, true, 0 or false");
    return;
  }
  log_write(LOG_INFO, "admin", "%s: POST /reload%s", http_conn_peer(x),
            dry_run ? " (dry run)" : "");
  char msg[600];
  bool ok = admin->ops->reload(admin->arg, dry_run ? CERTLOAD_DRY_RUN : CERTLOAD_APPLY, NULL, msg,
                               sizeof(msg)) != CERTLOAD_REFUSED;
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "result", ok ? "ok" : "failed");
  cJSON_AddBoolToObject(root, "dry_run", dry_run);
  cJSON_AddStringToObject(root, ok ? "message" : "error", msg);
  cJSON_AddNumberToObject(root, "generation", (double)runtime_tls_generation(admin->rt));
  http_respond_json(x, ok ? 200 : 422, root);
}

/* POST /drain and /quitquitquit: 202, and for the latter the connection closes, as the
 * process is about to go: say so, rather than invite another request. */
static void start_drain(struct http_conn *x, struct admin *admin, bool then_exit) {
  log_write(LOG_INFO, "admin", "%s: POST %s", http_conn_peer(x),
            then_exit ? "/quitquitquit" : "/drain");
  admin->ops->drain(admin->arg, then_exit);
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "result", "draining");
  cJSON_AddBoolToObject(root, "exit", then_exit);
  char *text = http_json_text(root);
  struct http_response r = {202, HTTP_CT_JSON, text != NULL ? text : "{}",
                            text != NULL ? strlen(text) : 2, then_exit};
  http_respond(x, &r);
  free(text);
}

static void handle_drain(struct http_conn *x, void *arg) {
  start_drain(x, arg, false);
}

static void handle_quit(struct http_conn *x, void *arg) {
  start_drain(x, arg, true);
}

#define APP_HEALTH_PREFIX "/app-health/"
#define APP_LIFECYCLE_PREFIX "/app-lifecycle/"

static void serve_app_entry(struct http_conn *x, struct admin *admin, enum app_health_route route,
                            size_t prefix) {
  const struct http_request *req = http_conn_request(x);
  app_health_serve(admin->app_health, x, route, http_conn_buf(x) + req->path.off + prefix,
                   req->path.len - prefix);
}

/* GET /app-health/<container>/<kind>, on the health port. */
static void handle_app_health(struct http_conn *x, void *arg) {
  serve_app_entry(x, arg, APP_HEALTH_PROBES, sizeof(APP_HEALTH_PREFIX) - 1);
}

/* GET /app-lifecycle/<container>/<hook>, on the health port. */
static void handle_app_lifecycle(struct http_conn *x, void *arg) {
  serve_app_entry(x, arg, APP_HEALTH_HOOKS, sizeof(APP_LIFECYCLE_PREFIX) - 1);
}

/* The health port: read-only, and nothing an outsider should read (no /config, /certs,
 * /stats, no POST). */
static const struct http_route kHealthRoutes[] = {
    {"/healthz", false, HTTP_ROUTE_GET, handle_healthz},
    {"/ready", false, HTTP_ROUTE_GET, handle_ready},
    {"/metrics", false, HTTP_ROUTE_GET, handle_health_metrics},
    {"/stats/prometheus", false, HTTP_ROUTE_GET, handle_health_metrics},
    {APP_HEALTH_PREFIX, true, HTTP_ROUTE_GET, handle_app_health},
    {APP_LIFECYCLE_PREFIX, true, HTTP_ROUTE_GET, handle_app_lifecycle},
};

/* The lifecycle routes come last: admin.lifecycle: false serves only the ones before
 * them (the rest answer 404). */
static const struct http_route kRoutes[] = {
    {"/healthz", false, HTTP_ROUTE_GET, handle_healthz},
    {"/ready", false, HTTP_ROUTE_GET, handle_ready},
    {"/stats", false, HTTP_ROUTE_GET, handle_stats},
    {"/stats/prometheus", false, HTTP_ROUTE_GET, handle_prometheus},
    {"/metrics", false, HTTP_ROUTE_GET, handle_prometheus},
    {"/certs", false, HTTP_ROUTE_GET, handle_certs},
    {"/config", false, HTTP_ROUTE_GET, handle_config},
    {"/server_info", false, HTTP_ROUTE_GET, handle_server_info},
    {"/reload", false, HTTP_ROUTE_POST, handle_reload},
    {"/drain", false, HTTP_ROUTE_POST, handle_drain},
    {"/quitquitquit", false, HTTP_ROUTE_POST, handle_quit},
};
enum { LIFECYCLE_ROUTES = 3 };

/* Starts one of the two ports; on failure writes "KEY ADDRESS: reason" into |err|. */
static struct http_server *start_port(uv_loop_t *loop, const char *key,
                                      const struct hostport *listen,
                                      const struct http_server_config *http, char *err,
                                      size_t err_len) {
  char why[400];
  struct http_server *server = http_server_start(loop, listen, http, why, sizeof(why));
  if (server == NULL) {
    snprintf(err, err_len, "%s %s", key, why);
    return NULL;
  }
  char where[NETADDR_HOSTPORT_MAX];
  netaddr_format_hostport(where, sizeof(where), listen);
  log_write(LOG_INFO, http->name, "listening on %s", where);
  return server;
}

struct admin *admin_start(uv_loop_t *loop, struct runtime *rt, const struct admin_control_ops *ops,
                          void *arg, char *err, size_t err_len) {
  const struct config *cfg = rt->cfg;
  struct admin *admin = calloc(1, sizeof(*admin));
  if (admin == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  *admin = (struct admin){.rt = rt, .ops = ops, .arg = arg};
  size_t routes = sizeof(kRoutes) / sizeof(kRoutes[0]);
  struct http_server_config http = {
      .name = "admin",
      .routes = kRoutes,
      .route_count = cfg->admin.lifecycle ? routes : routes - LIFECYCLE_ROUTES,
      .limits = kAdminLimits,
      .arg = admin,
  };
  admin->http = start_port(loop, "admin.listen", &cfg->admin.listen, &http, err, err_len);
  if (admin->http == NULL) {
    admin_close(admin);
    return NULL;
  }
  if (!cfg->admin.lifecycle) {
    log_write(LOG_INFO, "admin", "lifecycle endpoints off");
  }
  if (cfg->health.enabled) {
    struct http_server_config health = {
        .name = "health",
        .routes = kHealthRoutes,
        .route_count = sizeof(kHealthRoutes) / sizeof(kHealthRoutes[0]),
        .limits = kHealthLimits,
        .arg = admin,
    };
    admin->app_health = app_health_new(loop, rt);
    admin->health_metrics = health_metrics_new(loop, rt);
    bool made = admin->app_health != NULL && admin->health_metrics != NULL;
    admin->health =
        made ? start_port(loop, "health.listen", &cfg->health.listen, &health, err, err_len) : NULL;
    if (admin->health == NULL) {
      if (!made) {
        snprintf(err, err_len, "out of memory");
      }
      admin_close(admin);
      return NULL;
    }
  }
  return admin;
}

void admin_close(struct admin *admin) {
  if (admin == NULL) {
    return;
  }
  /* The servers first: closing their connections ends the requests that wait for a
   * probe, before the probes themselves are cancelled. */
  http_server_close(admin->http);
  http_server_close(admin->health);
  app_health_free(admin->app_health);
  health_metrics_free(admin->health_metrics);
  free(admin);
}
