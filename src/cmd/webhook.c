/* webhook: the `mtlsd webhook` process (see mtlsd/webhook.h). Everything runs on one
 * loop: an AdmissionReview takes well under a millisecond to answer, so one thread
 * serves far more pod creations than an API server makes. */
#include "mtlsd/cmd/webhook.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "mtlsd/base/exit.h"
#include "mtlsd/base/log.h"
#include "mtlsd/config/config.h"
#include "mtlsd/http/http_server.h"
#include "mtlsd/kube/admission.h"
#include "mtlsd/kube/injector.h"
#include "mtlsd/proxy/admin.h"
#include "mtlsd/proxy/certload.h"
#include "mtlsd/proxy/certwatch.h"
#include "mtlsd/proxy/runtime.h"

/* The API server's clients are few and keep their connections; what else reaches the
 * port is a kubelet and a Prometheus. A review arrives in full within five seconds (the
 * API server's own default timeout) or the connection is cut, so a slow or idle client
 * holds nothing for long; a pod's AdmissionReview is tens of KiB, and 10 MiB is the
 * bound docs/injection.md sets. What all of it may hold at once is sized for the chart's
 * 128 MiB memory limit (docs/injection.md): 384 connections of at most some 115 KiB
 * each (buffers, TLS, the uncharged first 64 KiB of a body) is 43 MiB, bodies beyond
 * that 16 MiB, answers 8 MiB, and the one review being processed at most 25 MiB (the
 * value bound of admission_review). */
static const struct http_server_limits kWebhookLimits = {
    .max_connections = 384,
    /* The API server is one address (or one per replica), and keeps as many connections
     * as it has reviews in flight; any pod can reach the port too, so one address holds
     * two thirds of it at most, and the address holding the most gives way first. */
    .max_per_source = 256,
    .max_output_in_flight = (uint64_t)8 << 20,
    .send_buffer = 64 * 1024,
    .max_body = (uint64_t)10 << 20,
    /* Beyond 64 KiB each, one review of the largest size at once and more of the usual
     * (the API server sends one per pod creation, rarely over 100 KiB): a flood of large
     * bodies gets 503, not the memory. */
    .max_body_in_flight = (uint64_t)16 << 20,
    .timeout_ms = 5000,
    .linger_ms = 1000,
};

struct webhook {
  uv_loop_t loop;
  struct runtime *rt;
  struct injector injector;
  struct certwatch *certwatch;
  struct http_server *http;
  uv_signal_t sig_term, sig_int, sig_hup;
  uv_timer_t drain_timer;
};

static enum certload_result reload_op(void *arg, enum certload_mode mode, const uint8_t *expect,
                                      char *msg, size_t msg_len) {
  struct webhook *wh = arg;
  return certload_reload(wh->rt, mode, expect, msg, msg_len);
}

/* The contexts in use: for certwatch's expiry warnings, and for each HTTPS handshake. */
static struct tls_contexts *current_op(void *arg) {
  struct webhook *wh = arg;
  return runtime_tls_acquire(wh->rt);
}

static const struct certwatch_ops kCertwatchOps = {.reload = reload_op, .current = current_op};

static void handle_inject(struct http_conn *x, void *arg) {
  struct webhook *wh = arg;
  uint64_t start = uv_hrtime();
  size_t len = 0;
  const char *body = http_conn_body(x, &len);
  enum admission_result result;
  char msg[800];
  char *answer = admission_review(&wh->injector.cfg, body, len, &result, msg, sizeof(msg));
  static const enum injection_result kCounted[] = {
      [ADMISSION_INJECTED] = INJECTION_INJECTED, [ADMISSION_SKIPPED] = INJECTION_SKIPPED,
      [ADMISSION_REFUSED] = INJECTION_FAILED,    [ADMISSION_BAD_REVIEW] = INJECTION_FAILED,
      [ADMISSION_ERROR] = INJECTION_FAILED,
  };
  if (answer != NULL) {
    struct http_response r = {200, HTTP_CT_JSON, answer, strlen(answer), false};
    http_respond(x, &r);
    free(answer);
    log_write(result == ADMISSION_REFUSED ? LOG_WARN : LOG_INFO, "webhook", "%s", msg);
  } else {
    log_write(LOG_WARN, "webhook", "%s: POST /inject: %s", http_conn_peer(x), msg);
    http_respond_text(x, result == ADMISSION_ERROR ? 500 : 400, msg);
  }
  stats_count_review(wh->rt->stats, kCounted[result], (double)(uv_hrtime() - start) / 1e9);
}

static void handle_healthz(struct http_conn *x, void *arg) {
  (void)arg;
  admin_answer_alive(x);
}

static void handle_ready(struct http_conn *x, void *arg) {
  struct webhook *wh = arg;
  admin_answer_ready(x, wh->rt);
}

static void handle_metrics(struct http_conn *x, void *arg) {
  struct webhook *wh = arg;
  admin_answer_metrics(x, wh->rt);
}

static const struct http_route kRoutes[] = {
    {"/inject", false, HTTP_ROUTE_POST, handle_inject},
    {"/healthz", false, HTTP_ROUTE_GET, handle_healthz},
    {"/ready", false, HTTP_ROUTE_GET, handle_ready},
    {"/metrics", false, HTTP_ROUTE_GET, handle_metrics},
};

