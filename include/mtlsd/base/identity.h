/* identity: who a peer is, and whether it may talk to us (docs/configuration.md, "Identity").
 *
 * A certificate's identity is its URI SAN when that is a spiffe:// ID, else its DNS SANs.
 * This module validates SPIFFE IDs (per the SPIFFE ID specification), validates allow
 * patterns at configuration time, and matches a peer's identity against a policy. It is
 * pure string logic with no TLS types: the tls module extracts the SANs and calls in.
 * Nothing here allocates or keeps a pointer; every function accepts NULL strings (never
 * valid, never matching) and arbitrary bytes, since its input comes from peers. */
#ifndef MTLSD_IDENTITY_H
#define MTLSD_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>

/* The longest SPIFFE ID the specification allows (2048 bytes) plus a terminator. */
#define IDENTITY_MAX 2049

/* identity_spiffe_valid returns whether |id| is a well-formed SPIFFE ID: scheme
 * "spiffe://" (lowercase), a trust domain of lowercase letters, digits, '.', '-' and
 * '_', an optional path of non-empty segments of [A-Za-z0-9._-] that are not "." or
 * "..", no trailing '/', no query, fragment, port or user info, 2048 bytes at most. On
 * failure |*err| (if not NULL) gets a static reason. */
bool identity_spiffe_valid(const char *id, const char **err);

/* identity_trust_domain_valid returns whether |td| is a valid SPIFFE trust domain name. */
bool identity_trust_domain_valid(const char *td);

/* identity_dns_name_valid returns whether |name| is a host name in preferred name syntax:
 * dot-separated labels of 1 to 63 letters, digits and '-' (not at either end of a label),
 * 253 bytes at most, no trailing dot. With |allow_wildcard|, a first label of exactly "*"
 * is accepted too ("*.example.com"). On failure |*err| (if not NULL) gets a static
 * reason. */
bool identity_dns_name_valid(const char *name, bool allow_wildcard, const char **err);

/* identity_san_acceptable returns whether the |len| bytes of one subject alternative name
 * taken from a peer's certificate may name that peer at all: 1 to 2048 bytes of
 * printable ASCII without spaces (0x21 to 0x7e). An embedded NUL could hide a different
 * name behind a shorter one, and CR, LF or other control bytes could forge a log line,
 * so a certificate with any other SAN is refused before its names are looked at. */
bool identity_san_acceptable(const unsigned char *bytes, size_t len);

/* identity_pattern_valid returns whether |pattern| may appear in an allow list: a valid
 * SPIFFE ID, a valid SPIFFE ID prefix followed by "/ *" (no space), or a DNS name
 * (optionally "*.example.com"). On failure |*err| (if not NULL) gets a static reason. */
bool identity_pattern_valid(const char *pattern, const char **err);

/* A peer's identities, as extracted from its verified leaf certificate. The strings are
 * borrowed from the caller for the duration of a call. */
struct peer_identity {
  const char *spiffe_id; /* The spiffe:// URI SAN, or NULL. */
  const char *const *dns_names;
  size_t dns_count;
};

/* identity_pattern_match applies the single allow pattern |pattern| to a *client*
 * certificate's identities |peer| (docs/configuration.md) and returns the identity that
 * satisfied it, borrowed from |peer|, or NULL. An invalid pattern, or a peer SAN that is
 * not well-formed, never matches.
 *   - A certificate with a SPIFFE ID is that ID and nothing else: only SPIFFE patterns
 *     apply to it, and its DNS SANs are ignored.
 *   - An exact SPIFFE ID matches the peer's SPIFFE ID byte for byte.
 *   - A prefix "spiffe://td/ns/default/ *" matches every ID strictly below
 *     "spiffe://td/ns/default/", at any depth, cut at a segment boundary: it matches
 *     neither the sibling "spiffe://td/ns/defaultX/a" nor the bare
 *     "spiffe://td/ns/default" itself (the pattern names what is under that ID, not the
 *     ID). Likewise "spiffe://td/ *" matches every ID in td that has a path.
 *   - A DNS name matches a peer without a SPIFFE ID when one of its DNS SANs equals it,
 *     ignoring ASCII case. A leading "*." in the pattern stands for exactly one label, so
 *     "*.example.com" matches "a.example.com" but neither "example.com" nor
 *     "a.b.example.com". A wildcard SAN in a client certificate matches nothing: a
 *     client names itself, it does not stand for a set of hosts. */
const char *identity_pattern_match(const char *pattern, const struct peer_identity *peer);

/* identity_allowed applies an inbound allow list to a client certificate's identities
 * and returns the identity that satisfied it (borrowed from |peer|), or NULL when the
 * peer is refused. When |patterns| is NULL (no list), any valid SPIFFE ID in
 * |trust_domain| is allowed, and a DNS-only peer is refused; otherwise a peer is allowed
 * when any of the |pattern_count| patterns matches, so an empty list allows nobody. */
const char *identity_allowed(const char *const *patterns, size_t pattern_count,
                             const char *trust_domain, const struct peer_identity *peer);

/* identity_server_match checks a *server* certificate's identities against an outbound
 * listener's |server_identity| and returns the identity that satisfied it (borrowed from
 * |peer|), or NULL. NULL |server_identity| accepts any SPIFFE ID in |trust_domain|. An
 * exact SPIFFE ID must equal the peer's SPIFFE ID. A DNS name is checked against the
 * DNS SANs of a peer without a SPIFFE ID, ignoring ASCII case; there a wildcard SAN
 * covers exactly one label, as in any TLS client (RFC 6125 section 6.4.3), and only with
 * at least two labels after the '*' ("*.example.com", never "*.com"). */
const char *identity_server_match(const char *server_identity, const char *trust_domain,
                                  const struct peer_identity *peer);

/* identity_in_trust_domain returns whether the valid SPIFFE ID |spiffe_id| belongs to
 * the valid trust domain |trust_domain|. Unlike the pattern "spiffe://td/ *", this
 * includes the trust domain's own ID "spiffe://td": membership is about the trust domain
 * component only. */
bool identity_in_trust_domain(const char *spiffe_id, const char *trust_domain);

/* identity_primary returns the string that names |peer| in logs and metrics-free places:
 * the SPIFFE ID when there is one, else the first DNS name, else "". The result is
 * borrowed from |peer| (or is a static ""), so it lives as long as |peer|'s strings. */
const char *identity_primary(const struct peer_identity *peer);

#endif
