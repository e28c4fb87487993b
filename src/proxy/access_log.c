/* access_log: the access log formatter (see mtlsd/access_log.h). */
#include "mtlsd/proxy/access_log.h"

#include <stdio.h>
#include <stdlib.h>

#include "mtlsd/base/log.h"
#include "mtlsd/base/textbuf.h"

/* Appends one field: a JSON member, or a text "key=value" token. Values are escaped in
 * both forms (identities are validated, but addresses and reasons need not be trusted
 * either). */
static void append_field(struct textbuf *line, bool json, const char *key, const char *value,
                         bool quote) {
  if (value == NULL) {
    value = "";
  }
  if (json) {
    textbuf_printf(line, "%s\"%s\":%s", line->len > 1 ? "," : "", key, quote ? "\"" : "");
    log_escape_json(line, value);
    if (quote) {
      textbuf_str(line, "\"");
    }
    return;
  }
  textbuf_printf(line, "%s%s=", line->len > 0 ? " " : "", key);
  if (value[0] == '\0') {
    textbuf_str(line, "-");
  } else {
    log_escape_text(line, value, false);
  }
}

char *access_log_format(const struct access_record *r, bool json, size_t *len) {
  struct textbuf line = {0};
  if (json) {
    textbuf_str(&line, "{");
  }
  char rx[24], tx[24], dur[32];
  snprintf(rx, sizeof(rx), "%llu", (unsigned long long)r->bytes_from_downstream);
  snprintf(tx, sizeof(tx), "%llu", (unsigned long long)r->bytes_from_upstream);
  snprintf(dur, sizeof(dur), "%.3f", (double)r->duration_ms / 1000.0);

  append_field(&line, json, "time", r->time, true);
  append_field(&line, json, "listener", r->listener, true);
  append_field(&line, json, "downstream", r->downstream, true);
  append_field(&line, json, "upstream", r->upstream, true);
  append_field(&line, json, "identity", r->identity, true);
  append_field(&line, json, "tls_version", r->tls_version, true);
  append_field(&line, json, "cipher", r->cipher, true);
  append_field(&line, json, "resumed", r->resumed ? "true" : "false", false);
  append_field(&line, json, "bytes_from_downstream", rx, false);
  append_field(&line, json, "bytes_from_upstream", tx, false);
  append_field(&line, json, "duration_s", dur, false);
  append_field(&line, json, "result", r->result, true);
  textbuf_str(&line, json ? "}\n" : "\n");
  *len = line.len;
  return textbuf_finish(&line);
}
