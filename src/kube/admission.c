/* admission: answering one AdmissionReview (see mtlsd/admission.h). */
#include "mtlsd/kube/admission.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "mtlsd/base/json_syntax.h"
#include "mtlsd/kube/kjson.h"

#define REVIEW_VERSION "admission.k8s.io/v1"

/* RFC 4648 base64 of |len| bytes, the form of the review's "patch"; the caller frees. */
static char *base64(const char *data, size_t len) {
  static const char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc((len + 2) / 3 * 4 + 1);
  if (out == NULL) {
    return NULL;
  }
  const unsigned char *in = (const unsigned char *)data;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    v |= i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0;
    v |= i + 2 < len ? in[i + 2] : 0;
    out[o++] = kAlphabet[v >> 18];
    out[o++] = kAlphabet[(v >> 12) & 63];
    out[o++] = i + 1 < len ? kAlphabet[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < len ? kAlphabet[v & 63] : '=';
  }
  out[o] = '\0';
  return out;
}

/* "pod shop/web-7d9f (generateName)" for the log. */
static void describe(char *out, size_t len, const cJSON *request, const cJSON *object) {
  const cJSON *kind = cJSON_GetObjectItemCaseSensitive(request, "kind");
  const cJSON *meta = cJSON_GetObjectItemCaseSensitive(object, "metadata");
  const char *k = kjson_string(kind, "kind");
  const char *ns = kjson_string(request, "namespace");
  const char *name = kjson_string(meta, "name");
  const char *generate = kjson_string(meta, "generateName");
  snprintf(out, len, "%s %s/%s%s", k != NULL ? k : "object", ns != NULL ? ns : "",
           name != NULL       ? name
           : generate != NULL ? generate
                              : "(no name)",
           name == NULL && generate != NULL ? "*" : "");
}

/* Checks that |review| is an AdmissionReview v1 with a request and its uid; says what
 * is wrong in |msg| when not. */
static const cJSON *review_request(const cJSON *review, char *msg, size_t msg_len) {
  if (!cJSON_IsObject(review)) {
    snprintf(msg, msg_len, "not an AdmissionReview: the document is not a JSON object");
    return NULL;
  }
  const char *version = kjson_string(review, "apiVersion");
  const char *kind = kjson_string(review, "kind");
  if (version == NULL || strcmp(version, REVIEW_VERSION) != 0) {
    snprintf(msg, msg_len,
             "apiVersion: \"%.100s\" is not " REVIEW_VERSION
             " (set admissionReviewVersions: [\"v1\"])",
             version != NULL ? version : "");
    return NULL;
  }
  if (kind == NULL || strcmp(kind, "AdmissionReview") != 0) {
    snprintf(msg, msg_len, "kind: \"%.100s\" is not AdmissionReview", kind != NULL ? kind : "");
    return NULL;
  }
  const cJSON *request = cJSON_GetObjectItemCaseSensitive(review, "request");
  const char *uid = kjson_string(request, "uid");
  if (!cJSON_IsObject(request)) {
    snprintf(msg, msg_len, "request: missing, or not an object");
    return NULL;
  }
  if (uid == NULL || uid[0] == '\0') {
    snprintf(msg, msg_len, "request.uid: missing, or not a string");
    return NULL;
  }
  return request;
}

/* Fills the answer's "response" for |outcome| of the mutation. */
static bool fill_response(cJSON *response, const struct inject_result *r) {
  bool ok = true;
  if (r->outcome == INJECT_REFUSED) {
    char message[600];
    snprintf(message, sizeof(message), "mtlsd: %s", r->reason);
    cJSON *status = cJSON_AddObjectToObject(response, "status");
    ok = cJSON_AddFalseToObject(response, "allowed") != NULL && status != NULL &&
         cJSON_AddStringToObject(status, "status", "Failure") != NULL &&
         cJSON_AddStringToObject(status, "reason", "BadRequest") != NULL &&
         cJSON_AddNumberToObject(status, "code", 400) != NULL &&
         cJSON_AddStringToObject(status, "message", message) != NULL;
    return ok;
  }
  ok = cJSON_AddTrueToObject(response, "allowed") != NULL;
  bool skipped = r->outcome == INJECT_SKIPPED && !r->already_injected;
  if (skipped || r->warning_count > 0) {
    /* kubectl prints each as "Warning: ...": why a pod was skipped, and what the user
     * should know of one injected. */
    cJSON *warnings = cJSON_AddArrayToObject(response, "warnings");
    ok = ok && warnings != NULL;
    char warning[600];
    for (size_t i = 0; ok && i < (skipped ? 1 : r->warning_count); i++) {
      snprintf(warning, sizeof(warning), "mtlsd: %s%s", skipped ? "not injected: " : "",
               skipped ? r->reason : r->warnings[i]);
      cJSON *w = cJSON_CreateString(warning);
      ok = w != NULL && cJSON_AddItemToArray(warnings, w);
      if (w != NULL && !ok) {
        cJSON_Delete(w);
      }
    }
  }
  if (r->outcome == INJECT_INJECTED) {
    char *patch = cJSON_PrintUnformatted(r->patch);
    char *encoded = patch != NULL ? base64(patch, strlen(patch)) : NULL;
    ok = ok && encoded != NULL &&
         cJSON_AddStringToObject(response, "patchType", "JSONPatch") != NULL &&
         cJSON_AddStringToObject(response, "patch", encoded) != NULL;
    free(patch);
    free(encoded);
  }
  return ok;
}

