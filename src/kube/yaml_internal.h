/* yaml_internal: what the reader (yaml.c) and the writer (yaml_write.c) share. */
#ifndef MTLSD_YAML_INTERNAL_H
#define MTLSD_YAML_INTERNAL_H

#include <stddef.h>

/* yaml_format_number writes into |out| (|len| bytes) the shortest text that reads back as
 * the finite |d|, for keys and values alike. */
void yaml_format_number(double d, char *out, size_t len);

#endif
