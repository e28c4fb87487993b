/* What the fuzz drivers share: one way to check an invariant. A broken one aborts, so that
 * libFuzzer keeps the input, after saying which driver, which invariant and (when the
 * driver has one) on what. */
#ifndef MTLSD_FUZZ_H
#define MTLSD_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

static inline void fuzz_require(int cond, const char *driver, const char *what,
                                const char *detail) {
  if (!cond) {
    fprintf(stderr, "%s: invariant broken: %s\n%s\n", driver, what, detail ? detail : "");
    abort();
  }
}

/* require(cond, what, detail): |detail| (may be NULL) is printed below the invariant. */
#define require(cond, what, detail) fuzz_require((cond), __FILE__, (what), (detail))

#endif
