/* proxy_header: the PROXY protocol v2 encoder (see mtlsd/proxy_header.h). */
#include "mtlsd/net/proxy_header.h"

#include <netinet/in.h>
#include <string.h>

#include "mtlsd/base/bufpool.h"

_Static_assert(PROXY_HEADER_MAX <= BUFPOOL_BUFFER_SIZE,
               "a PROXY header fits the relay buffer it is sent from");

static const uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum {
  VERSION_2_PROXY = 0x21,
  FAMILY_UNSPEC = 0x00,
  FAMILY_TCP4 = 0x11,
  FAMILY_TCP6 = 0x21,
};

/* Appends an address block of |len| bytes: source and destination address, then
 * source and destination port, all in network order as they are in the sockaddrs. */
static size_t put_addresses(uint8_t *out, const void *src_addr, const void *dst_addr,
                            size_t addr_len, const void *src_port, const void *dst_port) {
  memcpy(out, src_addr, addr_len);
  memcpy(out + addr_len, dst_addr, addr_len);
  memcpy(out + 2 * addr_len, src_port, 2);
  memcpy(out + 2 * addr_len + 2, dst_port, 2);
  return 2 * addr_len + 4;
}

size_t proxy_header_encode(uint8_t *out, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst, const char *identity) {
  size_t pos = 0;
  memcpy(out, kSignature, sizeof(kSignature));
  pos += sizeof(kSignature);
  out[pos++] = VERSION_2_PROXY;
  size_t family_at = pos++;
  size_t len_at = pos;
  pos += 2;
  size_t addr_len = 0;
  out[family_at] = FAMILY_UNSPEC;
  if (src->ss_family == AF_INET && dst->ss_family == AF_INET) {
    const struct sockaddr_in *s = (const struct sockaddr_in *)src;
    const struct sockaddr_in *d = (const struct sockaddr_in *)dst;
    out[family_at] = FAMILY_TCP4;
    addr_len = put_addresses(out + pos, &s->sin_addr, &d->sin_addr, 4, &s->sin_port, &d->sin_port);
  } else if (src->ss_family == AF_INET6 && dst->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)src;
    const struct sockaddr_in6 *d = (const struct sockaddr_in6 *)dst;
    out[family_at] = FAMILY_TCP6;
    addr_len =
        put_addresses(out + pos, &s->sin6_addr, &d->sin6_addr, 16, &s->sin6_port, &d->sin6_port);
  }
  pos += addr_len;
  /* Identities are validated at extraction (identity_san_acceptable); the bound keeps
   * the header inside PROXY_HEADER_MAX whatever the caller passes. */
  size_t id_len = identity != NULL ? strnlen(identity, IDENTITY_MAX - 1) : 0;
  size_t payload = addr_len;
  if (id_len > 0) {
    out[pos++] = PROXY_HEADER_TLV_IDENTITY;
    out[pos++] = (uint8_t)(id_len >> 8);
    out[pos++] = (uint8_t)id_len;
    memcpy(out + pos, identity, id_len);
    pos += id_len;
    payload += 3 + id_len;
  }
  out[len_at] = (uint8_t)(payload >> 8);
  out[len_at + 1] = (uint8_t)payload;
  return pos;
}
