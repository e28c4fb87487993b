/* inject: the mutation of a pod (see mtlsd/inject.h).
 *
 * The operations come in an order that keeps every path valid when they are applied one
 * after the other: the annotations and the label, the rewrites of probes and hooks of the
 * application containers and native sidecars (at their original indices), the volume, the
 * pod's fsGroup, the init containers, and last, without native sidecars, the sidecar at
 * the front of the containers. */
#include "mtlsd/inject.h"

#include "mtlsd/json_alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/identity.h"
#include "mtlsd/iptables.h"

#define ANNOTATION_PREFIX "mtlsd.io/"
#define PROXY_UID 1337
#define HEALTH_PORT 15020
#define CERTS_VOLUME "mtlsd-certs"
#define CERTS_PATH "/var/run/mtlsd/certs"
#define SIDECAR_NAME "mtlsd"
#define INIT_NAME "mtlsd-init"
#define INJECTED_LABEL "mtlsd.io/injected"
/* The kubelet's default terminationGracePeriodSeconds. */
#define DEFAULT_GRACE_SECONDS 30
/* The longest timeoutSeconds, and path, the sidecar takes from MTLSD_APP_PROBES and
 * MTLSD_APP_METRICS: more would stop it at start-up. */
#define PROBE_TIMEOUT_MAX_SECONDS 86400
#define METRICS_PATH_MAX 1024

enum { POINTER_MAX = 512 };

void inject_config_default(struct inject_config *cfg) {
  *cfg = (struct inject_config){
      .image = "mtlsd:" MTLSD_VERSION,
      .pull_policy = "IfNotPresent",
      .trust_domain = "cluster.local",
      .own_namespace = "mtlsd-system",
      .native_sidecar = true,
      .ipv6 = true,
      .exclude_api_server = true,
      .cpu_request = "50m",
      .memory_request = "32Mi",
      .memory_limit = "256Mi",
      .csi_driver = "spiffe.csi.cert-manager.io",
  };
}

void inject_result_clear(struct inject_result *r) {
  cJSON_Delete(r->patch);
  r->patch = NULL;
}

/* ---- Building JSON ----
 *
 * cJSON leaves an item it could not attach (its key could not be copied, or the parent
 * itself failed to be made) to the caller; these free it then, so that an allocation
 * failure loses nothing but the patch, which json_alloc's count then refuses whole. */

static void json_attach(cJSON *obj, const char *key, cJSON *item) {
  if (!cJSON_AddItemToObject(obj, key, item)) {
    cJSON_Delete(item);
  }
}

static void json_append(cJSON *array, cJSON *item) {
  if (!cJSON_AddItemToArray(array, item)) {
    cJSON_Delete(item);
  }
}

static void json_replace(cJSON *obj, const char *key, cJSON *item) {
  if (!cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item)) {
    cJSON_Delete(item);
  }
}

/* Sets |obj|'s member |key| to |value|, replacing one that is there. */
static void set_member(cJSON *obj, const char *key, cJSON *value) {
  if (cJSON_GetObjectItemCaseSensitive(obj, key) != NULL) {
    json_replace(obj, key, value);
  } else {
    json_attach(obj, key, value);
  }
}

/* |obj|'s object member |key|, added when missing. */
static cJSON *object_member(cJSON *obj, const char *key) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsObject(v) ? v : cJSON_AddObjectToObject(obj, key);
}

/* ---- JSON pointers (RFC 6901) ---- */

/* Appends "/token" to |ptr|, escaping "~" and "/"; false when it does not fit. */
static bool ptr_push(char *ptr, const char *token) {
  size_t n = strlen(ptr);
  if (n + 1 >= POINTER_MAX) {
    return false;
  }
  ptr[n++] = '/';
  for (const char *c = token; *c != '\0'; c++) {
    const char *esc = *c == '~' ? "~0" : *c == '/' ? "~1" : NULL;
    size_t len = esc != NULL ? 2 : 1;
    if (n + len >= POINTER_MAX) {
      return false;
    }
    memcpy(ptr + n, esc != NULL ? esc : c, len);
    n += len;
  }
  ptr[n] = '\0';
  return true;
}

static void ptr_join(char *out, const char *base, const char *token) {
  snprintf(out, POINTER_MAX, "%s", base);
  if (!ptr_push(out, token)) {
    out[0] = '\0';
  }
}

/* ---- The mutation ---- */

struct mutation {
  const struct inject_config *cfg;
  struct inject_result *out;
  cJSON *patch;
  char meta_ptr[64];
  char spec_ptr[64];
  const cJSON *meta;
  const cJSON *spec;
  const cJSON *annotations;
  const cJSON *labels;
  bool job; /* A Job's or CronJob's pod: it must end for the Job to complete. */
  bool native;
  bool rewrite_probes;
  double grace_seconds; /* The pod's terminationGracePeriodSeconds: a hook's timeout. */
  cJSON *app_probes;    /* MTLSD_APP_PROBES, built while rewriting. */
  cJSON *app_metrics;   /* MTLSD_APP_METRICS, or NULL. */
};

