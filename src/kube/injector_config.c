/* injector_config: the injector's configuration file, read strictly (see
 * mtlsd/injector_config.h). */
#include "mtlsd/kube/injector_config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/file.h"
#include "mtlsd/base/identity.h"
#include "mtlsd/base/jsonread.h"
#include "mtlsd/config/app_probes.h"
#include "mtlsd/config/config.h"
#include "mtlsd/kube/inject.h"
#include "mtlsd/kube/iptables.h"

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

void injector_config_free(struct injector_file *f) {
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
      "\"listen\":\"127.0.0.1:" MTLSD_TEXT(MTLSD_OUTBOUND_PORT) "\",\"transparent\":true}]");
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
  if (f->namespace != NULL && !app_probes_dns_label_valid(f->namespace, strlen(f->namespace))) {
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

struct injector_file *injector_config_load(const char *path, char *err, size_t err_len) {
  size_t len = 0;
  uint8_t *text = NULL;
  int r = file_read_all(path, JSONREAD_FILE_MAX, 0, &text, &len);
  if (r != 0) {
    (void)snprintf(err, err_len, "%s: cannot read: %s", path, file_error_string(r));
    return NULL;
  }
  struct jsonread p = {.file = path, .err = err, .err_len = err_len, .hints = config_key_hints()};
  cJSON *root = jr_parse_document(&p, (const char *)text, len);
  free(text);
  struct injector_file *f = root != NULL ? jr_calloc(1, sizeof(*f)) : NULL;
  if (root != NULL && f == NULL) {
    jr_fail_oom(&p);
  }
  if (f != NULL) {
    f->native_sidecar = -1;
    if (!parse_injector(&p, root, f)) {
      injector_config_free(f);
      f = NULL;
    }
  }
  cJSON_Delete(root);
  return f;
}
