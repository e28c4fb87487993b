/* inject_checks: whether and how a pod may be injected (see inject_internal.h): its
 * mtlsd.io/ annotations, the skips (already injected, hostNetwork, disabled, a system
 * namespace, Windows) and the refusals (another mesh, mtlsd's own names and ports, the
 * proxy's UID and GID, shapes beyond any real pod), each with the reason. */
#include "inject_internal.h"

#include <stdio.h>
#include <string.h>

#include "mtlsd/base/identity.h"
#include "mtlsd/kube/iptables.h"
#include "mtlsd/kube/kjson.h"

/* ---- Annotations ---- */

bool inject_next_item(const char **p, char *item, size_t cap) {
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
  for (const char *p = s; inject_next_item(&p, item, sizeof(item));) {
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

bool inject_one_of(const char *s, const char *const *choices) {
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
bool inject_check_annotations(struct mutation *m) {
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
      return inject_settle(m, INJECT_REFUSED, "unknown annotation %s", a->string);
    }
    const char *v = cJSON_IsString(a) ? a->valuestring : NULL;
    bool ok = v != NULL;
    char why[200] = "";
    if (ok && strstr(key, "ports") != NULL) {
      ok = iptables_port_list_check(v, why, sizeof(why));
    } else if (ok && strstr(key, "cidrs") != NULL) {
      ok = iptables_cidr_list_check(v, why, sizeof(why));
    } else if (ok && strcmp(key, "inject") == 0) {
      ok = inject_one_of(v, kInject);
    } else if (ok && strcmp(key, "inbound-mode") == 0) {
      ok = inject_one_of(v, kModes);
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
      ok = inject_one_of(v, kLevels);
    }
    if (!ok) {
      return inject_settle(m, INJECT_REFUSED, "annotation %s: \"%.200s\" is not %s%s%s", a->string,
                           v != NULL ? v : "(not a string)", kKnown[known].expected,
                           why[0] != '\0' ? ": " : "", why);
    }
  }
  const char *native = inject_annotation(m, ANNOTATION_PREFIX "native-sidecar");
  const char *rewrite = inject_annotation(m, ANNOTATION_PREFIX "rewrite-probes");
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
  cJSON_ArrayForEach(e, kjson_field(term, "matchExpressions")) {
    const char *key = kjson_string(e, "key");
    const char *op = kjson_string(e, "operator");
    const cJSON *values = kjson_field(e, "values");
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
  if (is_windows(kjson_field(kjson_field(spec, "os"), "name"))) {
    return "spec.os.name: windows";
  }
  if (is_windows(kjson_field(kjson_field(spec, "nodeSelector"), "kubernetes.io/os"))) {
    return "nodeSelector kubernetes.io/os: windows";
  }
  const cJSON *terms =
      kjson_field(kjson_field(kjson_field(kjson_field(spec, "affinity"), "nodeAffinity"),
                              "requiredDuringSchedulingIgnoredDuringExecution"),
                  "nodeSelectorTerms");
  bool all = cJSON_IsArray(terms) && terms->child != NULL;
  const cJSON *t;
  cJSON_ArrayForEach(t, terms) {
    all = all && term_requires_windows(t);
  }
  return all ? "a required node affinity for kubernetes.io/os windows" : NULL;
}

bool inject_should_skip(struct mutation *m, const char *ns) {
  static const char *const kSystem[] = {"kube-system", "kube-public", "kube-node-lease", NULL};
  if (inject_annotation(m, ANNOTATION_PREFIX "status") != NULL) {
    m->out->already_injected = true;
    return !inject_settle(m, INJECT_SKIPPED, "already injected (it has %sstatus)",
                          ANNOTATION_PREFIX);
  }
  if (cJSON_IsTrue(kjson_field(m->spec, "hostNetwork"))) {
    return !inject_settle(m, INJECT_SKIPPED, "a hostNetwork pod shares the node's network");
  }
  const char *label = kjson_string(m->labels, ANNOTATION_PREFIX "inject");
  const char *ann = inject_annotation(m, ANNOTATION_PREFIX "inject");
  if ((label != NULL && strcmp(label, "disabled") == 0) ||
      (ann != NULL && strcmp(ann, "disabled") == 0)) {
    return !inject_settle(m, INJECT_SKIPPED, "%sinject is \"disabled\"", ANNOTATION_PREFIX);
  }
  if (inject_one_of(ns, kSystem) || strcmp(ns, m->cfg->own_namespace) == 0) {
    return !inject_settle(m, INJECT_SKIPPED, "namespace %s is never injected", ns);
  }
  const char *windows = windows_marker(m->spec);
  if (windows != NULL) {
    return !inject_settle(m, INJECT_SKIPPED,
                          "a Windows pod (%s): the sidecar and its interception are Linux-only",
                          windows);
  }
  return false;
}

/* Reads the user or group ID |key| of a securityContext: false when it is there but no
 * ID (not an integer from 0 to 2^31 - 1, which the API server would refuse too); |*id| is
 * -1 when it is absent. */
static bool security_id(const cJSON *security, const char *key, long *id) {
  const cJSON *v = kjson_field(security, key);
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
bool inject_check_identities(struct mutation *m) {
  const cJSON *pod_sc = kjson_field(m->spec, "securityContext");
  static const char *const kPodGroups[] = {"fsGroup", "supplementalGroups"};
  bool csi = inject_annotation(m, ANNOTATION_PREFIX "cert-secret") == NULL;
  for (size_t i = 0; csi && i < 2; i++) {
    const cJSON *v = kjson_field(pod_sc, kPodGroups[i]);
    const cJSON *g;
    bool listed = false;
    if (cJSON_IsArray(v)) {
      cJSON_ArrayForEach(g, v) {
        listed |= cJSON_IsNumber(g) && g->valuedouble == MTLSD_PROXY_ID;
      }
    }
    if (listed || (cJSON_IsNumber(v) && v->valuedouble == MTLSD_PROXY_ID)) {
      return inject_settle(m, INJECT_REFUSED,
                           "spec.securityContext.%s has %d, the proxy's group: every container "
                           "would read the pod's private key",
                           kPodGroups[i], MTLSD_PROXY_ID);
    }
  }
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  static const char *const kKeys[] = {"runAsUser", "runAsGroup"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *c;
    cJSON_ArrayForEach(c, kjson_field(m->spec, kLists[l])) {
      const cJSON *sc = kjson_field(c, "securityContext");
      const char *name = kjson_string(c, "name");
      name = name != NULL ? name : "?";
      for (size_t i = 0; i < 2; i++) {
        long own, inherited;
        if (!security_id(sc, kKeys[i], &own) || !security_id(pod_sc, kKeys[i], &inherited)) {
          return inject_settle(m, INJECT_REFUSED,
                               "%s %s: securityContext.%s is not a user or group ID", kWhat[l],
                               name, kKeys[i]);
        }
        long id = own >= 0 ? own : inherited;
        if (id == MTLSD_PROXY_ID) {
          return inject_settle(m, INJECT_REFUSED,
                               "%s %s runs with %s %d%s, the proxy's: its traffic would bypass "
                               "interception",
                               kWhat[l], name, kKeys[i], MTLSD_PROXY_ID,
                               own >= 0 ? "" : " (from the pod's securityContext)");
        }
      }
      const cJSON *mount;
      cJSON_ArrayForEach(mount, kjson_field(c, "volumeMounts")) {
        const char *volume = kjson_string(mount, "name");
        if (volume != NULL && strcmp(volume, CERTS_VOLUME) == 0) {
          return inject_settle(m, INJECT_REFUSED,
                               "%s %s mounts the volume %s, which holds the pod's private key",
                               kWhat[l], name, CERTS_VOLUME);
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
bool inject_check_conflicts(struct mutation *m) {
  static const char *const kMeshAnnotations[] = {"sidecar.istio.io/status",
                                                 "linkerd.io/proxy-version"};
  static const char *const kMeshContainers[] = {"istio-proxy", "istio-init", "linkerd-proxy",
                                                "linkerd-init", NULL};
  static const char *const kOurs[] = {SIDECAR_NAME, INIT_NAME, NULL};
  static const struct {
    int port;
    const char *what;
  } kOwnPorts[] = {{MTLSD_ADMIN_PORT, "admin"},
                   {MTLSD_OUTBOUND_PORT, "outbound"},
                   {MTLSD_INBOUND_PORT, "inbound"},
                   {MTLSD_HEALTH_PORT, "health"}};
  for (size_t i = 0; i < sizeof(kMeshAnnotations) / sizeof(kMeshAnnotations[0]); i++) {
    if (kjson_field(m->annotations, kMeshAnnotations[i]) != NULL) {
      return inject_settle(m, INJECT_REFUSED,
                           "it already carries another mesh's proxy (annotation %s): the two would "
                           "take the same ports and traffic",
                           kMeshAnnotations[i]);
    }
  }
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *c;
    cJSON_ArrayForEach(c, kjson_field(m->spec, kLists[l])) {
      const char *name = kjson_string(c, "name");
      if (name != NULL && inject_one_of(name, kMeshContainers)) {
        return inject_settle(m, INJECT_REFUSED,
                             "%s %s is another mesh's proxy: the two would take the same ports and "
                             "traffic",
                             kWhat[l], name);
      }
      if (name != NULL && inject_one_of(name, kOurs)) {
        return inject_settle(m, INJECT_REFUSED, "%s %s has the name of mtlsd's own", kWhat[l],
                             name);
      }
      const cJSON *port;
      cJSON_ArrayForEach(port, kjson_field(c, "ports")) {
        const cJSON *number = kjson_field(port, "containerPort");
        const char *protocol = kjson_string(port, "protocol");
        for (size_t k = 0;
             cJSON_IsNumber(number) && (protocol == NULL || strcmp(protocol, "TCP") == 0) &&
             k < sizeof(kOwnPorts) / sizeof(kOwnPorts[0]);
             k++) {
          if (number->valuedouble == kOwnPorts[k].port) {
            return inject_settle(m, INJECT_REFUSED, "%s %s: port %d is the sidecar's %s port",
                                 kWhat[l], name != NULL ? name : "?", kOwnPorts[k].port,
                                 kOwnPorts[k].what);
          }
        }
      }
    }
  }
  const cJSON *v;
  cJSON_ArrayForEach(v, kjson_field(m->spec, "volumes")) {
    const char *name = kjson_string(v, "name");
    if (name != NULL && strcmp(name, CERTS_VOLUME) == 0) {
      return inject_settle(m, INJECT_REFUSED,
                           "spec.volumes has %s, the name of mtlsd's certificate volume",
                           CERTS_VOLUME);
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

bool inject_check_shape(struct mutation *m) {
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kProbes[] = {"livenessProbe", "readinessProbe", "startupProbe"};
  for (size_t l = 0; l < 2; l++) {
    const cJSON *list = kjson_field(m->spec, kLists[l]);
    size_t count = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, list) {
      if (++count > CONTAINERS_MAX) {
        return inject_settle(m, INJECT_REFUSED,
                             "spec.%s has more than %d entries: not a pod to mesh", kLists[l],
                             CONTAINERS_MAX);
      }
      for (size_t p = 0; p < 3; p++) {
        const cJSON *probe = kjson_field(c, kProbes[p]);
        if (probe != NULL && json_weight(probe, PROBE_BYTES_MAX) > PROBE_BYTES_MAX) {
          const char *name = kjson_string(c, "name");
          return inject_settle(m, INJECT_REFUSED,
                               "%s %s: %s is over %d bytes: not a probe to rewrite",
                               l == 0 ? "init container" : "container", name != NULL ? name : "?",
                               kProbes[p], PROBE_BYTES_MAX);
        }
      }
    }
  }
  return true;
}