static bool settle(struct mutation *m, enum inject_outcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Records the outcome (once: the first reason stands) and returns false, so that a
 * check can "return settle(...)". */
static bool settle(struct mutation *m, enum inject_outcome outcome, const char *fmt, ...) {
  if (m->out->reason[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->out->reason, sizeof(m->out->reason), fmt, ap);
    va_end(ap);
    m->out->outcome = outcome;
  }
  return false;
}

/* |obj|'s member |key|, NULL when it is absent or null: Kubernetes reads a null as an
 * absent field ("annotations:" with nothing under it, as Helm renders an empty value). */
static cJSON *field(const cJSON *obj, const char *key) {
  cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsNull(v) ? NULL : v;
}

static void warn(struct mutation *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void warn(struct mutation *m, const char *fmt, ...) {
  struct inject_result *r = m->out;
  if (r->warning_count < INJECT_WARNINGS_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->warnings[r->warning_count++], sizeof(r->warnings[0]), fmt, ap);
    va_end(ap);
  }
}

static const char *string_member(const cJSON *obj, const char *key) {
  const cJSON *v = field(obj, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const char *annotation(const struct mutation *m, const char *key) {
  return string_member(m->annotations, key);
}

/* Adds the operation {"op": "add", "path": |path|, "value": |value|} (taking |value|). */
static bool add_op(struct mutation *m, const char *path, cJSON *value) {
  cJSON *op = cJSON_CreateObject();
  if (op == NULL || value == NULL || path[0] == '\0' ||
      cJSON_AddStringToObject(op, "op", "add") == NULL ||
      cJSON_AddStringToObject(op, "path", path) == NULL) {
    cJSON_Delete(op);
    cJSON_Delete(value);
    return settle(m, INJECT_REFUSED, "out of memory");
  }
  json_attach(op, "value", value);
  json_append(m->patch, op);
  return true;
}

/* The API group of |object|'s apiVersion ("apps" of "apps/v1", "" of "v1"); NULL when it
 * has none. */
static const char *api_group(const cJSON *object, char *buf, size_t len) {
  const char *version = string_member(object, "apiVersion");
  if (version == NULL) {
    return NULL;
  }
  const char *slash = strchr(version, '/');
  snprintf(buf, len, "%.*s", slash != NULL ? (int)(slash - version) : 0, version);
  return buf;
}

/* Finds the pod template of |object| by its kind and API group: a custom resource named
 * like a workload (Volcano's batch.volcano.sh Job) is none of these. An object without an
 * apiVersion (a fragment) is matched by its kind alone. */
static bool find_template(struct mutation *m, const cJSON *object) {
  static const struct {
    const char *kind;
    const char *group;
    const char *path; /* Of the pod template; "" for a Pod itself. */
  } kKinds[] = {
      {"Pod", "", ""},
      {"Deployment", "apps", "/spec/template"},
      {"StatefulSet", "apps", "/spec/template"},
      {"DaemonSet", "apps", "/spec/template"},
      {"ReplicaSet", "apps", "/spec/template"},
      {"ReplicationController", "", "/spec/template"},
      {"Job", "batch", "/spec/template"},
      {"CronJob", "batch", "/spec/jobTemplate/spec/template"},
      {"DeploymentConfig", "apps.openshift.io", "/spec/template"},
  };
  const char *kind = string_member(object, "kind");
  char group_buf[256];
  const char *group = api_group(object, group_buf, sizeof(group_buf));
  bool named_like_one = false;
  for (size_t i = 0; kind != NULL && i < sizeof(kKinds) / sizeof(kKinds[0]); i++) {
    if (strcmp(kind, kKinds[i].kind) != 0) {
      continue;
    }
    named_like_one = true;
    if (group != NULL && strcmp(group, kKinds[i].group) != 0) {
      continue;
    }
    m->job = strcmp(kKinds[i].group, "batch") == 0;
    const cJSON *tmpl = object;
    char path[64];
    snprintf(path, sizeof(path), "%s", kKinds[i].path);
    char *save = NULL;
    for (char *tok = strtok_r(path, "/", &save); tok != NULL && tmpl != NULL;
         tok = strtok_r(NULL, "/", &save)) {
      tmpl = field(tmpl, tok);
    }
    snprintf(m->meta_ptr, sizeof(m->meta_ptr), "%s/metadata", kKinds[i].path);
    snprintf(m->spec_ptr, sizeof(m->spec_ptr), "%s/spec", kKinds[i].path);
    m->meta = field(tmpl, "metadata");
    m->spec = field(tmpl, "spec");
    if (!cJSON_IsObject(m->spec) || !cJSON_IsArray(field(m->spec, "containers"))) {
      return settle(m, INJECT_REFUSED, "%s has no pod spec with containers at %s/spec", kind,
                    kKinds[i].path[0] != '\0' ? kKinds[i].path : "");
    }
    m->annotations = field(m->meta, "annotations");
    m->labels = field(m->meta, "labels");
    /* What the patch adds to must have the type the API gives it: adding to anything
     * else would replace it. */
    static const struct {
      const char *what;
      bool array;
    } kShapes[] = {{"metadata", false},
                   {"metadata.annotations", false},
                   {"metadata.labels", false},
                   {"spec.initContainers", true},
                   {"spec.volumes", true}};
    const cJSON *nodes[] = {m->meta, m->annotations, m->labels, field(m->spec, "initContainers"),
                            field(m->spec, "volumes")};
    for (size_t s = 0; s < sizeof(kShapes) / sizeof(kShapes[0]); s++) {
      if (nodes[s] != NULL &&
          !(kShapes[s].array ? cJSON_IsArray(nodes[s]) : cJSON_IsObject(nodes[s]))) {
        return settle(m, INJECT_REFUSED, "%s of the pod%s is not an %s", kShapes[s].what,
                      kKinds[i].path[0] != '\0' ? " template" : "",
                      kShapes[s].array ? "array" : "object");
      }
    }
    return true;
  }
  if (named_like_one) {
    snprintf(m->out->reason, sizeof(m->out->reason),
             "a %s of the API group %s is a custom resource, not a pod or a workload", kind, group);
  } else {
    snprintf(m->out->reason, sizeof(m->out->reason), "a %s is not a pod or a workload",
             kind != NULL ? kind : "document without a kind");
  }
  return false;
}

/* ---- Annotations ---- */

/* Copies the next comma-separated item of |*p| into |item|, the spaces and tabs around it
 * trimmed (people write "a, b"), and moves |*p| past it; false at the end of the list.
 * An item too long for |item| comes out empty, which every check refuses. */
static bool next_item(const char **p, char *item, size_t cap) {
  if (*p == NULL) {
    return false;
  }
  size_t len = strcspn(*p, ",");
  const char *start = *p;
  *p = start[len] == ',' ? start + len + 1 : NULL;
  while (len > 0 && (*start == ' ' || *start == '\t')) {
    start++;
    len--;
  }
  while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t')) {
    len--;
  }
  snprintf(item, cap, "%.*s", len < cap ? (int)len : 0, start);
  return true;
}

/* Calls |valid| on each comma-separated item of |s| (which must have one at least); the
 * first it refuses goes to |bad|. */
static bool each_valid(const char *s, bool (*valid)(const char *item), char *bad, size_t bad_len) {
  char item[300];
  for (const char *p = s; next_item(&p, item, sizeof(item));) {
    if (item[0] == '\0' || !valid(item)) {
      snprintf(bad, bad_len, "\"%.100s\" is not one", item);
      return false;
    }
  }
  return true;
}

static bool allow_entry_valid(const char *item) {
  return identity_pattern_valid(item, NULL);
}

/* A Kubernetes resource quantity: a decimal number and an optional suffix (binary Ki..Ei,
 * decimal m, k, M..E, or an exponent e3/E3). */
bool inject_quantity_valid(const char *s) {
  static const char *const kSuffixes[] = {"",   "m",  "k",  "M",  "G",  "T",  "P", "E",
                                          "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", NULL};
  const char *p = s;
  bool digits = false, dot = false;
  for (; (*p >= '0' && *p <= '9') || (*p == '.' && !dot); p++) {
    digits = digits || *p != '.';
    dot = dot || *p == '.';
  }
  if (!digits) {
    return false;
  }
  if ((*p == 'e' || *p == 'E') && p[1] != '\0') {
    const char *q = p + 1 + (p[1] == '-' || p[1] == '+');
    for (; *q >= '0' && *q <= '9'; q++) {
    }
    return *q == '\0' && q > p + 1;
  }
  for (size_t i = 0; kSuffixes[i] != NULL; i++) {
    if (strcmp(p, kSuffixes[i]) == 0) {
      return true;
    }
  }
  return false;
}

static bool is_bool_text(const char *s) {
  return strcmp(s, "true") == 0 || strcmp(s, "false") == 0;
}

static bool one_of(const char *s, const char *const *choices) {
  for (size_t i = 0; choices[i] != NULL; i++) {
    if (strcmp(s, choices[i]) == 0) {
      return true;
    }
  }
  return false;
}

static bool is_secret_name(const char *s) {
  return identity_dns_name_valid(s, false, NULL) && strlen(s) <= 253;
}

/* Validates every mtlsd.io/ annotation: a typo or a bad value is refused, never
 * ignored. */
static bool check_annotations(struct mutation *m) {
  static const char *const kInject[] = {"enabled", "disabled", NULL};
  static const char *const kModes[] = {"strict", "permissive", NULL};
  static const char *const kLevels[] = {"debug", "info", "warn", "error", NULL};
  static const struct {
    const char *key;
    const char *expected;
  } kKnown[] = {
      {"inject", "\"enabled\" or \"disabled\""},
      {"exclude-inbound-ports", "comma-separated ports"},
      {"exclude-outbound-ports", "comma-separated ports"},
      {"inbound-ports", "comma-separated ports"},
      {"exclude-outbound-cidrs", "comma-separated CIDRs"},
      {"include-outbound-cidrs", "comma-separated CIDRs"},
      {"inbound-mode", "\"strict\" or \"permissive\""},
      {"allow", "comma-separated SPIFFE IDs, prefixes ending in /* or DNS names"},
      {"proxy-cpu-request", "a quantity such as 100m"},
      {"proxy-memory-request", "a quantity such as 64Mi"},
      {"proxy-cpu-limit", "a quantity such as 1"},
      {"proxy-memory-limit", "a quantity such as 256Mi"},
      {"native-sidecar", "\"true\" or \"false\""},
      {"rewrite-probes", "\"true\" or \"false\""},
      {"cert-secret", "a Secret's name"},
      {"log-level", "debug, info, warn or error"},
      {"identity", "a SPIFFE ID"},
      {"status", "(set by the injector)"},
  };
  for (const cJSON *a = m->annotations != NULL ? m->annotations->child : NULL; a != NULL;
       a = a->next) {
    if (strncmp(a->string, ANNOTATION_PREFIX, sizeof(ANNOTATION_PREFIX) - 1) != 0) {
      continue;
    }
    const char *key = a->string + sizeof(ANNOTATION_PREFIX) - 1;
    size_t known = 0;
    while (known < sizeof(kKnown) / sizeof(kKnown[0]) && strcmp(key, kKnown[known].key) != 0) {
      known++;
    }
    if (known == sizeof(kKnown) / sizeof(kKnown[0])) {
      return settle(m, INJECT_REFUSED, "unknown annotation %s", a->string);
    }
    const char *v = cJSON_IsString(a) ? a->valuestring : NULL;
    bool ok = v != NULL;
    char why[200] = "";
    if (ok && strstr(key, "ports") != NULL) {
      ok = iptables_port_list_check(v, why, sizeof(why));
    } else if (ok && strstr(key, "cidrs") != NULL) {
      ok = iptables_cidr_list_check(v, why, sizeof(why));
    } else if (ok && strcmp(key, "inject") == 0) {
      ok = one_of(v, kInject);
    } else if (ok && strcmp(key, "inbound-mode") == 0) {
      ok = one_of(v, kModes);
    } else if (ok && strcmp(key, "allow") == 0) {
      ok = each_valid(v, allow_entry_valid, why, sizeof(why));
    } else if (ok && strcmp(key, "identity") == 0) {
      const char *problem = NULL;
      ok = identity_spiffe_valid(v, &problem);
      snprintf(why, sizeof(why), "%s", ok || problem == NULL ? "" : problem);
    } else if (ok && strncmp(key, "proxy-", 6) == 0) {
      ok = inject_quantity_valid(v);
    } else if (ok && (strcmp(key, "native-sidecar") == 0 || strcmp(key, "rewrite-probes") == 0)) {
      ok = is_bool_text(v);
    } else if (ok && strcmp(key, "cert-secret") == 0) {
      ok = is_secret_name(v);
    } else if (ok && strcmp(key, "log-level") == 0) {
      ok = one_of(v, kLevels);
    }
    if (!ok) {
      return settle(m, INJECT_REFUSED, "annotation %s: \"%.200s\" is not %s%s%s", a->string,
                    v != NULL ? v : "(not a string)", kKnown[known].expected,
                    why[0] != '\0' ? ": " : "", why);
    }
  }
  const char *native = annotation(m, ANNOTATION_PREFIX "native-sidecar");
  const char *rewrite = annotation(m, ANNOTATION_PREFIX "rewrite-probes");
  m->native = native != NULL ? strcmp(native, "true") == 0 : m->cfg->native_sidecar;
  m->rewrite_probes = rewrite == NULL || strcmp(rewrite, "true") == 0;
  return true;
}

/* ---- Skips and refusals ---- */

static bool is_windows(const cJSON *v) {
  return cJSON_IsString(v) && strcmp(v->valuestring, "windows") == 0;
}

/* Whether the node selector term |term| keeps the pod on Windows nodes: an expression
 * "kubernetes.io/os In" whose values are all "windows". */
static bool term_requires_windows(const cJSON *term) {
  const cJSON *e;
  cJSON_ArrayForEach(e, field(term, "matchExpressions")) {
    const char *key = string_member(e, "key");
    const char *op = string_member(e, "operator");
    const cJSON *values = field(e, "values");
    if (key == NULL || op == NULL || strcmp(key, "kubernetes.io/os") != 0 ||
        strcmp(op, "In") != 0 || !cJSON_IsArray(values) || values->child == NULL) {
      continue;
    }
    bool all = true;
    const cJSON *v;
    cJSON_ArrayForEach(v, values) {
      all = all && is_windows(v);
    }
    if (all) {
      return true;
    }
  }
  return false;
}

/* What makes the pod a Windows pod (spec.os, the node selector, or a required node
 * affinity every term of which asks for Windows), or NULL. */
static const char *windows_marker(const cJSON *spec) {
  if (is_windows(field(field(spec, "os"), "name"))) {
    return "spec.os.name: windows";
  }
  if (is_windows(field(field(spec, "nodeSelector"), "kubernetes.io/os"))) {
    return "nodeSelector kubernetes.io/os: windows";
  }
  const cJSON *terms = field(field(field(field(spec, "affinity"), "nodeAffinity"),
                                   "requiredDuringSchedulingIgnoredDuringExecution"),
                             "nodeSelectorTerms");
  bool all = cJSON_IsArray(terms) && terms->child != NULL;
  const cJSON *t;
  cJSON_ArrayForEach(t, terms) {
    all = all && term_requires_windows(t);
  }
  return all ? "a required node affinity for kubernetes.io/os windows" : NULL;
}

static bool should_skip(struct mutation *m, const char *ns) {
  static const char *const kSystem[] = {"kube-system", "kube-public", "kube-node-lease", NULL};
  if (annotation(m, ANNOTATION_PREFIX "status") != NULL) {
    m->out->already_injected = true;
    return !settle(m, INJECT_SKIPPED, "already injected (it has %sstatus)", ANNOTATION_PREFIX);
  }
  if (cJSON_IsTrue(field(m->spec, "hostNetwork"))) {
    return !settle(m, INJECT_SKIPPED, "a hostNetwork pod shares the node's network");
  }
  const char *label = string_member(m->labels, ANNOTATION_PREFIX "inject");
  const char *ann = annotation(m, ANNOTATION_PREFIX "inject");
  if ((label != NULL && strcmp(label, "disabled") == 0) ||
      (ann != NULL && strcmp(ann, "disabled") == 0)) {
    return !settle(m, INJECT_SKIPPED, "%sinject is \"disabled\"", ANNOTATION_PREFIX);
  }
  if (one_of(ns, kSystem) || strcmp(ns, m->cfg->own_namespace) == 0) {
    return !settle(m, INJECT_SKIPPED, "namespace %s is never injected", ns);
  }
  const char *windows = windows_marker(m->spec);
  if (windows != NULL) {
    return !settle(m, INJECT_SKIPPED,
                   "a Windows pod (%s): the sidecar and its interception are Linux-only", windows);
  }
  return false;
}

/* Reads the user or group ID |key| of a securityContext: false when it is there but no
 * ID (not an integer from 0 to 2^31 - 1, which the API server would refuse too); |*id| is
 * -1 when it is absent. */
static bool security_id(const cJSON *security, const char *key, long *id) {
  const cJSON *v = field(security, key);
  *id = -1;
  if (v == NULL || cJSON_IsNull(v)) {
    return true;
  }
  double d = v->valuedouble;
  if (!cJSON_IsNumber(v) || !(d >= 0 && d <= 2147483647.0) || d != (double)(long)d) {
    return false;
  }
  *id = (long)d;
  return true;
}

/* The proxy's UID and GID are what the interception rules let through (the rules match
 * the primary group only), and with csi-driver-spiffe its group reads the pod's private
 * key: a container that runs as either (itself, or through the pod's securityContext), a
 * pod whose every container gets the group (fsGroup, supplementalGroups) while the key is
 * the CSI volume's, or an application container that mounts the certificate volume would
 * bypass interception or read the key. Each is refused with what and where. A Secret's
 * files belong to the pod's fsGroup whatever it is, so with mtlsd.io/cert-secret every
 * container of the pod reads them anyway, and fsGroup 1337 is what the injection sets. */
static bool check_identities(struct mutation *m) {
  const cJSON *pod_sc = field(m->spec, "securityContext");
  static const char *const kPodGroups[] = {"fsGroup", "supplementalGroups"};
  bool csi = annotation(m, ANNOTATION_PREFIX "cert-secret") == NULL;
  for (size_t i = 0; csi && i < 2; i++) {
    const cJSON *v = field(pod_sc, kPodGroups[i]);
    const cJSON *g;
    bool listed = false;
    if (cJSON_IsArray(v)) {
      cJSON_ArrayForEach(g, v) {
        listed |= cJSON_IsNumber(g) && g->valuedouble == PROXY_UID;
      }
    }
    if (listed || (cJSON_IsNumber(v) && v->valuedouble == PROXY_UID)) {
      return settle(m, INJECT_REFUSED,
                    "spec.securityContext.%s has %d, the proxy's group: every container "
                    "would read the pod's private key",
                    kPodGroups[i], PROXY_UID);
    }
  }
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  static const char *const kKeys[] = {"runAsUser", "runAsGroup"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *c;
    cJSON_ArrayForEach(c, field(m->spec, kLists[l])) {
      const cJSON *sc = field(c, "securityContext");
      const char *name = string_member(c, "name");
      name = name != NULL ? name : "?";
      for (size_t i = 0; i < 2; i++) {
        long own, inherited;
        if (!security_id(sc, kKeys[i], &own) || !security_id(pod_sc, kKeys[i], &inherited)) {
          return settle(m, INJECT_REFUSED, "%s %s: securityContext.%s is not a user or group ID",
                        kWhat[l], name, kKeys[i]);
        }
        long id = own >= 0 ? own : inherited;
        if (id == PROXY_UID) {
          return settle(m, INJECT_REFUSED,
                        "%s %s runs with %s %d%s, the proxy's: its traffic would bypass "
                        "interception",
                        kWhat[l], name, kKeys[i], PROXY_UID,
                        own >= 0 ? "" : " (from the pod's securityContext)");
        }
      }
      const cJSON *mount;
      cJSON_ArrayForEach(mount, field(c, "volumeMounts")) {
        const char *volume = string_member(mount, "name");
        if (volume != NULL && strcmp(volume, CERTS_VOLUME) == 0) {
          return settle(m, INJECT_REFUSED,
                        "%s %s mounts the volume %s, which holds the pod's private key", kWhat[l],
                        name, CERTS_VOLUME);
        }
      }
    }
  }
  return true;
}

/* Another mesh's proxy binds the same ports and redirects the same traffic, so one of the
 * two could not start: refused, as Linkerd refuses a pod Istio has injected. So are the
 * names and ports the injection adds, which the API server (a second container or volume
 * of the same name) or the sidecar (a port already bound) would refuse later, with less
 * to say about why. */
static bool check_conflicts(struct mutation *m) {
  static const char *const kMeshAnnotations[] = {"sidecar.istio.io/status",
                                                 "linkerd.io/proxy-version"};
  static const char *const kMeshContainers[] = {"istio-proxy", "istio-init", "linkerd-proxy",
                                                "linkerd-init", NULL};
  static const char *const kOurs[] = {SIDECAR_NAME, INIT_NAME, NULL};
  static const struct {
    int port;
    const char *what;
  } kOwnPorts[] = {
      {15000, "admin"}, {15001, "outbound"}, {15006, "inbound"}, {HEALTH_PORT, "health"}};
  for (size_t i = 0; i < sizeof(kMeshAnnotations) / sizeof(kMeshAnnotations[0]); i++) {
    if (field(m->annotations, kMeshAnnotations[i]) != NULL) {
      return settle(m, INJECT_REFUSED,
                    "it already carries another mesh's proxy (annotation %s): the two would "
                    "take the same ports and traffic",
                    kMeshAnnotations[i]);
    }
  }
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *c;
    cJSON_ArrayForEach(c, field(m->spec, kLists[l])) {
      const char *name = string_member(c, "name");
      if (name != NULL && one_of(name, kMeshContainers)) {
        return settle(m, INJECT_REFUSED,
                      "%s %s is another mesh's proxy: the two would take the same ports and "
                      "traffic",
                      kWhat[l], name);
      }
      if (name != NULL && one_of(name, kOurs)) {
        return settle(m, INJECT_REFUSED, "%s %s has the name of mtlsd's own", kWhat[l], name);
      }
      const cJSON *port;
      cJSON_ArrayForEach(port, field(c, "ports")) {
        const cJSON *number = field(port, "containerPort");
        const char *protocol = string_member(port, "protocol");
        for (size_t k = 0;
             cJSON_IsNumber(number) && (protocol == NULL || strcmp(protocol, "TCP") == 0) &&
             k < sizeof(kOwnPorts) / sizeof(kOwnPorts[0]);
             k++) {
          if (number->valuedouble == kOwnPorts[k].port) {
            return settle(m, INJECT_REFUSED, "%s %s: port %d is the sidecar's %s port", kWhat[l],
                          name != NULL ? name : "?", kOwnPorts[k].port, kOwnPorts[k].what);
          }
        }
      }
    }
  }
  const cJSON *v;
  cJSON_ArrayForEach(v, field(m->spec, "volumes")) {
    const char *name = string_member(v, "name");
    if (name != NULL && strcmp(name, CERTS_VOLUME) == 0) {
      return settle(m, INJECT_REFUSED,
                    "spec.volumes has %s, the name of mtlsd's certificate volume", CERTS_VOLUME);
    }
  }
  return true;
}

/* Beyond these a pod is no pod this injector handles: refused with the reason, before any
 * work in proportion to its size (the webhook's memory and time per review stay bounded
 * whatever the API server sends; a real pod has a handful of containers). */
enum { CONTAINERS_MAX = 100, PROBE_BYTES_MAX = 4096 };

/* About the bytes |v| would take as JSON (strings, keys and a few per value), without
 * printing it; counting stops past |limit|. */
static size_t json_weight(const cJSON *v, size_t limit) {
  size_t weight = 4 + (v->string != NULL ? strlen(v->string) + 3 : 0) +
                  (cJSON_IsString(v) && v->valuestring != NULL ? strlen(v->valuestring) : 0);
  for (const cJSON *c = v->child; c != NULL && weight <= limit; c = c->next) {
    weight += json_weight(c, limit - weight);
  }
  return weight;
}

static bool check_shape(struct mutation *m) {
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kProbes[] = {"livenessProbe", "readinessProbe", "startupProbe"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *list = field(m->spec, kLists[l]);
    size_t count = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, list) {
      if (++count > CONTAINERS_MAX) {
        return settle(m, INJECT_REFUSED, "spec.%s has more than %d entries: not a pod to mesh",
                      kLists[l], CONTAINERS_MAX);
      }
      for (size_t p = 0; p < 3; p++) {
        const cJSON *probe = field(c, kProbes[p]);
        if (probe != NULL && json_weight(probe, PROBE_BYTES_MAX) > PROBE_BYTES_MAX) {
          const char *name = string_member(c, "name");
          return settle(m, INJECT_REFUSED, "%s %s: %s is over %d bytes: not a probe to rewrite",
                        l == 0 ? "init container" : "container", name != NULL ? name : "?",
                        kProbes[p], PROBE_BYTES_MAX);
        }
      }
    }
  }
  return true;
}

