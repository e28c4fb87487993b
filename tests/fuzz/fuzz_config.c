/* libFuzzer driver for config: the configuration file is the one input an operator
 * writes by hand, so every byte sequence must end in either a configuration or one
 * clear message, never a crash, a leak or a silent half-load.
 *
 * Beyond not crashing, the results must agree with one another: a refused input leaves
 * a message in the "FILE: WHERE: problem" form; an accepted one renders with
 * config_to_json, the rendering loads back, and renders again to the same text. The same
 * bytes are also read as MTLSD_APP_PROBES, which must end in probes or one message and
 * leave the configuration as it was when refused. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/config/app_probes.h"
#include "mtlsd/config/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_app_probes(const uint8_t *data, size_t size) {
  static const char kBase[] =
      "{\"listeners\":[{\"name\":\"o\",\"mode\":\"outbound\",\"listen\":\"127.0.0.1:1\","
      "\"transparent\":true}]}";
  char err[1024] = "";
  struct config *cfg = config_parse("base", kBase, sizeof(kBase) - 1, err, sizeof(err));
  require(cfg != NULL, "the base configuration does not load", err);
  if (config_parse_app_probes(cfg, "P", (const char *)data, size, err, sizeof(err))) {
    for (size_t i = 0; i < cfg->app_probe_count; i++) {
      const struct app_probe *a = &cfg->app_probes[i];
      require(a->port > 0 && a->timeout >= 1000 && a->container[0] != '\0',
              "an accepted probe is incomplete", a->key);
      require(config_find_app_probe(cfg, a->key, strlen(a->key)) == a, "a probe cannot be found",
              a->key);
    }
  } else {
    require(strncmp(err, "P: ", 3) == 0 && strchr(err, '\n') == NULL, "bad probes message", err);
    require(cfg->app_probe_count == 0, "a refused set left probes behind", err);
  }
  config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_app_probes(data, size);
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
