/* AdmissionReview answers: the uid echoed, the patch in base64 (RFC 4648, with padding)
 * that decodes to the mutation's "add" operations, skips with a warning (none for a pod
 * injected already), refusals not allowed, other operations let through, and every way a
 * body can fail to be an AdmissionReview v1 named. */
#include "mtlsd/kube/admission.h"

#include "test.h"

static struct inject_config g_cfg;

static const char kPod[] =
    "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"generateName\":\"web-\"},"
    "\"spec\":{\"containers\":[{\"name\":\"web\",\"image\":\"nginx\"}]}}";

/* An AdmissionReview of |object| (JSON text) with |operation| in |ns|. */
static char *review_text(const char *object, const char *operation, const char *ns) {
  char *text = malloc(strlen(object) + 512);
  sprintf(text,
          "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{"
          "\"uid\":\"u-1\",\"kind\":{\"group\":\"\",\"version\":\"v1\",\"kind\":\"Pod\"},"
          "\"namespace\":\"%s\",\"operation\":\"%s\",\"object\":%s}}",
          ns, operation, object);
  return text;
}

/* Answers |body| and returns the answer's "response" (the caller deletes the root). */
static cJSON *answer(const char *body, enum admission_result want, cJSON **root) {
  if (g_cfg.image == NULL) {
    inject_config_default(&g_cfg);
  }
  enum admission_result got;
  char msg[512];
  char *text = admission_review(&g_cfg, body, strlen(body), &got, msg, sizeof(msg));
  CHECK_INTEQ(got, want);
  CHECK(text != NULL);
  *root = cJSON_Parse(text);
  free(text);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(*root, "apiVersion")),
              "admission.k8s.io/v1");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(*root, "kind")), "AdmissionReview");
  cJSON *response = cJSON_GetObjectItem(*root, "response");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(response, "uid")), "u-1");
  return response;
}

/* Decodes base64 |s| (the test's own decoder, so that the encoder is checked against
 * the RFC, not against itself). */
static char *unbase64(const char *s) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t len = strlen(s);
  CHECK(len % 4 == 0);
  char *out = calloc(len / 4 * 3 + 1, 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    unsigned v = 0;
    int pad = 0;
    for (int k = 0; k < 4; k++) {
      const char *p = s[i + k] == '=' ? NULL : strchr(kAlphabet, s[i + k]);
      CHECK(s[i + k] == '=' || p != NULL);
      pad += p == NULL;
      v = v << 6 | (p != NULL ? (unsigned)(p - kAlphabet) : 0);
    }
    out[o++] = (char)(v >> 16);
    if (pad < 2) {
      out[o++] = (char)(v >> 8 & 255);
    }
    if (pad < 1) {
      out[o++] = (char)(v & 255);
    }
  }
  return out;
}

TEST(an_injection_answers_the_mutation_in_base64) {
  char *body = review_text(kPod, "CREATE", "shop");
  cJSON *root;
  cJSON *response = answer(body, ADMISSION_INJECTED, &root);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(response, "allowed")));
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(response, "patchType")), "JSONPatch");
  char *patch_text = unbase64(cJSON_GetStringValue(cJSON_GetObjectItem(response, "patch")));
  cJSON *patch = cJSON_Parse(patch_text);
  CHECK(cJSON_IsArray(patch) && cJSON_GetArraySize(patch) > 0);

  cJSON *pod = cJSON_Parse(kPod);
  struct inject_result r;
  CHECK(inject_object(&g_cfg, pod, "shop", &r));
  CHECK(cJSON_Compare(patch, r.patch, true));
  inject_result_clear(&r);
  cJSON_Delete(pod);
  cJSON_Delete(patch);
  free(patch_text);
  cJSON_Delete(root);
  free(body);
}

TEST(base64_pads_every_length) {
  /* Allow lists one byte apart make patches one byte apart: every padding is reached. */
  const char *allow[] = {"spiffe://cluster.local/ns/a/sa/b", "spiffe://cluster.local/ns/a/sa/bc",
                         "spiffe://cluster.local/ns/a/sa/bcd"};
  bool residues[3] = {false, false, false};
  for (size_t i = 0; i < 3; i++) {
    char pod[256];
    snprintf(pod, sizeof(pod),
             "{\"kind\":\"Pod\",\"metadata\":{\"annotations\":{\"mtlsd.io/allow\":\"%s\"}},"
             "\"spec\":{\"containers\":[{\"name\":\"c\"}]}}",
             allow[i]);
    char *body = review_text(pod, "CREATE", "default");
    cJSON *root;
    cJSON *response = answer(body, ADMISSION_INJECTED, &root);
    char *decoded = unbase64(cJSON_GetStringValue(cJSON_GetObjectItem(response, "patch")));
    cJSON *patch = cJSON_Parse(decoded);
    CHECK(patch != NULL && strstr(decoded, allow[i]) != NULL);
    residues[strlen(decoded) % 3] = true;
    cJSON_Delete(patch);
    free(decoded);
    cJSON_Delete(root);
    free(body);
  }
  CHECK(residues[0] && residues[1] && residues[2]);
}

