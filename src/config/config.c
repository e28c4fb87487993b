/* config: the sidecar's JSON configuration file, loaded strictly (see mtlsd/config.h and
 * docs/configuration.md): the schema, its defaults and the checks that span sections.
 * The reading itself (the JSON path, the typed getters, the messages) is jsonread's. */
#include "mtlsd/config/config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/file.h"
#include "mtlsd/base/identity.h"
#include "mtlsd/base/jsonread.h"
#include "mtlsd/os/sysinfo.h"

enum {
  NAME_LEN_MAX = 64, /* Listener names end up in metric labels and log lines. */
  WORKERS_MAX = 256,
  MAX_CONNECTIONS_MAX = 1000000,
  POLL_INTERVAL_MIN_MS = 100,
};

#define DEFAULT_TRUST_DOMAIN "cluster.local"
#define DEFAULT_ADMIN_LISTEN "127.0.0.1:" MTLSD_TEXT(MTLSD_ADMIN_PORT)

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

const struct jr_hint *config_key_hints(void) {
  return kSections;
}

void config_free_app_probes(struct app_probe *probes, size_t count) {
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
  config_free_app_probes(cfg->app_probes, cfg->app_probe_count);
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
         jr_replace_string(p, &cfg->certs.dir, MTLSD_CERTS_DIR) &&
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
