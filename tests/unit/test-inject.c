/* The injection mutation: what it adds to a pod and a Deployment, that it only adds
 * (nothing another webhook put there is lost or moved), the probe rewrite with named
 * ports, idempotency, every skip and refusal with its reason, and the JSON Pointer
 * escapes of its paths. */
#include "mtlsd/base/json_alloc.h"
#include "mtlsd/kube/inject.h"
#include "mtlsd/kube/jsonpatch.h"

#include "test.h"

static struct inject_config g_cfg;

/* JSON written with single quotes reads better in C. */
static cJSON *parse_sq(const char *single_quoted) {
  char *s = strdup(single_quoted);
  for (char *c = s; *c != '\0'; c++) {
    *c = *c == '\'' ? '"' : *c;
  }
  cJSON *j = cJSON_Parse(s);
  if (j == NULL) {
    fprintf(stderr, "  bad test JSON: %s\n", s);
  }
  free(s);
  return j;
}

static const struct inject_config *config(void) {
  if (g_cfg.image == NULL) {
    inject_config_default(&g_cfg);
  }
  return &g_cfg;
}

/* Injects |object|: the outcome, and the patched object when injected (else NULL). */
static cJSON *inject(const cJSON *object, const char *ns, struct inject_result *r) {
  CHECK(inject_object(config(), object, ns, r));
  if (r->outcome != INJECT_INJECTED) {
    return NULL;
  }
  cJSON *out = jsonpatch_apply(object, r->patch);
  CHECK(out != NULL);
  return out;
}

static const cJSON *at(const cJSON *j, const char *path) {
  char buf[256];
  snprintf(buf, sizeof(buf), "%s", path);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ".", &save); tok != NULL && j != NULL;
       tok = strtok_r(NULL, ".", &save)) {
    j = cJSON_IsArray(j) ? cJSON_GetArrayItem(j, atoi(tok))
                         : cJSON_GetObjectItemCaseSensitive(j, tok);
  }
  return j;
}

static const char *str_at(const cJSON *j, const char *path) {
  const cJSON *v = at(j, path);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

static const cJSON *env_named(const cJSON *container, const char *name) {
  const cJSON *e;
  cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(container, "env")) {
    if (strcmp(str_at(e, "name"), name) == 0) {
      return e;
    }
  }
  return NULL;
}

#define DEPLOYMENT(template_meta, pod_spec)                                                   \
  "{'apiVersion':'apps/v1','kind':'Deployment','metadata':{'name':'web','namespace':'shop'}," \
  "'spec':{'template':{'metadata':{" template_meta "},'spec':{" pod_spec "}}}}"

static const char kWeb[] = DEPLOYMENT(
    "'labels':{'app':'web'},'annotations':{'other.io/keep':'1'}",
    "'initContainers':[{'name':'vault-init','image':'vault'}],"
    "'volumes':[{'name':'data','emptyDir':{}}],"
    "'containers':[{'name':'web','image':'web:1','ports':[{'name':'http','containerPort':8080}],"
    "'livenessProbe':{'httpGet':{'path':'/healthz','port':'http'},'periodSeconds':7},"
    "'readinessProbe':{'tcpSocket':{'port':8080}},"
    "'startupProbe':{'exec':{'command':['true']}}},"
    "{'name':'metrics','image':'m','readinessProbe':{'grpc':{'port':9090}},"
    "'livenessProbe':{'httpGet':{'host':'example.com','port':80}}}]");

