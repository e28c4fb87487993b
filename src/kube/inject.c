/* inject: the mutation of a pod (see mtlsd/inject.h).
 *
 * The operations come in an order that keeps every path valid when they are applied one
 * after the other: the annotations and the label, the rewrites of probes and hooks of the
 * application containers and native sidecars (at their original indices), the volume, the
 * pod's fsGroup, the init containers, and last, without native sidecars, the sidecar at
 * the front of the containers. */
#include "mtlsd/kube/inject.h"

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/json_alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inject_internal.h"
#include "mtlsd/kube/jsonpatch.h"
#include "mtlsd/kube/kjson.h"

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

/* ---- The mutation ---- */

bool inject_settle(struct mutation *m, enum inject_outcome outcome, const char *fmt, ...) {
  if (m->out->reason[0] == '\0') {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->out->reason, sizeof(m->out->reason), fmt, ap);
    va_end(ap);
    m->out->outcome = outcome;
  }
  return false;
}

void inject_warn(struct mutation *m, const char *fmt, ...) {
  struct inject_result *r = m->out;
  if (r->warning_count < INJECT_WARNINGS_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->warnings[r->warning_count++], sizeof(r->warnings[0]), fmt, ap);
    va_end(ap);
  }
}

const char *inject_annotation(const struct mutation *m, const char *key) {
  return kjson_string(m->annotations, key);
}

bool inject_add_op(struct mutation *m, const char *path, cJSON *value) {
  cJSON *op = cJSON_CreateObject();
  if (op == NULL || value == NULL || path[0] == '\0' ||
      cJSON_AddStringToObject(op, "op", "add") == NULL ||
      cJSON_AddStringToObject(op, "path", path) == NULL) {
    cJSON_Delete(op);
    cJSON_Delete(value);
    return inject_settle(m, INJECT_REFUSED, "out of memory");
  }
  kjson_attach(op, "value", value);
  kjson_append(m->patch, op);
  return true;
}

/* The API group of |object|'s apiVersion ("apps" of "apps/v1", "" of "v1"); NULL when it
 * has none. */
