/* Private to the tls module (tls.c, tls_certs.c): what a certificate set holds, and the
 * helpers both files use to read certificates. */
#ifndef MTLSD_TLS_INTERNAL_H
#define MTLSD_TLS_INTERNAL_H

#include <openssl/pool.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "mtlsd/tls.h"

struct tls_certset {
  CRYPTO_BUFFER **chain; /* Leaf first, then intermediates: what the handshake sends. */
  size_t chain_len;
  EVP_PKEY *key;
  X509 *leaf;
  STACK_OF(X509) * bundle; /* The trust anchors, in file order. */
  X509_STORE *store;       /* The same anchors, for verifying peers. */
  char *identity;          /* SPIFFE ID, else the first DNS SAN. */
  int64_t not_before, not_after;
  uint8_t content_digest[TLS_DIGEST_LEN]; /* tls_certset_digest. */
};

/* The identities a leaf certificate names: its spiffe:// URI SAN and its DNS SANs. */
struct cert_identities {
  char *spiffe_id; /* NULL when absent. */
  char **dns;
  size_t dns_count;
  /* Why the certificate may name nobody at all (a static string), or NULL: a SAN that is
   * not printable ASCII or is longer than 2048 bytes, an X.509-SVID with more than one
   * URI SAN or a malformed SPIFFE ID, or a leaf that is a CA (CA:TRUE or keyCertSign). */
  const char *invalid;
};

/* tls_cert_identities extracts |cert|'s identities into |*out| and applies the SPIFFE
 * X.509-SVID rules (SPEC section 3); the caller releases them with
 * tls_cert_identities_free. Returns false on allocation failure. */
bool tls_cert_identities(struct cert_identities *out, X509 *cert);
void tls_cert_identities_free(struct cert_identities *ids);

/* tls_asn1_time_to_unix converts |t| to seconds since the epoch; false if unparsable. */
bool tls_asn1_time_to_unix(int64_t *out, const ASN1_TIME *t);

/* tls_cert_sha256_hex writes the lowercase hex SHA-256 of |cert|'s DER encoding, or its
 * first |hex_len| digits, into |out| (hex_len + 1 bytes). */
void tls_cert_sha256_hex(char *out, size_t hex_len, const X509 *cert);

/* tls_pem_parse_certs returns a new stack (freed with sk_X509_pop_free) of every
 * CERTIFICATE block in the PEM text |pem|, skipping other block types; it may be empty.
 * Returns NULL when a certificate does not parse or on allocation failure. */
STACK_OF(X509) * tls_pem_parse_certs(const uint8_t *pem, size_t len);

/* tls_buffer_pool returns the process-wide pool that deduplicates certificate bytes
 * across connections (every peer of one identity shares one copy). */
CRYPTO_BUFFER_POOL *tls_buffer_pool(void);

#endif