/* ---- The probe rewrite ---- */

/* Resolves a named port of |probe_handler| against |container|'s ports, in place. */
static bool resolve_port(struct mutation *m, const cJSON *container, cJSON *handler,
                         const char *where) {
  cJSON *port = field(handler, "port");
  if (cJSON_IsNumber(port)) {
    return true;
  }
  const char *name = cJSON_IsString(port) ? port->valuestring : NULL;
  const cJSON *p;
  cJSON_ArrayForEach(p, field(container, "ports")) {
    const char *pname = string_member(p, "name");
    const cJSON *number = field(p, "containerPort");
    if (name != NULL && pname != NULL && strcmp(name, pname) == 0 && cJSON_IsNumber(number)) {
      json_replace(handler, "port", cJSON_CreateNumber(number->valuedouble));
      return true;
    }
  }
  return settle(m, INJECT_REFUSED, "%s.port %s%s%s names no port of the container", where,
                name != NULL ? "\"" : "", name != NULL ? name : "(missing)",
                name != NULL ? "\"" : "");
}

/* What the kubelet calls on the pod's network, and where the rewrite sends it. */
static const struct action {
  const char *parent; /* The member holding it ("lifecycle"), or NULL. */
  const char *member;
  const char *route; /* The health port's path: /<route>/<container>/<kind>. */
  const char *kind;
  bool probe; /* A probe keeps its timing and may be grpc; a lifecycle hook has neither. */
} kActions[] = {
    {NULL, "livenessProbe", "app-health", "livez", true},
    {NULL, "readinessProbe", "app-health", "readyz", true},
    {NULL, "startupProbe", "app-health", "startupz", true},
    {"lifecycle", "postStart", "app-lifecycle", "poststartz", false},
    {"lifecycle", "preStop", "app-lifecycle", "prestopz", false},
};

