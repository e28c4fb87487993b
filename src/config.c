/* config: the sidecar's JSON configuration file, loaded strictly (see mtlsd/config.h and
 * docs/configuration.md): the schema, its defaults and the checks that span sections.
 * The reading itself (the JSON path, the typed getters, the messages) is jsonread's. */
#include "mtlsd/config.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mtlsd/file.h"
#include "mtlsd/identity.h"
#include "mtlsd/inject.h"
#include "mtlsd/iptables.h"
#include "mtlsd/jsonread.h"
#include "mtlsd/sysinfo.h"

enum {
  NAME_LEN_MAX = 64, /* Listener names end up in metric labels and log lines. */
  WORKERS_MAX = 256,
  MAX_CONNECTIONS_MAX = 1000000,
  POLL_INTERVAL_MIN_MS = 100,
};

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_ADMIN_LISTEN "127.0.0.1:15000"

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
static const struct jr_hint kSections[] = {
    {"at the top level", kTopKeys},   {"in \"admin\"", kAdminKeys},
    {"in \"health\"", kHealthKeys},   {"in \"certs\"", kCertsKeys},
    {"in \"tls\"", kTlsKeys},         {"in \"limits\"", kLimitsKeys},
    {"in a listener", kListenerKeys}, {NULL, NULL},
};

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
  jr_free_strings(cfg->tls.cipher_suites, cfg->tls.cipher_suite_count);
  jr_free_strings(cfg->tls.groups, cfg->tls.group_count);
  for (size_t i = 0; i < cfg->listener_count; i++) {
    struct listener_config *l = &cfg->listeners[i];
    free(l->name);
    free(l->forward_host);
    jr_free_strings(l->allow, l->allow_count);
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
/* --- element checks ----------------------------------------------------------------- */

static bool check_cipher_suite(struct jsonread *p, const char *s) {
  for (size_t i = 0; i < ARRAY_LEN(kCipherSuites); i++) {
    if (strcmp(s, kCipherSuites[i]) == 0) {
      return true;
    }
  }
  for (size_t i = 0; i < ARRAY_LEN(kTls13Suites); i++) {
    if (strcmp(s, kTls13Suites[i]) == 0) {
      return jr_fail_value(p, s,
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
  return jr_fail_value(p, s, "unsupported cipher suite: only ECDHE AEAD suites are allowed (%s)",
                       allowed);
}

static bool check_group(struct jsonread *p, const char *s) {
  for (size_t i = 0; i < ARRAY_LEN(kGroups); i++) {
    if (strcmp(s, kGroups[i]) == 0) {
      return true;
    }
  }
  return jr_fail_value(p, s, "unsupported group (expected \"X25519\", \"P-256\" or \"P-384\")");
}

static bool check_allow_pattern(struct jsonread *p, const char *s) {
  const char *problem = "invalid pattern";
  if (!identity_pattern_valid(s, &problem)) {
    return jr_fail_value(p, s, "%s", problem);
  }
  return true;
}

static bool check_listener_name(struct jsonread *p, const char *s) {
  size_t len = strlen(s);
  if (len > NAME_LEN_MAX ||
      strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != len) {
    return jr_fail_value(p, s, "invalid name (at most %d letters, digits, '.', '-' or '_')",
                         NAME_LEN_MAX);
  }
  return true;
}

static bool check_server_identity(struct jsonread *p, const char *s) {
  /* Anything that looks like a URI is judged as a SPIFFE ID, so that "SPIFFE://x" gets
   * the SPIFFE reason rather than "not a DNS name". */
  if (strncasecmp(s, "spiffe:", 7) == 0 || strstr(s, "://") != NULL) {
    const char *problem = "invalid SPIFFE ID";
    if (!identity_spiffe_valid(s, &problem)) {
      return jr_fail_value(p, s, "%s", problem);
    }
    return true;
  }
  /* Both checks: SANs carry neither a trailing dot nor an all-numeric last label, so a
   * name with either could never match. */
  if (!netaddr_valid_dns_name(s) || !identity_dns_name_valid(s, false, NULL)) {
    return jr_fail_value(p, s, "not a SPIFFE ID or DNS name");
  }
  return true;
}

static bool check_forward_host(struct jsonread *p, const char *s, bool *is_ip) {
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
    return jr_fail_value(p, s, "invalid host (expected an IP address or a DNS name, without port)");
  }
  *is_ip = hp.host_is_ip;
  return true;
}

/* --- objects: the jr_section ones get the config as |ctx| -------------------------- */

static bool parse_admin(struct jsonread *p, const cJSON *v, void *ctx) {
  struct config *cfg = ctx;
  return jr_expect_object(p, v) && jr_check_keys(p, v, kAdminKeys) &&
         jr_get_hostport(p, v, "listen", true, &cfg->admin.listen) &&
         jr_get_bool(p, v, "lifecycle", &cfg->admin.lifecycle);
}

static bool same_address(const struct hostport *a, const struct hostport *b);

static bool parse_health(struct jsonread *p, const cJSON *v, void *ctx) {
  struct config *cfg = ctx;
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kHealthKeys)) {
    return false;
  }
  if (!jr_has_key(v, "listen")) {
    return jr_fail(p, "missing required key \"listen\" (omit \"health\" to leave the port off)");
  }
  if (!jr_get_hostport(p, v, "listen", true, &cfg->health.listen)) {
    return false;
  }
  cfg->health.enabled = true;
  if (same_address(&cfg->health.listen, &cfg->admin.listen)) {
    jr_push_key(p, "listen");
    char where[NETADDR_HOSTPORT_MAX];
    netaddr_format_hostport(where, sizeof(where), &cfg->health.listen);
    return jr_fail_value(p, where, "address already used by admin.listen");
  }
  return true;
}

static bool parse_certs(struct jsonread *p, const cJSON *v, void *ctx) {
  struct config *cfg = ctx;
  return jr_expect_object(p, v) && jr_check_keys(p, v, kCertsKeys) &&
         jr_get_string(p, v, "dir", &cfg->certs.dir) &&
         jr_get_string(p, v, "cert_file", &cfg->certs.cert_file) &&
         jr_get_string(p, v, "key_file", &cfg->certs.key_file) &&
         jr_get_string(p, v, "ca_file", &cfg->certs.ca_file) &&
         jr_get_duration(p, v, "poll_interval", POLL_INTERVAL_MIN_MS, &cfg->certs.poll_interval) &&
         jr_get_duration(p, v, "expiry_warning", 1, &cfg->certs.expiry_warning);
}

static const char *const kTlsVersionNames[] = {"1.2", "1.3", NULL};

const char *config_tls_version_name(enum tls_version version) {
  return kTlsVersionNames[version];
}

static bool parse_tls(struct jsonread *p, const cJSON *v, void *ctx) {
  struct config *cfg = ctx;
  int min = (int)cfg->tls.min_version;
  int max = (int)cfg->tls.max_version;
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kTlsKeys) ||
      !jr_get_choice(p, v, "min_version", kTlsVersionNames, "unsupported TLS version",
                     "\"1.2\" or \"1.3\"", &min) ||
      !jr_get_choice(p, v, "max_version", kTlsVersionNames, "unsupported TLS version",
                     "\"1.2\" or \"1.3\"", &max) ||
      !jr_get_string_list(p, v, "cipher_suites", check_cipher_suite, true,
                          "omit it for the default AEAD suites", &cfg->tls.cipher_suites,
                          &cfg->tls.cipher_suite_count) ||
      !jr_get_string_list(p, v, "groups", check_group, true, "omit it for X25519 and P-256",
                          &cfg->tls.groups, &cfg->tls.group_count) ||
      !jr_get_bool(p, v, "session_resumption", &cfg->tls.session_resumption) ||
      !jr_get_bool(p, v, "close_on_peer_expiry", &cfg->tls.close_on_peer_expiry)) {
    return false;
  }
  if (min > max) {
    size_t saved = jr_push_key(p, "min_version");
    jr_fail_value(p, kTlsVersionNames[min], "higher than max_version \"%s\"",
                  kTlsVersionNames[max]);
    jr_pop(p, saved);
    return false;
  }
  cfg->tls.min_version = (enum tls_version)min;
  cfg->tls.max_version = (enum tls_version)max;
  return true;
}

