/* injector: the settings of `mtlsd inject` and `mtlsd webhook` (see mtlsd/injector.h). */
#include "mtlsd/kube/injector.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Takes the file's settings over the defaults in |cfg| (which then borrows |f|'s
 * strings). */
static void apply_file(struct inject_config *cfg, const struct injector_file *f) {
  struct {
    const char **slot;
    const char *value;
  } settings[] = {
      {&cfg->image, f->image},
      {&cfg->pull_policy, f->pull_policy},
      {&cfg->trust_domain, f->trust_domain},
      {&cfg->own_namespace, f->namespace},
      {&cfg->cpu_request, f->cpu_request},
      {&cfg->memory_request, f->memory_request},
      {&cfg->cpu_limit, f->cpu_limit},
      {&cfg->memory_limit, f->memory_limit},
      {&cfg->csi_driver, f->csi_driver},
      {&cfg->exclude_inbound_ports, f->exclude_inbound_ports},
      {&cfg->exclude_outbound_ports, f->exclude_outbound_ports},
      {&cfg->exclude_outbound_cidrs, f->exclude_outbound_cidrs},
      {&cfg->include_outbound_cidrs, f->include_outbound_cidrs},
  };
  for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
    if (settings[i].value != NULL) {
      *settings[i].slot = settings[i].value;
    }
  }
  if (f->native_sidecar >= 0) {
    cfg->native_sidecar = f->native_sidecar == 1;
  }
  cfg->ipv6 = f->ipv6;
  cfg->exclude_api_server = f->exclude_api_server;
  cfg->sidecar_base = f->sidecar;
}

bool injector_load(struct injector *inj, const char *path, char *err, size_t err_len) {
  memset(inj, 0, sizeof(*inj));
  inject_config_default(&inj->cfg);
  if (path != NULL) {
    inj->file = injector_config_load(path, err, err_len);
    if (inj->file == NULL) {
      return false;
    }
    apply_file(&inj->cfg, inj->file);
  }
  return true;
}

void injector_free(struct injector *inj) {
  injector_config_free(inj->file);
  memset(inj, 0, sizeof(*inj));
}