/* The member of |action| that the health port can run for the kubelet (httpGet,
 * tcpSocket, or a probe's grpc), or NULL: exec and sleep run in the container itself, and
 * a handler with a host of its own does not call the pod. */
static const char *network_handler(const cJSON *action, bool probe) {
  static const char *const kHandlers[] = {"httpGet", "tcpSocket", "grpc"};
  const char *found = NULL;
  for (size_t i = 0; i < (probe ? 3U : 2U); i++) {
    if (field(action, kHandlers[i]) != NULL) {
      found = kHandlers[i];
    }
  }
  return found != NULL && field(field(action, found), "host") == NULL ? found : NULL;
}

/* The container being rewritten: |list|[|index|] of the pod spec. */
struct target {
  const cJSON *container;
  const char *name;
  const char *list;
  const char *what; /* "container" or "init container", for messages. */
  size_t index;
};

/* Rewrites the action |a| of |t| to an httpGet on the health port, keeping a probe's
 * timing, and records the original (its named port resolved) in MTLSD_APP_PROBES. A
 * lifecycle hook has no timeout of its own: the kubelet bounds a preStop hook by the
 * pod's grace period, which becomes the hook's timeoutSeconds. */
static bool rewrite_action(struct mutation *m, const struct target *t, const struct action *a) {
  static const char *const kTiming[] = {"initialDelaySeconds", "timeoutSeconds",
                                        "periodSeconds",       "successThreshold",
                                        "failureThreshold",    "terminationGracePeriodSeconds"};
  const cJSON *action =
      field(a->parent != NULL ? field(t->container, a->parent) : t->container, a->member);
  const char *handler_key = network_handler(action, a->probe);
  if (handler_key == NULL) {
    return true;
  }
  cJSON *original = cJSON_Duplicate(action, true);
  char where[200];
  snprintf(where, sizeof(where), "%s %s: %s%s%s.%s", t->what, t->name,
           a->parent != NULL ? a->parent : "", a->parent != NULL ? "." : "", a->member,
           handler_key);
  if (original == NULL || !resolve_port(m, t->container, field(original, handler_key), where)) {
    cJSON_Delete(original);
    return false;
  }
  if (!a->probe) {
    set_member(original, "timeoutSeconds", cJSON_CreateNumber(m->grace_seconds));
  }
  char key[128];
  snprintf(key, sizeof(key), "%s/%s", t->name, a->kind);
  json_attach(m->app_probes, key, original);

  cJSON *rewritten = cJSON_CreateObject();
  cJSON *get = cJSON_AddObjectToObject(rewritten, "httpGet");
  char path[200];
  snprintf(path, sizeof(path), "/%s/%s/%s", a->route, t->name, a->kind);
  cJSON_AddStringToObject(get, "path", path);
  cJSON_AddNumberToObject(get, "port", HEALTH_PORT);
  cJSON_AddStringToObject(get, "scheme", "HTTP");
  for (size_t i = 0; a->probe && i < sizeof(kTiming) / sizeof(kTiming[0]); i++) {
    const cJSON *timing = field(action, kTiming[i]);
    if (timing != NULL) {
      json_attach(rewritten, kTiming[i], cJSON_Duplicate(timing, true));
    }
  }
  char ptr[POINTER_MAX], idx[24];
  snprintf(idx, sizeof(idx), "%zu", t->index);
  ptr_join(ptr, m->spec_ptr, t->list);
  ptr_push(ptr, idx);
  if (a->parent != NULL) {
    ptr_push(ptr, a->parent);
  }
  ptr_push(ptr, a->member);
  return add_op(m, ptr, rewritten);
}

