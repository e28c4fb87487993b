/* libFuzzer driver for config: the configuration file is the one input an operator
 * writes by hand, so every byte sequence must end in either a configuration or one
 * clear message, never a crash, a leak or a silent half-load.
 *
 * Beyond not crashing, the results must agree with one another: a refused input leaves
 * a message in the "FILE: WHERE: problem" form; an accepted one renders with
 * config_to_json, the rendering loads back, and renders again to the same text. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void require(int cond, const char *what, const char *detail) {
  if (!cond) {
    fprintf(stderr, "fuzz_config: invariant broken: %s\n%s\n", what, detail ? detail : "");
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[1024];
  memset(err, 0, sizeof(err));
  struct config *cfg = config_parse("f.json", (const char *)data, size, err, sizeof(err));
  if (cfg == NULL) {
    require(strncmp(err, "f.json: ", 8) == 0 && strlen(err) > 8, "error without a message", err);
    require(strchr(err, '\n') == NULL, "error message spans lines", err);
    return 0;
  }
  require(err[0] == '\0', "success with a message", err);
  require(cfg->listener_count > 0 && cfg->workers > 0, "accepted an incomplete config", NULL);

  char *first = config_to_json(cfg);
  require(first != NULL, "config_to_json failed", NULL);
  struct config *again = config_parse("f.json", first, strlen(first), err, sizeof(err));
  require(again != NULL, "config_to_json output does not load back", err);
  char *second = config_to_json(again);
  require(second != NULL && strcmp(first, second) == 0, "config_to_json is not a fixed point",
          first);

  free(second);
  free(first);
  config_free(again);
  config_free(cfg);
  return 0;
}