static bool parse_limits(struct jsonread *p, const cJSON *v, void *ctx) {
  struct config *cfg = ctx;
  return jr_expect_object(p, v) && jr_check_keys(p, v, kLimitsKeys) &&
         jr_get_uint(p, v, "max_connections", 1, MAX_CONNECTIONS_MAX,
                     &cfg->limits.max_connections) &&
         jr_get_uint(p, v, "max_handshaking", 1, MAX_CONNECTIONS_MAX,
                     &cfg->limits.max_handshaking) &&
         jr_get_duration(p, v, "connect_timeout", 1, &cfg->limits.connect_timeout) &&
         jr_get_duration(p, v, "handshake_timeout", 1, &cfg->limits.handshake_timeout) &&
         jr_get_duration(p, v, "idle_timeout", 1, &cfg->limits.idle_timeout) &&
         jr_get_duration(p, v, "drain_timeout", 1, &cfg->limits.drain_timeout) &&
         jr_get_duration(p, v, "detect_timeout", 1, &cfg->limits.detect_timeout) &&
         jr_get_duration(p, v, "hello_timeout", 1, &cfg->limits.hello_timeout);
}

static bool parse_access_log(struct jsonread *p, const cJSON *root, struct config *cfg) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "access_log");
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, "access_log");
  if (!jr_expect_text(p, v)) {
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
    return jr_fail_value(p, s,
                         "expected \"stdout\", \"stderr\", \"off\" or a file path, not a "
                         "directory");
  } else {
    if (!jr_replace_string(p, &cfg->access_log_path, s)) {
      return false;
    }
    cfg->access_log = ACCESS_LOG_TARGET_FILE;
  }
  jr_pop(p, saved);
  return true;
}