/* What happens to |request|'s object: the mutation for the CREATE of something that has
 * pods, else a skip with its reason. */
static void decide(const struct inject_config *cfg, const cJSON *request, struct inject_result *r) {
  const char *operation = kjson_string(request, "operation");
  const cJSON *object = cJSON_GetObjectItemCaseSensitive(request, "object");
  *r = (struct inject_result){.outcome = INJECT_SKIPPED};
  if (operation == NULL || strcmp(operation, "CREATE") != 0) {
    snprintf(r->reason, sizeof(r->reason), "only a CREATE is injected, not %.40s",
             operation != NULL ? operation : "a review without an operation");
    return;
  }
  if (!cJSON_IsObject(object)) {
    snprintf(r->reason, sizeof(r->reason), "request.object: missing, or not an object");
    r->outcome = INJECT_REFUSED;
    return;
  }
  /* At a pod's CREATE its own metadata.namespace is often empty (a ReplicaSet's pods):
   * the request says where it goes. */
  if (!inject_object(cfg, object, kjson_string(request, "namespace"), r)) {
    r->outcome = INJECT_SKIPPED;
  }
}

char *admission_review(const struct inject_config *cfg, const char *body, size_t len,
                       enum admission_result *result, char *msg, size_t msg_len) {
  *result = ADMISSION_BAD_REVIEW;
  size_t at;
  const char *wrong;
  if (json_syntax_locate(body, len, JSON_SYNTAX_NO_NUL | JSON_SYNTAX_BOUNDED, &at, &wrong)) {
    snprintf(msg, msg_len, "not JSON: %s at byte %zu", wrong, at);
    return NULL;
  }
  const char *end = NULL;
  cJSON *review = cJSON_ParseWithLengthOpts(body, len, &end, false);
  if (review == NULL) {
    snprintf(msg, msg_len, "not JSON: a syntax error near byte %td",
             end != NULL && end >= body ? end - body : 0);
    return NULL;
  }
  const cJSON *request = review_request(review, msg, msg_len);
  if (request == NULL) {
    cJSON_Delete(review);
    return NULL;
  }
  char what[300];
  describe(what, sizeof(what), request, cJSON_GetObjectItemCaseSensitive(request, "object"));
  struct inject_result r;
  decide(cfg, request, &r);

  cJSON *answer = cJSON_CreateObject();
  bool ok = answer != NULL &&
            cJSON_AddStringToObject(answer, "apiVersion", REVIEW_VERSION) != NULL &&
            cJSON_AddStringToObject(answer, "kind", "AdmissionReview") != NULL;
  cJSON *response = ok ? cJSON_AddObjectToObject(answer, "response") : NULL;
  ok = response != NULL &&
       cJSON_AddStringToObject(response, "uid", kjson_string(request, "uid")) != NULL &&
       fill_response(response, &r);
  char *text = ok ? cJSON_PrintUnformatted(answer) : NULL;
  cJSON_Delete(answer);
  cJSON_Delete(review);
  static const char *const kOutcome[] = {"injected", "skipped", "refused"};
  snprintf(msg, msg_len, "%s: %s%s%s", what, kOutcome[r.outcome],
           r.outcome == INJECT_INJECTED ? "" : ": ", r.outcome == INJECT_INJECTED ? "" : r.reason);
  inject_result_clear(&r);
  if (text == NULL) {
    *result = ADMISSION_ERROR;
    snprintf(msg, msg_len, "out of memory");
    return NULL;
  }
  *result = r.outcome == INJECT_INJECTED  ? ADMISSION_INJECTED
            : r.outcome == INJECT_SKIPPED ? ADMISSION_SKIPPED
                                          : ADMISSION_REFUSED;
  return text;
}
