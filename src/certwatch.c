/* certwatch: placeholder until the certwatch module lands; SIGHUP reloads meanwhile. */
#include "mtlsd/certwatch.h"

#include <stdlib.h>

struct certwatch *certwatch_start(struct server *srv) {
  (void)srv;
  return NULL;
}

void certwatch_close(struct certwatch *watch) {
  (void)watch;
}
