/* Unit tests for identity: SPIFFE ID, trust domain and DNS name validation, allow
 * pattern validation, and pattern matching, each driven by a table so that a new edge
 * case is one more row. */
#include "mtlsd/base/identity.h"

#include <string.h>

#include "test.h"

/* A SPIFFE ID of exactly |len| bytes ("spiffe://td/aaaa..."), in |buf|. */
static const char *long_id(char *buf, size_t len) {
  static const char head[] = "spiffe://td/";
  memcpy(buf, head, sizeof(head) - 1);
  memset(buf + sizeof(head) - 1, 'a', len - (sizeof(head) - 1));
  buf[len] = '\0';
  return buf;
}

struct valid_case {
  const char *id;
  bool valid;
  const char *reason; /* A substring of the error, when invalid. */
};

static const struct valid_case kSpiffeCases[] = {
    {"spiffe://cluster.local", true, NULL},
    {"spiffe://cluster.local/ns/default/sa/web", true, NULL},
    {"spiffe://td/A-Z_a.z-09", true, NULL},
    {"spiffe://my_td-1.example/x", true, NULL},
    {"spiffe://td/...", true, NULL}, /* Three dots is an ordinary segment. */
    {"spiffe://td/.hidden", true, NULL},
    {"spiffe://td/a/b/c/d/e/f", true, NULL},
    {"", false, "scheme"},
    {"spiffe:", false, "scheme"},
    {"spiffe:/td/x", false, "scheme"},
    {"SPIFFE://td/x", false, "lowercase"},
    {"Spiffe://td/x", false, "lowercase"},
    {"https://td/x", false, "scheme"},
    {" spiffe://td/x", false, "scheme"},
    {"spiffe://", false, "trust domain is missing"},
    {"spiffe:///ns/x", false, "trust domain is missing"},
    {"spiffe://Cluster.local/x", false, "lowercase"},
    {"spiffe://td:8080/x", false, "port"},
    {"spiffe://user@td/x", false, "user info"},
    {"spiffe://user:pw@td/x", false, "port"}, /* The ':' comes first. */
    {"spiffe://t%64/x", false, "percent"},
    {"spiffe://td/a%2Fb", false, "percent"},
    {"spiffe://td/x?y=1", false, "query"},
    {"spiffe://td?x", false, "query"},
    {"spiffe://td/x#frag", false, "fragment"},
    {"spiffe://td#frag", false, "fragment"},
    {"spiffe://td/", false, "trailing slash"},
    {"spiffe://td/ns/", false, "trailing slash"},
    {"spiffe://td//x", false, "empty segments"},
    {"spiffe://td/ns//x", false, "empty segments"},
    {"spiffe://td/.", false, "'.' or '..'"},
    {"spiffe://td/..", false, "'.' or '..'"},
    {"spiffe://td/a/../b", false, "'.' or '..'"},
    {"spiffe://td/a b", false, "path segment characters"},
    {"spiffe://td/a*", false, "path segment characters"},
    {"spiffe://td/caf\xc3\xa9", false, "path segment characters"},
    {"spiffe://t d/x", false, "trust domain characters"},
    {"spiffe://td\\x", false, "trust domain characters"},
};

TEST(spiffe_valid_table) {
  for (size_t i = 0; i < sizeof(kSpiffeCases) / sizeof(kSpiffeCases[0]); i++) {
    const struct valid_case *c = &kSpiffeCases[i];
    const char *err = NULL;
    bool got = identity_spiffe_valid(c->id, &err);
    if (got != c->valid) {
      fprintf(stderr, "  row %zu: identity_spiffe_valid(\"%s\") = %d (%s)\n", i, c->id, got,
              err ? err : "no error");
    }
    CHECK(got == c->valid);
    if (!c->valid && got == c->valid) {
      CHECK(err != NULL);
      if (err != NULL && strstr(err, c->reason) == NULL) {
        fprintf(stderr, "  row %zu: \"%s\": reason \"%s\" lacks \"%s\"\n", i, c->id, err,
                c->reason);
        test_failed_checks++;
      }
    }
  }
}

