/* inject_probes: the rewrite of what the kubelet calls on the pod's network (probes and
 * lifecycle hooks) to the sidecar's health port (see inject_internal.h). */
#include "inject_internal.h"

#include <stdio.h>
#include <string.h>

#include "mtlsd/kube/jsonpatch.h"
#include "mtlsd/kube/kjson.h"

/* Resolves a named port of |probe_handler| against |container|'s ports, in place. */
static bool resolve_port(struct mutation *m, const cJSON *container, cJSON *handler,
                         const char *where) {
  cJSON *port = kjson_field(handler, "port");
  if (cJSON_IsNumber(port)) {
    return true;
  }
  const char *name = cJSON_IsString(port) ? port->valuestring : NULL;
  const cJSON *p;
  cJSON_ArrayForEach(p, kjson_field(container, "ports")) {
    const char *pname = kjson_string(p, "name");
    const cJSON *number = kjson_field(p, "containerPort");
    if (name != NULL && pname != NULL && strcmp(name, pname) == 0 && cJSON_IsNumber(number)) {
      kjson_set(handler, "port", cJSON_CreateNumber(number->valuedouble));
      return true;
    }
  }
  return inject_settle(m, INJECT_REFUSED, "%s.port %s%s%s names no port of the container", where,
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
    if (kjson_field(action, kHandlers[i]) != NULL) {
      found = kHandlers[i];
    }
  }
  return found != NULL && kjson_field(kjson_field(action, found), "host") == NULL ? found : NULL;
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
  const cJSON *action = kjson_field(
      a->parent != NULL ? kjson_field(t->container, a->parent) : t->container, a->member);
  const char *handler_key = network_handler(action, a->probe);
  if (handler_key == NULL) {
    return true;
  }
  cJSON *original = cJSON_Duplicate(action, true);
  char where[200];
  snprintf(where, sizeof(where), "%s %s: %s%s%s.%s", t->what, t->name,
           a->parent != NULL ? a->parent : "", a->parent != NULL ? "." : "", a->member,
           handler_key);
  if (original == NULL ||
      !resolve_port(m, t->container, kjson_field(original, handler_key), where)) {
    cJSON_Delete(original);
    return false;
  }
  if (!a->probe) {
    kjson_set(original, "timeoutSeconds", cJSON_CreateNumber(m->grace_seconds));
  }
  char key[128];
  snprintf(key, sizeof(key), "%s/%s", t->name, a->kind);
  kjson_attach(m->app_probes, key, original);

  cJSON *rewritten = cJSON_CreateObject();
  cJSON *get = cJSON_AddObjectToObject(rewritten, "httpGet");
  char path[200];
  snprintf(path, sizeof(path), "/%s/%s/%s", a->route, t->name, a->kind);
  cJSON_AddStringToObject(get, "path", path);
  cJSON_AddNumberToObject(get, "port", MTLSD_HEALTH_PORT);
  cJSON_AddStringToObject(get, "scheme", "HTTP");
  for (size_t i = 0; a->probe && i < sizeof(kTiming) / sizeof(kTiming[0]); i++) {
    const cJSON *timing = kjson_field(action, kTiming[i]);
    if (timing != NULL) {
      kjson_attach(rewritten, kTiming[i], cJSON_Duplicate(timing, true));
    }
  }
  char ptr[JSONPATCH_POINTER_MAX], idx[24];
  snprintf(idx, sizeof(idx), "%zu", t->index);
  jsonpatch_pointer_join(ptr, m->spec_ptr, t->list);
  jsonpatch_pointer_push(ptr, idx);
  if (a->parent != NULL) {
    jsonpatch_pointer_push(ptr, a->parent);
  }
  jsonpatch_pointer_push(ptr, a->member);
  return inject_add_op(m, ptr, rewritten);
}

/* A native sidecar: an init container that keeps running beside the application. */
static bool is_native_sidecar(const cJSON *container) {
  const char *policy = kjson_string(container, "restartPolicy");
  return policy != NULL && strcmp(policy, "Always") == 0;
}

/* Rewrites what the kubelet calls on the application containers and the native sidecars
 * (an init container that runs to completion is never probed and has no hooks). */
bool inject_rewrite_probes(struct mutation *m) {
  static const char *const kLists[] = {"initContainers", "containers"};
  static const char *const kWhat[] = {"init container", "container"};
  for (size_t l = 0; l < 2; l++) {
    struct target t = {.list = kLists[l], .what = kWhat[l]};
    cJSON_ArrayForEach(t.container, kjson_field(m->spec, kLists[l])) {
      t.name = kjson_string(t.container, "name");
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