static const char *api_group(const cJSON *object, char *buf, size_t len) {
  const char *version = kjson_string(object, "apiVersion");
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
  const char *kind = kjson_string(object, "kind");
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
      tmpl = kjson_field(tmpl, tok);
    }
    snprintf(m->meta_ptr, sizeof(m->meta_ptr), "%s/metadata", kKinds[i].path);
    snprintf(m->spec_ptr, sizeof(m->spec_ptr), "%s/spec", kKinds[i].path);
    m->meta = kjson_field(tmpl, "metadata");
    m->spec = kjson_field(tmpl, "spec");
    if (!cJSON_IsObject(m->spec) || !cJSON_IsArray(kjson_field(m->spec, "containers"))) {
      return inject_settle(m, INJECT_REFUSED, "%s has no pod spec with containers at %s/spec", kind,
                           kKinds[i].path[0] != '\0' ? kKinds[i].path : "");
    }
    m->annotations = kjson_field(m->meta, "annotations");
    m->labels = kjson_field(m->meta, "labels");
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
    const cJSON *nodes[] = {m->meta, m->annotations, m->labels,
                            kjson_field(m->spec, "initContainers"),
                            kjson_field(m->spec, "volumes")};
    for (size_t s = 0; s < sizeof(kShapes) / sizeof(kShapes[0]); s++) {
      if (nodes[s] != NULL &&
          !(kShapes[s].array ? cJSON_IsArray(nodes[s]) : cJSON_IsObject(nodes[s]))) {
        return inject_settle(m, INJECT_REFUSED, "%s of the pod%s is not an %s", kShapes[s].what,
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

/* ---- What is added ---- */

/* The sidecar's configuration (MTLSD_CONFIG): the image's built-in one, with the pod's
 * allow list and inbound mode, and the IPv6 outbound listener the --ipv6 rules need. */
static char *sidecar_config(const struct mutation *m) {
  const char *allow = inject_annotation(m, ANNOTATION_PREFIX "allow");
  const char *mode = inject_annotation(m, ANNOTATION_PREFIX "inbound-mode");
  /* The injector's base (validated when its file was read), then what the injection
   * decides: the ports the interception and the probe rewrite point at. */
  cJSON *cfg =
      m->cfg->sidecar_base != NULL ? cJSON_Parse(m->cfg->sidecar_base) : cJSON_CreateObject();
  if (cfg == NULL) {
    return NULL;
  }
  kjson_set(cfg, "trust_domain", cJSON_CreateString(m->cfg->trust_domain));
  kjson_set(kjson_object(cfg, "admin"), "listen",
            cJSON_CreateString("127.0.0.1:" MTLSD_TEXT(MTLSD_ADMIN_PORT)));
  kjson_set(kjson_object(cfg, "health"), "listen",
            cJSON_CreateString("0.0.0.0:" MTLSD_TEXT(MTLSD_HEALTH_PORT)));
  kjson_set(kjson_object(cfg, "certs"), "dir", cJSON_CreateString(MTLSD_CERTS_DIR));
  cJSON *listeners = cJSON_AddArrayToObject(cfg, "listeners");
  static const char *const kListeners[][3] = {
      {"outbound", "outbound", "127.0.0.1:" MTLSD_TEXT(MTLSD_OUTBOUND_PORT)},
      {"outbound6", "outbound", "[::1]:" MTLSD_TEXT(MTLSD_OUTBOUND_PORT)},
      {"inbound", "inbound", "0.0.0.0:" MTLSD_TEXT(MTLSD_INBOUND_PORT)},
      {"inbound6", "inbound", "[::]:" MTLSD_TEXT(MTLSD_INBOUND_PORT)},
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
        for (const char *p = allow; inject_next_item(&p, item, sizeof(item));) {
          kjson_append(list, cJSON_CreateString(item));
        }
      }
      if (mode != NULL && strcmp(mode, "permissive") == 0) {
        cJSON_AddBoolToObject(l, "permissive", true);
      }
    }
    kjson_append(listeners, l);
  }
  if (kjson_field(cfg, "workers") == NULL) {
    cJSON_AddNumberToObject(cfg, "workers", 2);
  }
  if (kjson_field(cfg, "access_log") == NULL) {
    cJSON_AddStringToObject(cfg, "access_log", "stdout");
  }
  char *text = cJSON_PrintUnformatted(cfg);
  cJSON_Delete(cfg);
  return text;
}

static cJSON *security_context(bool init) {
  cJSON *sc = cJSON_CreateObject();
  cJSON_AddNumberToObject(sc, "runAsUser", init ? 0 : MTLSD_PROXY_ID);
  cJSON_AddNumberToObject(sc, "runAsGroup", init ? 0 : MTLSD_PROXY_ID);
  cJSON_AddBoolToObject(sc, "runAsNonRoot", !init);
  cJSON_AddBoolToObject(sc, "readOnlyRootFilesystem", true);
  cJSON_AddBoolToObject(sc, "allowPrivilegeEscalation", false);
  cJSON *caps = cJSON_AddObjectToObject(sc, "capabilities");
  static const char *const kAll[] = {"ALL"};
  static const char *const kNet[] = {"NET_ADMIN", "NET_RAW"};
  kjson_attach(caps, "drop", kjson_strings(kAll, 1));
  if (init) {
    kjson_attach(caps, "add", kjson_strings(kNet, 2));
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
  static const char *const kBase[] = {"iptables",      "--apply",
                                      "--health-port", MTLSD_TEXT(MTLSD_HEALTH_PORT),
                                      "--admin-port",  MTLSD_TEXT(MTLSD_ADMIN_PORT),
                                      "--proxy-uid",   MTLSD_TEXT(MTLSD_PROXY_ID),
                                      "--proxy-gid",   MTLSD_TEXT(MTLSD_PROXY_ID),
                                      "--ipv6"};
  /* "--ipv6" is last: left out where pods have no IPv6. */
  size_t base_count = sizeof(kBase) / sizeof(kBase[0]) - (m->cfg->ipv6 ? 0 : 1);
  for (size_t i = 0; i < base_count; i++) {
    kjson_append(args, cJSON_CreateString(kBase[i]));
  }
  if (!m->cfg->exclude_api_server) {
    kjson_append(args, cJSON_CreateString("--no-exclude-api-server"));
  }
  for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
    char key[64], flag[64];
    snprintf(key, sizeof(key), ANNOTATION_PREFIX "%s", flags[i].name);
    snprintf(flag, sizeof(flag), "--%s", flags[i].name);
    const char *v = inject_annotation(m, key);
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
      kjson_append(args, cJSON_CreateString(flag));
      kjson_append(args, cJSON_CreateString(joined));
      free(joined);
    }
  }
  kjson_attach(c, "securityContext", security_context(true));
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
  cJSON_AddNumberToObject(get, "port", MTLSD_HEALTH_PORT);
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
    const char *v = inject_annotation(m, key);
    v = v != NULL ? v : defaults[i];
    if (v != NULL) {
      cJSON *part = kjson_field(r, kParts[i][0]);
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
  kjson_append(args, cJSON_CreateString("run"));
  const char *level = inject_annotation(m, ANNOTATION_PREFIX "log-level");
  if (level != NULL) {
    kjson_append(args, cJSON_CreateString("--log-level"));
    kjson_append(args, cJSON_CreateString(level));
  }
  cJSON *ports = cJSON_AddArrayToObject(c, "ports");
  cJSON *port = cJSON_CreateObject();
  cJSON_AddStringToObject(port, "name", "mtlsd-health");
  cJSON_AddNumberToObject(port, "containerPort", MTLSD_HEALTH_PORT);
  cJSON_AddStringToObject(port, "protocol", "TCP");
  kjson_append(ports, port);
  cJSON *env = cJSON_AddArrayToObject(c, "env");
  char *config = sidecar_config(m);
  kjson_append(env, env_value("MTLSD_CONFIG", config != NULL ? config : "{}"));
  free(config);
  const struct {
    const char *name;
    const cJSON *value;
  } kFromPod[] = {{"MTLSD_APP_PROBES", m->app_probes->child != NULL ? m->app_probes : NULL},
                  {"MTLSD_APP_METRICS", m->app_metrics}};
  for (size_t i = 0; i < 2; i++) {
    if (kFromPod[i].value != NULL) {
      char *text = cJSON_PrintUnformatted(kFromPod[i].value);
      kjson_append(env, env_value(kFromPod[i].name, text != NULL ? text : "{}"));
      free(text);
    }
  }
  kjson_append(env, env_from_field("POD_NAME", "metadata.name"));
  kjson_append(env, env_from_field("POD_NAMESPACE", "metadata.namespace"));
  kjson_append(env, env_from_field("POD_IP", "status.podIP"));
  kjson_append(env, env_from_field("SERVICE_ACCOUNT", "spec.serviceAccountName"));
  kjson_attach(c, "startupProbe", health_probe("/ready", 1, 120));
  kjson_attach(c, "readinessProbe", health_probe("/ready", 5, 3));
  kjson_attach(c, "livenessProbe", health_probe("/healthz", 10, 3));
  if (!m->native) {
    /* The application's containers start after this hook returns: it waits for /ready,
     * so that no app connection goes out before the proxy serves. */
    static const char *const kWait[] = {"/usr/local/bin/mtlsd", "wait-ready", "--timeout", "120s"};
    cJSON *exec = cJSON_AddObjectToObject(
        cJSON_AddObjectToObject(cJSON_AddObjectToObject(c, "lifecycle"), "postStart"), "exec");
    kjson_attach(exec, "command", kjson_strings(kWait, 4));
  }
  kjson_attach(c, "resources", resources(m));
  kjson_attach(c, "securityContext", security_context(false));
  cJSON *mounts = cJSON_AddArrayToObject(c, "volumeMounts");
  cJSON *mount = cJSON_CreateObject();
  cJSON_AddStringToObject(mount, "name", CERTS_VOLUME);
  cJSON_AddStringToObject(mount, "mountPath", MTLSD_CERTS_DIR);
  cJSON_AddBoolToObject(mount, "readOnly", true);
  kjson_append(mounts, mount);
  return c;
}

static cJSON *certs_volume(const struct mutation *m) {
  cJSON *v = cJSON_CreateObject();
  cJSON_AddStringToObject(v, "name", CERTS_VOLUME);
  const char *secret = inject_annotation(m, ANNOTATION_PREFIX "cert-secret");
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
  cJSON_AddStringToObject(attrs, "spiffe.csi.cert-manager.io/fs-group", MTLSD_TEXT(MTLSD_PROXY_ID));
  return v;
}

/* Adds |value| to the array |key| of the object at |parent_ptr|: as element |index|
 * (-1: at the end) when the array exists, else as a new array holding it. */
static bool add_to_array(struct mutation *m, const cJSON *parent, const char *parent_ptr,
                         const char *key, long index, cJSON *value) {
  char ptr[JSONPATCH_POINTER_MAX];
  jsonpatch_pointer_join(ptr, parent_ptr, key);
  if (value != NULL && !cJSON_IsArray(kjson_field(parent, key))) {
    cJSON *array = cJSON_CreateArray();
    kjson_append(array, value);
    return inject_add_op(m, ptr, array);
  }
  char idx[24];
  snprintf(idx, sizeof(idx), index < 0 ? "-" : "%ld", index);
  jsonpatch_pointer_push(ptr, idx);
  return inject_add_op(m, ptr, value);
}

/* A pod that Prometheus scrapes itself (prometheus.io/port) would lose its metrics behind
 * strict inbound mTLS: the port and path move to MTLSD_APP_METRICS and the annotations
 * point at the health port, which serves mtlsd's metrics and the application's after
 * them (one scrape target, docs/admin.md). Not when scraping is off; not over https,
 * which the health port does not fetch (said in a warning). */
static bool merge_app_metrics(struct mutation *m, const char *base) {
  const char *port = inject_annotation(m, "prometheus.io/port");
  const char *scrape = inject_annotation(m, "prometheus.io/scrape");
  const char *scheme = inject_annotation(m, "prometheus.io/scheme");
  const char *path = inject_annotation(m, "prometheus.io/path");
  char *end = NULL;
  long number = port != NULL ? strtol(port, &end, 10) : 0;
  if (port == NULL || end == port || *end != '\0' || number < 1 || number > 65535 ||
      number == MTLSD_HEALTH_PORT || (scrape != NULL && strcmp(scrape, "false") == 0)) {
    return true;
  }
  bool path_ok = path == NULL || (path[0] == '/' && strlen(path) <= APP_METRICS_PATH_MAX &&
                                  strpbrk(path, " \t\r\n") == NULL);
  if ((scheme != NULL && strcmp(scheme, "http") != 0) || !path_ok) {
    inject_warn(
        m,
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
    return inject_settle(m, INJECT_REFUSED, "out of memory");
  }
  char ptr[JSONPATCH_POINTER_MAX];
  jsonpatch_pointer_join(ptr, base, "prometheus.io/port");
  bool ok = inject_add_op(m, ptr, cJSON_CreateString(MTLSD_TEXT(MTLSD_HEALTH_PORT)));
  jsonpatch_pointer_join(ptr, base, "prometheus.io/path");
  return ok && inject_add_op(m, ptr, cJSON_CreateString("/metrics"));
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
  char ptr[JSONPATCH_POINTER_MAX];
  if (m->meta == NULL) {
    cJSON *meta = cJSON_CreateObject();
    cJSON_AddObjectToObject(meta, "annotations");
    if (!inject_add_op(m, m->meta_ptr, meta)) {
      return false;
    }
  } else if (!cJSON_IsObject(m->annotations)) {
    jsonpatch_pointer_join(ptr, m->meta_ptr, "annotations");
    if (!inject_add_op(m, ptr, cJSON_CreateObject())) {
      return false;
    }
  }
  char base[JSONPATCH_POINTER_MAX];
  jsonpatch_pointer_join(base, m->meta_ptr, "annotations");
  cJSON *status = cJSON_CreateObject();
  cJSON_AddStringToObject(status, "version", MTLSD_VERSION);
  static const char *const kNative[] = {INIT_NAME, SIDECAR_NAME};
  static const char *const kInit[] = {INIT_NAME};
  static const char *const kSidecar[] = {SIDECAR_NAME};
  static const char *const kVolumes[] = {CERTS_VOLUME};
  kjson_attach(status, "initContainers",
               kjson_strings(m->native ? kNative : kInit, m->native ? 2 : 1));
  kjson_attach(status, "containers", kjson_strings(kSidecar, m->native ? 0 : 1));
  kjson_attach(status, "volumes", kjson_strings(kVolumes, 1));
  char *text = cJSON_PrintUnformatted(status);
  cJSON_Delete(status);
  jsonpatch_pointer_join(ptr, base, ANNOTATION_PREFIX "status");
  bool ok = text != NULL && inject_add_op(m, ptr, cJSON_CreateString(text));
  free(text);
  const cJSON *first = cJSON_GetArrayItem(kjson_field(m->spec, "containers"), 0);
  const char *first_name = kjson_string(first, "name");
  if (ok && first_name != NULL &&
      inject_annotation(m, "kubectl.kubernetes.io/default-container") == NULL) {
    jsonpatch_pointer_join(ptr, base, "kubectl.kubernetes.io/default-container");
    ok = inject_add_op(m, ptr, cJSON_CreateString(first_name));
  }
  if (ok && !has_prometheus_annotation(m)) {
    static const char *const kProm[][2] = {{"prometheus.io/scrape", "true"},
                                           {"prometheus.io/port", MTLSD_TEXT(MTLSD_HEALTH_PORT)},
                                           {"prometheus.io/path", "/metrics"}};
    for (size_t i = 0; ok && i < 3; i++) {
      jsonpatch_pointer_join(ptr, base, kProm[i][0]);
      ok = inject_add_op(m, ptr, cJSON_CreateString(kProm[i][1]));
    }
  } else if (ok) {
    ok = merge_app_metrics(m, base);
  }
  return ok;
}

/* The label the mesh directory will watch (docs/injection.md): this pod has a sidecar. */
static bool add_label(struct mutation *m) {
  char ptr[JSONPATCH_POINTER_MAX];
  jsonpatch_pointer_join(ptr, m->meta_ptr, "labels");
  if (!cJSON_IsObject(m->labels)) {
    cJSON *labels = cJSON_CreateObject();
    cJSON_AddStringToObject(labels, INJECTED_LABEL, "true");
    return inject_add_op(m, ptr, labels);
  }
  jsonpatch_pointer_push(ptr, INJECTED_LABEL);
  return inject_add_op(m, ptr, cJSON_CreateString("true"));
}

/* A Secret volume's files are root's, readable by the pod's fsGroup (defaultMode 0440):
 * without one the sidecar (UID 1337) could not read its key. Every container of the pod
 * has the fsGroup, so the others can read it too; which is why csi-driver-spiffe, whose
 * files are group 1337 without an fsGroup, is the default. */
static bool set_fs_group(struct mutation *m) {
  const char *secret = inject_annotation(m, ANNOTATION_PREFIX "cert-secret");
  if (secret == NULL) {
    return true;
  }
  const cJSON *sc = kjson_field(m->spec, "securityContext");
  const cJSON *group = kjson_field(sc, "fsGroup");
  if (group != NULL) {
    if (!cJSON_IsNumber(group) || group->valuedouble != MTLSD_PROXY_ID) {
      inject_warn(
          m,
          "the Secret %s is read through the pod's fsGroup, which every container of the pod "
          "has: they can all read its private key",
          secret);
    }
    return true;
  }
  char ptr[JSONPATCH_POINTER_MAX];
  jsonpatch_pointer_join(ptr, m->spec_ptr, "securityContext");
  cJSON *value = cJSON_CreateNumber(MTLSD_PROXY_ID);
  if (sc != NULL) {
    jsonpatch_pointer_push(ptr, "fsGroup");
  } else {
    cJSON *context = cJSON_CreateObject();
    kjson_attach(context, "fsGroup", value);
    value = context;
  }
  inject_warn(m,
              "spec.securityContext.fsGroup set to %d, so that the sidecar reads the Secret %s "
              "(every container of the pod can read it)",
              MTLSD_PROXY_ID, secret);
  return inject_add_op(m, ptr, value);
}

bool inject_object(const struct inject_config *cfg, const cJSON *object, const char *ns,
                   struct inject_result *out) {
  *out = (struct inject_result){.outcome = INJECT_SKIPPED};
  struct mutation m = {.cfg = cfg, .out = out};
  if (!cJSON_IsObject(object) || !find_template(&m, object)) {
    return out->outcome == INJECT_REFUSED;
  }
  if (ns == NULL) {
    ns = kjson_string(kjson_field(object, "metadata"), "namespace");
  }
  ns = ns != NULL ? ns : "default";
  if (inject_should_skip(&m, ns) || !inject_check_shape(&m) || !inject_check_annotations(&m) ||
      !inject_check_conflicts(&m) || !inject_check_identities(&m)) {
    return true;
  }
  /* cJSON's builders drop what they could not allocate without a word: a failure counted
   * while the patch is built refuses it whole rather than hand out a pod with a piece
   * missing. */
  if (m.job && !m.native) {
    inject_warn(&m,
                "a Job's pod with the sidecar as a regular container (%snative-sidecar: \"false\") "
                "never completes by itself: its application must end the sidecar with POST "
                "/quitquitquit on 127.0.0.1:15000",
                ANNOTATION_PREFIX);
  }
  const cJSON *grace = kjson_field(m.spec, "terminationGracePeriodSeconds");
  m.grace_seconds =
      cJSON_IsNumber(grace) && grace->valuedouble >= 1 ? grace->valuedouble : DEFAULT_GRACE_SECONDS;
  /* The sidecar takes a timeout of a day at most (docs/admin.md). */
  m.grace_seconds = m.grace_seconds < APP_PROBE_TIMEOUT_MAX_S ? (double)(long)m.grace_seconds
                                                              : APP_PROBE_TIMEOUT_MAX_S;
  unsigned long failures = json_alloc_failures();
  m.patch = cJSON_CreateArray();
  m.app_probes = cJSON_CreateObject();
  const cJSON *spec = m.spec;
  bool ok = m.patch != NULL && m.app_probes != NULL && add_annotations(&m) && add_label(&m) &&
            (!m.rewrite_probes || inject_rewrite_probes(&m)) &&
            add_to_array(&m, spec, m.spec_ptr, "volumes", -1, certs_volume(&m)) && set_fs_group(&m);
  if (ok && m.native) {
    ok = add_to_array(&m, spec, m.spec_ptr, "initContainers", 0, init_container(&m));
    /* Right after mtlsd-init: element 1 once the first add has made the array. */
    char ptr[JSONPATCH_POINTER_MAX];
    jsonpatch_pointer_join(ptr, m.spec_ptr, "initContainers");
    jsonpatch_pointer_push(ptr, "1");
    ok = ok && inject_add_op(&m, ptr, sidecar_container(&m));
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
      inject_settle(&m, INJECT_REFUSED, "out of memory");
    }
    return true;
  }
  out->outcome = INJECT_INJECTED;
  out->patch = m.patch;
  snprintf(out->reason, sizeof(out->reason), "injected%s", m.native ? "" : " (not native)");
  return true;
}
