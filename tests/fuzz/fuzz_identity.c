/* libFuzzer driver for identity: the SPIFFE ID, DNS name and allow-pattern checks see
 * strings from peer certificates and from the configuration file.
 *
 * The input is split at '\n' into a pattern, a SPIFFE ID and up to two DNS names. Every
 * public function runs on them, and the results must agree with one another: a valid ID
 * matches itself and every "ancestor/ *" prefix above it, an invalid pattern matches
 * nothing, a DNS name matches itself in any case, and so on. A disagreement aborts. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "mtlsd/base/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FIELDS 4
#define FIELD_MAX 4096

/* check_reason insists that a failed validation leaves a non-empty reason. */
static void check_reason(bool ok, const char *err) {
  if (!ok) {
    require(err != NULL && err[0] != '\0', "a refusal comes with a reason", NULL);
  }
}

static void check_spiffe_id(const char *id) {
  const char *err = NULL;
  bool valid = identity_spiffe_valid(id, &err);
  check_reason(valid, err);
  if (!valid) {
    const struct peer_identity peer = {id, NULL, 0};
    require(!identity_pattern_match(id, &peer), "an invalid ID matches nothing", NULL);
    return;
  }

  size_t len = strlen(id);
  require(len <= 2048, "a valid ID has at most 2048 bytes", NULL);
  require(identity_pattern_valid(id, NULL), "a valid ID is a valid pattern", NULL);
  const struct peer_identity peer = {id, NULL, 0};
  require(identity_pattern_match(id, &peer) != NULL, "a valid ID matches itself", NULL);
  require(strcmp(identity_primary(&peer), id) == 0, "the SPIFFE ID is the primary name", NULL);

  /* The trust domain runs from after "spiffe://" to the first '/'. */
  char td[IDENTITY_MAX];
  const char *start = id + strlen("spiffe://");
  size_t td_len = strcspn(start, "/");
  memcpy(td, start, td_len);
  td[td_len] = '\0';
  require(identity_trust_domain_valid(td), "a valid ID has a valid trust domain", NULL);
  require(identity_in_trust_domain(id, td), "a valid ID is in its trust domain", NULL);
  require(identity_allowed(NULL, 0, td, &peer) != NULL, "without a list, the trust domain decides",
          NULL);

  /* Every "ancestor/ *" matches an ID with a path; "id/ *" never matches id itself. */
  char pattern[IDENTITY_MAX + 2];
  for (size_t i = strlen("spiffe://"); i <= len; i++) {
    if (id[i] != '/' && id[i] != '\0') {
      continue;
    }
    memcpy(pattern, id, i);
    memcpy(pattern + i, "/*", 3);
    bool below = i < len;
    require(identity_pattern_valid(pattern, NULL), "an ancestor prefix is a valid pattern", NULL);
    require((identity_pattern_match(pattern, &peer) != NULL) == below,
            "a prefix matches exactly the IDs strictly below it", NULL);
  }
}