TEST(deployment_is_injected_and_nothing_is_lost) {
  cJSON *in = parse_sq(kWeb);
  struct inject_result r;
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  const cJSON *spec = at(out, "spec.template.spec");
  /* Native sidecar: mtlsd-init, then mtlsd, then the init container that was there. */
  CHECK_INTEQ(cJSON_GetArraySize(at(spec, "initContainers")), 3);
  CHECK_STREQ(str_at(spec, "initContainers.0.name"), "mtlsd-init");
  CHECK_STREQ(str_at(spec, "initContainers.1.name"), "mtlsd");
  CHECK_STREQ(str_at(spec, "initContainers.1.restartPolicy"), "Always");
  CHECK_STREQ(str_at(spec, "initContainers.2.name"), "vault-init");
  /* The app containers stay where they were; the volume is added after theirs. */
  CHECK_INTEQ(cJSON_GetArraySize(at(spec, "containers")), 2);
  CHECK_STREQ(str_at(spec, "containers.0.name"), "web");
  CHECK_STREQ(str_at(spec, "volumes.0.name"), "data");
  CHECK_STREQ(str_at(spec, "volumes.1.name"), "mtlsd-certs");
  CHECK_STREQ(str_at(spec, "volumes.1.csi.driver"), "spiffe.csi.cert-manager.io");
  /* Annotations: the others kept, ours added. */
  const cJSON *ann = at(out, "spec.template.metadata.annotations");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(ann, "other.io/keep")), "1");
  CHECK(cJSON_GetObjectItem(ann, "mtlsd.io/status") != NULL);
  CHECK_STREQ(
      cJSON_GetStringValue(cJSON_GetObjectItem(ann, "kubectl.kubernetes.io/default-container")),
      "web");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(ann, "prometheus.io/port")), "15020");
  /* The init container: root with NET_ADMIN and NET_RAW only. */
  const cJSON *init = at(spec, "initContainers.0");
  CHECK_INTEQ(at(init, "securityContext.runAsUser")->valuedouble, 0);
  CHECK_STREQ(str_at(init, "securityContext.capabilities.drop.0"), "ALL");
  CHECK_STREQ(str_at(init, "securityContext.capabilities.add.0"), "NET_ADMIN");
  CHECK_STREQ(str_at(init, "securityContext.capabilities.add.1"), "NET_RAW");
  CHECK_STREQ(str_at(init, "args.0"), "iptables");
  /* The sidecar: 1337, read-only, no capabilities, probes on the health port. */
  const cJSON *sidecar = at(spec, "initContainers.1");
  CHECK_INTEQ(at(sidecar, "securityContext.runAsUser")->valuedouble, 1337);
  CHECK(cJSON_IsTrue(at(sidecar, "securityContext.readOnlyRootFilesystem")));
  CHECK(cJSON_IsFalse(at(sidecar, "securityContext.allowPrivilegeEscalation")));
  CHECK_STREQ(str_at(sidecar, "securityContext.seccompProfile.type"), "RuntimeDefault");
  CHECK_STREQ(str_at(sidecar, "readinessProbe.httpGet.path"), "/ready");
  CHECK_STREQ(str_at(sidecar, "livenessProbe.httpGet.path"), "/healthz");
  CHECK_STREQ(str_at(sidecar, "ports.0.name"), "mtlsd-health");
  CHECK_STREQ(str_at(sidecar, "volumeMounts.0.mountPath"), "/var/run/mtlsd/certs");
  CHECK(env_named(sidecar, "POD_IP") != NULL && env_named(sidecar, "SERVICE_ACCOUNT") != NULL);
  cJSON *config = cJSON_Parse(str_at(env_named(sidecar, "MTLSD_CONFIG"), "value"));
  CHECK(config != NULL && strcmp(str_at(config, "health.listen"), "0.0.0.0:15020") == 0);
  cJSON_Delete(config);
  /* The probe rewrite: httpGet and tcpSocket and grpc move to 15020 with their timing;
   * exec and probes with a host are left alone. */
  const cJSON *web = at(spec, "containers.0");
  CHECK_STREQ(str_at(web, "livenessProbe.httpGet.path"), "/app-health/web/livez");
  CHECK_INTEQ(at(web, "livenessProbe.httpGet.port")->valuedouble, 15020);
  CHECK_INTEQ(at(web, "livenessProbe.periodSeconds")->valuedouble, 7);
  CHECK_STREQ(str_at(web, "readinessProbe.httpGet.path"), "/app-health/web/readyz");
  CHECK(at(web, "startupProbe.exec") != NULL);
  const cJSON *metrics = at(spec, "containers.1");
  CHECK_STREQ(str_at(metrics, "readinessProbe.httpGet.path"), "/app-health/metrics/readyz");
  CHECK_STREQ(str_at(metrics, "livenessProbe.httpGet.host"), "example.com");
  /* The originals, named port resolved, for the sidecar. */
  cJSON *probes = cJSON_Parse(str_at(env_named(sidecar, "MTLSD_APP_PROBES"), "value"));
  CHECK(probes != NULL);
  CHECK_INTEQ(at(cJSON_GetObjectItem(probes, "web/livez"), "httpGet.port")->valuedouble, 8080);
  CHECK(at(cJSON_GetObjectItem(probes, "metrics/readyz"), "grpc") != NULL);
  CHECK(cJSON_GetObjectItem(probes, "web/startupz") == NULL);
  cJSON_Delete(probes);

  /* Idempotent: the output is left as it is. */
  struct inject_result again;
  CHECK(inject(out, NULL, &again) == NULL);
  CHECK_INTEQ(again.outcome, INJECT_SKIPPED);
  CHECK(strstr(again.reason, "already injected") != NULL);
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

TEST(operations_only_add) {
  cJSON *in = parse_sq(kWeb);
  struct inject_result r;
  CHECK(inject_object(config(), in, NULL, &r) && r.outcome == INJECT_INJECTED);
  const cJSON *op;
  cJSON_ArrayForEach(op, r.patch) {
    CHECK_STREQ(str_at(op, "op"), "add");
  }
  /* Annotation keys are escaped: "/" is "~1". */
  bool escaped = false;
  cJSON_ArrayForEach(op, r.patch) {
    escaped = escaped || strcmp(str_at(op, "path"),
                                "/spec/template/metadata/annotations/mtlsd.io~1status") == 0;
  }
  CHECK(escaped);
  inject_result_clear(&r);
  cJSON_Delete(in);
}

