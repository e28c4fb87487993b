/* identity: SPIFFE ID and DNS name validation, and allow-list matching (docs/configuration.md).
 *
 * Everything here runs on strings that came out of a peer's certificate or out of the
 * configuration file, so every function accepts NULL and arbitrary bytes, never reads
 * past a terminator, and never allocates. Comparisons are ASCII-only on purpose: the
 * C library's case functions follow the locale, and an identity check must not. */
#include "mtlsd/base/identity.h"

#include <string.h>

#define SPIFFE_SCHEME "spiffe://"
#define SPIFFE_SCHEME_LEN (sizeof(SPIFFE_SCHEME) - 1)
#define SPIFFE_ID_MAX_LEN 2048
#define TRUST_DOMAIN_MAX_LEN 255
#define DNS_NAME_MAX_LEN 253
#define DNS_LABEL_MAX_LEN 63

static bool is_lower_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool is_alnum(char c) {
  return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static bool is_trust_domain_char(char c) {
  return is_lower_alnum(c) || c == '.' || c == '-' || c == '_';
}

static bool is_path_char(char c) {
  return is_alnum(c) || c == '.' || c == '-' || c == '_';
}

static char ascii_lower(char c) {
  if (c >= 'A' && c <= 'Z') {
    return (char)(c - 'A' + 'a');
  }
  return c;
}

static bool ascii_case_equal(const char *a, const char *b, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) {
      return false;
    }
  }
  return true;
}

static bool set_err(const char **err, const char *reason) {
  if (err != NULL) {
    *err = reason;
  }
  return false;
}

/* trust_domain_char_error names what a character that cannot appear in a trust domain
 * most likely means, so that "spiffe://td:8080" reads "port" rather than "bad char". */
static const char *trust_domain_char_error(char c) {
  switch (c) {
    case ':':
      return "trust domain cannot contain a port";
    case '@':
      return "trust domain cannot contain user info";
    case '%':
      return "percent-encoding is not allowed";
    case '?':
      return "query is not allowed";
    case '#':
      return "fragment is not allowed";
    default:
      break;
  }
  if (c >= 'A' && c <= 'Z') {
    return "trust domain must be lowercase";
  }
  return "trust domain characters are limited to lowercase letters, digits, '.', '-' and "
         "'_'";
}

/* trust_domain_check validates the |len| bytes at |td|. */
static bool trust_domain_check(const char *td, size_t len, const char **err) {
  if (len == 0) {
    return set_err(err, "trust domain is missing");
  }
  if (len > TRUST_DOMAIN_MAX_LEN) {
    return set_err(err, "trust domain is longer than 255 bytes");
  }
  for (size_t i = 0; i < len; i++) {
    if (!is_trust_domain_char(td[i])) {
      return set_err(err, trust_domain_char_error(td[i]));
    }
  }
  return true;
}

/* path_check validates a SPIFFE ID path of |len| bytes, which is empty or starts with
 * '/'. */
static bool path_check(const char *path, size_t len, const char **err) {
  size_t i = 0;
  while (i < len) {
    /* path[i] is a '/' that opens a segment. */
    size_t start = ++i;
    while (i < len && path[i] != '/') {
      char c = path[i];
      if (!is_path_char(c)) {
        if (c == '%') {
          return set_err(err, "percent-encoding is not allowed");
        }
        if (c == '?') {
          return set_err(err, "query is not allowed");
        }
        if (c == '#') {
          return set_err(err, "fragment is not allowed");
        }
        return set_err(err,
                       "path segment characters are limited to letters, digits, '.', '-' "
                       "and '_'");
      }
      i++;
    }
    size_t seg_len = i - start;
    if (seg_len == 0) {
      return set_err(err, i == len ? "path cannot have a trailing slash"
                                   : "path cannot contain empty segments");
    }
    if ((seg_len == 1 && path[start] == '.') ||
        (seg_len == 2 && path[start] == '.' && path[start + 1] == '.')) {
      return set_err(err, "path cannot contain '.' or '..' segments");
    }
  }
  return true;
}

/* spiffe_split validates |id| and sets |*td_len| to the length of its trust domain,
 * which starts at id + SPIFFE_SCHEME_LEN; the path (possibly empty) follows it. */