/* refuse_keys fails on the first of |keys| that |obj| holds, with |why|. */
static bool refuse_keys(struct jsonread *p, const cJSON *obj, const char *const *keys,
                        const char *why) {
  for (size_t i = 0; keys[i] != NULL; i++) {
    if (jr_has_key(obj, keys[i])) {
      jr_push_key(p, keys[i]);
      return jr_fail(p, "%s", why);
    }
  }
  return true;
}

static const char *const kModeNames[] = {"outbound", "inbound", NULL};

const char *config_mode_name(enum listener_mode mode) {
  return kModeNames[mode];
}

/* The keys of an outbound listener, once parse_listener has refused the inbound ones. */
static bool parse_outbound(struct jsonread *p, const cJSON *v, struct listener_config *l) {
  if (!l->transparent && !jr_has_key(v, "upstream")) {
    return jr_fail(p,
                   "missing required key \"upstream\" (an outbound listener needs it unless "
                   "\"transparent\" is true)");
  }
  l->has_upstream = jr_has_key(v, "upstream");
  if (!jr_get_hostport(p, v, "upstream", false, &l->upstream) ||
      !jr_get_string(p, v, "server_identity", &l->server_identity)) {
    return false;
  }
  if (l->server_identity != NULL) {
    size_t saved = jr_push_key(p, "server_identity");
    if (!check_server_identity(p, l->server_identity)) {
      return false;
    }
    jr_pop(p, saved);
  }
  return true;
}

/* The keys of an inbound listener, once parse_listener has refused the outbound ones. */
static bool parse_inbound(struct jsonread *p, const cJSON *v, struct listener_config *l) {
  if (!l->transparent && !jr_has_key(v, "forward")) {
    return jr_fail(p,
                   "missing required key \"forward\" (an inbound listener needs it unless "
                   "\"transparent\" is true)");
  }
  l->has_forward = jr_has_key(v, "forward");
  if (!jr_get_hostport(p, v, "forward", false, &l->forward)) {
    return false;
  }
  if (l->transparent) {
    if (!jr_get_string(p, v, "forward_host", &l->forward_host)) {
      return false;
    }
    if (l->forward_host != NULL) {
      size_t saved = jr_push_key(p, "forward_host");
      if (!check_forward_host(p, l->forward_host, &l->forward_host_is_ip)) {
        return false;
      }
      jr_pop(p, saved);
    }
  }
  return jr_get_string_list(p, v, "allow", check_allow_pattern, false,
                            "omit it to allow any identity in the trust domain", &l->allow,
                            &l->allow_count) &&
         jr_get_bool(p, v, "proxy_protocol", &l->proxy_protocol) &&
         jr_get_bool(p, v, "permissive", &l->permissive);
}

