/* `mtlsd cert` for the unit tests that need certificate files: certgen_main with its
 * arguments in a NULL-terminated array. */
#ifndef MTLSD_TEST_CERTGEN_H
#define MTLSD_TEST_CERTGEN_H

#include "mtlsd/cmd/certgen.h"

static inline int certgen(const char *const *args) {
  int argc = 0;
  while (args[argc] != NULL) {
    argc++;
  }
  /* certgen_main neither keeps nor modifies argv. */
  return certgen_main(argc, (char **)args);
}

#endif
