/* config: the JSON configuration file (docs/configuration.md), loaded strictly into an
 * immutable struct with every default filled in.
 *
 * Owns struct config and everything it points to: config_load allocates it, config_free
 * releases it, and nothing changes it in between, so every thread may read it without
 * locks. Every error names the file, the JSON path and the problem, e.g.
 *   config.json: listeners[1].listen: "0.0.0.0:99999": port out of range */
#ifndef MTLSD_CONFIG_H
#define MTLSD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mtlsd/base/duration.h"
#include "mtlsd/base/log.h"
#include "mtlsd/base/netaddr.h"

enum listener_mode { LISTENER_OUTBOUND, LISTENER_INBOUND };

enum tls_version { TLS_VERSION_1_2, TLS_VERSION_1_3 };

struct listener_config {
  char *name;
  enum listener_mode mode;
  struct hostport listen; /* Always an IP literal. */
  bool transparent;
  /* Explicit outbound: where to connect (a name is resolved at connect time). */
  bool has_upstream;
  struct hostport upstream;
  /* Explicit inbound: where to relay plaintext. */
  bool has_forward;
  struct hostport forward;
  /* Transparent inbound: the host to relay to instead of the original destination
   * address, on the original destination port (an IP literal or a DNS name). NULL, the
   * default, relays to the original destination itself (the pod's own address), so that
   * ports the application bound to loopback only stay out of the mesh's reach. */
  char *forward_host;
  bool forward_host_is_ip;
  /* Inbound: exact identities or prefixes ending in "/ *"; NULL when absent, meaning
   * "any identity in the trust domain". */
  char **allow;
  size_t allow_count;
  /* Outbound: the exact identity the server must have; NULL means "any in the trust
   * domain". */
  char *server_identity;
  bool proxy_protocol;
  /* Inbound: a connection whose first byte is not a TLS handshake record (or that sends
   * nothing within limits.detect_timeout) is relayed as plaintext, with no identity. */
  bool permissive;
  /* Connections this listener may hold at once, on all workers; 0: only the process-wide
   * limits.max_connections applies. */
  uint32_t max_connections;
};

/* An application container's original Kubernetes probe, run by the sidecar for the
 * health port's /app-health/<container>/<kind> (docs/admin.md), or its original
 * postStart or preStop handler, for /app-lifecycle/<container>/<hook>. Read from
 * MTLSD_APP_PROBES by app_probes (mtlsd/app_probes.h); declared here because struct config
 * holds them and config_free frees them. */
enum app_probe_type { APP_PROBE_HTTP, APP_PROBE_TCP, APP_PROBE_GRPC };

struct app_probe_header {
  char *name;
  char *value;
};

struct app_probe {
  char *key;       /* "<container>/<kind>", as in the URL. */
  char *container; /* A DNS label. */
  char *kind;      /* "livez", "readyz", "startupz"; or the hooks "poststartz", "prestopz". */
  enum app_probe_type type;
  char *host; /* The probe's own host; NULL: POD_IP from the environment, else 127.0.0.1. */
  uint16_t port;
  char *path; /* httpGet; "/" when absent. */
  bool https; /* httpGet scheme HTTPS: TLS, the certificate not verified (as the kubelet). */
  struct app_probe_header *headers; /* httpGet httpHeaders, in order. */
  size_t header_count;
  char *service;       /* grpc; "" when absent. */
  duration_ms timeout; /* timeoutSeconds; 1 s when absent (30 s for a hook). */
};

/* Where the certificate files are and how they are watched (docs/configuration.md, certs). */
struct certs_config {
  char *dir;
  char *cert_file;
  char *key_file;
  char *ca_file;
  duration_ms poll_interval;
  duration_ms expiry_warning;
};

struct config {
  char *path; /* The file it was loaded from, for messages. */
  char *trust_domain;

  struct {
    struct hostport listen;
    bool lifecycle; /* POST endpoints enabled. */
  } admin;

  struct certs_config certs;

  /* The read-only health port on the pod's address (docs/admin.md); off unless set. */
  struct {
    bool enabled;
    struct hostport listen;
  } health;

  struct {
    enum tls_version min_version;
    enum tls_version max_version;
    /* TLS 1.2 suite names; NULL means the AEAD-only default,
     * config_default_cipher_suites. */
    char **cipher_suites;
    size_t cipher_suite_count;
    char **groups; /* Never NULL: "X25519", "P-256" and/or "P-384". */
    size_t group_count;
    bool session_resumption;
    bool close_on_peer_expiry;
  } tls;

  struct listener_config *listeners;
  size_t listener_count;