static bool spiffe_split(const char *id, size_t *td_len, const char **err) {
  if (id == NULL) {
    return set_err(err, "SPIFFE ID is missing");
  }
  /* strnlen bounds the walk: a 1 MB string is refused after 2049 bytes. */
  size_t len = strnlen(id, SPIFFE_ID_MAX_LEN + 1);
  if (len > SPIFFE_ID_MAX_LEN) {
    return set_err(err, "SPIFFE ID is longer than 2048 bytes");
  }
  if (len < SPIFFE_SCHEME_LEN || memcmp(id, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) != 0) {
    if (len >= SPIFFE_SCHEME_LEN && ascii_case_equal(id, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN)) {
      return set_err(err, "scheme must be lowercase \"spiffe\"");
    }
    return set_err(err, "scheme must be \"spiffe://\"");
  }
  const char *td = id + SPIFFE_SCHEME_LEN;
  size_t rest = len - SPIFFE_SCHEME_LEN;
  const char *slash = memchr(td, '/', rest);
  size_t n = slash != NULL ? (size_t)(slash - td) : rest;
  if (!trust_domain_check(td, n, err) || !path_check(td + n, rest - n, err)) {
    return false;
  }
  *td_len = n;
  return true;
}

bool identity_spiffe_valid(const char *id, const char **err) {
  size_t td_len;
  return spiffe_split(id, &td_len, err);
}

bool identity_trust_domain_valid(const char *td) {
  if (td == NULL) {
    return false;
  }
  return trust_domain_check(td, strnlen(td, TRUST_DOMAIN_MAX_LEN + 1), NULL);
}

bool identity_in_trust_domain(const char *spiffe_id, const char *trust_domain) {
  size_t td_len;
  if (!spiffe_split(spiffe_id, &td_len, NULL) || !identity_trust_domain_valid(trust_domain)) {
    return false;
  }
  /* The trust domain is valid, so it is at most 255 bytes and strlen is bounded. */
  return strlen(trust_domain) == td_len &&
         memcmp(spiffe_id + SPIFFE_SCHEME_LEN, trust_domain, td_len) == 0;
}

/* dns_check validates a host name in preferred name syntax (RFC 1034 section 3.5, with
 * RFC 1123's leading digits): dot-separated labels of 1 to 63 letters, digits and '-',
 * neither starting nor ending with '-', 253 bytes at most, no trailing dot. Underscores
 * are refused, as they are in X.509 dNSName SANs. */
static bool dns_check(const char *name, const char **err) {
  size_t len = strnlen(name, DNS_NAME_MAX_LEN + 1);
  if (len == 0) {
    return set_err(err, "DNS name is empty");
  }
  if (len > DNS_NAME_MAX_LEN) {
    return set_err(err, "DNS name is longer than 253 bytes");
  }
  size_t i = 0;
  while (i <= len) {
    size_t start = i;
    while (i < len && name[i] != '.') {
      char c = name[i];
      if (c == '*') {
        return set_err(err, "a wildcard is only allowed as the whole first label, \"*.\"");
      }
      if (!is_alnum(c) && c != '-') {
        return set_err(err, "DNS name characters are limited to letters, digits, '-' and '.'");
      }
      i++;
    }
    size_t label_len = i - start;
    if (label_len == 0) {
      return set_err(err, i == len ? "DNS name cannot end with '.'"
                                   : "DNS name cannot contain an empty label");
    }
    if (label_len > DNS_LABEL_MAX_LEN) {
      return set_err(err, "DNS label is longer than 63 bytes");
    }
    if (name[start] == '-' || name[i - 1] == '-') {
      return set_err(err, "DNS label cannot start or end with '-'");
    }
    i++; /* Past the '.', or past the end. */
  }
  return true;
}

bool identity_dns_name_valid(const char *name, bool allow_wildcard, const char **err) {
  if (name == NULL) {
    return set_err(err, "DNS name is missing");
  }
  if (name[0] == '*') {
    if (!allow_wildcard) {
      return set_err(err, "a wildcard is not allowed here");
    }
    if (name[1] != '.') {
      return set_err(err, "a wildcard is only allowed as the whole first label, \"*.\"");
    }
    return dns_check(name + 2, err);
  }
  return dns_check(name, err);
}