static void stop(struct webhook *wh) {
  atomic_store(&wh->rt->state, RUNTIME_STOPPED);
  uv_close((uv_handle_t *)&wh->sig_term, NULL);
  uv_close((uv_handle_t *)&wh->sig_int, NULL);
  uv_close((uv_handle_t *)&wh->sig_hup, NULL);
  uv_close((uv_handle_t *)&wh->drain_timer, NULL);
  certwatch_close(wh->certwatch);
  wh->certwatch = NULL;
  http_server_close(wh->http);
  wh->http = NULL;
}

static void on_drained(uv_timer_t *timer) {
  struct webhook *wh = timer->data;
  log_write(LOG_INFO, "webhook", "drained; exiting");
  stop(wh);
}

static void on_signal(uv_signal_t *handle, int signum) {
  struct webhook *wh = handle->data;
  if (signum == SIGHUP) {
    char msg[600];
    log_write(LOG_INFO, "webhook", "SIGHUP: reloading the certificate");
    reload_op(wh, CERTLOAD_APPLY, NULL, msg, sizeof(msg));
    return;
  }
  if (runtime_draining(wh->rt)) {
    log_write(LOG_INFO, "webhook", "%s again: exiting now", strsignal(signum));
    stop(wh);
    return;
  }
  log_write(LOG_INFO, "webhook", "%s: /ready says 503; answering for %d ms more", strsignal(signum),
            WEBHOOK_DRAIN_MS);
  atomic_store(&wh->rt->state, RUNTIME_DRAINING);
  atomic_store(&wh->rt->stats->global.draining, 1);
  uv_timer_start(&wh->drain_timer, on_drained, WEBHOOK_DRAIN_MS, 0);
}

static void start_signal(struct webhook *wh, uv_signal_t *handle, int signum) {
  uv_signal_init(&wh->loop, handle);
  handle->data = wh;
  uv_signal_start(handle, on_signal, signum);
}

/* Serves on the initialised |wh| until a signal ends it. */
static int serve(struct webhook *wh, const struct webhook_options *opts) {
  char msg[600];
  struct runtime *rt = wh->rt;
  /* A missing or bad certificate is not fatal: cert-manager may not have written it
   * yet. /ready says why until the watcher loads a good one. */
  if (certload_reload(rt, CERTLOAD_APPLY, NULL, msg, sizeof(msg)) == CERTLOAD_REFUSED) {
    log_write(LOG_WARN, "webhook", "not ready: %s", msg);
  }
  struct http_server_config http = {
      .name = "webhook",
      .routes = kRoutes,
      .route_count = sizeof(kRoutes) / sizeof(kRoutes[0]),
      .limits = kWebhookLimits,
      .tls = current_op,
      .arg = wh,
  };
  char err[400];
  wh->http = http_server_start(&wh->loop, &opts->listen, &http, err, sizeof(err));
  if (wh->http == NULL) {
    log_write(LOG_ERROR, "webhook", "--listen %s", err);
    return MTLSD_EXIT_FAILED;
  }
  wh->certwatch = certwatch_start(&wh->loop, &rt->cfg->certs, &kCertwatchOps, wh);
  if (wh->certwatch == NULL) {
    log_write(LOG_ERROR, "webhook", "cannot watch %s: out of memory", opts->certs_dir);
    http_server_close(wh->http);
    wh->http = NULL;
    return MTLSD_EXIT_FAILED;
  }
  start_signal(wh, &wh->sig_term, SIGTERM);
  start_signal(wh, &wh->sig_int, SIGINT);
  start_signal(wh, &wh->sig_hup, SIGHUP);
  uv_timer_init(&wh->loop, &wh->drain_timer);
  wh->drain_timer.data = wh;
  if (!runtime_confine(rt)) {
    stop(wh);
    return MTLSD_EXIT_FAILED;
  }
  atomic_store(&rt->state, RUNTIME_LIVE);
  char where[NETADDR_HOSTPORT_MAX];
  log_write(LOG_INFO, "webhook", "listening on %s (HTTPS), certificates in %s",
            netaddr_format_hostport(where, sizeof(where), &opts->listen), opts->certs_dir);
  uv_run(&wh->loop, UV_RUN_DEFAULT);
  return MTLSD_EXIT_OK;
}

int webhook_run(const struct webhook_options *opts) {
  char err[1024];
  struct webhook *wh = calloc(1, sizeof(*wh));
  if (wh == NULL) {
    fprintf(stderr, "mtlsd webhook: out of memory\n");
    return MTLSD_EXIT_FAILED;
  }
  if (!injector_load(&wh->injector, opts->config, err, sizeof(err))) {
    fprintf(stderr, "%s\n", err);
    free(wh);
    return MTLSD_EXIT_USAGE;
  }
  struct config *cfg = config_serving(opts->certs_dir, err, sizeof(err));
  wh->rt = cfg != NULL ? runtime_new(cfg) : NULL;
  int code = MTLSD_EXIT_FAILED;
  if (wh->rt == NULL || uv_loop_init(&wh->loop) != 0) {
    fprintf(stderr, "mtlsd webhook: out of memory\n");
  } else {
    /* The API server may close a connection while an answer is on its way. */
    signal(SIGPIPE, SIG_IGN);
    code = serve(wh, opts);
    /* Let every close callback run before the loop goes. */
    uv_run(&wh->loop, UV_RUN_DEFAULT);
    uv_loop_close(&wh->loop);
  }
  runtime_free(wh->rt);
  config_free(cfg);
  injector_free(&wh->injector);
  free(wh);
  return code;
}