/* A native sidecar: an init container that keeps running beside the application. */
static bool is_native_sidecar(const cJSON *container) {
  const char *policy = string_member(container, "restartPolicy");
  return policy != NULL && strcmp(policy, "Always") == 0;
}

/* Rewrites what the kubelet calls on the application containers and the native sidecars
 * (an init container that runs to completion is never probed and has no hooks). */
static bool rewrite_probes(struct mutation *m) {
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  for (size_t l = 0; l < 2; l++) {
    struct target t = {.list = kLists[l], .what = kWhat[l]};
    cJSON_ArrayForEach(t.container, field(m->spec, kLists[l])) {
      t.name = string_member(t.container, "name");
      for (size_t a = 0; t.name != NULL && (l == 1 || is_native_sidecar(t.container)) &&
                         a < sizeof(kActions) / sizeof(kActions[0]);
           a++) {
        if (!rewrite_action(m, &t, &kActions[a])) {
          return false;
        }
      }
      t.index++;
    }
  }
  return true;
}

/* ---- What is added ---- */

static cJSON *string_array(const char *const *items, size_t count) {
  cJSON *a = cJSON_CreateArray();
  for (size_t i = 0; a != NULL && i < count; i++) {
    json_append(a, cJSON_CreateString(items[i]));
  }
  return a;
}

/* The sidecar's configuration (MTLSD_CONFIG): the image's built-in one, with the pod's
 * allow list and inbound mode, and the IPv6 outbound listener the --ipv6 rules need. */
static char *sidecar_config(const struct mutation *m) {
  const char *allow = annotation(m, ANNOTATION_PREFIX "allow");
  const char *mode = annotation(m, ANNOTATION_PREFIX "inbound-mode");
  /* The injector's base (validated when its file was read), then what the injection
   * decides: the ports the interception and the probe rewrite point at. */
  cJSON *cfg =
      m->cfg->sidecar_base != NULL ? cJSON_Parse(m->cfg->sidecar_base) : cJSON_CreateObject();
  if (cfg == NULL) {
    return NULL;
  }
  set_member(cfg, "trust_domain", cJSON_CreateString(m->cfg->trust_domain));
  set_member(object_member(cfg, "admin"), "listen", cJSON_CreateString("127.0.0.1:15000"));
  set_member(object_member(cfg, "health"), "listen", cJSON_CreateString("0.0.0.0:15020"));
  set_member(object_member(cfg, "certs"), "dir", cJSON_CreateString(CERTS_PATH));
  cJSON *listeners = cJSON_AddArrayToObject(cfg, "listeners");
  static const char *const kListeners[][3] = {
      {"outbound", "outbound", "127.0.0.1:15001"},
      {"outbound6", "outbound", "[::1]:15001"},
      {"inbound", "inbound", "0.0.0.0:15006"},
      {"inbound6", "inbound", "[::]:15006"},
  };
  for (size_t i = 0; i < 4; i++) {
    if (!m->cfg->ipv6 && strchr(kListeners[i][2], '[') != NULL) {
      continue;
    }
    cJSON *l = cJSON_CreateObject();
    cJSON_AddStringToObject(l, "name", kListeners[i][0]);
    cJSON_AddStringToObject(l, "mode", kListeners[i][1]);
    cJSON_AddStringToObject(l, "listen", kListeners[i][2]);
    cJSON_AddBoolToObject(l, "transparent", true);
    if (strcmp(kListeners[i][1], "inbound") == 0) {
      if (allow != NULL) {
        cJSON *list = cJSON_AddArrayToObject(l, "allow");
        char item[300];
        for (const char *p = allow; next_item(&p, item, sizeof(item));) {
          json_append(list, cJSON_CreateString(item));
        }
      }
      if (mode != NULL && strcmp(mode, "permissive") == 0) {
        cJSON_AddBoolToObject(l, "permissive", true);
      }
    }
    json_append(listeners, l);
  }
  if (field(cfg, "workers") == NULL) {
    cJSON_AddNumberToObject(cfg, "workers", 2);
  }
  if (field(cfg, "access_log") == NULL) {
    cJSON_AddStringToObject(cfg, "access_log", "stdout");
  }
  char *text = cJSON_PrintUnformatted(cfg);
  cJSON_Delete(cfg);
  return text;
}

static cJSON *security_context(bool init) {
  cJSON *sc = cJSON_CreateObject();
  cJSON_AddNumberToObject(sc, "runAsUser", init ? 0 : PROXY_UID);
  cJSON_AddNumberToObject(sc, "runAsGroup", init ? 0 : PROXY_UID);
  cJSON_AddBoolToObject(sc, "runAsNonRoot", !init);
  cJSON_AddBoolToObject(sc, "readOnlyRootFilesystem", true);
  cJSON_AddBoolToObject(sc, "allowPrivilegeEscalation", false);
  cJSON *caps = cJSON_AddObjectToObject(sc, "capabilities");
  static const char *const kAll[] = {"ALL"};
  static const char *const kNet[] = {"NET_ADMIN", "NET_RAW"};
  json_attach(caps, "drop", string_array(kAll, 1));
  if (init) {
    json_attach(caps, "add", string_array(kNet, 2));
  }
  cJSON_AddStringToObject(cJSON_AddObjectToObject(sc, "seccompProfile"), "type", "RuntimeDefault");
  return sc;
}

