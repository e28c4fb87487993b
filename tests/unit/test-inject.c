/* The injection mutation: what it adds to a pod and a Deployment, that it only adds
 * (nothing another webhook put there is lost or moved), the probe rewrite with named
 * ports, idempotency, every skip and refusal with its reason, and the JSON Pointer
 * escapes of its paths. */
#include "mtlsd/inject.h"
#include "mtlsd/json_alloc.h"

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
  cJSON *out = inject_apply(object, r->patch);
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

TEST_MAIN(TEST_ENTRY(deployment_is_injected_and_nothing_is_lost), TEST_ENTRY(operations_only_add),
          TEST_ENTRY(pod_without_annotations_or_init_containers),
          TEST_ENTRY(not_native_puts_the_sidecar_first_with_a_hold),
          TEST_ENTRY(annotations_reach_the_sidecar), TEST_ENTRY(skips_with_their_reasons),
          TEST_ENTRY(refusals_name_what_is_wrong), TEST_ENTRY(other_kinds_pass_through),
          TEST_ENTRY(allocation_failures))
