/* libFuzzer driver for yaml: `mtlsd inject` reads manifests from anyone. Every input ends
 * in documents or one message with its position, and what is read is written back so
 * that it reads the same (the emitter's quoting keeps every string a string). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/kube/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256] = "";
  cJSON *docs = yaml_parse((const char *)data, size, err, sizeof(err));
  if (docs == NULL) {
    require(err[0] != '\0' && strchr(err, '\n') == NULL, "refused without one message", err);
    return 0;
  }
  const cJSON *doc;
  cJSON_ArrayForEach(doc, docs) {
    char *text = yaml_emit(doc);
    require(text != NULL, "yaml_emit failed", NULL);
    cJSON *again = yaml_parse(text, strlen(text), err, sizeof(err));
    require(again != NULL, "the emitted YAML does not parse", text);
    require(
        cJSON_GetArraySize(again) == 1 && cJSON_Compare(doc, cJSON_GetArrayItem(again, 0), true),
        "the emitted YAML reads back otherwise", text);
    cJSON_Delete(again);
    free(text);
  }
  cJSON_Delete(docs);
  return 0;
}
