/* netaddr: the "HOST:PORT" and "[IPv6]:PORT" forms of the configuration, and the
 * printing of socket addresses for logs (see mtlsd/netaddr.h).
 *
 * Parsing is deliberately stricter than getaddrinfo: no service names, no signs or
 * spaces in ports, no bare IPv6 (where "::1:80" would be ambiguous), so that a typo is
 * reported at load time instead of binding or dialing something unexpected. */
#include "mtlsd/base/netaddr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static bool is_dec_digit(char c) {
  return c >= '0' && c <= '9';
}

static bool is_letter(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* parse_port accepts 1 to 65535 written in decimal digits only. Leading zeros are
 * harmless, so they are allowed; the value is capped while reading so that a long run
 * of digits cannot overflow. */
static bool parse_port(uint16_t *out, const char **err, const char *text) {
  if (*text == '\0') {
    *err = "missing port";
    return false;
  }
  unsigned long value = 0;
  for (const char *p = text; *p != '\0'; p++) {
    if (!is_dec_digit(*p)) {
      *err = "invalid port";
      return false;
    }
    if (value <= 65535) {
      value = value * 10 + (unsigned long)(*p - '0');
    }
  }
  if (value == 0 || value > 65535) {
    *err = "port out of range";
    return false;
  }
  *out = (uint16_t)value;
  return true;
}

static bool is_ipv4_literal(const char *host) {
  struct in_addr a;
  return inet_pton(AF_INET, host, &a) == 1;
}

static bool is_ipv6_literal(const char *host) {
  struct in6_addr a;
  return inet_pton(AF_INET6, host, &a) == 1;
}

bool netaddr_valid_dns_name(const char *name) {
  size_t len = strlen(name);
  if (len > 0 && name[len - 1] == '.') {
    len--;
  }
  if (len == 0 || len > 253) {
    return false;
  }
  size_t label_start = 0;
  bool label_all_digits = true;
  for (size_t i = 0; i <= len; i++) {
    char c = '.'; /* The end closes the last label like a dot would. */
    if (i < len) {
      c = name[i];
    }
    if (c == '.') {
      size_t label_len = i - label_start;
      if (label_len == 0 || label_len > 63 || name[label_start] == '-' || name[i - 1] == '-') {
        return false;
      }
      /* An all-numeric last label would make "10.0.0.256" a host name (RFC 3696 2). */
      if (i == len && label_all_digits) {
        return false;
      }
      label_start = i + 1;
      label_all_digits = true;
    } else if (is_dec_digit(c)) {
      continue;
    } else if (is_letter(c) || c == '-') {
      label_all_digits = false;
    } else {
      return false;
    }
  }
  return true;
}

/* copy_host copies |len| bytes of |src| into |hp->host| and classifies it. */
static bool copy_host(struct hostport *hp, const char **err, const char *src, size_t len) {
  if (len == 0) {
    *err = "missing host";
    return false;
  }
  if (len >= sizeof(hp->host)) {
    *err = "host name too long";
    return false;
  }
  memcpy(hp->host, src, len);
  hp->host[len] = '\0';
  return true;
}

bool netaddr_parse_hostport(struct hostport *out, const char **err, const char *text) {
  struct hostport hp;
  memset(&hp, 0, sizeof(hp));
  if (text == NULL || *text == '\0') {
    *err = "empty address";
    return false;
  }

  const char *port;
  if (text[0] == '[') {
    const char *close = strchr(text, ']');
    if (close == NULL) {
      *err = "missing ']' after IPv6 address";
      return false;
    }
    if (!copy_host(&hp, err, text + 1, (size_t)(close - text - 1))) {
      return false;
    }
    if (!is_ipv6_literal(hp.host)) {
      *err = "invalid IPv6 address";
      return false;
    }
    if (close[1] == '\0') {
      *err = "missing port";
      return false;
    }
    if (close[1] != ':') {
      *err = "expected ':' after ']'";
      return false;
    }
    port = close + 2;
    hp.host_is_ip = true;
  } else {
    const char *colon = strrchr(text, ':');
    if (colon == NULL) {
      *err = "missing port";
      return false;
    }
    if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
      *err = "IPv6 address must be in brackets";
      return false;
    }
    if (!copy_host(&hp, err, text, (size_t)(colon - text))) {
      return false;
    }
    if (is_ipv4_literal(hp.host)) {
      hp.host_is_ip = true;
    } else if (strspn(hp.host, "0123456789.") == strlen(hp.host)) {
      *err = "invalid IPv4 address";
      return false;
    } else if (!netaddr_valid_dns_name(hp.host)) {
      *err = "invalid host";
      return false;
    }
    port = colon + 1;
  }

  if (!parse_port(&hp.port, err, port)) {
    return false;
  }
  *out = hp;
  return true;
}

bool netaddr_to_sockaddr(struct sockaddr_storage *out, socklen_t *out_len,
                         const struct hostport *hp) {
  memset(out, 0, sizeof(*out));
  if (!hp->host_is_ip) {
    return false;
  }
  struct sockaddr_in *sin = (struct sockaddr_in *)out;
  if (inet_pton(AF_INET, hp->host, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(hp->port);
    *out_len = sizeof(*sin);
    return true;
  }
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET6, hp->host, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(hp->port);
    *out_len = sizeof(*sin6);
    return true;
  }
  memset(out, 0, sizeof(*out));
  return false;
}

char *netaddr_format(char *out, const struct sockaddr *sa) {
  char ip[INET6_ADDRSTRLEN];
  if (sa != NULL && sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    if (inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip)) != NULL) {
      (void)snprintf(out, NETADDR_STR_MAX, "%s:%u", ip, (unsigned)ntohs(sin->sin_port));
      return out;
    }
  } else if (sa != NULL && sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
    if (inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip)) != NULL) {
      (void)snprintf(out, NETADDR_STR_MAX, "[%s]:%u", ip, (unsigned)ntohs(sin6->sin6_port));
      return out;
    }
  }
  (void)snprintf(out, NETADDR_STR_MAX, "?");
  return out;
}

char *netaddr_format_hostport(char *out, size_t out_len, const struct hostport *hp) {
  /* Only an IPv6 literal contains ':', and it is the one form that needs brackets. */
  if (strchr(hp->host, ':') != NULL) {
    (void)snprintf(out, out_len, "[%s]:%u", hp->host, (unsigned)hp->port);
  } else {
    (void)snprintf(out, out_len, "%s:%u", hp->host, (unsigned)hp->port);
  }
  return out;
}

uint16_t netaddr_port(const struct sockaddr *sa) {
  switch (sa->sa_family) {
    case AF_INET:
      return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    case AF_INET6:
      return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    default:
      return 0;
  }
}

bool netaddr_same_host(const struct sockaddr *a, const struct sockaddr *b) {
  if (a->sa_family != b->sa_family) {
    return false;
  }
  if (a->sa_family == AF_INET) {
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
           ((const struct sockaddr_in *)b)->sin_addr.s_addr;
  }
  return a->sa_family == AF_INET6 &&
         memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                &((const struct sockaddr_in6 *)b)->sin6_addr, sizeof(struct in6_addr)) == 0;
}

bool netaddr_is_loopback(const struct sockaddr *sa) {
  if (sa == NULL) {
    return false;
  }
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
    return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
  }
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a)) {
      return true;
    }
    /* A dual-stack socket sees an IPv4 loopback peer as ::ffff:127.x.y.z. */
    return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
  }
  return false;
}