TEST(pod_without_annotations_or_init_containers) {
  cJSON *in = parse_sq(
      "{'kind':'Pod','metadata':{'name':'p'},"
      "'spec':{'containers':[{'name':'app','image':'a'}]}}");
  struct inject_result r;
  cJSON *out = inject(in, "default", &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  CHECK(str_at(out, "metadata.annotations.mtlsd.io/status") == NULL); /* dots in the key */
  CHECK(cJSON_GetObjectItem(at(out, "metadata.annotations"), "mtlsd.io/status") != NULL);
  CHECK_INTEQ(cJSON_GetArraySize(at(out, "spec.initContainers")), 2);
  CHECK_STREQ(str_at(out, "spec.volumes.0.name"), "mtlsd-certs");
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

TEST(not_native_puts_the_sidecar_first_with_a_hold) {
  cJSON *in = parse_sq(DEPLOYMENT(
      "'annotations':{'mtlsd.io/native-sidecar':'false','mtlsd.io/cert-secret':'web-certs'}",
      "'containers':[{'name':'web','image':'w','livenessProbe':{'tcpSocket':{'port':80}}}]"));
  struct inject_result r;
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  const cJSON *spec = at(out, "spec.template.spec");
  CHECK_STREQ(str_at(spec, "containers.0.name"), "mtlsd");
  CHECK(at(spec, "containers.0.lifecycle.postStart.exec") != NULL);
  CHECK(at(spec, "containers.0.restartPolicy") == NULL);
  /* The rewrite was made at the app's original index, before the sidecar moved it. */
  CHECK_STREQ(str_at(spec, "containers.1.livenessProbe.httpGet.path"), "/app-health/web/livez");
  CHECK_STREQ(str_at(spec, "initContainers.0.name"), "mtlsd-init");
  CHECK_STREQ(str_at(spec, "volumes.0.secret.secretName"), "web-certs");
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

TEST(annotations_reach_the_sidecar) {
  cJSON *in = parse_sq(DEPLOYMENT(
      "'annotations':{'mtlsd.io/allow':'spiffe://cluster.local/ns/shop/*,api.example.com',"
      "'mtlsd.io/inbound-mode':'permissive','mtlsd.io/exclude-inbound-ports':'22,9100',"
      "'mtlsd.io/include-outbound-cidrs':'10.0.0.0/8','mtlsd.io/proxy-cpu-limit':'500m',"
      "'mtlsd.io/log-level':'debug','mtlsd.io/rewrite-probes':'false',"
      "'prometheus.io/scrape':'false'}",
      "'containers':[{'name':'web','image':'w','livenessProbe':{'tcpSocket':{'port':80}}}]"));
  struct inject_result r;
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  const cJSON *spec = at(out, "spec.template.spec");
  const cJSON *sidecar = at(spec, "initContainers.1");
  cJSON *config = cJSON_Parse(str_at(env_named(sidecar, "MTLSD_CONFIG"), "value"));
  const cJSON *inbound = at(config, "listeners.2");
  CHECK_STREQ(str_at(inbound, "name"), "inbound");
  CHECK_STREQ(str_at(inbound, "allow.1"), "api.example.com");
  CHECK(cJSON_IsTrue(at(inbound, "permissive")));
  cJSON_Delete(config);
  CHECK_STREQ(str_at(sidecar, "resources.limits.cpu"), "500m");
  CHECK_STREQ(str_at(sidecar, "args.2"), "debug");
  const cJSON *args = at(spec, "initContainers.0.args");
  char *text = cJSON_PrintUnformatted(args);
  CHECK(strstr(text, "\"--exclude-inbound-ports\",\"22,9100\"") != NULL);
  CHECK(strstr(text, "\"--include-outbound-cidrs\",\"10.0.0.0/8\"") != NULL);
  free(text);
  /* rewrite-probes: false leaves the probe, and no MTLSD_APP_PROBES. */
  CHECK(at(spec, "containers.0.livenessProbe.tcpSocket") != NULL);
  CHECK(env_named(sidecar, "MTLSD_APP_PROBES") == NULL);
  /* The pod's own prometheus.io annotations stand. */
  const cJSON *ann = at(out, "spec.template.metadata.annotations");
  CHECK(cJSON_GetObjectItem(ann, "prometheus.io/port") == NULL);
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

TEST(skips_with_their_reasons) {
  static const struct {
    const char *json;
    const char *ns;
    const char *reason;
  } kCases[] = {
      {DEPLOYMENT("", "'hostNetwork':true,'containers':[{'name':'a'}]"), NULL, "hostNetwork"},
      {DEPLOYMENT("'labels':{'mtlsd.io/inject':'disabled'}", "'containers':[{'name':'a'}]"), NULL,
       "mtlsd.io/inject is \"disabled\""},
      {DEPLOYMENT("'annotations':{'mtlsd.io/inject':'disabled'}", "'containers':[{'name':'a'}]"),
       NULL, "mtlsd.io/inject is \"disabled\""},
      {DEPLOYMENT("", "'containers':[{'name':'a'}]"), "kube-system",
       "namespace kube-system is never injected"},
      {DEPLOYMENT("", "'containers':[{'name':'a'}]"), "mtlsd-system",
       "namespace mtlsd-system is never injected"},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    cJSON *in = parse_sq(kCases[i].json);
    struct inject_result r;
    CHECK(inject(in, kCases[i].ns, &r) == NULL);
    CHECK_INTEQ(r.outcome, INJECT_SKIPPED);
    if (strstr(r.reason, kCases[i].reason) == NULL) {
      fprintf(stderr, "  case %zu: %s\n", i, r.reason);
      test_failed_checks++;
    }
    cJSON_Delete(in);
  }
}

TEST(refusals_name_what_is_wrong) {
  static const struct {
    const char *json;
    const char *reason;
  } kCases[] = {
      {DEPLOYMENT("", "'securityContext':{'runAsUser':1337},'containers':[{'name':'app'}]"),
       "container app runs with runAsUser 1337 (from the pod's securityContext), the proxy's"},
      {DEPLOYMENT("", "'containers':[{'name':'app','securityContext':{'runAsGroup':1337}}]"),
       "container app runs with runAsGroup 1337"},
      {DEPLOYMENT("",
                  "'initContainers':[{'name':'setup','securityContext':{'runAsUser':1337}}],"
                  "'containers':[{'name':'app'}]"),
       "init container setup runs with runAsUser 1337"},
      {DEPLOYMENT("",
                  "'initContainers':[{'name':'log','restartPolicy':'Always'}],"
                  "'securityContext':{'runAsGroup':1337},'containers':[{'name':'app'}]"),
       "init container log runs with runAsGroup 1337 (from the pod's securityContext)"},
      {DEPLOYMENT("", "'securityContext':{'fsGroup':1337},'containers':[{'name':'app'}]"),
       "spec.securityContext.fsGroup has 1337, the proxy's group"},
      {DEPLOYMENT("",
                  "'securityContext':{'supplementalGroups':[5,1337]},"
                  "'containers':[{'name':'app'}]"),
       "spec.securityContext.supplementalGroups has 1337"},
      {DEPLOYMENT("",
                  "'containers':[{'name':'app','volumeMounts':[{'name':'mtlsd-certs',"
                  "'mountPath':'/x'}]}]"),
       "container app mounts the volume mtlsd-certs, which holds the pod's private key"},
      {DEPLOYMENT("", "'containers':[{'name':'app','securityContext':{'runAsUser':1e400}}]"),
       "container app: securityContext.runAsUser is not a user or group ID"},
      {DEPLOYMENT("", "'securityContext':{'runAsGroup':1337.5},'containers':[{'name':'app'}]"),
       "container app: securityContext.runAsGroup is not a user or group ID"},
      {DEPLOYMENT("", "'containers':[{'name':'app','securityContext':{'runAsUser':'0'}}]"),
       "container app: securityContext.runAsUser is not a user or group ID"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/inject':'yes'}", "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/inject: \"yes\" is not \"enabled\" or \"disabled\""},
      {DEPLOYMENT("'annotations':{'mtlsd.io/exclude-inbound-ports':'22,x'}",
                  "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/exclude-inbound-ports: \"22,x\" is not comma-separated ports"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/exclude-outbound-cidrs':'10.0.0.0/33'}",
                  "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/exclude-outbound-cidrs: \"10.0.0.0/33\" is not comma-separated CIDRs"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/proxy-memory-limit':'lots'}",
                  "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/proxy-memory-limit: \"lots\" is not a quantity"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/allow':'spiffe://Bad/x'}",
                  "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/allow: \"spiffe://Bad/x\" is not comma-separated SPIFFE IDs"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/inbound-mode':'loose'}", "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/inbound-mode: \"loose\" is not \"strict\" or \"permissive\""},
      {DEPLOYMENT("'annotations':{'mtlsd.io/nativesidecar':'false'}",
                  "'containers':[{'name':'a'}]"),
       "unknown annotation mtlsd.io/nativesidecar"},
      {DEPLOYMENT("", "'containers':[{'name':'app','livenessProbe':{'httpGet':{'port':'web'}}}]"),
       "container app: livenessProbe.httpGet.port \"web\" names no port of the container"},
      {DEPLOYMENT("'annotations':'x'", "'containers':[{'name':'a'}]"),
       "metadata.annotations of the pod template is not an object"},
      {DEPLOYMENT("", "'volumes':{},'containers':[{'name':'a'}]"),
       "spec.volumes of the pod template is not an array"},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    cJSON *in = parse_sq(kCases[i].json);
    struct inject_result r;
    CHECK(inject(in, NULL, &r) == NULL);
    CHECK_INTEQ(r.outcome, INJECT_REFUSED);
    if (strstr(r.reason, kCases[i].reason) == NULL) {
      fprintf(stderr, "  case %zu: got \"%s\"\n    want \"%s\"\n", i, r.reason, kCases[i].reason);
      test_failed_checks++;
    }
    CHECK(r.patch == NULL);
    cJSON_Delete(in);
  }
}

TEST(other_kinds_pass_through) {
  cJSON *in = parse_sq("{'kind':'Service','metadata':{'name':'s'}}");
  struct inject_result r;
  CHECK(!inject_object(config(), in, NULL, &r));
  CHECK(strstr(r.reason, "a Service is not a pod or a workload") != NULL);
  cJSON_Delete(in);
  in = parse_sq(
      "{'kind':'CronJob','spec':{'jobTemplate':{'spec':{'template':{'spec':"
      "{'containers':[{'name':'job'}],'restartPolicy':'OnFailure'}}}}}}");
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  CHECK_STREQ(str_at(out, "spec.jobTemplate.spec.template.spec.initContainers.1.name"), "mtlsd");
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

/* Injects |json|, which must be injected; the patched object (the caller deletes it). */
static cJSON *injected(const char *json, struct inject_result *r) {
  cJSON *in = parse_sq(json);
  cJSON *out = inject(in, NULL, r);
  CHECK_INTEQ(r->outcome, INJECT_INJECTED);
  if (r->outcome != INJECT_INJECTED) {
    fprintf(stderr, "  not injected: %s\n", r->reason);
  }
  inject_result_clear(r);
  cJSON_Delete(in);
  return out;
}

static bool has_warning(const struct inject_result *r, const char *part) {
  for (size_t i = 0; i < r->warning_count; i++) {
    if (strstr(r->warnings[i], part) != NULL) {
      return true;
    }
  }
  fprintf(stderr, "  no warning has \"%s\" (%zu warnings)\n", part, r->warning_count);
  return false;
}

/* Helm renders an empty value as a YAML null ("annotations:" with nothing under it), which
 * Kubernetes reads as an absent field (issue 22, d01). */
TEST(nulls_are_absent_fields) {
  struct inject_result r;
  cJSON *out = injected(DEPLOYMENT("'labels':null,'annotations':null",
                                   "'volumes':null,'initContainers':null,'securityContext':null,"
                                   "'containers':[{'name':'a','ports':null,'livenessProbe':null}]"),
                        &r);
  const cJSON *tmpl = at(out, "spec.template");
  CHECK(cJSON_GetObjectItem(at(tmpl, "metadata.annotations"), "mtlsd.io/status") != NULL);
  CHECK_STREQ(
      cJSON_GetStringValue(cJSON_GetObjectItem(at(tmpl, "metadata.labels"), "mtlsd.io/injected")),
      "true");
  CHECK_STREQ(str_at(tmpl, "spec.volumes.0.name"), "mtlsd-certs");
  CHECK_STREQ(str_at(tmpl, "spec.initContainers.1.name"), "mtlsd");
  cJSON_Delete(out);
  out = injected(
      "{'apiVersion':'v1','kind':'Pod','metadata':null,'spec':{'containers':[{'name':'a'}]}}", &r);
  CHECK(cJSON_GetObjectItem(at(out, "metadata.annotations"), "mtlsd.io/status") != NULL);
  cJSON_Delete(out);
}

/* Native sidecars are probed like application containers, and every container's httpGet
 * and tcpSocket lifecycle hooks go through the health port too (d04, d05). */
TEST(native_sidecar_probes_and_lifecycle_hooks) {
  struct inject_result r;
  cJSON *out = injected(
      DEPLOYMENT("",
                 "'terminationGracePeriodSeconds':45,"
                 "'initContainers':[{'name':'setup','readinessProbe':{'tcpSocket':{'port':1}}},"
                 "{'name':'log','restartPolicy':'Always','ports':[{'name':'m','containerPort':9}],"
                 "'readinessProbe':{'httpGet':{'path':'/r','port':'m'},'periodSeconds':3}}],"
                 "'containers':[{'name':'app','ports':[{'name':'http','containerPort':8080}],"
                 "'lifecycle':{'postStart':{'httpGet':{'path':'/warm','port':'http'}},"
                 "'preStop':{'tcpSocket':{'port':8080}}}},"
                 "{'name':'other','lifecycle':{'preStop':{'exec':{'command':['true']}},"
                 "'postStart':{'sleep':{'seconds':1}}}}]"),
      &r);
  const cJSON *spec = at(out, "spec.template.spec");
  /* mtlsd-init and mtlsd come first: setup is 2, log 3. */
  CHECK(at(spec, "initContainers.2.readinessProbe.tcpSocket") != NULL);
  CHECK_STREQ(str_at(spec, "initContainers.3.readinessProbe.httpGet.path"),
              "/app-health/log/readyz");
  CHECK_INTEQ(at(spec, "initContainers.3.readinessProbe.periodSeconds")->valuedouble, 3);
  const cJSON *app = at(spec, "containers.0");
  CHECK_STREQ(str_at(app, "lifecycle.postStart.httpGet.path"), "/app-lifecycle/app/poststartz");
  CHECK_INTEQ(at(app, "lifecycle.postStart.httpGet.port")->valuedouble, 15020);
  CHECK_STREQ(str_at(app, "lifecycle.preStop.httpGet.path"), "/app-lifecycle/app/prestopz");
  CHECK(at(spec, "containers.1.lifecycle.preStop.exec") != NULL);
  CHECK(at(spec, "containers.1.lifecycle.postStart.sleep") != NULL);
  cJSON *probes =
      cJSON_Parse(str_at(env_named(at(spec, "initContainers.1"), "MTLSD_APP_PROBES"), "value"));
  CHECK_INTEQ(at(probes, "log/readyz.httpGet.port")->valuedouble, 9);
  const cJSON *post = cJSON_GetObjectItem(probes, "app/poststartz");
  CHECK_INTEQ(at(post, "httpGet.port")->valuedouble, 8080);
  CHECK_INTEQ(at(post, "timeoutSeconds")->valuedouble, 45);
  cJSON_Delete(probes);
  cJSON_Delete(out);
  /* A grace period beyond the longest timeout the sidecar takes is cut to it. */
  out = injected(DEPLOYMENT("",
                            "'terminationGracePeriodSeconds':1e9,'containers':[{'name':'app',"
                            "'lifecycle':{'preStop':{'tcpSocket':{'port':80}}}}]"),
                 &r);
  probes = cJSON_Parse(str_at(
      env_named(at(out, "spec.template.spec.initContainers.1"), "MTLSD_APP_PROBES"), "value"));
  CHECK_INTEQ(at(probes, "app/prestopz.timeoutSeconds")->valuedouble, 86400);
  CHECK(at(cJSON_GetObjectItem(probes, "app/prestopz"), "tcpSocket") != NULL);
  CHECK(cJSON_GetObjectItem(probes, "setup/readyz") == NULL);
  CHECK(cJSON_GetObjectItem(probes, "other/prestopz") == NULL);
  cJSON_Delete(probes);
  cJSON_Delete(out);
}

#define SECRET_ANNOTATION "'annotations':{'mtlsd.io/cert-secret':'web-certs'}"

/* A Secret's files are readable by the pod's fsGroup only (d06). */
TEST(cert_secret_sets_the_fs_group) {
  struct inject_result r;
  cJSON *in = parse_sq(DEPLOYMENT(SECRET_ANNOTATION, "'containers':[{'name':'a'}]"));
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(at(out, "spec.template.spec.securityContext.fsGroup")->valuedouble, 1337);
  CHECK(has_warning(&r, "fsGroup set to 1337"));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
  in = parse_sq(DEPLOYMENT(SECRET_ANNOTATION,
                           "'securityContext':{'runAsNonRoot':true},"
                           "'containers':[{'name':'a'}]"));
  out = inject(in, NULL, &r);
  CHECK_INTEQ(at(out, "spec.template.spec.securityContext.fsGroup")->valuedouble, 1337);
  CHECK(cJSON_IsTrue(at(out, "spec.template.spec.securityContext.runAsNonRoot")));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
  in = parse_sq(DEPLOYMENT(SECRET_ANNOTATION,
                           "'securityContext':{'fsGroup':2000},"
                           "'containers':[{'name':'a'}]"));
  out = inject(in, NULL, &r);
  CHECK_INTEQ(at(out, "spec.template.spec.securityContext.fsGroup")->valuedouble, 2000);
  CHECK(has_warning(&r, "through the pod's fsGroup"));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
  /* The group the injection would set is no refusal with a Secret; with the CSI volume,
   * whose files are group 1337, it is. */
  out = injected(DEPLOYMENT(SECRET_ANNOTATION,
                            "'securityContext':{'fsGroup':1337},'containers':[{'name':'a'}]"),
                 &r);
  cJSON_Delete(out);
  out = injected(DEPLOYMENT("", "'containers':[{'name':'a'}]"), &r);
  CHECK(at(out, "spec.template.spec.securityContext") == NULL);
  cJSON_Delete(out);
}

TEST(kinds_are_matched_with_their_api_group) {
  static const struct {
    const char *json;
    bool workload;
  } kCases[] = {
      {"{'apiVersion':'batch.volcano.sh/v1alpha1','kind':'Job','spec':{'tasks':[]}}", false},
      {"{'apiVersion':'apps/v1','kind':'Pod','spec':{'containers':[{'name':'a'}]}}", false},
      {"{'apiVersion':'v1','kind':'ReplicationController','spec':{'template':{'spec':"
       "{'containers':[{'name':'a'}]}}}}",
       true},
      {"{'apiVersion':'apps.openshift.io/v1','kind':'DeploymentConfig','spec':{'template':"
       "{'spec':{'containers':[{'name':'a'}]}}}}",
       true},
      {"{'apiVersion':'batch/v1','kind':'Job','spec':{'template':{'spec':"
       "{'containers':[{'name':'a'}]}}}}",
       true},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    cJSON *in = parse_sq(kCases[i].json);
    struct inject_result r;
    bool workload = inject_object(config(), in, NULL, &r);
    if (workload != kCases[i].workload) {
      fprintf(stderr, "  case %zu: %s\n", i, r.reason);
      test_failed_checks++;
    }
    if (!workload) {
      CHECK(strstr(r.reason, "custom resource, not a pod or a workload") != NULL);
    }
    inject_result_clear(&r);
    cJSON_Delete(in);
  }
}

/* Windows pods are skipped (d16): a Linux sidecar and iptables cannot run there. */
TEST(windows_pods_are_skipped) {
  static const char *const kWindows[] = {
      DEPLOYMENT("", "'os':{'name':'windows'},'containers':[{'name':'a'}]"),
      DEPLOYMENT("", "'nodeSelector':{'kubernetes.io/os':'windows'},'containers':[{'name':'a'}]"),
      DEPLOYMENT("",
                 "'affinity':{'nodeAffinity':{'requiredDuringSchedulingIgnoredDuringExecution':"
                 "{'nodeSelectorTerms':[{'matchExpressions':[{'key':'kubernetes.io/os',"
                 "'operator':'In','values':['windows']}]}]}}},'containers':[{'name':'a'}]"),
  };
  for (size_t i = 0; i < sizeof(kWindows) / sizeof(kWindows[0]); i++) {
    cJSON *in = parse_sq(kWindows[i]);
    struct inject_result r;
    CHECK(inject(in, NULL, &r) == NULL);
    CHECK_INTEQ(r.outcome, INJECT_SKIPPED);
    CHECK(strstr(r.reason, "a Windows pod") != NULL);
    cJSON_Delete(in);
  }
  /* One term that allows Linux is enough to run there. */
  struct inject_result r;
  cJSON *out = injected(
      DEPLOYMENT("",
                 "'affinity':{'nodeAffinity':{'requiredDuringSchedulingIgnoredDuringExecution':"
                 "{'nodeSelectorTerms':[{'matchExpressions':[{'key':'kubernetes.io/os',"
                 "'operator':'In','values':['windows']}]},{'matchExpressions':[{'key':"
                 "'kubernetes.io/os','operator':'In','values':['linux','windows']}]}]}}},"
                 "'containers':[{'name':'a'}]"),
      &r);
  cJSON_Delete(out);
}

/* Another mesh's proxy, and the names and ports the injection adds (d03, d17). */
TEST(conflicts_are_refused) {
  static const struct {
    const char *json;
    const char *reason;
  } kCases[] = {
      {DEPLOYMENT("'annotations':{'sidecar.istio.io/status':'{}'}", "'containers':[{'name':'a'}]"),
       "another mesh's proxy (annotation sidecar.istio.io/status)"},
      {DEPLOYMENT("'annotations':{'linkerd.io/proxy-version':'stable'}",
                  "'containers':[{'name':'a'}]"),
       "another mesh's proxy (annotation linkerd.io/proxy-version)"},
      {DEPLOYMENT("",
                  "'initContainers':[{'name':'istio-proxy','restartPolicy':'Always'}],"
                  "'containers':[{'name':'a'}]"),
       "init container istio-proxy is another mesh's proxy"},
      {DEPLOYMENT("", "'containers':[{'name':'a'},{'name':'linkerd-proxy'}]"),
       "container linkerd-proxy is another mesh's proxy"},
      {DEPLOYMENT("", "'containers':[{'name':'mtlsd'}]"),
       "container mtlsd has the name of mtlsd's own"},
      {DEPLOYMENT("",
                  "'volumes':[{'name':'mtlsd-certs','emptyDir':{}}],'containers':[{'name':'a'}]"),
       "spec.volumes has mtlsd-certs"},
      {DEPLOYMENT("", "'containers':[{'name':'a','ports':[{'containerPort':15006}]}]"),
       "container a: port 15006 is the sidecar's inbound port"},
      {DEPLOYMENT("",
                  "'containers':[{'name':'a','ports':[{'containerPort':15020,'protocol':'TCP'}]}]"),
       "container a: port 15020 is the sidecar's health port"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/exclude-outbound-ports':'5432, 63x79'}",
                  "'containers':[{'name':'a'}]"),
       "is not comma-separated ports: \"63x79\" is not a port"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/allow':'spiffe://cluster.local/ns/a/sa/b, bad_name'}",
                  "'containers':[{'name':'a'}]"),
       ": \"bad_name\" is not one"},
      {DEPLOYMENT("'annotations':{'mtlsd.io/identity':'spiffe://cluster.local/x/'}",
                  "'containers':[{'name':'a'}]"),
       "annotation mtlsd.io/identity: \"spiffe://cluster.local/x/\" is not a SPIFFE ID: "},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    cJSON *in = parse_sq(kCases[i].json);
    struct inject_result r;
    CHECK(inject(in, NULL, &r) == NULL);
    CHECK_INTEQ(r.outcome, INJECT_REFUSED);
    if (strstr(r.reason, kCases[i].reason) == NULL) {
      fprintf(stderr, "  case %zu: got \"%s\"\n    want \"%s\"\n", i, r.reason, kCases[i].reason);
      test_failed_checks++;
    }
    cJSON_Delete(in);
  }
  /* A UDP port of the same number binds nothing of the sidecar's. */
  struct inject_result r;
  cJSON *out = injected(
      DEPLOYMENT("",
                 "'containers':[{'name':'a','ports':[{'containerPort':15001,'protocol':'UDP'}]}]"),
      &r);
  cJSON_Delete(out);
}

/* "5432, 6379" (d20): the spaces are no part of the items. */
TEST(lists_with_spaces) {
  struct inject_result r;
  cJSON *out =
      injected(DEPLOYMENT("'annotations':{'mtlsd.io/exclude-outbound-ports':'5432, 6379',"
                          "'mtlsd.io/allow':' spiffe://cluster.local/ns/a/sa/b , api.example.com',"
                          "'mtlsd.io/identity':'spiffe://cluster.local/ns/shop/sa/web'}",
                          "'containers':[{'name':'a'}]"),
               &r);
  const cJSON *spec = at(out, "spec.template.spec");
  cJSON *config =
      cJSON_Parse(str_at(env_named(at(spec, "initContainers.1"), "MTLSD_CONFIG"), "value"));
  CHECK_STREQ(str_at(config, "listeners.2.allow.0"), "spiffe://cluster.local/ns/a/sa/b");
  CHECK_STREQ(str_at(config, "listeners.2.allow.1"), "api.example.com");
  cJSON_Delete(config);
  cJSON_Delete(out);
}

/* A Job's pod must end; a regular-container sidecar never does by itself (d22). */
TEST(job_without_native_sidecar_is_warned) {
  struct inject_result r;
  cJSON *in = parse_sq(
      "{'apiVersion':'batch/v1','kind':'Job','spec':{'template':{'metadata':{'annotations':"
      "{'mtlsd.io/native-sidecar':'false'}},'spec':{'containers':[{'name':'a'}]}}}}");
  cJSON *out = inject(in, NULL, &r);
  CHECK_INTEQ(r.outcome, INJECT_INJECTED);
  CHECK(has_warning(&r, "POST /quitquitquit"));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
  in = parse_sq(
      "{'apiVersion':'batch/v1','kind':'Job','spec':{'template':{'spec':"
      "{'containers':[{'name':'a'}]}}}}");
  out = inject(in, NULL, &r);
  CHECK_INTEQ(r.warning_count, 0);
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

/* A pod Prometheus scrapes itself keeps being scraped, through the health port (d11). */
TEST(application_metrics_move_to_the_health_port) {
  struct inject_result r;
  cJSON *out = injected(
      DEPLOYMENT("'annotations':{'prometheus.io/scrape':'true','prometheus.io/port':'9402'}",
                 "'containers':[{'name':'a'}]"),
      &r);
  const cJSON *ann = at(out, "spec.template.metadata.annotations");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(ann, "prometheus.io/port")), "15020");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(ann, "prometheus.io/path")), "/metrics");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(ann, "prometheus.io/scrape")), "true");
  CHECK_STREQ(str_at(env_named(at(out, "spec.template.spec.initContainers.1"), "MTLSD_APP_METRICS"),
                     "value"),
              "{\"port\":9402,\"path\":\"/metrics\"}");
  cJSON_Delete(out);
  out = injected(DEPLOYMENT("'annotations':{'prometheus.io/port':'8080','prometheus.io/path':'/m'}",
                            "'containers':[{'name':'a'}]"),
                 &r);
  CHECK_STREQ(str_at(env_named(at(out, "spec.template.spec.initContainers.1"), "MTLSD_APP_METRICS"),
                     "value"),
              "{\"port\":8080,\"path\":\"/m\"}");
  cJSON_Delete(out);
  cJSON *in =
      parse_sq(DEPLOYMENT("'annotations':{'prometheus.io/port':'8443','prometheus.io/scheme':"
                          "'https'}",
                          "'containers':[{'name':'a'}]"));
  out = inject(in, NULL, &r);
  CHECK(env_named(at(out, "spec.template.spec.initContainers.1"), "MTLSD_APP_METRICS") == NULL);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(
                  at(out, "spec.template.metadata.annotations"), "prometheus.io/port")),
              "8443");
  CHECK(has_warning(&r, "prometheus.io/port 8443"));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
  /* A path the sidecar would refuse at start-up stays where it is. */
  in =
      parse_sq(DEPLOYMENT("'annotations':{'prometheus.io/port':'8080','prometheus.io/path':"
                          "'/a b'}",
                          "'containers':[{'name':'a'}]"));
  out = inject(in, NULL, &r);
  CHECK(env_named(at(out, "spec.template.spec.initContainers.1"), "MTLSD_APP_METRICS") == NULL);
  CHECK(has_warning(&r, "prometheus.io/port 8080, path"));
  inject_result_clear(&r);
  cJSON_Delete(out);
  cJSON_Delete(in);
}