static bool parse_listener(struct jsonread *p, const cJSON *v, struct listener_config *l) {
  static const char *const kRequired[] = {"name", "mode", "listen", NULL};
  static const char *const kInboundOnly[] = {"forward",        "forward_host", "allow",
                                             "proxy_protocol", "permissive",   NULL};
  static const char *const kOutboundOnly[] = {"upstream", "server_identity", NULL};
  static const char *const kNotTransparent[] = {"upstream", "forward", NULL};
  static const char *const kTransparentOnly[] = {"forward_host", NULL};

  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kListenerKeys)) {
    return false;
  }
  for (size_t i = 0; kRequired[i] != NULL; i++) {
    if (!jr_has_key(v, kRequired[i])) {
      return jr_fail(p, "missing required key \"%s\"", kRequired[i]);
    }
  }
  int mode = 0;
  if (!jr_get_string(p, v, "name", &l->name)) {
    return false;
  }
  size_t saved = jr_push_key(p, "name");
  if (!check_listener_name(p, l->name)) {
    return false;
  }
  jr_pop(p, saved);
  if (!jr_get_choice(p, v, "mode", kModeNames, "invalid mode", "\"outbound\" or \"inbound\"",
                     &mode) ||
      !jr_get_hostport(p, v, "listen", true, &l->listen) ||
      !jr_get_bool(p, v, "transparent", &l->transparent) ||
      !jr_get_uint(p, v, "max_connections", 1, MAX_CONNECTIONS_MAX, &l->max_connections)) {
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
  return outbound ? parse_outbound(p, v, l) : parse_inbound(p, v, l);
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
static bool check_listener_clashes(struct jsonread *p, const cJSON *v, const struct config *cfg,
                                   size_t i) {
  const struct listener_config *l = &cfg->listeners[i];
  const char *listen = cJSON_GetObjectItemCaseSensitive(v, "listen")->valuestring;
  for (size_t j = 0; j < i; j++) {
    /* Every earlier listener was read whole, so its name is set. */
    if (cfg->listeners[j].name != NULL && strcmp(cfg->listeners[j].name, l->name) == 0) {
      jr_push_key(p, "name");
      return jr_fail_value(p, l->name, "name already used by listeners[%zu]", j);
    }
  }
  for (size_t j = 0; j < i; j++) {
    if (same_address(&cfg->listeners[j].listen, &l->listen)) {
      jr_push_key(p, "listen");
      return jr_fail_value(p, listen, "address already used by listeners[%zu]", j);
    }
  }
  if (same_address(&cfg->admin.listen, &l->listen)) {
    jr_push_key(p, "listen");
    return jr_fail_value(p, listen, "address already used by admin.listen");
  }
  if (cfg->health.enabled && same_address(&cfg->health.listen, &l->listen)) {
    jr_push_key(p, "listen");
    return jr_fail_value(p, listen, "address already used by health.listen");
  }
  return true;
}

/* check_listener_limit refuses a listener cap above the process-wide one (limits are
 * read before listeners), which could never be reached. */
static bool check_listener_limit(struct jsonread *p, const struct config *cfg, size_t i) {
  uint32_t cap = cfg->listeners[i].max_connections;
  if (cap > cfg->limits.max_connections) {
    jr_push_key(p, "max_connections");
    return jr_fail(p, "%" PRIu32 ": higher than limits.max_connections (%" PRIu32 ")", cap,
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

static bool parse_listeners(struct jsonread *p, const cJSON *root, struct config *cfg) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "listeners");
  if (v == NULL) {
    return jr_fail(p, "missing required key \"listeners\"");
  }
  size_t saved = jr_push_key(p, "listeners");
  if (!cJSON_IsArray(v)) {
    return jr_fail(p, "expected an array of listeners, got %s", jr_type_name(v));
  }
  size_t count = (size_t)cJSON_GetArraySize(v);
  if (count == 0) {
    return jr_fail(p, "at least one listener is required");
  }
  cfg->listeners = jr_calloc(count, sizeof(*cfg->listeners));
  if (cfg->listeners == NULL) {
    return jr_fail_oom(p);
  }
  /* Counted before they are filled, so that config_free releases a half-read one. */
  cfg->listener_count = count;
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = jr_push_index(p, i);
    if (!parse_listener(p, e, &cfg->listeners[i]) || !check_listener_clashes(p, e, cfg, i) ||
        !check_listener_limit(p, cfg, i)) {
      return false;
    }
    jr_pop(p, saved_elem);
  }
  jr_pop(p, saved);
  return true;
}

static bool set_defaults(struct jsonread *p, struct config *cfg) {
  const char *ignored = NULL;
  netaddr_parse_hostport(&cfg->admin.listen, &ignored, DEFAULT_ADMIN_LISTEN);
  cfg->admin.lifecycle = true;
  cfg->certs.poll_interval = 5 * DURATION_SECOND;
  cfg->certs.expiry_warning = 24 * DURATION_HOUR;
  cfg->tls.min_version = TLS_VERSION_1_2;
  cfg->tls.max_version = TLS_VERSION_1_3;
  cfg->tls.session_resumption = true;
  cfg->tls.close_on_peer_expiry = true;
  cfg->limits.max_connections = 16384;
  cfg->limits.max_handshaking = 1024;
  cfg->limits.connect_timeout = 5 * DURATION_SECOND;
  cfg->limits.handshake_timeout = 10 * DURATION_SECOND;
  cfg->limits.idle_timeout = DURATION_HOUR;
  cfg->limits.drain_timeout = 20 * DURATION_SECOND;
  cfg->limits.detect_timeout = DURATION_SECOND;
  cfg->limits.hello_timeout = DURATION_SECOND;
  cfg->access_log = ACCESS_LOG_TARGET_STDOUT;
  cfg->sandbox = true;

  cfg->tls.groups = jr_calloc(2, sizeof(char *));
  if (cfg->tls.groups == NULL) {
    return jr_fail_oom(p);
  }
  cfg->tls.group_count = 2;
  return jr_replace_string(p, &cfg->tls.groups[0], "X25519") &&
         jr_replace_string(p, &cfg->tls.groups[1], "P-256") &&
         jr_replace_string(p, &cfg->trust_domain, DEFAULT_TRUST_DOMAIN) &&
         jr_replace_string(p, &cfg->certs.dir, "/var/run/mtlsd/certs") &&
         jr_replace_string(p, &cfg->certs.cert_file, "tls.crt") &&
         jr_replace_string(p, &cfg->certs.key_file, "tls.key") &&
         jr_replace_string(p, &cfg->certs.ca_file, "ca.crt");
}
static bool parse_root(struct jsonread *p, const cJSON *root, struct config *cfg) {
  if (!jr_expect_object(p, root) || !jr_check_keys(p, root, kTopKeys) ||
      !jr_get_string(p, root, "trust_domain", &cfg->trust_domain)) {
    return false;
  }
  if (!identity_trust_domain_valid(cfg->trust_domain)) {
    jr_push_key(p, "trust_domain");
    return jr_fail_value(p, cfg->trust_domain,
                         "invalid trust domain (lowercase letters, digits, '.', '-' and '_' only)");
  }
  uint32_t workers = 0;
  if (!jr_section(p, root, "admin", parse_admin, cfg) ||
      !jr_section(p, root, "health", parse_health, cfg) ||
      !jr_section(p, root, "certs", parse_certs, cfg) ||
      !jr_section(p, root, "tls", parse_tls, cfg) ||
      !jr_section(p, root, "limits", parse_limits, cfg) ||
      !jr_get_uint(p, root, "workers", 0, WORKERS_MAX, &workers) ||
      !parse_access_log(p, root, cfg) || !jr_get_bool(p, root, "sandbox", &cfg->sandbox) ||
      !parse_listeners(p, root, cfg)) {
    return false;
  }
  cfg->workers_configured = workers;
  cfg->workers = workers;
  if (workers == 0) {
    unsigned cpus = sysinfo_available_cpus();
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

/* A Kubernetes container name: an RFC 1123 label (lowercase letters, digits and '-', at
 * most 63, starting and ending with a letter or digit). */
static bool is_dns_label(const char *s, size_t len) {
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
  if (!kind_ok || slash == a->key || !is_dns_label(a->key, (size_t)(slash - a->key))) {
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
  if (!jr_get_uint(p, v, "timeoutSeconds", 1, 86400, &timeout_s)) {
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
  struct jsonread p = {.file = name, .err = err, .err_len = err_len, .hints = kSections};
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
  struct jsonread p = {.file = name, .err = err, .err_len = err_len, .hints = kSections};
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

static bool check_quantity(struct jsonread *p, const char *s) {
  return inject_quantity_valid(s)
             ? true
             : jr_fail_value(p, s, "not a resource quantity (e.g. 100m, 64Mi)");
}

static bool check_cidr(struct jsonread *p, const char *s) {
  return iptables_cidr_valid(s) ? true : jr_fail_value(p, s, "not a CIDR");
}

/* Reads a list (of strings checked by |check|, or with |ports| of port numbers) into
 * one comma-separated string, the form of the annotations and of the iptables options. */
static bool get_joined_list(struct jsonread *p, const cJSON *obj, const char *key, bool ports,
                            jr_element_check check, char **out) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) == 0) {
    return jr_fail(p, "expected a non-empty array of %s", ports ? "port numbers" : "strings");
  }
  char joined[4096] = "";
  size_t i = 0;
  for (const cJSON *e = v->child; e != NULL; e = e->next, i++) {
    size_t saved_elem = jr_push_index(p, i);
    char item[300];
    if (ports) {
      if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 1 ||
          e->valuedouble > 65535) {
        return jr_fail(p, "expected a port number (1 to 65535)");
      }
      snprintf(item, sizeof(item), "%d", (int)e->valuedouble);
    } else {
      if (!jr_expect_text(p, e) || !check(p, e->valuestring)) {
        return false;
      }
      snprintf(item, sizeof(item), "%s", e->valuestring);
    }
    size_t used = strlen(joined);
    if (used + strlen(item) + 2 >= sizeof(joined)) {
      return jr_fail(p, "too many entries");
    }
    snprintf(joined + used, sizeof(joined) - used, "%s%s", used > 0 ? "," : "", item);
    jr_pop(p, saved_elem);
  }
  jr_pop(p, saved);
  return jr_replace_string(p, out, joined);
}

static bool get_quantities(struct jsonread *p, const cJSON *obj, const char *key, char **cpu,
                           char **memory) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, key);
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kQuantityKeys) ||
      !jr_get_string(p, v, "cpu", cpu) || !jr_get_string(p, v, "memory", memory)) {
    return false;
  }
  const char *values[] = {*cpu, *memory};
  const char *names[] = {"cpu", "memory"};
  for (size_t i = 0; i < 2; i++) {
    if (values[i] != NULL) {
      size_t inner = jr_push_key(p, names[i]);
      if (!check_quantity(p, values[i])) {
        return false;
      }
      jr_pop(p, inner);
    }
  }
  jr_pop(p, saved);
  return true;
}

