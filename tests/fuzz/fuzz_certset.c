/* libFuzzer driver for the certificate-set loader: the files of a shared volume may hold
 * anything (truncated PEM, garbage, a key of another type, chains in the wrong order, a
 * certificate that is a CA, megabytes of headers). The input is the three files, tls.crt,
 * tls.key and ca.crt, separated by NUL bytes (PEM holds none); two parts make a serving
 * set (no bundle). Every input ends in a valid set or in one message naming a file (or
 * "out of memory"); a valid set is inside its validity window, has an identity, and
 * parsing the same bytes again gives the same set. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fuzz.h"
#include "mtlsd/tls/tls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const uint8_t *parts[3] = {data, NULL, NULL};
  size_t lens[3] = {size, 0, 0};
  int count = 1;
  for (size_t i = 0; i < size && count < 3; i++) {
    if (data[i] == '\0') {
      lens[count - 1] = (size_t)(data + i - parts[count - 1]);
      parts[count] = data + i + 1;
      lens[count] = size - i - 1;
      count++;
    }
  }
  struct tls_pem_files files = {
      .cert = parts[0],
      .cert_len = lens[0],
      .cert_name = "tls.crt",
      .key = parts[1] != NULL ? parts[1] : (const uint8_t *)"",
      .key_len = lens[1],
      .key_name = "tls.key",
      .ca = parts[2],
      .ca_len = lens[2],
      .ca_name = count == 3 ? "ca.crt" : NULL,
  };
  char err[512] = "";
  struct tls_certset *set = tls_certset_parse(&files, err, sizeof(err));
  if (set == NULL) {
    int named = strncmp(err, "tls.crt", 7) == 0 || strncmp(err, "tls.key", 7) == 0 ||
                strncmp(err, "ca.crt", 6) == 0 || strcmp(err, "out of memory") == 0;
    require(named, "a refusal that names no file", err);
    return 0;
  }
  int64_t now = time(NULL);
  require(tls_certset_not_after(set) >= now, "an expired set was accepted", NULL);
  const char *identity = tls_certset_primary_identity(set);
  require(identity != NULL && identity[0] != '\0', "a set without an identity", NULL);
  char again_err[512];
  struct tls_certset *again = tls_certset_parse(&files, again_err, sizeof(again_err));
  require(again != NULL && tls_certset_same(set, again), "the same bytes parse differently",
          again_err);
  tls_certset_free(again);
  tls_certset_free(set);
  return 0;
}
