/* libFuzzer driver for the health port's filter of an application's metrics: whatever
 * bytes the application serves, the filter either refuses them with a reason or keeps
 * families that can follow mtlsd's own: filtering what it kept again keeps all of it,
 * byte for byte, and drops nothing (so the merged answer has no family twice). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/base/exposition.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* mtlsd's own families, as the health port renders a few of them. */
static const char kOwn[] =
    "# HELP mtlsd_connections_total Connections accepted.\n"
    "# TYPE mtlsd_connections_total counter\n"
    "mtlsd_connections_total{listener=\"inbound\"} 3\n"
    "# HELP process_open_fds Number of open file descriptors.\n"
    "# TYPE process_open_fds gauge\n"
    "process_open_fds 11\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct exposition_filter first;
  if (!exposition_filter(kOwn, sizeof(kOwn) - 1, (const char *)data, size, &first)) {
    require(first.text == NULL, "a failed filter returned a text", NULL);
    require(first.why[0] != '\0', "a failed filter gave no reason", NULL);
    return 0;
  }
  require(first.text != NULL && strlen(first.text) == first.len, "the text is not its length",
          NULL);
  require(first.len == 0 || first.text[first.len - 1] == '\n', "the text ends mid-line",
          first.text);
  struct exposition_filter again;
  require(exposition_filter(kOwn, sizeof(kOwn) - 1, first.text, first.len, &again),
          "what was kept is refused when filtered again", again.why);
  require(again.dropped == 0, "what was kept clashes with mtlsd's own", again.first_dropped);
  require(again.len == first.len && memcmp(again.text, first.text, first.len) == 0,
          "filtering what was kept changed it", first.text);
  free(first.text);
  free(again.text);
  return 0;
}