TEST(spiffe_valid_lengths) {
  static char buf[4096];
  CHECK(identity_spiffe_valid(long_id(buf, 2048), NULL));
  const char *err = NULL;
  CHECK(!identity_spiffe_valid(long_id(buf, 2049), &err));
  CHECK(err != NULL && strstr(err, "2048") != NULL);
  CHECK(!identity_spiffe_valid(long_id(buf, 4000), NULL));

  /* A trust domain of 255 bytes is the limit; 256 is refused. */
  char td_id[300] = "spiffe://";
  memset(td_id + 9, 'a', 255);
  td_id[9 + 255] = '\0';
  CHECK(identity_spiffe_valid(td_id, NULL));
  td_id[9 + 255] = 'a';
  td_id[9 + 256] = '\0';
  err = NULL;
  CHECK(!identity_spiffe_valid(td_id, &err));
  CHECK(err != NULL && strstr(err, "255") != NULL);

  CHECK(!identity_spiffe_valid(NULL, &err));
  CHECK(!identity_spiffe_valid(NULL, NULL)); /* |err| is optional. */
}

TEST(trust_domain_valid) {
  CHECK(identity_trust_domain_valid("cluster.local"));
  CHECK(identity_trust_domain_valid("a_b-c.9"));
  CHECK(!identity_trust_domain_valid(""));
  CHECK(!identity_trust_domain_valid(NULL));
  CHECK(!identity_trust_domain_valid("Cluster.local"));
  CHECK(!identity_trust_domain_valid("td:443"));
  CHECK(!identity_trust_domain_valid("td/x"));
  CHECK(!identity_trust_domain_valid("spiffe://td"));
  char td[300];
  memset(td, 'x', 255);
  td[255] = '\0';
  CHECK(identity_trust_domain_valid(td));
  td[255] = 'x';
  td[256] = '\0';
  CHECK(!identity_trust_domain_valid(td));
}

TEST(in_trust_domain) {
  CHECK(identity_in_trust_domain("spiffe://td/a", "td"));
  CHECK(identity_in_trust_domain("spiffe://td", "td"));
  CHECK(!identity_in_trust_domain("spiffe://tdx/a", "td"));
  CHECK(!identity_in_trust_domain("spiffe://t/a", "td"));
  CHECK(!identity_in_trust_domain("spiffe://td.evil/a", "td"));
  CHECK(!identity_in_trust_domain("spiffe://td/a/", "td")); /* Invalid ID. */
  CHECK(!identity_in_trust_domain("spiffe://td/a", "TD"));  /* Invalid trust domain. */
  CHECK(!identity_in_trust_domain("spiffe://td/a", ""));
  CHECK(!identity_in_trust_domain("spiffe://td/a", NULL));
  CHECK(!identity_in_trust_domain(NULL, "td"));
}

TEST(dns_name_valid) {
  const char *err = NULL;
  CHECK(identity_dns_name_valid("example.com", false, NULL));
  CHECK(identity_dns_name_valid("localhost", false, NULL));
  CHECK(identity_dns_name_valid("Payments.Default.svc", false, NULL));
  CHECK(identity_dns_name_valid("1a.2b-c", false, NULL));
  CHECK(!identity_dns_name_valid("*.example.com", false, &err));
  CHECK(err != NULL && strstr(err, "wildcard") != NULL);
  CHECK(identity_dns_name_valid("*.example.com", true, NULL));
  CHECK(!identity_dns_name_valid("*", true, NULL));
  CHECK(!identity_dns_name_valid("*example.com", true, NULL));
  CHECK(!identity_dns_name_valid("a.*.example.com", true, NULL));
  CHECK(!identity_dns_name_valid("f*.example.com", true, NULL));
  CHECK(!identity_dns_name_valid("", false, NULL));
  CHECK(!identity_dns_name_valid(NULL, false, NULL));
  CHECK(!identity_dns_name_valid("example.com.", false, NULL));
  CHECK(!identity_dns_name_valid(".example.com", false, NULL));
  CHECK(!identity_dns_name_valid("a..b", false, NULL));
  CHECK(!identity_dns_name_valid("-a.b", false, NULL));
  CHECK(!identity_dns_name_valid("a-.b", false, NULL));
  CHECK(!identity_dns_name_valid("a_b.c", false, NULL));
  CHECK(!identity_dns_name_valid("a b", false, NULL));
  CHECK(!identity_dns_name_valid("a:443", false, NULL));
  char name[300];
  memset(name, 'a', 63);
  name[63] = '\0';
  CHECK(identity_dns_name_valid(name, false, NULL));
  name[63] = 'a';
  name[64] = '\0';
  CHECK(!identity_dns_name_valid(name, false, NULL));
  /* 253 bytes in labels of 9 plus dots is fine; 254 is not. */
  for (size_t i = 0; i < 260; i++) {
    name[i] = i % 10 == 9 ? '.' : 'a';
  }
  name[253] = '\0';
  CHECK(identity_dns_name_valid(name, false, NULL));
  name[253] = 'a';
  name[254] = '\0';
  CHECK(!identity_dns_name_valid(name, false, NULL));
}