/* Allocation failure (curl's "torture" tests): the Nth allocation fails, for every N
 * until one run needs no failure; each run must end in the whole patch or a refusal that
 * says "out of memory", never in a patch with a piece missing. */
TEST(allocation_failures) {
  json_alloc_install();
  cJSON *object = parse_sq(kWeb);
  struct inject_result want;
  CHECK(inject_object(config(), object, NULL, &want));
  CHECK_INTEQ(want.outcome, INJECT_INJECTED);
  bool done = false;
  for (long budget = 0; !done && budget < 100000; budget++) {
    unsigned long failures = json_alloc_failures();
    json_alloc_fail_after(budget);
    struct inject_result r;
    bool handled = inject_object(config(), object, NULL, &r);
    json_alloc_fail_after(-1);
    done = json_alloc_failures() == failures;
    CHECK(handled);
    if (r.outcome == INJECT_INJECTED) {
      if (!cJSON_Compare(r.patch, want.patch, true)) {
        fprintf(stderr, "  allocation %ld failed and the patch lost a piece\n", budget);
        CHECK(false);
      }
    } else {
      CHECK_INTEQ(r.outcome, INJECT_REFUSED);
      CHECK_STREQ(r.reason, "out of memory");
    }
    inject_result_clear(&r);
  }
  CHECK(done);
  inject_result_clear(&want);
  cJSON_Delete(object);
}

TEST_MAIN(TEST_ENTRY(deployment_is_injected_and_nothing_is_lost),
          TEST_ENTRY(nulls_are_absent_fields),
          TEST_ENTRY(native_sidecar_probes_and_lifecycle_hooks),
          TEST_ENTRY(cert_secret_sets_the_fs_group),
          TEST_ENTRY(kinds_are_matched_with_their_api_group), TEST_ENTRY(windows_pods_are_skipped),
          TEST_ENTRY(conflicts_are_refused), TEST_ENTRY(lists_with_spaces),
          TEST_ENTRY(job_without_native_sidecar_is_warned),
          TEST_ENTRY(application_metrics_move_to_the_health_port), TEST_ENTRY(operations_only_add),
          TEST_ENTRY(pod_without_annotations_or_init_containers),
          TEST_ENTRY(not_native_puts_the_sidecar_first_with_a_hold),
          TEST_ENTRY(annotations_reach_the_sidecar), TEST_ENTRY(skips_with_their_reasons),
          TEST_ENTRY(refusals_name_what_is_wrong), TEST_ENTRY(other_kinds_pass_through),
          TEST_ENTRY(allocation_failures))
