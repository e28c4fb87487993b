/* injector: the settings that `mtlsd inject` and `mtlsd webhook` inject with, made the
 * same way for both: the built-in defaults and the injector configuration file over them
 * (docs/injection.md). Nothing comes from the injecting process's environment: what is
 * injected depends on the manifest and the configuration alone, wherever it runs (the
 * cluster's API server is excluded by the init container, from its own environment).
 *
 * Owns struct injector: the file's strings, which its inject_config borrows. */
#ifndef MTLSD_INJECTOR_H
#define MTLSD_INJECTOR_H

#include <stdbool.h>
#include <stddef.h>

#include "mtlsd/kube/inject.h"
#include "mtlsd/kube/injector_config.h"

struct injector {
  struct inject_config cfg;
  struct injector_file *file; /* NULL without --config. */
};

/* injector_load fills |inj| from the file at |path| (NULL: none).
 * Returns false with "FILE: PATH: problem" in |err| when the file is bad; |inj| then
 * needs no injector_free. */
bool injector_load(struct injector *inj, const char *path, char *err, size_t err_len);

void injector_free(struct injector *inj);

#endif