static const struct valid_case kPatternCases[] = {
    {"spiffe://td/ns/default/sa/web", true, NULL},
    {"spiffe://td/ns/default/*", true, NULL},
    {"spiffe://td/*", true, NULL},
    {"spiffe://td", true, NULL},
    {"example.com", true, NULL},
    {"*.example.com", true, NULL},
    {"EXAMPLE.com", true, NULL},
    {"", false, "empty"},
    {"*", false, "wildcard"},
    {"spiffe://*", false, "scheme"},
    {"spiffe:///*", false, "trust domain is missing"},
    {"spiffe://td/ns/*/sa", false, "last segment"},
    {"spiffe://td/ns/default*", false, "last segment"},
    {"spiffe://td/ns//*", false, "trailing slash"},
    {"spiffe://td/ns/default/**", false, "last segment"},
    {"spiffe://TD/*", false, "lowercase"},
    {"spiffe://td/x/", false, "trailing slash"},
    {"SPIFFE://td/x", false, "lowercase"},
    {"https://example.com", false, "scheme"},
    {"a.*.example.com", false, "wildcard"},
    {"*.example.com.", false, "end with"},
    {"exa mple.com", false, "characters"},
};

TEST(pattern_valid_table) {
  for (size_t i = 0; i < sizeof(kPatternCases) / sizeof(kPatternCases[0]); i++) {
    const struct valid_case *c = &kPatternCases[i];
    const char *err = NULL;
    bool got = identity_pattern_valid(c->id, &err);
    if (got != c->valid) {
      fprintf(stderr, "  row %zu: identity_pattern_valid(\"%s\") = %d (%s)\n", i, c->id, got,
              err ? err : "no error");
    }
    CHECK(got == c->valid);
    if (!c->valid && got == c->valid) {
      CHECK(err != NULL);
      if (err != NULL && strstr(err, c->reason) == NULL) {
        fprintf(stderr, "  row %zu: \"%s\": reason \"%s\" lacks \"%s\"\n", i, c->id, err,
                c->reason);
        test_failed_checks++;
      }
    }
  }
  CHECK(!identity_pattern_valid(NULL, NULL));
}

struct match_case {
  const char *pattern;
  const char *spiffe_id; /* The peer's, or NULL. */
  const char *dns[2];    /* The peer's DNS SANs, up to two. */
  bool match;
};

