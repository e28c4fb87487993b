/* libFuzzer driver for the PROXY protocol v2 encoder: whatever addresses (any family,
 * any bytes) and identity (any bytes, any length) it is given, the header stays within
 * PROXY_HEADER_MAX, starts with the v2 signature and PROXY command, declares exactly
 * the bytes that follow, carries the addresses of a same-family IPv4 or IPv6 pair (else
 * none), and ends with one identity TLV holding the identity's first bytes, up to its
 * first NUL and IDENTITY_MAX - 1, or with no TLV at all when that leaves nothing. */
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/net/proxy_header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The first bytes choose the families and fill the addresses; the rest is the identity. */
static void take_address(struct sockaddr_storage *ss, uint8_t family, const uint8_t **p,
                         const uint8_t *end) {
  memset(ss, 0, sizeof(*ss));
  static const sa_family_t kFamilies[] = {AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC};
  ss->ss_family = kFamilies[family % 4];
  size_t n = (size_t)(end - *p) < sizeof(*ss) - sizeof(sa_family_t)
                 ? (size_t)(end - *p)
                 : sizeof(*ss) - sizeof(sa_family_t);
  n = n > 28 ? 28 : n;
  memcpy((uint8_t *)ss + sizeof(sa_family_t), *p, n);
  *p += n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) {
    return 0;
  }
  const uint8_t *p = data + 1, *end = data + size;
  struct sockaddr_storage src, dst;
  take_address(&src, data[0] & 3, &p, end);
  take_address(&dst, (data[0] >> 2) & 3, &p, end);
  size_t id_bytes = (size_t)(end - p);
  char *identity = malloc(id_bytes + 1);
  require(identity != NULL, "out of memory", NULL);
  memcpy(identity, p, id_bytes);
  identity[id_bytes] = '\0';

  uint8_t out[PROXY_HEADER_MAX + 64];
  memset(out, 0xAA, sizeof(out));
  size_t len = proxy_header_encode(out, &src, &dst, identity);
  require(len <= PROXY_HEADER_MAX, "the header is longer than PROXY_HEADER_MAX", NULL);
  require(out[PROXY_HEADER_MAX] == 0xAA, "the encoder wrote past its bound", NULL);
  static const uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                         0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
  require(memcmp(out, kSignature, 12) == 0 && out[12] == 0x21, "no v2 PROXY signature", NULL);
  require((size_t)(out[14] << 8 | out[15]) == len - 16, "the length is not what follows", NULL);
  size_t addr_len = out[13] == 0x11 ? 12 : out[13] == 0x21 ? 36 : 0;
  int same_inet =
      src.ss_family == dst.ss_family && (src.ss_family == AF_INET || src.ss_family == AF_INET6);
  require((addr_len != 0) == same_inet, "the family byte disagrees with the addresses", NULL);
  const uint8_t *tlv = out + 16 + addr_len;
  size_t want = strnlen(identity, IDENTITY_MAX - 1);
  if (want == 0) {
    require(len == 16 + addr_len, "a TLV without an identity", NULL);
    free(identity);
    return 0;
  }
  require(tlv[0] == PROXY_HEADER_TLV_IDENTITY, "no identity TLV", NULL);
  require((size_t)(tlv[1] << 8 | tlv[2]) == want, "the TLV length is not the identity's", NULL);
  require(memcmp(tlv + 3, identity, want) == 0, "the TLV does not hold the identity", NULL);
  require(16 + addr_len + 3 + want == len, "bytes after the TLV", NULL);
  free(identity);
  return 0;
}