static cJSON *init_container(const struct mutation *m) {
  const struct inject_config *cfg = m->cfg;
  /* Each mtlsd iptables flag (and mtlsd.io/ annotation of the same name): the injector's
   * default when the pod says nothing, and what is added whatever the pod says. */
  const struct {
    const char *name, *fallback, *always;
  } flags[] = {
      {"exclude-inbound-ports", cfg->exclude_inbound_ports, NULL},
      {"exclude-outbound-ports", cfg->exclude_outbound_ports, NULL},
      {"inbound-ports", NULL, NULL},
      {"exclude-outbound-cidrs", cfg->exclude_outbound_cidrs, NULL},
      {"include-outbound-cidrs", cfg->include_outbound_cidrs, NULL},
  };
  cJSON *c = cJSON_CreateObject();
  cJSON_AddStringToObject(c, "name", INIT_NAME);
  cJSON_AddStringToObject(c, "image", m->cfg->image);
  cJSON_AddStringToObject(c, "imagePullPolicy", m->cfg->pull_policy);
  cJSON *args = cJSON_AddArrayToObject(c, "args");
  static const char *const kBase[] = {"iptables",     "--apply", "--health-port", "15020",
                                      "--admin-port", "15000",   "--proxy-uid",   "1337",
                                      "--proxy-gid",  "1337",    "--ipv6"};
  /* "--ipv6" is last: left out where pods have no IPv6. */
  size_t base_count = sizeof(kBase) / sizeof(kBase[0]) - (m->cfg->ipv6 ? 0 : 1);
  for (size_t i = 0; i < base_count; i++) {
    json_append(args, cJSON_CreateString(kBase[i]));
  }
  if (!m->cfg->exclude_api_server) {
    json_append(args, cJSON_CreateString("--no-exclude-api-server"));
  }
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    char key[64], flag[64];
    snprintf(key, sizeof(key), ANNOTATION_PREFIX "%s", flags[i].name);
    snprintf(flag, sizeof(flag), "--%s", flags[i].name);
    const char *v = annotation(m, key);
    v = v != NULL ? v : flags[i].fallback;
    const char *always = flags[i].always;
    if (v != NULL || always != NULL) {
      size_t n = (v != NULL ? strlen(v) + 1 : 0) + (always != NULL ? strlen(always) : 0) + 1;
      char *joined = malloc(n);
      if (joined == NULL) {
        cJSON_Delete(c); /* The caller's add then fails: "out of memory". */
        return NULL;
      }
      snprintf(joined, n, "%s%s%s", v != NULL ? v : "", v != NULL && always != NULL ? "," : "",
               always != NULL ? always : "");
      json_append(args, cJSON_CreateString(flag));
      json_append(args, cJSON_CreateString(joined));
      free(joined);
    }
  }
  json_attach(c, "securityContext", security_context(true));
  return c;
}

static cJSON *env_from_field(const char *name, const char *field) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "name", name);
  cJSON *from = cJSON_AddObjectToObject(cJSON_AddObjectToObject(e, "valueFrom"), "fieldRef");
  cJSON_AddStringToObject(from, "fieldPath", field);
  return e;
}

static cJSON *env_value(const char *name, const char *value) {
  cJSON *e = cJSON_CreateObject();
  cJSON_AddStringToObject(e, "name", name);
  cJSON_AddStringToObject(e, "value", value);
  return e;
}

static cJSON *health_probe(const char *path, int period, int failures) {
  cJSON *p = cJSON_CreateObject();
  cJSON *get = cJSON_AddObjectToObject(p, "httpGet");
  cJSON_AddStringToObject(get, "path", path);
  cJSON_AddNumberToObject(get, "port", HEALTH_PORT);
  cJSON_AddNumberToObject(p, "periodSeconds", period);
  cJSON_AddNumberToObject(p, "failureThreshold", failures);
  return p;
}

/* The resources: the annotations', else the injector's defaults. */
static cJSON *resources(const struct mutation *m) {
  static const char *const kParts[][3] = {{"requests", "cpu", "proxy-cpu-request"},
                                          {"requests", "memory", "proxy-memory-request"},
                                          {"limits", "cpu", "proxy-cpu-limit"},
                                          {"limits", "memory", "proxy-memory-limit"}};
  const char *defaults[] = {m->cfg->cpu_request, m->cfg->memory_request, m->cfg->cpu_limit,
                            m->cfg->memory_limit};
  cJSON *r = cJSON_CreateObject();
  for (size_t i = 0; i < 4; i++) {
    char key[64];
    snprintf(key, sizeof(key), ANNOTATION_PREFIX "%s", kParts[i][2]);
    const char *v = annotation(m, key);
    v = v != NULL ? v : defaults[i];
    if (v != NULL) {
      cJSON *part = field(r, kParts[i][0]);
      if (part == NULL) {
        part = cJSON_AddObjectToObject(r, kParts[i][0]);
      }
      cJSON_AddStringToObject(part, kParts[i][1], v);
    }
  }
  return r;
}

static cJSON *sidecar_container(struct mutation *m) {
  cJSON *c = cJSON_CreateObject();
  cJSON_AddStringToObject(c, "name", SIDECAR_NAME);
  cJSON_AddStringToObject(c, "image", m->cfg->image);
  cJSON_AddStringToObject(c, "imagePullPolicy", m->cfg->pull_policy);
  if (m->native) {
    cJSON_AddStringToObject(c, "restartPolicy", "Always");
  }
  /* No --config: MTLSD_CONFIG is the configuration. */
  cJSON *args = cJSON_AddArrayToObject(c, "args");
  json_append(args, cJSON_CreateString("run"));
  const char *level = annotation(m, ANNOTATION_PREFIX "log-level");
  if (level != NULL) {
    json_append(args, cJSON_CreateString("--log-level"));
    json_append(args, cJSON_CreateString(level));
  }
  cJSON *ports = cJSON_AddArrayToObject(c, "ports");
  cJSON *port = cJSON_CreateObject();
  cJSON_AddStringToObject(port, "name", "mtlsd-health");
  cJSON_AddNumberToObject(port, "containerPort", HEALTH_PORT);
  cJSON_AddStringToObject(port, "protocol", "TCP");
  json_append(ports, port);
  cJSON *env = cJSON_AddArrayToObject(c, "env");
  char *config = sidecar_config(m);
  json_append(env, env_value("MTLSD_CONFIG", config != NULL ? config : "{}"));
  free(config);
  const struct {
    const char *name;
    const cJSON *value;
  } kFromPod[] = {{"MTLSD_APP_PROBES", m->app_probes->child != NULL ? m->app_probes : NULL},
                  {"MTLSD_APP_METRICS", m->app_metrics}};
  for (size_t i = 0; i < 2; i++) {
    if (kFromPod[i].value != NULL) {
      char *text = cJSON_PrintUnformatted(kFromPod[i].value);
      json_append(env, env_value(kFromPod[i].name, text != NULL ? text : "{}"));
      free(text);
    }
  }
  json_append(env, env_from_field("POD_NAME", "metadata.name"));
  json_append(env, env_from_field("POD_NAMESPACE", "metadata.namespace"));
  json_append(env, env_from_field("POD_IP", "status.podIP"));
  json_append(env, env_from_field("SERVICE_ACCOUNT", "spec.serviceAccountName"));
  json_attach(c, "startupProbe", health_probe("/ready", 1, 120));
  json_attach(c, "readinessProbe", health_probe("/ready", 5, 3));
  json_attach(c, "livenessProbe", health_probe("/healthz", 10, 3));
  if (!m->native) {
    /* The application's containers start after this hook returns: it waits for /ready,
     * so that no app connection goes out before the proxy serves. */
    static const char *const kWait[] = {"/usr/local/bin/mtlsd", "wait-ready", "--timeout", "120s"};
    cJSON *exec = cJSON_AddObjectToObject(
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(c, "lifecycle"), "postStart"), "exec");
    json_attach(exec, "command", string_array(kWait, 4));
  }
  json_attach(c, "resources", resources(m));
  json_attach(c, "securityContext", security_context(false));
  cJSON *mounts = cJSON_AddArrayToObject(c, "volumeMounts");
  cJSON *mount = cJSON_CreateObject();
  cJSON_AddStringToObject(mount, "name", CERTS_VOLUME);
  cJSON_AddStringToObject(mount, "mountPath", CERTS_PATH);
  cJSON_AddBoolToObject(mount, "readOnly", true);
  json_append(mounts, mount);
  return c;
}

