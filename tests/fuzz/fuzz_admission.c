/* libFuzzer driver for the webhook's AdmissionReview answers: whatever body arrives, the
 * answer is either a named refusal of the body, or an AdmissionReview v1 with the
 * request's uid that allows or denies, whose patch (when there is one) is base64 of a
 * JSON array of "add" operations. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/kube/admission.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct inject_config cfg;
  inject_config_default(&cfg);
  enum admission_result result;
  char msg[512];
  char *text = admission_review(&cfg, (const char *)data, size, &result, msg, sizeof(msg));
  require(msg[0] != '\0', "an answer without a message", NULL);
  if (text == NULL) {
    require(result == ADMISSION_BAD_REVIEW || result == ADMISSION_ERROR, "no answer, no reason",
            msg);
    return 0;
  }
  cJSON *answer = cJSON_Parse(text);
  require(answer != NULL, "the answer is not JSON", text);
  cJSON *response = cJSON_GetObjectItemCaseSensitive(answer, "response");
  const char *uid = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(response, "uid"));
  require(uid != NULL && uid[0] != '\0', "the answer has no uid", text);
  cJSON *allowed = cJSON_GetObjectItemCaseSensitive(response, "allowed");
  require(cJSON_IsBool(allowed), "the answer neither allows nor denies", text);
  require(cJSON_IsTrue(allowed) == (result != ADMISSION_REFUSED), "allowed disagrees", text);
  const char *patch = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(response, "patch"));
  require((patch != NULL) == (result == ADMISSION_INJECTED), "a patch without an injection", text);
  if (patch != NULL) {
    size_t len = strlen(patch);
    require(len % 4 == 0 && strspn(patch,
                                   "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789+/=") == len,
            "the patch is not base64", patch);
  }
  cJSON_Delete(answer);
  free(text);
  return 0;
}