TEST(skips_warn_except_for_a_pod_injected_already) {
  char *body = review_text(
      "{\"kind\":\"Pod\",\"metadata\":{},\"spec\":{\"hostNetwork\":true,\"containers\":[]}}",
      "CREATE", "shop");
  cJSON *root;
  cJSON *response = answer(body, ADMISSION_SKIPPED, &root);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(response, "allowed")));
  CHECK(cJSON_GetObjectItem(response, "patch") == NULL);
  const char *warning =
      cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(response, "warnings"), 0));
  CHECK(warning != NULL && strstr(warning, "not injected") && strstr(warning, "hostNetwork"));
  cJSON_Delete(root);
  free(body);

  body = review_text(
      "{\"kind\":\"Pod\",\"metadata\":{\"annotations\":{\"mtlsd.io/status\":"
      "\"{}\"}},\"spec\":{\"containers\":[]}}",
      "CREATE", "shop");
  response = answer(body, ADMISSION_SKIPPED, &root);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(response, "allowed")));
  CHECK(cJSON_GetObjectItem(response, "warnings") == NULL);
  cJSON_Delete(root);
  free(body);

  body = review_text(kPod, "UPDATE", "shop");
  response = answer(body, ADMISSION_SKIPPED, &root);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(response, "allowed")));
  CHECK(cJSON_GetObjectItem(response, "patch") == NULL);
  cJSON_Delete(root);
  free(body);
}

/* What the owner of an injected pod should know reaches kubectl as a warning. */
TEST(an_injection_carries_its_warnings) {
  char *body = review_text(
      "{\"apiVersion\":\"v1\",\"kind\":\"Pod\",\"metadata\":{\"annotations\":"
      "{\"mtlsd.io/cert-secret\":\"web-certs\"}},\"spec\":{\"containers\":[{\"name\":"
      "\"web\"}]}}",
      "CREATE", "shop");
  cJSON *root;
  cJSON *response = answer(body, ADMISSION_INJECTED, &root);
  CHECK(cJSON_GetObjectItem(response, "patch") != NULL);
  const char *warning =
      cJSON_GetStringValue(cJSON_GetArrayItem(cJSON_GetObjectItem(response, "warnings"), 0));
  CHECK(warning != NULL && strstr(warning, "mtlsd: spec.securityContext.fsGroup set to 1337"));
  cJSON_Delete(root);
  free(body);
  body = review_text(kPod, "CREATE", "shop");
  response = answer(body, ADMISSION_INJECTED, &root);
  CHECK(cJSON_GetObjectItem(response, "warnings") == NULL);
  cJSON_Delete(root);
  free(body);
}

TEST(refusals_are_not_allowed_with_the_reason) {
  char *body = review_text(
      "{\"kind\":\"Pod\",\"metadata\":{\"annotations\":{"
      "\"mtlsd.io/inbound-mode\":\"loose\"}},\"spec\":{\"containers\":["
      "{\"name\":\"c\"}]}}",
      "CREATE", "shop");
  cJSON *root;
  cJSON *response = answer(body, ADMISSION_REFUSED, &root);
  CHECK(cJSON_IsFalse(cJSON_GetObjectItem(response, "allowed")));
  cJSON *status = cJSON_GetObjectItem(response, "status");
  CHECK_INTEQ((int)cJSON_GetNumberValue(cJSON_GetObjectItem(status, "code")), 400);
  const char *message = cJSON_GetStringValue(cJSON_GetObjectItem(status, "message"));
  CHECK(message != NULL && strstr(message, "mtlsd.io/inbound-mode") && strstr(message, "loose"));
  cJSON_Delete(root);
  free(body);
}

TEST(bodies_that_are_no_review_are_named) {
  static const struct {
    const char *body, *words;
  } kCases[] = {
      {"", "not JSON"},
      {"{\"a\":", "not JSON: unexpected end of file (expected a value) at byte 5"},
      /* The API server keeps the whole value; cJSON would read it up to the NUL. */
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"object\":{\"metadata\":{"
       "\"annotations\":{\"mtlsd.io/allow\":\"spiffe://a/ns/b/sa/c\\u0000,*\"}}}}}",
       "a NUL character (\\u0000) in a string: its value would be read only up to it at byte"},
      {"[]", "not a JSON object"},
      {"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}",
       "\"admission.k8s.io/v1beta1\" is not admission.k8s.io/v1"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}", "kind: \"Pod\""},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "request:"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
       "request.uid"},
      {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{"
       "\"uid\":7}}",
       "request.uid"},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    enum admission_result got;
    char msg[512];
    char *text =
        admission_review(&g_cfg, kCases[i].body, strlen(kCases[i].body), &got, msg, sizeof(msg));
    CHECK(text == NULL);
    CHECK_INTEQ(got, ADMISSION_BAD_REVIEW);
    if (strstr(msg, kCases[i].words) == NULL) {
      fprintf(stderr, "  case %zu: \"%s\" lacks \"%s\"\n", i, msg, kCases[i].words);
      CHECK(false);
    }
  }
}

TEST_MAIN(TEST_ENTRY(an_injection_answers_the_mutation_in_base64),
          TEST_ENTRY(an_injection_carries_its_warnings), TEST_ENTRY(base64_pads_every_length),
          TEST_ENTRY(skips_warn_except_for_a_pod_injected_already),
          TEST_ENTRY(refusals_are_not_allowed_with_the_reason),
          TEST_ENTRY(bodies_that_are_no_review_are_named))
