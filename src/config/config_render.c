/* config_render: the effective configuration as JSON, defaults filled in, for GET
 * /config and `mtlsd check` (see config_to_json in mtlsd/config.h). */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>

#include "mtlsd/config/config.h"

/* The add_* helpers build the /config document; the first allocation failure clears
 * |*ok| and later calls do nothing, so that config_to_json checks once at the end. */

static cJSON *add_object(cJSON *parent, const char *key, bool *ok) {
  cJSON *o = *ok ? cJSON_AddObjectToObject(parent, key) : NULL;
  *ok = o != NULL;
  return o;
}

static void add_string(cJSON *obj, const char *key, const char *value, bool *ok) {
  *ok = *ok && cJSON_AddStringToObject(obj, key, value) != NULL;
}

static void add_bool(cJSON *obj, const char *key, bool value, bool *ok) {
  *ok = *ok && cJSON_AddBoolToObject(obj, key, value) != NULL;
}

static void add_number(cJSON *obj, const char *key, double value, bool *ok) {
  *ok = *ok && cJSON_AddNumberToObject(obj, key, value) != NULL;
}

static void add_duration(cJSON *obj, const char *key, duration_ms value, bool *ok) {
  char text[32];
  duration_format(text, sizeof(text), value);
  add_string(obj, key, text, ok);
}

static void add_hostport(cJSON *obj, const char *key, const struct hostport *hp, bool *ok) {
  char text[NETADDR_HOSTPORT_MAX];
  add_string(obj, key, netaddr_format_hostport(text, sizeof(text), hp), ok);
}

static void add_string_list(cJSON *obj, const char *key, const char *const *list, size_t count,
                            bool *ok) {
  if (!*ok) {
    return;
  }
  cJSON *array = cJSON_AddArrayToObject(obj, key);
  *ok = array != NULL;
  for (size_t i = 0; *ok && i < count; i++) {
    cJSON *s = cJSON_CreateString(list[i]);
    *ok = s != NULL && cJSON_AddItemToArray(array, s);
    if (!*ok) {
      cJSON_Delete(s);
    }
  }
}

static void add_listener(cJSON *array, const struct listener_config *l, bool *ok) {
  if (!*ok) {
    return;
  }
  cJSON *o = cJSON_CreateObject();
  *ok = o != NULL && cJSON_AddItemToArray(array, o);
  if (!*ok) {
    cJSON_Delete(o);
    return;
  }
  bool outbound = l->mode == LISTENER_OUTBOUND;
  add_string(o, "name", l->name, ok);
  add_string(o, "mode", config_mode_name(l->mode), ok);
  add_hostport(o, "listen", &l->listen, ok);
  add_bool(o, "transparent", l->transparent, ok);
  if (l->max_connections != 0) {
    add_number(o, "max_connections", l->max_connections, ok);
  }
  /* Only the keys the listener's kind accepts, so that the output loads back. */
  if (outbound) {
    if (l->has_upstream) {
      add_hostport(o, "upstream", &l->upstream, ok);
    }
    if (l->server_identity != NULL) {
      add_string(o, "server_identity", l->server_identity, ok);
    }
    return;
  }
  if (l->has_forward) {
    add_hostport(o, "forward", &l->forward, ok);
  }
  if (l->forward_host != NULL) {
    add_string(o, "forward_host", l->forward_host, ok);
  }
  if (l->allow != NULL) {
    add_string_list(o, "allow", (const char *const *)l->allow, l->allow_count, ok);
  }
  add_bool(o, "proxy_protocol", l->proxy_protocol, ok);
  add_bool(o, "permissive", l->permissive, ok);
}

char *config_to_json(const struct config *cfg) {
  bool ok = true;
  cJSON *root = cJSON_CreateObject();
  if (root == NULL) {
    return NULL;
  }
  add_string(root, "trust_domain", cfg->trust_domain, &ok);

  cJSON *admin = add_object(root, "admin", &ok);
  add_hostport(admin, "listen", &cfg->admin.listen, &ok);
  add_bool(admin, "lifecycle", cfg->admin.lifecycle, &ok);

  if (cfg->health.enabled) {
    cJSON *health = add_object(root, "health", &ok);
    add_hostport(health, "listen", &cfg->health.listen, &ok);
  }

  cJSON *certs = add_object(root, "certs", &ok);
  add_string(certs, "dir", cfg->certs.dir, &ok);
  add_string(certs, "cert_file", cfg->certs.cert_file, &ok);
  add_string(certs, "key_file", cfg->certs.key_file, &ok);
  add_string(certs, "ca_file", cfg->certs.ca_file, &ok);
  add_duration(certs, "poll_interval", cfg->certs.poll_interval, &ok);
  add_duration(certs, "expiry_warning", cfg->certs.expiry_warning, &ok);

  cJSON *tls = add_object(root, "tls", &ok);
  add_string(tls, "min_version", config_tls_version_name(cfg->tls.min_version), &ok);
  add_string(tls, "max_version", config_tls_version_name(cfg->tls.max_version), &ok);
  /* The default is shown as the list it stands for: /config is where an operator checks
   * what is actually in effect. */
  if (cfg->tls.cipher_suites != NULL) {
    add_string_list(tls, "cipher_suites", (const char *const *)cfg->tls.cipher_suites,
                    cfg->tls.cipher_suite_count, &ok);
  } else {
    size_t count;
    const char *const *suites = config_default_cipher_suites(&count);
    add_string_list(tls, "cipher_suites", suites, count, &ok);
  }
  add_string_list(tls, "groups", (const char *const *)cfg->tls.groups, cfg->tls.group_count, &ok);
  add_bool(tls, "session_resumption", cfg->tls.session_resumption, &ok);
  add_bool(tls, "close_on_peer_expiry", cfg->tls.close_on_peer_expiry, &ok);

  cJSON *listeners = ok ? cJSON_AddArrayToObject(root, "listeners") : NULL;
  ok = listeners != NULL;
  for (size_t i = 0; ok && i < cfg->listener_count; i++) {
    add_listener(listeners, &cfg->listeners[i], &ok);
  }

  cJSON *limits = add_object(root, "limits", &ok);
  add_number(limits, "max_connections", cfg->limits.max_connections, &ok);
  add_number(limits, "max_handshaking", cfg->limits.max_handshaking, &ok);
  add_duration(limits, "connect_timeout", cfg->limits.connect_timeout, &ok);
  add_duration(limits, "handshake_timeout", cfg->limits.handshake_timeout, &ok);
  add_duration(limits, "idle_timeout", cfg->limits.idle_timeout, &ok);
  add_duration(limits, "drain_timeout", cfg->limits.drain_timeout, &ok);
  add_duration(limits, "detect_timeout", cfg->limits.detect_timeout, &ok);
  add_duration(limits, "hello_timeout", cfg->limits.hello_timeout, &ok);

  add_number(root, "workers", cfg->workers_configured, &ok);
  add_bool(root, "sandbox", cfg->sandbox, &ok);
  switch (cfg->access_log) {
    case ACCESS_LOG_TARGET_OFF:
      add_string(root, "access_log", "off", &ok);
      break;
    case ACCESS_LOG_TARGET_STDOUT:
      add_string(root, "access_log", "stdout", &ok);
      break;
    case ACCESS_LOG_TARGET_STDERR:
      add_string(root, "access_log", "stderr", &ok);
      break;
    case ACCESS_LOG_TARGET_FILE:
      add_string(root, "access_log", cfg->access_log_path, &ok);
      break;
  }

  char *text = ok ? cJSON_Print(root) : NULL;
  cJSON_Delete(root);
  return text;
}
