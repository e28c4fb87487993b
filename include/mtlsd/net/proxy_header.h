/* proxy_header: the PROXY protocol v2 header (HAProxy's proxy-protocol.txt, section 2.2)
 * that an inbound listener with "proxy_protocol": true sends to the application before
 * the caller's bytes: the caller's address, the address it connected to, and in a TLV of
 * type PROXY_HEADER_TLV_IDENTITY the identity it was verified as. A pure function. */
#ifndef MTLSD_PROXY_HEADER_H
#define MTLSD_PROXY_HEADER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "mtlsd/base/identity.h"

/* The TLV type that carries the peer's identity: the first of the range that the
 * specification leaves to applications (PP2_TYPE_MIN_CUSTOM). */
#define PROXY_HEADER_TLV_IDENTITY 0xE0

/* The longest header: signature, version, family, length, two IPv6 addresses and ports,
 * and the identity TLV with the longest identity. */
#define PROXY_HEADER_MAX (16 + 36 + 3 + IDENTITY_MAX)

/* proxy_header_encode writes the header for a connection from |src| to |dst| by a peer
 * verified as |identity| (at most IDENTITY_MAX - 1 bytes are used) into |out|, which has
 * room for PROXY_HEADER_MAX bytes, and returns its length. A caller with no identity
 * (NULL or "": a permissive listener's plaintext caller) gets no identity TLV at all, not
 * an empty one, so that an application that checks for the TLV is never satisfied by
 * its mere presence. Addresses of different or unknown families are sent as UNSPEC (no
 * addresses). */
size_t proxy_header_encode(uint8_t *out, const struct sockaddr_storage *src,
                           const struct sockaddr_storage *dst, const char *identity);

#endif
