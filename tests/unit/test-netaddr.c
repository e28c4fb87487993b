/* Unit tests for netaddr: the HOST:PORT forms the configuration accepts and refuses,
 * and the printing of socket addresses. */
#include <arpa/inet.h>
#include <netinet/in.h>

#include "mtlsd/base/netaddr.h"
#include "test.h"

TEST(parse_good) {
  static const struct {
    const char *text;
    const char *host;
    unsigned port;
    bool is_ip;
  } cases[] = {
      {"127.0.0.1:15001", "127.0.0.1", 15001, true},
      {"0.0.0.0:1", "0.0.0.0", 1, true},
      {"255.255.255.255:65535", "255.255.255.255", 65535, true},
      {"[::1]:8443", "::1", 8443, true},
      {"[::]:15006", "::", 15006, true},
      {"[2001:db8::1]:443", "2001:db8::1", 443, true},
      {"[::ffff:10.0.0.1]:80", "::ffff:10.0.0.1", 80, true},
      {"localhost:8080", "localhost", 8080, false},
      {"payments.default.svc.cluster.local:8443", "payments.default.svc.cluster.local", 8443,
       false},
      {"example.com.:443", "example.com.", 443, false},
      {"a-b.c9:1", "a-b.c9", 1, false},
      {"1.2.3.example:1", "1.2.3.example", 1, false},
      {"Example.COM:80", "Example.COM", 80, false},
      {"host:00080", "host", 80, false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct hostport hp;
    const char *err = NULL;
    CHECK(netaddr_parse_hostport(&hp, &err, cases[i].text));
    CHECK_STREQ(err, NULL);
    CHECK_STREQ(hp.host, cases[i].host);
    CHECK_INTEQ(hp.port, cases[i].port);
    CHECK_INTEQ(hp.host_is_ip, cases[i].is_ip);
  }
}

TEST(parse_bad) {
  static const struct {
    const char *text;
    const char *err;
  } cases[] = {
      {"", "empty address"},
      {"127.0.0.1", "missing port"},
      {"127.0.0.1:", "missing port"},
      {"localhost", "missing port"},
      {":8080", "missing host"},
      {"127.0.0.1:0", "port out of range"},
      {"127.0.0.1:65536", "port out of range"},
      {"0.0.0.0:99999", "port out of range"},
      {"127.0.0.1:99999999999999999999999", "port out of range"},
      {"127.0.0.1:+80", "invalid port"},
      {"127.0.0.1:-1", "invalid port"},
      {"127.0.0.1: 80", "invalid port"},
      {"127.0.0.1:80 ", "invalid port"},
      {"127.0.0.1:0x50", "invalid port"},
      {"127.0.0.1:http", "invalid port"},
      {"::1:80", "IPv6 address must be in brackets"},
      {"::1", "IPv6 address must be in brackets"},
      {"2001:db8::1:443", "IPv6 address must be in brackets"},
      {"[::1]", "missing port"},
      {"[::1]:", "missing port"},
      {"[::1]80", "expected ':' after ']'"},
      {"[::1:80", "missing ']' after IPv6 address"},
      {"[]:80", "missing host"},
      {"[127.0.0.1]:80", "invalid IPv6 address"},
      {"[localhost]:80", "invalid IPv6 address"},
      {"[::1%eth0]:80", "invalid IPv6 address"},
      {"1.2.3.256:80", "invalid IPv4 address"},
      {"1.2.3:80", "invalid IPv4 address"},
      {"127.000.0.1:80", "invalid IPv4 address"},
      {"-bad.example:80", "invalid host"},
      {"bad-.example:80", "invalid host"},
      {"bad..example:80", "invalid host"},
      {"under_score.example:80", "invalid host"},
      {"sp ace:80", "invalid host"},
      {"*.example.com:80", "invalid host"},
      {"user@host:80", "invalid host"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct hostport hp;
    memset(&hp, 0x5a, sizeof(hp));
    const char *err = NULL;
    CHECK(!netaddr_parse_hostport(&hp, &err, cases[i].text));
    if (err == NULL || strcmp(err, cases[i].err) != 0) {
      fprintf(stderr, "  input: \"%s\"\n", cases[i].text);
    }
    CHECK_STREQ(err, cases[i].err);
    CHECK_INTEQ(hp.port, 0x5a5a); /* Untouched on failure. */
  }
  const char *err = NULL;
  struct hostport hp;
  CHECK(!netaddr_parse_hostport(&hp, &err, NULL));
  CHECK_STREQ(err, "empty address");
}

TEST(host_length) {
  /* 253 characters is the longest name; the buffer holds it and its terminator. */
  char name[300];
  char text[320];
  memset(name, 'a', sizeof(name));
  for (size_t i = 63; i < sizeof(name); i += 64) {
    name[i] = '.';
  }
  name[253] = '\0';
  snprintf(text, sizeof(text), "%s:80", name);
  struct hostport hp;
  const char *err = NULL;
  CHECK(netaddr_parse_hostport(&hp, &err, text));
  CHECK_STREQ(hp.host, name);

  name[253] = 'a';
  name[254] = '\0';
  snprintf(text, sizeof(text), "%s:80", name);
  CHECK(!netaddr_parse_hostport(&hp, &err, text));
  CHECK_STREQ(err, "host name too long");
}

TEST(dns_names) {
  CHECK(netaddr_valid_dns_name("localhost"));
  CHECK(netaddr_valid_dns_name("a"));
  CHECK(netaddr_valid_dns_name("x1.example.com"));
  CHECK(netaddr_valid_dns_name("example.com."));
  CHECK(netaddr_valid_dns_name("123.example"));
  CHECK(netaddr_valid_dns_name("xn--bcher-kva.example"));
  CHECK(!netaddr_valid_dns_name(""));
  CHECK(!netaddr_valid_dns_name("."));
  CHECK(!netaddr_valid_dns_name("example..com"));
  CHECK(!netaddr_valid_dns_name(".example.com"));
  CHECK(!netaddr_valid_dns_name("example.com.."));
  CHECK(!netaddr_valid_dns_name("-a.example"));
  CHECK(!netaddr_valid_dns_name("a-.example"));
  CHECK(!netaddr_valid_dns_name("a_b.example"));
  CHECK(!netaddr_valid_dns_name("10.0.0.1"));
  CHECK(!netaddr_valid_dns_name("example.123"));
  CHECK(!netaddr_valid_dns_name("*.example.com"));

  char label[80];
  memset(label, 'a', sizeof(label));
  label[63] = '\0';
  CHECK(netaddr_valid_dns_name(label));
  label[63] = 'a';
  label[64] = '\0';
  CHECK(!netaddr_valid_dns_name(label));
}

TEST(sockaddr_round_trip) {
  static const struct {
    const char *text;
    const char *formatted;
    int family;
  } cases[] = {
      {"127.0.0.1:15001", "127.0.0.1:15001", AF_INET},
      {"[::1]:8443", "[::1]:8443", AF_INET6},
      {"[2001:db8:0:0::1]:443", "[2001:db8::1]:443", AF_INET6},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct hostport hp;
    const char *err = NULL;
    CHECK(netaddr_parse_hostport(&hp, &err, cases[i].text));
    struct sockaddr_storage ss;
    socklen_t len = 0;
    CHECK(netaddr_to_sockaddr(&ss, &len, &hp));
    CHECK_INTEQ(ss.ss_family, cases[i].family);
    CHECK_INTEQ(
        len, cases[i].family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    char out[NETADDR_STR_MAX];
    CHECK_STREQ(netaddr_format(out, (struct sockaddr *)&ss), cases[i].formatted);
  }

  struct hostport name;
  const char *err = NULL;
  CHECK(netaddr_parse_hostport(&name, &err, "localhost:80"));
  struct sockaddr_storage ss;
  socklen_t len = 0;
  CHECK(!netaddr_to_sockaddr(&ss, &len, &name));
}

TEST(format_unknown_family) {
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  ss.ss_family = AF_UNIX;
  char out[NETADDR_STR_MAX];
  CHECK_STREQ(netaddr_format(out, (struct sockaddr *)&ss), "?");
  CHECK_STREQ(netaddr_format(out, NULL), "?");

  /* The longest IPv6 text form fits. */
  struct sockaddr_in6 sin6;
  memset(&sin6, 0, sizeof(sin6));
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(65535);
  CHECK(inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255", &sin6.sin6_addr) == 1);
  CHECK_STREQ(netaddr_format(out, (struct sockaddr *)&sin6),
              "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
}

TEST(format_hostport) {
  static const char *const texts[] = {"127.0.0.1:1", "[::1]:65535", "example.com:443",
                                      "[2001:db8::1]:80"};
  for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
    struct hostport hp;
    const char *err = NULL;
    CHECK(netaddr_parse_hostport(&hp, &err, texts[i]));
    char out[NETADDR_HOSTPORT_MAX];
    CHECK_STREQ(netaddr_format_hostport(out, sizeof(out), &hp), texts[i]);
  }
}

TEST(loopback) {
  static const struct {
    const char *text;
    bool loopback;
  } cases[] = {
      {"127.0.0.1:1", true},  {"127.255.0.9:1", true},
      {"[::1]:1", true},      {"[::ffff:127.0.0.1]:1", true},
      {"10.0.0.1:1", false},  {"0.0.0.0:1", false},
      {"[::]:1", false},      {"[::ffff:10.0.0.1]:1", false},
      {"128.0.0.1:1", false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    struct hostport hp;
    const char *err = NULL;
    CHECK(netaddr_parse_hostport(&hp, &err, cases[i].text));
    struct sockaddr_storage ss;
    socklen_t len = 0;
    CHECK(netaddr_to_sockaddr(&ss, &len, &hp));
    if (netaddr_is_loopback((struct sockaddr *)&ss) != cases[i].loopback) {
      fprintf(stderr, "  input: %s\n", cases[i].text);
    }
    CHECK_INTEQ(netaddr_is_loopback((struct sockaddr *)&ss), cases[i].loopback);
  }
  CHECK(!netaddr_is_loopback(NULL));
}

TEST_MAIN(TEST_ENTRY(parse_good), TEST_ENTRY(parse_bad), TEST_ENTRY(host_length),
          TEST_ENTRY(dns_names), TEST_ENTRY(sockaddr_round_trip), TEST_ENTRY(format_unknown_family),
          TEST_ENTRY(format_hostport), TEST_ENTRY(loopback))