static const struct match_case kMatchCases[] = {
    /* Exact SPIFFE IDs. */
    {"spiffe://td/ns/default/sa/web", "spiffe://td/ns/default/sa/web", {NULL}, true},
    {"spiffe://td/ns/default/sa/web", "spiffe://td/ns/default/sa/web2", {NULL}, false},
    {"spiffe://td/ns/default/sa/web", "spiffe://td/ns/default/sa", {NULL}, false},
    {"spiffe://td/ns/default/sa/web", "spiffe://td/ns/default/sa/Web", {NULL}, false},
    {"spiffe://td/ns/default/sa/web", NULL, {"web", NULL}, false},
    {"spiffe://td", "spiffe://td", {NULL}, true},
    /* Prefixes. */
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default/sa/web", {NULL}, true},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default/x", {NULL}, true},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/defaultX/sa/web", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/defaul", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/other/sa/web", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://other/ns/default/sa/web", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default/", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default//x", {NULL}, false},
    {"spiffe://td/ns/default/*", "spiffe://td/ns/default/../../admin", {NULL}, false},
    {"spiffe://td/ns/default/*", NULL, {"default", NULL}, false},
    {"spiffe://td/*", "spiffe://td/anything/at/all", {NULL}, true},
    {"spiffe://td/*", "spiffe://td/x", {NULL}, true},
    {"spiffe://td/*", "spiffe://td", {NULL}, false},
    {"spiffe://td/*", "spiffe://tdx/x", {NULL}, false},
    {"spiffe://td/*", "spiffe://td.evil/x", {NULL}, false},
    /* DNS names. */
    {"example.com", NULL, {"example.com", NULL}, true},
    {"example.com", NULL, {"EXAMPLE.COM", NULL}, true},
    {"Example.COM", NULL, {"example.com", NULL}, true},
    {"example.com", NULL, {"other.org", "example.com"}, true},
    {"example.com", NULL, {"www.example.com", NULL}, false},
    {"example.com", NULL, {"example.com.evil", NULL}, false},
    {"example.com", NULL, {"example.co", NULL}, false},
    /* A certificate with a SPIFFE ID is that ID: its DNS SANs never match. */
    {"example.com", "spiffe://td/x", {"example.com", NULL}, false},
    {"*.example.com", "spiffe://td/x", {"a.example.com", NULL}, false},
    {"example.com", NULL, {NULL}, false},
    {"*.example.com", NULL, {"a.example.com", NULL}, true},
    {"*.example.com", NULL, {"API.Example.Com", NULL}, true},
    {"*.example.com", NULL, {"example.com", NULL}, false},
    {"*.example.com", NULL, {"a.b.example.com", NULL}, false},
    {"*.example.com", NULL, {".example.com", NULL}, false},
    {"*.example.com", NULL, {"aexample.com", NULL}, false},
    {"*.example.com", NULL, {"a.example.com.", NULL}, false},
    /* A wildcard SAN in a client certificate satisfies nothing, not even itself. */
    {"*.example.com", NULL, {"*.example.com", NULL}, false},
    {"*.example.com", NULL, {"*.b.example.com", NULL}, false},
    {"api.example.com", NULL, {"*.example.com", NULL}, false},
    {"api.example.com", NULL, {"*.example.com", "api.example.com"}, true},
    {"example.com", NULL, {"*.example.com", NULL}, false},
    {"api.example.com", NULL, {"a*.example.com", NULL}, false},
    /* Malformed peers and patterns never match. */
    {"spiffe://td/x", "spiffe://td/x/", {NULL}, false},
    {"spiffe://td/x/", "spiffe://td/x/", {NULL}, false},
    {"spiffe://td/ns/*/sa", "spiffe://td/ns/*/sa", {NULL}, false},
    {"", NULL, {"", NULL}, false},
    {"a_b.com", NULL, {"a_b.com", NULL}, false},
    {"spiffe://td/x", "", {NULL}, false},
};

TEST(pattern_matches_table) {
  for (size_t i = 0; i < sizeof(kMatchCases) / sizeof(kMatchCases[0]); i++) {
    const struct match_case *c = &kMatchCases[i];
    size_t dns_count = 0;
    while (dns_count < 2 && c->dns[dns_count] != NULL) {
      dns_count++;
    }
    const struct peer_identity peer = {c->spiffe_id, c->dns, dns_count};
    const char *matched = identity_pattern_match(c->pattern, &peer);
    bool got = matched != NULL;
    if (got != c->match) {
      fprintf(stderr, "  row %zu: \"%s\" vs {%s, %s, %s}: got %d\n", i, c->pattern,
              c->spiffe_id ? c->spiffe_id : "NULL", c->dns[0] ? c->dns[0] : "NULL",
              c->dns[1] ? c->dns[1] : "NULL", got);
    }
    CHECK(got == c->match);
    /* What matched is one of the peer's own names: the SPIFFE ID, or a DNS SAN. */
    if (matched != NULL) {
      CHECK(matched == c->spiffe_id || matched == c->dns[0] || matched == c->dns[1]);
    }
  }
}