/* The objects of "sidecar" that the injector lets through only in part (jr_section's
 * parsers; no |ctx|). */
static bool check_sidecar_admin(struct jsonread *p, const cJSON *v, void *ctx) {
  (void)ctx;
  return jr_expect_object(p, v) && jr_check_keys(p, v, kSidecarAdminKeys);
}

static bool check_sidecar_certs(struct jsonread *p, const cJSON *v, void *ctx) {
  (void)ctx;
  return jr_expect_object(p, v) && jr_check_keys(p, v, kSidecarCertsKeys);
}

/* Reads "sidecar", the base of every injected sidecar's configuration, and validates it
 * the way the sidecar will read it (with a listener, as a whole document must have). */
static bool parse_sidecar_base(struct jsonread *p, const cJSON *root, struct injector_file *f) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, "sidecar");
  if (v == NULL) {
    return true;
  }
  size_t saved = jr_push_key(p, "sidecar");
  if (!jr_expect_object(p, v) || !jr_check_keys(p, v, kSidecarKeys) ||
      !jr_section(p, v, "admin", check_sidecar_admin, NULL) ||
      !jr_section(p, v, "certs", check_sidecar_certs, NULL)) {
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
    return jr_fail_oom(p);
  }
  char where[1024];
  snprintf(where, sizeof(where), "%s: sidecar", p->file);
  struct config *cfg = config_parse(where, text, strlen(text), p->err, p->err_len);
  free(text);
  config_free(cfg);
  if (cfg == NULL) {
    return false;
  }
  jr_pop(p, saved);
  return true;
}