  struct {
    uint32_t max_connections;
    /* Connections per listener that may be between accept and the end of their TLS
     * handshake at once; beyond it a new one takes the slot of the oldest, so idle or slow
     * handshakes never lock out a peer that completes its own promptly. */
    uint32_t max_handshaking;
    duration_ms connect_timeout;
    duration_ms handshake_timeout;
    duration_ms idle_timeout;
    duration_ms drain_timeout;
    /* Permissive listeners: how long to wait for a first byte before taking the
     * connection for plaintext from a server-first protocol. */
    duration_ms detect_timeout;
    /* Strict inbound: how long a new connection may stay silent before its ClientHello. */
    duration_ms hello_timeout;
  } limits;

  unsigned workers; /* Resolved: never 0 after loading (0 in the file means one per CPU). */
  unsigned workers_configured; /* As written, for /config. */

  /* From MTLSD_APP_PROBES (config_parse_app_probes in mtlsd/app_probes.h), not from the
   * configuration file. */
  struct app_probe *app_probes;
  size_t app_probe_count;
  /* From MTLSD_APP_METRICS (config_parse_app_metrics): where the health port's /metrics
   * fetches the application's own metrics on the pod's address. port 0: not set. */
  struct {
    uint16_t port;
    char *path;
  } app_metrics;

  /* The webhook's configuration (config_serving): no listeners, the webhook's metrics. */
  bool webhook;
  /* Confine the process once its sockets are bound (the sandbox module); false only
   * for debugging (strace, gdb). */
  bool sandbox;

  enum log_access_target access_log;
  char *access_log_path; /* For ACCESS_LOG_TARGET_FILE, as written (relative to the working
                          * directory when not absolute); NULL otherwise. */
};

/* config_load reads and validates the JSON file at |path|. On success it returns a new
 * config that the caller frees with config_free. On failure it returns NULL and writes
 * one line (no trailing newline) describing the first error into |err| (|err_len|
 * bytes), in the form "FILE: JSON.PATH: problem". */
struct config *config_load(const char *path, char *err, size_t err_len);

/* config_parse is config_load on a buffer already in memory; |path| is only used in
 * messages. */
struct config *config_parse(const char *path, const char *json, size_t json_len, char *err,
                            size_t err_len);

/* config_serving returns the configuration of a process that only serves HTTPS with the
 * certificate in |certs_dir| (`mtlsd webhook`): the defaults (TLS settings, certificate
 * file names, polling), no trust bundle (certs.ca_file NULL), no listeners, and |webhook|
 * set. NULL with the reason in |err| when out of memory. Free with config_free. */
struct config *config_serving(const char *certs_dir, char *err, size_t err_len);

/* config_free releases |cfg| and everything it owns; NULL is a no-op. */
void config_free(struct config *cfg);

/* config_to_json renders the effective configuration, defaults filled in, as a JSON
 * text that the caller frees with free(). It uses the input's keys, with durations in
 * their largest exact unit ("90s" becomes "90s", "120s" becomes "2m") and the default
 * cipher suites spelled out, so that config_parse reads it back to the same settings.
 * Returns NULL on allocation failure. */
char *config_to_json(const struct config *cfg);

/* config_mode_name and config_tls_version_name return the configuration's spelling of
 * a listener mode ("outbound") and of a TLS version ("1.3"). */
const char *config_mode_name(enum listener_mode mode);
const char *config_tls_version_name(enum tls_version version);

/* config_is_own_port returns whether |port| is one that mtlsd itself listens on (a
 * listener or the admin port, on any address): a transparent connection whose original
 * destination is such a port must be refused, or a peer could reach the pod's outbound
 * listeners (and borrow its identity) or its admin port through the inbound path. */
bool config_is_own_port(const struct config *cfg, uint16_t port);

/* config_default_cipher_suites returns the TLS 1.2 suites that tls.cipher_suites == NULL
 * stands for, in preference order: every suite the configuration accepts (ECDHE with an
 * AEAD cipher). |*out_count| receives their number. The array is static; do not free. */
const char *const *config_default_cipher_suites(size_t *out_count);

/* config_free_app_probes frees |probes|, |count| of them, and all they point to. */
void config_free_app_probes(struct app_probe *probes, size_t count);

/* config_key_hints returns the keys of each of the file's objects, for jsonread's "unknown
 * key (it belongs in \"limits\")" hints. The readers of MTLSD_APP_PROBES and of the
 * injector's file pass it too, as they did when they shared config.c; the hints it gives
 * there name the sidecar's objects. */
struct jr_hint;
const struct jr_hint *config_key_hints(void);

#endif