TEST(pattern_matches_null) {
  const struct peer_identity peer = {"spiffe://td/x", NULL, 3}; /* NULL list, count 3. */
  CHECK(!identity_pattern_match(NULL, &peer));
  CHECK(!identity_pattern_match("spiffe://td/x", NULL));
  CHECK(!identity_pattern_match("example.com", &peer));
  CHECK(identity_pattern_match("spiffe://td/x", &peer));
}

struct server_case {
  const char *server_identity; /* NULL: the trust domain "td". */
  const char *spiffe_id;
  const char *dns[2];
  const char *matched; /* The identity that satisfied the check, or NULL. */
};

static const struct server_case kServerCases[] = {
    {NULL, "spiffe://td/ns/a/sa/x", {NULL}, "spiffe://td/ns/a/sa/x"},
    {NULL, "spiffe://other/ns/a/sa/x", {NULL}, NULL},
    {NULL, NULL, {"api.example.com", NULL}, NULL},
    {"spiffe://td/sa/pay", "spiffe://td/sa/pay", {NULL}, "spiffe://td/sa/pay"},
    {"spiffe://td/sa/pay", "spiffe://td/sa/pay2", {NULL}, NULL},
    {"spiffe://td/sa/pay", NULL, {"spiffe://td/sa/pay", NULL}, NULL},
    {"api.example.com", NULL, {"api.example.com", NULL}, "api.example.com"},
    {"api.example.com", NULL, {"other.org", "API.example.COM"}, "API.example.COM"},
    {"api.example.com", "spiffe://td/x", {"api.example.com", NULL}, NULL},
    /* Wildcard SANs of a server cover one label, with two or more labels after '*'. */
    {"api.example.com", NULL, {"*.example.com", NULL}, "*.example.com"},
    {"example.com", NULL, {"*.example.com", NULL}, NULL},
    {"a.b.example.com", NULL, {"*.example.com", NULL}, NULL},
    {"example.com", NULL, {"*.com", NULL}, NULL},
    {"api.example.com", NULL, {"a*.example.com", NULL}, NULL},
    {"api.example.com", NULL, {"*.*.com", NULL}, NULL},
    {"*.example.com", NULL, {"*.example.com", NULL}, NULL}, /* Not a valid server_identity. */
};

TEST(server_match_table) {
  for (size_t i = 0; i < sizeof(kServerCases) / sizeof(kServerCases[0]); i++) {
    const struct server_case *c = &kServerCases[i];
    size_t dns_count = 0;
    while (dns_count < 2 && c->dns[dns_count] != NULL) {
      dns_count++;
    }
    const struct peer_identity peer = {c->spiffe_id, c->dns, dns_count};
    const char *got = identity_server_match(c->server_identity, "td", &peer);
    bool same =
        got == NULL ? c->matched == NULL : c->matched != NULL && strcmp(got, c->matched) == 0;
    if (!same) {
      fprintf(stderr, "  row %zu: \"%s\": got %s, want %s\n", i,
              c->server_identity ? c->server_identity : "NULL", got ? got : "NULL",
              c->matched ? c->matched : "NULL");
    }
    CHECK(same);
  }
  CHECK(!identity_server_match("spiffe://td/x", "td", NULL));
}

TEST(san_acceptable) {
  static const unsigned char nul[] = "a.com\0.evil.com";
  CHECK(identity_san_acceptable((const unsigned char *)"a.example.com", 13));
  CHECK(identity_san_acceptable((const unsigned char *)"spiffe://td/x", 13));
  CHECK(!identity_san_acceptable(nul, sizeof(nul) - 1));
  CHECK(!identity_san_acceptable((const unsigned char *)"a.com\r\nforged", 15));
  CHECK(!identity_san_acceptable((const unsigned char *)"a b.com", 7));
  CHECK(!identity_san_acceptable((const unsigned char *)"a\x7f.com", 6));
  CHECK(!identity_san_acceptable((const unsigned char *)"caf\xc3\xa9.com", 9));
  CHECK(!identity_san_acceptable((const unsigned char *)"", 0));
  CHECK(!identity_san_acceptable(NULL, 3));
  char long_name[2050];
  memset(long_name, 'a', sizeof(long_name));
  CHECK(identity_san_acceptable((const unsigned char *)long_name, 2048));
  CHECK(!identity_san_acceptable((const unsigned char *)long_name, 2049));
}