bool identity_san_acceptable(const unsigned char *bytes, size_t len) {
  if (bytes == NULL || len == 0 || len > SPIFFE_ID_MAX_LEN) {
    return false;
  }
  for (size_t i = 0; i < len; i++) {
    if (bytes[i] < 0x21 || bytes[i] > 0x7e) {
      return false;
    }
  }
  return true;
}

/* spiffe_prefix_len returns, for a "spiffe://.../ *" pattern, the length of the prefix
 * including its final '/' (the pattern minus the '*'), and 0 when |pattern| does not end
 * in "/ *". */
static size_t spiffe_prefix_len(const char *pattern) {
  size_t len = strnlen(pattern, SPIFFE_ID_MAX_LEN + 3);
  if (len >= 2 && pattern[len - 2] == '/' && pattern[len - 1] == '*') {
    return len - 1;
  }
  return 0;
}

static bool is_spiffe_pattern(const char *pattern) {
  return strncmp(pattern, SPIFFE_SCHEME, SPIFFE_SCHEME_LEN) == 0;
}

/* spiffe_prefix_valid checks that the first |prefix_len| bytes of |pattern|, minus the
 * final '/', form a valid SPIFFE ID. */
static bool spiffe_prefix_valid(const char *pattern, size_t prefix_len, const char **err) {
  char base[IDENTITY_MAX];
  size_t base_len = prefix_len - 1;
  if (base_len > SPIFFE_ID_MAX_LEN) {
    return set_err(err, "SPIFFE ID is longer than 2048 bytes");
  }
  memcpy(base, pattern, base_len);
  base[base_len] = '\0';
  return identity_spiffe_valid(base, err);
}

bool identity_pattern_valid(const char *pattern, const char **err) {
  if (pattern == NULL) {
    return set_err(err, "pattern is missing");
  }
  if (pattern[0] == '\0') {
    return set_err(err, "pattern is empty");
  }
  /* Anything with a scheme is judged as a SPIFFE ID: "SPIFFE://x" or "https://x" get
   * the scheme error rather than a puzzling DNS character error. */
  if (is_spiffe_pattern(pattern) || strstr(pattern, "://") != NULL) {
    size_t prefix_len = spiffe_prefix_len(pattern);
    if (prefix_len > 0) {
      return spiffe_prefix_valid(pattern, prefix_len, err);
    }
    if (strchr(pattern, '*') != NULL) {
      return set_err(err, "a SPIFFE pattern may only use '*' as its whole last segment, \"/*\"");
    }
    return identity_spiffe_valid(pattern, err);
  }
  return identity_dns_name_valid(pattern, true, err);
}

/* spiffe_matches applies a valid SPIFFE pattern to |id|. A prefix pattern "P/ *" matches
 * IDs strictly below P, at any depth: "P/a" and "P/a/b", but neither P itself (the
 * pattern names what is under P, and a bare "/ *" suffix must not quietly grant P's own
 * identity) nor a sibling such as "Px/a", since the match includes P's final '/'. */
static bool spiffe_matches(const char *pattern, const char *id) {
  if (id == NULL || !identity_spiffe_valid(id, NULL)) {
    return false;
  }
  size_t prefix_len = spiffe_prefix_len(pattern);
  if (prefix_len > 0) {
    /* A valid ID never ends in '/', so a prefix match is always strictly below P. */
    return strncmp(id, pattern, prefix_len) == 0;
  }
  return strcmp(id, pattern) == 0;
}

/* dns_pattern_matches compares the DNS pattern |pattern| (valid) with one client DNS
 * SAN |san|, ignoring ASCII case. A "*." pattern stands for exactly one whole label; a
 * wildcard SAN matches nothing (see identity_pattern_match). */
static bool dns_pattern_matches(const char *pattern, const char *san) {
  if (san == NULL || !identity_dns_name_valid(san, false, NULL)) {
    return false;
  }
  size_t pattern_len = strlen(pattern); /* Validated: at most 255 bytes. */
  size_t san_len = strlen(san);
  if (pattern[0] != '*') {
    return pattern_len == san_len && ascii_case_equal(pattern, san, san_len);
  }
  const char *suffix = pattern + 1; /* ".example.com" */
  const char *dot = strchr(san, '.');
  if (dot == NULL || dot == san) {
    return false;
  }
  size_t suffix_len = pattern_len - 1;
  return strlen(dot) == suffix_len && ascii_case_equal(dot, suffix, suffix_len);
}