static void check_dns_name(const char *name) {
  const char *err = NULL;
  bool valid = identity_dns_name_valid(name, false, &err);
  check_reason(valid, err);
  bool wild_valid = identity_dns_name_valid(name, true, &err);
  check_reason(wild_valid, err);
  require(!valid || wild_valid, "allowing wildcards only widens", NULL);
  if (!valid) {
    return;
  }
  require(identity_pattern_valid(name, NULL), "a DNS name is a valid pattern", NULL);

  const char *names[1] = {name};
  const struct peer_identity peer = {NULL, names, 1};
  require(identity_pattern_match(name, &peer) != NULL, "a DNS name matches itself", NULL);
  require(!identity_allowed(NULL, 0, "td", &peer), "a DNS-only peer needs an allow list", NULL);

  char upper[FIELD_MAX];
  size_t len = strlen(name);
  for (size_t i = 0; i <= len; i++) {
    char c = name[i];
    if (c >= 'a' && c <= 'z') {
      c = (char)(c - 'a' + 'A');
    }
    upper[i] = c;
  }
  require(identity_pattern_match(upper, &peer) != NULL, "DNS matching ignores case", NULL);

  /* "*.rest" matches "label.rest" whenever the name has at least two labels. */
  const char *dot = strchr(name, '.');
  if (dot != NULL) {
    char wild[FIELD_MAX + 2];
    wild[0] = '*';
    memcpy(wild + 1, dot, strlen(dot) + 1);
    require(identity_pattern_match(wild, &peer) != NULL, "a wildcard matches one label", NULL);
    const struct peer_identity no_sans = {NULL, names, 0};
    require(!identity_pattern_match(wild, &no_sans), "no SANs, no match", NULL);
    const char *rest[1] = {dot + 1};
    const struct peer_identity parent = {NULL, rest, 1};
    require(!identity_pattern_match(wild, &parent), "a wildcard needs its label", NULL);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* Each field gets its own heap buffer, so ASan sees a read past its terminator. */
  char *field[FIELDS] = {NULL};
  size_t pos = 0;
  for (size_t f = 0; f < FIELDS; f++) {
    size_t end = pos;
    while (end < size && data[end] != '\n') {
      end++;
    }
    size_t n = end - pos < FIELD_MAX - 1 ? end - pos : FIELD_MAX - 1;
    field[f] = malloc(n + 1);
    if (field[f] == NULL) {
      goto out;
    }
    if (n > 0) {
      memcpy(field[f], data + pos, n);
    }
    field[f][n] = '\0';
    pos = end < size ? end + 1 : end;
  }

  const char *pattern = field[0];
  const char *dns[2] = {field[2], field[3]};
  const struct peer_identity peer = {field[1], dns, 2};

  const char *err = NULL;
  bool pattern_ok = identity_pattern_valid(pattern, &err);
  check_reason(pattern_ok, err);
  const char *matched = identity_pattern_match(pattern, &peer);
  require(matched == NULL || pattern_ok, "an invalid pattern matches nothing", NULL);
  require(matched == NULL || matched == peer.spiffe_id || matched == dns[0] || matched == dns[1],
          "what matched is one of the peer's names", NULL);
  if (matched != NULL && strncmp(pattern, "spiffe://", 9) == 0) {
    require(identity_spiffe_valid(peer.spiffe_id, NULL), "a SPIFFE match has a valid ID", NULL);
  }
  if (matched != NULL && peer.spiffe_id[0] != '\0') {
    require(matched == peer.spiffe_id, "a peer with a SPIFFE ID is only that ID", NULL);
  }
  require(matched == NULL || matched[0] != '*', "a wildcard SAN never satisfies an allow entry",
          NULL);
  const char *const list[1] = {pattern};
  require(identity_allowed(list, 1, "td", &peer) == matched, "a one-entry list is its entry", NULL);
  const char *server = identity_server_match(pattern, "td", &peer);
  require(server == NULL || server == peer.spiffe_id || server == dns[0] || server == dns[1],
          "what a server matched is one of its names", NULL);
  if (server != NULL && server[0] == '*') {
    require(strchr(server + 2, '.') != NULL, "a server wildcard has two labels after it", NULL);
  }
  require(!identity_allowed(list, 0, "td", &peer), "an empty list allows nobody", NULL);
  (void)identity_trust_domain_valid(pattern);
  (void)identity_in_trust_domain(peer.spiffe_id, pattern);

  const char *primary = identity_primary(&peer);
  require(primary == peer.spiffe_id || primary == dns[0] || primary[0] == '\0',
          "the primary name is one of the peer's", NULL);

  for (size_t f = 0; f < FIELDS; f++) {
    check_spiffe_id(field[f]);
    check_dns_name(field[f]);
  }

out:
  for (size_t f = 0; f < FIELDS; f++) {
    free(field[f]);
  }
  return 0;
}