static cJSON *certs_volume(const struct mutation *m) {
  cJSON *v = cJSON_CreateObject();
  cJSON_AddStringToObject(v, "name", CERTS_VOLUME);
  const char *secret = annotation(m, ANNOTATION_PREFIX "cert-secret");
  if (secret != NULL) {
    cJSON *s = cJSON_AddObjectToObject(v, "secret");
    cJSON_AddStringToObject(s, "secretName", secret);
    /* Readable by the proxy's group only (the key must not be world-readable). */
    cJSON_AddNumberToObject(s, "defaultMode", 0440);
    return v;
  }
  cJSON *csi = cJSON_AddObjectToObject(v, "csi");
  cJSON_AddStringToObject(csi, "driver", m->cfg->csi_driver);
  cJSON_AddBoolToObject(csi, "readOnly", true);
  cJSON *attrs = cJSON_AddObjectToObject(csi, "volumeAttributes");
  cJSON_AddStringToObject(attrs, "spiffe.csi.cert-manager.io/fs-group", "1337");
  return v;
}

/* Adds |value| to the array |key| of the object at |parent_ptr|: as element |index|
 * (-1: at the end) when the array exists, else as a new array holding it. */
static bool add_to_array(struct mutation *m, const cJSON *parent, const char *parent_ptr,
                         const char *key, long index, cJSON *value) {
  char ptr[POINTER_MAX];
  ptr_join(ptr, parent_ptr, key);
  if (value != NULL && !cJSON_IsArray(field(parent, key))) {
    cJSON *array = cJSON_CreateArray();
    json_append(array, value);
    return add_op(m, ptr, array);
  }
  char idx[24];
  snprintf(idx, sizeof(idx), index < 0 ? "-" : "%ld", index);
  ptr_push(ptr, idx);
  return add_op(m, ptr, value);
}

/* A pod that Prometheus scrapes itself (prometheus.io/port) would lose its metrics behind
 * strict inbound mTLS: the port and path move to MTLSD_APP_METRICS and the annotations
 * point at the health port, which serves mtlsd's metrics and the application's after
 * them (one scrape target, docs/admin.md). Not when scraping is off; not over https,
 * which the health port does not fetch (said in a warning). */
static bool merge_app_metrics(struct mutation *m, const char *base) {
  const char *port = annotation(m, "prometheus.io/port");
  const char *scrape = annotation(m, "prometheus.io/scrape");
  const char *scheme = annotation(m, "prometheus.io/scheme");
  const char *path = annotation(m, "prometheus.io/path");
  char *end = NULL;
  long number = port != NULL ? strtol(port, &end, 10) : 0;
  if (port == NULL || end == port || *end != '\0' || number < 1 || number > 65535 ||
      number == HEALTH_PORT || (scrape != NULL && strcmp(scrape, "false") == 0)) {
    return true;
  }
  bool path_ok = path == NULL || (path[0] == '/' && strlen(path) <= METRICS_PATH_MAX &&
                                  strpbrk(path, " \t\r\n") == NULL);
  if ((scheme != NULL && strcmp(scheme, "http") != 0) || !path_ok) {
    warn(m,
         "the application's metrics (prometheus.io/port %ld, %s) stay where they are, behind "
         "inbound mTLS: the health port fetches only http and a path; exclude the port with "
         "%sexclude-inbound-ports",
         number, scheme != NULL && strcmp(scheme, "http") != 0 ? "scheme" : "path",
         ANNOTATION_PREFIX);
    return true;
  }
  m->app_metrics = cJSON_CreateObject();
  if (m->app_metrics == NULL || cJSON_AddNumberToObject(m->app_metrics, "port", number) == NULL ||
      cJSON_AddStringToObject(m->app_metrics, "path", path != NULL ? path : "/metrics") == NULL) {
    return settle(m, INJECT_REFUSED, "out of memory");
  }
  char ptr[POINTER_MAX];
  ptr_join(ptr, base, "prometheus.io/port");
  bool ok = add_op(m, ptr, cJSON_CreateString("15020"));
  ptr_join(ptr, base, "prometheus.io/path");
  return ok && add_op(m, ptr, cJSON_CreateString("/metrics"));
}

static bool has_prometheus_annotation(const struct mutation *m) {
  for (const cJSON *a = m->annotations != NULL ? m->annotations->child : NULL; a != NULL;
       a = a->next) {
    if (strncmp(a->string, "prometheus.io/", 14) == 0) {
      return true;
    }
  }
  return false;
}

static bool add_annotations(struct mutation *m) {
  char ptr[POINTER_MAX];
  if (m->meta == NULL) {
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddObjectToObject(meta, "annotations");
    if (!add_op(m, m->meta_ptr, meta)) {
      return false;
    }
  } else if (!cJSON_IsObject(m->annotations)) {
    ptr_join(ptr, m->meta_ptr, "annotations");
    if (!add_op(m, ptr, cJSON_CreateObject())) {
      return false;
    }
  }
  char base[POINTER_MAX];
  ptr_join(base, m->meta_ptr, "annotations");
  cJSON *status = cJSON_CreateObject();
  cJSON_AddStringToObject(status, "version", MTLSD_VERSION);
  static const char *const kNative[] = {INIT_NAME, SIDECAR_NAME};
  static const char *const kInit[] = {INIT_NAME};
  static const char *const kSidecar[] = {SIDECAR_NAME};
  static const char *const kVolumes[] = {CERTS_VOLUME};
  json_attach(status, "initContainers",
              string_array(m->native ? kNative : kInit, m->native ? 2 : 1));
  json_attach(status, "containers", string_array(kSidecar, m->native ? 0 : 1));
  json_attach(status, "volumes", string_array(kVolumes, 1));
  char *text = cJSON_PrintUnformatted(status);
  cJSON_Delete(status);
  ptr_join(ptr, base, ANNOTATION_PREFIX "status");
  bool ok = text != NULL && add_op(m, ptr, cJSON_CreateString(text));
  free(text);
  const cJSON *first = cJSON_GetArrayItem(field(m->spec, "containers"), 0);
  const char *first_name = string_member(first, "name");
  if (ok && first_name != NULL &&
      annotation(m, "kubectl.kubernetes.io/default-container") == NULL) {
    ptr_join(ptr, base, "kubectl.kubernetes.io/default-container");
    ok = add_op(m, ptr, cJSON_CreateString(first_name));
  }
  if (ok && !has_prometheus_annotation(m)) {
    static const char *const kProm[][2] = {{"prometheus.io/scrape", "true"},
                                           {"prometheus.io/port", "15020"},
                                           {"prometheus.io/path", "/metrics"}};
    for (size_t i = 0; ok && i < 3; i++) {
      ptr_join(ptr, base, kProm[i][0]);
      ok = add_op(m, ptr, cJSON_CreateString(kProm[i][1]));
    }
  } else if (ok) {
    ok = merge_app_metrics(m, base);
  }
  return ok;
}

/* The label the mesh directory watches (docs/directory.md): this pod has a sidecar. */
static bool add_label(struct mutation *m) {
  char ptr[POINTER_MAX];
  ptr_join(ptr, m->meta_ptr, "labels");
  if (!cJSON_IsObject(m->labels)) {
    cJSON *labels = cJSON_CreateObject();
    cJSON_AddStringToObject(labels, INJECTED_LABEL, "true");
    return add_op(m, ptr, labels);
  }
  ptr_push(ptr, INJECTED_LABEL);
  return add_op(m, ptr, cJSON_CreateString("true"));
}

