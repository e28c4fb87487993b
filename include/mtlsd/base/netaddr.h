/* netaddr: parsing and printing of the "HOST:PORT" and "[IPv6]:PORT" forms used by the
 * configuration, and of socket addresses for logs. Pure functions, no I/O. */
#ifndef MTLSD_NETADDR_H
#define MTLSD_NETADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest host name DNS allows, plus its terminator. */
#define NETADDR_HOST_MAX 254
/* Long enough for "[" IPv6 "]:" port and a terminator. */
#define NETADDR_STR_MAX 64
/* Long enough for any struct hostport written back as text: "[" host "]:" port. */
#define NETADDR_HOSTPORT_MAX (NETADDR_HOST_MAX + 8)

struct hostport {
  char host[NETADDR_HOST_MAX]; /* An IP literal (without brackets) or a DNS name. */
  uint16_t port;
  bool host_is_ip; /* |host| is an IPv4 or IPv6 literal. */
};

/* netaddr_parse_hostport parses |text| ("HOST:PORT" or "[IPv6]:PORT") into |*out|. On
 * failure it returns false, leaves |*out| untouched and sets |*err| to a static message
 * ("port out of range", "missing port", "IPv6 address must be in brackets", "invalid
 * host", ...). HOST is an IPv4 literal, a bracketed IPv6 literal or a DNS name (see
 * netaddr_valid_dns_name); PORT is 1-65535 in decimal digits only. Port 0 is refused:
 * every configured address names a real port. */
bool netaddr_parse_hostport(struct hostport *out, const char **err, const char *text);

/* netaddr_to_sockaddr fills |*out| from an IP-literal |hp|; returns false when the host is
 * not an IP literal. |*out_len| receives the address length. */
bool netaddr_to_sockaddr(struct sockaddr_storage *out, socklen_t *out_len,
                         const struct hostport *hp);

/* netaddr_format writes |sa| as "1.2.3.4:5" or "[::1]:5" into |out| (NETADDR_STR_MAX
 * bytes). Unknown families print as "?". Returns |out|. */
char *netaddr_format(char *out, const struct sockaddr *sa);

/* netaddr_format_hostport writes |hp| back in the form netaddr_parse_hostport reads,
 * "host:port" or "[v6]:port", into |out| (|out_len| bytes, NETADDR_HOSTPORT_MAX is always
 * enough). Returns |out|. */
char *netaddr_format_hostport(char *out, size_t out_len, const struct hostport *hp);

/* netaddr_port returns the port of the IPv4 or IPv6 address |sa| in host order, or 0 for
 * any other family. */
uint16_t netaddr_port(const struct sockaddr *sa);

/* netaddr_is_loopback returns whether |sa| is in 127.0.0.0/8 or is ::1 (or an IPv4
 * loopback address mapped into IPv6, as a dual-stack socket reports it). */
bool netaddr_is_loopback(const struct sockaddr *sa);

/* netaddr_same_host returns whether |a| and |b| are the same IPv4 or IPv6 address, ports
 * aside. */
bool netaddr_same_host(const struct sockaddr *a, const struct sockaddr *b);

/* netaddr_valid_dns_name returns whether |name| is a syntactically valid DNS host name
 * (labels of 1-63 letters, digits and hyphens, not starting or ending with a hyphen,
 * 253 characters at most; a trailing dot is allowed; the last label is not all digits,
 * so that a mistyped IPv4 address is not taken for a name). */
bool netaddr_valid_dns_name(const char *name);

#endif