static bool parse_injector(struct jsonread *p, const cJSON *root, struct injector_file *f) {
  static const char *const kPolicies[] = {"IfNotPresent", "Always", "Never", NULL};
  int policy = -1;
  bool native = false;
  if (!jr_expect_object(p, root) || !jr_check_keys(p, root, kInjectorKeys) ||
      !jr_get_string(p, root, "image", &f->image) ||
      !jr_get_choice(p, root, "image_pull_policy", kPolicies, "invalid pull policy",
                     "\"IfNotPresent\", \"Always\" or \"Never\"", &policy) ||
      !jr_get_string(p, root, "trust_domain", &f->trust_domain) ||
      !jr_get_string(p, root, "namespace", &f->namespace) ||
      !jr_get_bool(p, root, "native_sidecar", &native)) {
    return false;
  }
  if (policy >= 0 && !jr_replace_string(p, &f->pull_policy, kPolicies[policy])) {
    return false;
  }
  f->native_sidecar = jr_has_key(root, "native_sidecar") ? native : -1;
  bool api_server = true;
  if (!jr_get_bool(p, root, "exclude_api_server", &api_server)) {
    return false;
  }
  f->exclude_api_server = api_server;
  bool ipv6 = true;
  if (!jr_get_bool(p, root, "ipv6", &ipv6) || !parse_sidecar_base(p, root, f)) {
    return false;
  }
  f->ipv6 = ipv6;
  if (f->trust_domain != NULL && !identity_trust_domain_valid(f->trust_domain)) {
    jr_push_key(p, "trust_domain");
    return jr_fail_value(p, f->trust_domain, "invalid trust domain");
  }
  if (f->namespace != NULL && !is_dns_label(f->namespace, strlen(f->namespace))) {
    jr_push_key(p, "namespace");
    return jr_fail_value(p, f->namespace, "not a namespace name");
  }
  const cJSON *res = cJSON_GetObjectItemCaseSensitive(root, "resources");
  if (res != NULL) {
    size_t saved = jr_push_key(p, "resources");
    if (!jr_expect_object(p, res) || !jr_check_keys(p, res, kResourceKeys) ||
        !get_quantities(p, res, "requests", &f->cpu_request, &f->memory_request) ||
        !get_quantities(p, res, "limits", &f->cpu_limit, &f->memory_limit)) {
      return false;
    }
    jr_pop(p, saved);
  }
  const cJSON *certs = cJSON_GetObjectItemCaseSensitive(root, "certs");
  if (certs != NULL) {
    size_t saved = jr_push_key(p, "certs");
    if (!jr_expect_object(p, certs) || !jr_check_keys(p, certs, kInjectorCertKeys) ||
        !jr_get_string(p, certs, "csi_driver", &f->csi_driver)) {
      return false;
    }
    jr_pop(p, saved);
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
  int r = file_read_all(path, JSONREAD_FILE_MAX, 0, &text, &len);
  if (r != 0) {
    (void)snprintf(err, err_len, "%s: cannot read: %s", path, file_error_string(r));
    return NULL;
  }
  struct jsonread p = {.file = path, .err = err, .err_len = err_len, .hints = kSections};
  cJSON *root = jr_parse_document(&p, (const char *)text, len);
  free(text);
  struct injector_file *f = root != NULL ? jr_calloc(1, sizeof(*f)) : NULL;
  if (root != NULL && f == NULL) {
    jr_fail_oom(&p);
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

/* --- entry points ------------------------------------------------------------------- */

struct config *config_parse(const char *path, const char *json, size_t json_len, char *err,
                            size_t err_len) {
  struct jsonread p = {.file = path, .err = err, .err_len = err_len, .hints = kSections};
  struct config *cfg = NULL;
  cJSON *root = jr_parse_document(&p, json, json_len);
  if (root == NULL) {
    goto err;
  }
  cfg = jr_calloc(1, sizeof(*cfg));
  if (cfg == NULL) {
    jr_fail_oom(&p);
    goto err;
  }
  if (!jr_replace_string(&p, &cfg->path, path) || !set_defaults(&p, cfg) ||
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
  struct jsonread p = {.file = certs_dir, .err = err, .err_len = err_len};
  struct config *cfg = jr_calloc(1, sizeof(*cfg));
  if (cfg == NULL) {
    jr_fail_oom(&p);
    return NULL;
  }
  if (!jr_replace_string(&p, &cfg->path, certs_dir) || !set_defaults(&p, cfg) ||
      !jr_replace_string(&p, &cfg->certs.dir, certs_dir)) {
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
  int r = file_read_all(path, JSONREAD_FILE_MAX, 0, &text, &len);
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