/* dns_server_matches compares the DNS name |name| (valid, no wildcard) with one server
 * DNS SAN |san|, ignoring ASCII case. A wildcard SAN "*.rest" covers one whole label of
 * |name| when |rest| has at least two labels, so "*.com" covers nothing; partial-label
 * wildcards ("f*.example.com") are never honoured. */
static bool dns_server_matches(const char *name, const char *san) {
  if (san == NULL || !identity_dns_name_valid(san, true, NULL)) {
    return false;
  }
  size_t name_len = strlen(name);
  size_t san_len = strlen(san);
  if (san[0] != '*') {
    return name_len == san_len && ascii_case_equal(name, san, san_len);
  }
  const char *suffix = san + 1; /* ".example.com" */
  if (strchr(suffix + 1, '.') == NULL) {
    return false;
  }
  const char *dot = strchr(name, '.');
  if (dot == NULL || dot == name) {
    return false;
  }
  size_t suffix_len = san_len - 1;
  return strlen(dot) == suffix_len && ascii_case_equal(dot, suffix, suffix_len);
}

/* has_spiffe_id tells whether |peer| names itself with a SPIFFE ID, which then is its
 * only identity. */
static bool has_spiffe_id(const struct peer_identity *peer) {
  return peer->spiffe_id != NULL && peer->spiffe_id[0] != '\0';
}

/* dns_san_find returns the first DNS SAN of |peer| for which |matches| holds against
 * |name|, or NULL. */
static const char *dns_san_find(const struct peer_identity *peer, const char *name,
                                bool (*matches)(const char *, const char *)) {
  if (has_spiffe_id(peer) || peer->dns_names == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < peer->dns_count; i++) {
    if (matches(name, peer->dns_names[i])) {
      return peer->dns_names[i];
    }
  }
  return NULL;
}

const char *identity_pattern_match(const char *pattern, const struct peer_identity *peer) {
  if (peer == NULL || !identity_pattern_valid(pattern, NULL)) {
    return NULL;
  }
  if (is_spiffe_pattern(pattern)) {
    return spiffe_matches(pattern, peer->spiffe_id) ? peer->spiffe_id : NULL;
  }
  return dns_san_find(peer, pattern, dns_pattern_matches);
}

/* trust_domain_member returns |peer|'s SPIFFE ID when it is in |trust_domain|. */
static const char *trust_domain_member(const char *trust_domain, const struct peer_identity *peer) {
  return identity_in_trust_domain(peer->spiffe_id, trust_domain) ? peer->spiffe_id : NULL;
}

const char *identity_allowed(const char *const *patterns, size_t pattern_count,
                             const char *trust_domain, const struct peer_identity *peer) {
  if (peer == NULL) {
    return NULL;
  }
  if (patterns == NULL) {
    return trust_domain_member(trust_domain, peer);
  }
  for (size_t i = 0; i < pattern_count; i++) {
    const char *matched = identity_pattern_match(patterns[i], peer);
    if (matched != NULL) {
      return matched;
    }
  }
  return NULL;
}

const char *identity_server_match(const char *server_identity, const char *trust_domain,
                                  const struct peer_identity *peer) {
  if (peer == NULL) {
    return NULL;
  }
  if (server_identity == NULL) {
    return trust_domain_member(trust_domain, peer);
  }
  if (is_spiffe_pattern(server_identity)) {
    return identity_spiffe_valid(server_identity, NULL) && peer->spiffe_id != NULL &&
                   strcmp(server_identity, peer->spiffe_id) == 0
               ? peer->spiffe_id
               : NULL;
  }
  if (!identity_dns_name_valid(server_identity, false, NULL)) {
    return NULL;
  }
  return dns_san_find(peer, server_identity, dns_server_matches);
}

const char *identity_primary(const struct peer_identity *peer) {
  if (peer == NULL) {
    return "";
  }
  if (peer->spiffe_id != NULL && peer->spiffe_id[0] != '\0') {
    return peer->spiffe_id;
  }
  if (peer->dns_names != NULL && peer->dns_count > 0 && peer->dns_names[0] != NULL) {
    return peer->dns_names[0];
  }
  return "";
}
