/* injector_config: the injector's configuration file (`mtlsd inject --config`, `mtlsd
 * webhook --config`, docs/injection.md), read as strictly as the sidecar's (with
 * jsonread): unknown keys, wrong types and bad values are errors naming the file and the
 * JSON path. The injector module lays it over the built-in defaults to make the struct
 * inject_config that injection runs with.
 *
 * Ownership: injector_config_load returns a struct injector_file that owns all its
 * strings; injector_config_free frees it. */
#ifndef MTLSD_INJECTOR_CONFIG_H
#define MTLSD_INJECTOR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

/* What every injected pod gets unless its annotations say otherwise. NULL members (and
 * the lists, joined by commas as the annotations write them) were not set: the built-in
 * defaults apply. */
struct injector_file {
  char *image;
  char *pull_policy;
  char *trust_domain;
  char *namespace;    /* The injector's own, never injected. */
  int native_sidecar; /* -1 unset, else 0 or 1. */
  char *cpu_request, *memory_request, *cpu_limit, *memory_limit;
  char *csi_driver;
  char *exclude_inbound_ports, *exclude_outbound_ports;
  char *exclude_outbound_cidrs, *include_outbound_cidrs;
  /* Default true: the init container excludes the API server it sees; false adds
   * --no-exclude-api-server to it. */
  bool exclude_api_server;
  bool ipv6;     /* Default true: IPv6 is intercepted and listened on too. */
  char *sidecar; /* JSON text of the sidecars' base configuration, validated; NULL: none. */
};

/* injector_config_load reads and validates the injector configuration at |path|. Returns
 * NULL with the message ("FILE: JSON.PATH: problem") in |err| on failure; free the result
 * with injector_config_free. */
struct injector_file *injector_config_load(const char *path, char *err, size_t err_len);

/* injector_config_free frees |f| and its strings; NULL is a no-op. */
void injector_config_free(struct injector_file *f);

#endif