TEST(allowed) {
  static const char *const dns[] = {"web.default.svc"};
  const struct peer_identity web = {"spiffe://td/ns/default/sa/web", NULL, 0};
  const struct peer_identity bare = {"spiffe://td", NULL, 0};
  const struct peer_identity foreign = {"spiffe://other/ns/default/sa/web", NULL, 0};
  const struct peer_identity dns_only = {NULL, dns, 1};
  const struct peer_identity nobody = {NULL, NULL, 0};

  /* No list: the trust domain decides, and DNS-only peers are refused. */
  CHECK(identity_allowed(NULL, 0, "td", &web));
  CHECK(identity_allowed(NULL, 0, "td", &bare));
  CHECK(!identity_allowed(NULL, 0, "td", &foreign));
  CHECK(!identity_allowed(NULL, 0, "td", &dns_only));
  CHECK(!identity_allowed(NULL, 0, "td", &nobody));
  CHECK(!identity_allowed(NULL, 0, NULL, &web));
  CHECK(!identity_allowed(NULL, 0, "td", NULL));

  /* A list: any match allows, whatever the trust domain. */
  static const char *const list[] = {"spiffe://other/ns/default/*", "web.default.svc",
                                     "spiffe://td/ns/default/sa/web"};
  CHECK_STREQ(identity_allowed(list, 3, "td", &web), "spiffe://td/ns/default/sa/web");
  CHECK_STREQ(identity_allowed(list, 3, "td", &foreign), "spiffe://other/ns/default/sa/web");
  CHECK_STREQ(identity_allowed(list, 3, "td", &dns_only), "web.default.svc");
  CHECK(!identity_allowed(list, 3, "td", &bare));
  CHECK(!identity_allowed(list, 3, "td", &nobody));
  CHECK(!identity_allowed(list, 2, "td", &web)); /* Only the first two are looked at. */

  /* An empty list allows nobody. */
  CHECK(!identity_allowed(list, 0, "td", &web));

  /* The review's case: a DNS entry must not let in a peer with another SPIFFE ID, and
   * what is passed on is the identity that matched. */
  static const char *const evil_dns[] = {"api.example.com"};
  const struct peer_identity evil = {"spiffe://td/ns/evil/sa/e", evil_dns, 1};
  static const char *const mixed[] = {"spiffe://td/ns/a/*", "api.example.com"};
  CHECK(!identity_allowed(mixed, 2, "td", &evil));
  const struct peer_identity api = {NULL, evil_dns, 1};
  CHECK_STREQ(identity_allowed(mixed, 2, "td", &api), "api.example.com");
}

TEST(primary) {
  static const char *const dns[] = {"a.example.com", "b.example.com"};
  const struct peer_identity both = {"spiffe://td/x", dns, 2};
  const struct peer_identity dns_only = {NULL, dns, 2};
  const struct peer_identity empty_id = {"", dns, 2};
  const struct peer_identity nobody = {NULL, NULL, 0};
  CHECK_STREQ(identity_primary(&both), "spiffe://td/x");
  CHECK_STREQ(identity_primary(&dns_only), "a.example.com");
  CHECK_STREQ(identity_primary(&empty_id), "a.example.com");
  CHECK_STREQ(identity_primary(&nobody), "");
  CHECK_STREQ(identity_primary(NULL), "");
}

TEST_MAIN(TEST_ENTRY(spiffe_valid_table), TEST_ENTRY(spiffe_valid_lengths),
          TEST_ENTRY(trust_domain_valid), TEST_ENTRY(in_trust_domain), TEST_ENTRY(dns_name_valid),
          TEST_ENTRY(pattern_valid_table), TEST_ENTRY(pattern_matches_table),
          TEST_ENTRY(pattern_matches_null), TEST_ENTRY(server_match_table),
          TEST_ENTRY(san_acceptable), TEST_ENTRY(allowed), TEST_ENTRY(primary))
