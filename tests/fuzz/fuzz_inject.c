/* libFuzzer driver for the injection mutation: whatever object comes in (read as YAML,
 * which JSON is a part of), the mutation either declines it, skips it, refuses it with a
 * reason, or gives a patch that applies, only adds, and leaves an object that a second
 * injection skips as already injected. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/kube/inject.h"
#include "mtlsd/kube/jsonpatch.h"
#include "mtlsd/kube/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  cJSON *docs = yaml_parse((const char *)data, size, err, sizeof(err));
  if (docs == NULL) {
    return 0;
  }
  struct inject_config cfg;
  inject_config_default(&cfg);
  const cJSON *doc;
  cJSON_ArrayForEach(doc, docs) {
    struct inject_result r;
    if (!inject_object(&cfg, doc, NULL, &r)) {
      continue;
    }
    require(r.reason[0] != '\0', "an outcome without a reason", NULL);
    if (r.outcome != INJECT_INJECTED) {
      require(r.patch == NULL, "a patch that is not an injection", r.reason);
      continue;
    }
    const cJSON *op;
    cJSON_ArrayForEach(op, r.patch) {
      require(strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(op, "op")), "add") == 0,
              "an operation other than add", NULL);
    }
    cJSON *injected = jsonpatch_apply(doc, r.patch);
    char *patch = cJSON_PrintUnformatted(r.patch);
    require(injected != NULL, "the patch does not apply", patch);
    struct inject_result again;
    require(inject_object(&cfg, injected, NULL, &again) && again.outcome == INJECT_SKIPPED &&
                strstr(again.reason, "already injected") != NULL,
            "a second injection is not a no-op", again.reason);
    free(patch);
    cJSON_Delete(injected);
    inject_result_clear(&r);
  }
  cJSON_Delete(docs);
  return 0;
}