/* A Secret volume's files are root's, readable by the pod's fsGroup (defaultMode 0440):
 * without one the sidecar (UID 1337) could not read its key. Every container of the pod
 * has the fsGroup, so the others can read it too; which is why csi-driver-spiffe, whose
 * files are group 1337 without an fsGroup, is the default. */
static bool set_fs_group(struct mutation *m) {
  const char *secret = annotation(m, ANNOTATION_PREFIX "cert-secret");
  if (secret == NULL) {
    return true;
  }
  const cJSON *sc = field(m->spec, "securityContext");
  const cJSON *group = field(sc, "fsGroup");
  if (group != NULL) {
    if (!cJSON_IsNumber(group) || group->valuedouble != PROXY_UID) {
      warn(m,
           "the Secret %s is read through the pod's fsGroup, which every container of the pod "
           "has: they can all read its private key",
           secret);
    }
    return true;
  }
  char ptr[POINTER_MAX];
  ptr_join(ptr, m->spec_ptr, "securityContext");
  cJSON *value = cJSON_CreateNumber(PROXY_UID);
  if (sc != NULL) {
    ptr_push(ptr, "fsGroup");
  } else {
    cJSON *context = cJSON_CreateObject();
    json_attach(context, "fsGroup", value);
    value = context;
  }
  warn(m,
       "spec.securityContext.fsGroup set to %d, so that the sidecar reads the Secret %s "
       "(every container of the pod can read it)",
       PROXY_UID, secret);
  return add_op(m, ptr, value);
}

bool inject_object(const struct inject_config *cfg, const cJSON *object, const char *ns,
                   struct inject_result *out) {
  *out = (struct inject_result){.outcome = INJECT_SKIPPED};
  struct mutation m = {.cfg = cfg, .out = out};
  if (!cJSON_IsObject(object) || !find_template(&m, object)) {
    return out->outcome == INJECT_REFUSED;
  }
  if (ns == NULL) {
    ns = string_member(field(object, "metadata"), "namespace");
  }
  ns = ns != NULL ? ns : "default";
  if (should_skip(&m, ns) || !check_shape(&m) || !check_annotations(&m) || !check_conflicts(&m) ||
      !check_identities(&m)) {
    return true;
  }
  /* cJSON's builders drop what they could not allocate without a word: a failure counted
   * while the patch is built refuses it whole rather than hand out a pod with a piece
   * missing. */
  if (m.job && !m.native) {
    warn(&m,
         "a Job's pod with the sidecar as a regular container (%snative-sidecar: \"false\") "
         "never completes by itself: its application must end the sidecar with POST "
         "/quitquitquit on 127.0.0.1:15000",
         ANNOTATION_PREFIX);
  }
  const cJSON *grace = field(m.spec, "terminationGracePeriodSeconds");
  m.grace_seconds =
      cJSON_IsNumber(grace) && grace->valuedouble >= 1 ? grace->valuedouble : DEFAULT_GRACE_SECONDS;
  /* The sidecar takes a timeout of a day at most (docs/admin.md). */
  m.grace_seconds = m.grace_seconds < PROBE_TIMEOUT_MAX_SECONDS ? (double)(long)m.grace_seconds
                                                                : PROBE_TIMEOUT_MAX_SECONDS;
  unsigned long failures = json_alloc_failures();
  m.patch = cJSON_CreateArray();
  m.app_probes = cJSON_CreateObject();
  const cJSON *spec = m.spec;
  bool ok = m.patch != NULL && m.app_probes != NULL && add_annotations(&m) && add_label(&m) &&
            (!m.rewrite_probes || rewrite_probes(&m)) &&
            add_to_array(&m, spec, m.spec_ptr, "volumes", -1, certs_volume(&m)) && set_fs_group(&m);
  if (ok && m.native) {
    ok = add_to_array(&m, spec, m.spec_ptr, "initContainers", 0, init_container(&m));
    /* Right after mtlsd-init: element 1 once the first add has made the array. */
    char ptr[POINTER_MAX];
    ptr_join(ptr, m.spec_ptr, "initContainers");
    ptr_push(ptr, "1");
    ok = ok && add_op(&m, ptr, sidecar_container(&m));
  } else if (ok) {
    /* mtlsd-init last among the init containers, so that the others run before the
     * interception (nothing would relay for them yet); the sidecar first in containers. */
    ok = add_to_array(&m, spec, m.spec_ptr, "initContainers", -1, init_container(&m)) &&
         add_to_array(&m, spec, m.spec_ptr, "containers", 0, sidecar_container(&m));
  }
  cJSON_Delete(m.app_probes);
  cJSON_Delete(m.app_metrics);
  if (!ok || json_alloc_failures() != failures) {
    cJSON_Delete(m.patch);
    if (out->reason[0] == '\0') {
      settle(&m, INJECT_REFUSED, "out of memory");
    }
    return true;
  }
  out->outcome = INJECT_INJECTED;
  out->patch = m.patch;
  snprintf(out->reason, sizeof(out->reason), "injected%s", m.native ? "" : " (not native)");
  return true;
}

/* ---- Applying a patch ---- */

/* Decodes the next token of |*ptr| into |out|; false at the end. */
static bool next_token(const char **ptr, char *out, size_t cap) {
  if (**ptr != '/') {
    return false;
  }
  const char *p = *ptr + 1;
  size_t n = 0;
  for (; *p != '\0' && *p != '/' && n + 1 < cap; p++) {
    if (*p == '~' && (p[1] == '0' || p[1] == '1')) {
      out[n++] = p[1] == '0' ? '~' : '/';
      p++;
    } else {
      out[n++] = *p;
    }
  }
  out[n] = '\0';
  *ptr = p;
  return true;
}

/* Inserts |item| at |index| of |array| (at most its size), linking it in place: cJSON
 * 1.7.15's own cJSON_InsertItemInArray leaves the first element's back link (to the last)
 * stale after an insertion at 0, and detaching by index is quadratic. */
static void array_insert(cJSON *array, int index, cJSON *item) {
  cJSON *at = array->child;
  for (int i = 0; at != NULL && i < index; i++) {
    at = at->next;
  }
  if (at == NULL) {
    json_append(array, item);
    return;
  }
  item->next = at;
  item->prev = at->prev; /* The first element's prev is the last one. */
  if (at == array->child) {
    array->child = item;
  } else {
    at->prev->next = item;
  }
  at->prev = item;
}

static bool apply_add(cJSON *doc, const char *path, const cJSON *value) {
  char token[POINTER_MAX];
  cJSON *parent = doc;
  const char *p = path;
  if (!next_token(&p, token, sizeof(token))) {
    return false;
  }
  while (*p != '\0') {
    cJSON *child = cJSON_IsArray(parent) ? cJSON_GetArrayItem(parent, atoi(token))
                                         : cJSON_GetObjectItemCaseSensitive(parent, token);
    if (child == NULL) {
      return false;
    }
    parent = child;
    next_token(&p, token, sizeof(token));
  }
  cJSON *copy = cJSON_Duplicate(value, true);
  if (copy == NULL) {
    return false;
  }
  if (cJSON_IsArray(parent)) {
    int size = cJSON_GetArraySize(parent);
    int index = strcmp(token, "-") == 0 ? size : atoi(token);
    if (index < 0 || index > size) {
      cJSON_Delete(copy);
      return false;
    }
    array_insert(parent, index, copy);
    return true;
  }
  if (!cJSON_IsObject(parent)) {
    cJSON_Delete(copy);
    return false;
  }
  if (cJSON_GetObjectItemCaseSensitive(parent, token) != NULL) {
    json_replace(parent, token, copy);
  } else {
    json_attach(parent, token, copy);
  }
  return true;
}

cJSON *inject_apply(const cJSON *object, const cJSON *patch) {
  cJSON *doc = cJSON_Duplicate(object, true);
  const cJSON *op;
  cJSON_ArrayForEach(op, patch) {
    const char *kind = string_member(op, "op");
    const char *path = string_member(op, "path");
    const cJSON *value = cJSON_GetObjectItemCaseSensitive(op, "value");
    if (doc == NULL || kind == NULL || strcmp(kind, "add") != 0 || path == NULL || value == NULL ||
        !apply_add(doc, path, value)) {
      cJSON_Delete(doc);
      return NULL;
    }
  }
  return doc;
}
