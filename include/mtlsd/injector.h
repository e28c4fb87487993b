/* injector: the settings that `mtlsd inject` and `mtlsd webhook` inject with, made the
 * same way for both: the built-in defaults, the injector configuration file over them
 * (docs/injection.md), and the cluster's API server (KUBERNETES_SERVICE_HOST, which the
 * kubelet gives every container) excluded from the outbound interception of every pod,
 * as it is no mesh peer and the pods must keep reaching it directly.
 *
 * Owns struct injector: the file's strings, which its inject_config borrows. */
#ifndef MTLSD_INJECTOR_H
#define MTLSD_INJECTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "mtlsd/config.h"
#include "mtlsd/inject.h"

struct injector {
  struct inject_config cfg;
  struct injector_file *file; /* NULL without --config. */
  char api_server_cidr[80];   /* "10.96.0.1/32" from KUBERNETES_SERVICE_HOST, or "". */
};

/* injector_load fills |inj| from the file at |path| (NULL: none) and the environment.
 * Returns false with "FILE: PATH: problem" in |err| when the file is bad; |inj| then
 * needs no injector_free. */
bool injector_load(struct injector *inj, const char *path, char *err, size_t err_len);

void injector_free(struct injector *inj);

#endif
