/* admin: placeholder until the admin module lands; serves nothing yet. */
#include "mtlsd/admin.h"

#include <stdlib.h>

struct admin {
  int unused;
};

struct admin *admin_start(struct server *srv, char *err, size_t err_len) {
  (void)srv;
  (void)err;
  (void)err_len;
  return calloc(1, sizeof(struct admin));
}

void admin_close(struct admin *admin) {
  free(admin);
}
