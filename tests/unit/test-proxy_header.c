/* The PROXY protocol v2 encoder, byte by byte against the specification's layout. */
#include "mtlsd/net/proxy_header.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "test.h"

static const uint8_t kSignature[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                       0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

static struct sockaddr_storage v4(const char *ip, uint16_t port) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin->sin_addr);
  return ss;
}

static struct sockaddr_storage v6(const char *ip, uint16_t port) {
  struct sockaddr_storage ss = {0};
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &sin6->sin6_addr);
  return ss;
}

static unsigned be16(const uint8_t *p) {
  return (unsigned)p[0] << 8 | p[1];
}

/* Checks the fixed part and the length field; returns the offset of the addresses. */
static size_t check_head(const uint8_t *h, size_t len, uint8_t family) {
  CHECK(len >= 16);
  CHECK(memcmp(h, kSignature, sizeof(kSignature)) == 0);
  CHECK_INTEQ(h[12], 0x21);
  CHECK_INTEQ(h[13], family);
  CHECK_INTEQ(be16(h + 14), len - 16);
  return 16;
}

TEST(ipv4) {
  uint8_t h[PROXY_HEADER_MAX];
  struct sockaddr_storage src = v4("192.0.2.7", 40000), dst = v4("198.51.100.1", 8080);
  size_t len = proxy_header_encode(h, &src, &dst, "spiffe://cluster.local/ns/a/sa/b");
  size_t at = check_head(h, len, 0x11);
  CHECK(memcmp(h + at, "\xc0\x00\x02\x07", 4) == 0);
  CHECK(memcmp(h + at + 4, "\xc6\x33\x64\x01", 4) == 0);
  CHECK_INTEQ(be16(h + at + 8), 40000);
  CHECK_INTEQ(be16(h + at + 10), 8080);
  at += 12;
  CHECK_INTEQ(h[at], PROXY_HEADER_TLV_IDENTITY);
  CHECK_INTEQ(be16(h + at + 1), 32);
  CHECK(memcmp(h + at + 3, "spiffe://cluster.local/ns/a/sa/b", 32) == 0);
  CHECK_INTEQ(len, at + 3 + 32);
}

TEST(ipv6) {
  uint8_t h[PROXY_HEADER_MAX];
  struct sockaddr_storage src = v6("2001:db8::1", 1), dst = v6("2001:db8::2", 65535);
  size_t len = proxy_header_encode(h, &src, &dst, "");
  size_t at = check_head(h, len, 0x21);
  CHECK_INTEQ(h[at + 15], 1);
  CHECK_INTEQ(h[at + 31], 2);
  CHECK_INTEQ(be16(h + at + 32), 1);
  CHECK_INTEQ(be16(h + at + 34), 65535);
  at += 36;
  /* No identity: no TLV at all, not an empty one. */
  CHECK_INTEQ(len, at);
  CHECK_INTEQ(be16(h + 14), 36);
  CHECK_INTEQ(proxy_header_encode(h, &src, &dst, NULL), len);
}

TEST(mixed_families_are_unspec) {
  uint8_t h[PROXY_HEADER_MAX];
  struct sockaddr_storage src = v4("192.0.2.7", 1), dst = v6("2001:db8::2", 2);
  size_t len = proxy_header_encode(h, &src, &dst, "id");
  size_t at = check_head(h, len, 0x00);
  CHECK_INTEQ(h[at], PROXY_HEADER_TLV_IDENTITY);
  CHECK_INTEQ(len, at + 3 + 2);
}

TEST(longest_identity_fits_and_is_capped) {
  static uint8_t h[PROXY_HEADER_MAX];
  static char id[IDENTITY_MAX + 100];
  memset(id, 'a', sizeof(id) - 1);
  id[sizeof(id) - 1] = '\0';
  struct sockaddr_storage src = v6("2001:db8::1", 1), dst = v6("2001:db8::2", 2);
  size_t len = proxy_header_encode(h, &src, &dst, id);
  CHECK_INTEQ(len, PROXY_HEADER_MAX - 1);
  CHECK_INTEQ(be16(h + 16 + 36 + 1), IDENTITY_MAX - 1);
  id[2048] = '\0';
  len = proxy_header_encode(h, &src, &dst, id);
  CHECK_INTEQ(be16(h + 16 + 36 + 1), 2048);
  CHECK_INTEQ(be16(h + 14), len - 16);
}

TEST_MAIN(TEST_ENTRY(ipv4), TEST_ENTRY(ipv6), TEST_ENTRY(mixed_families_are_unspec),
          TEST_ENTRY(longest_identity_fits_and_is_capped))
