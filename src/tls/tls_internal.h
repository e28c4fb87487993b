/* Private to the tls module: the objects of mtlsd/tls.h seen from inside, and what its
 * files call in each other. As BoringSSL keeps ssl/internal.h, one header for all of
 * them, so that a struct has one definition and a file's neighbours are one look away:
 *   tls_ctx.c      the SSL_CTXs: struct tls_contexts (reference-counted; each tls_conn
 *                  holds one reference), the probes' unverified context, the ex_data
 *                  index that leads a callback from an SSL to its tls_conn;
 *   tls_verify.c   peer verification, inside the handshake and after a resumption;
 *   tls_session.c  the client session cache (the server keeps no sessions: tickets);
 *   tls_bio.c      the gathering socket BIO under every tls_conn, with the calls that
 *                  move records through it (tls_conn_read, _write, _flush, _shutdown);
 *   tls_conn.c     struct tls_conn: creation, the handshake, what it learnt, freeing;
 *   tls_certs.c    certificate sets: reading the files, parsing and validating them;
 *   tls_x509.c     making keys and certificates for the cert command (mtlsd/tls_x509.h).
 * Every struct here is owned as mtlsd/tls.h says: a tls_conn owns its SSL (and so its
 * BIO), its strings and its gathering buffer, and a reference to its contexts. */
#ifndef MTLSD_TLS_INTERNAL_H
#define MTLSD_TLS_INTERNAL_H

#include <stdatomic.h>
#include <stdio.h>

#include <openssl/pool.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "mtlsd/tls/tls.h"

/* ---- Contexts and connections (tls_ctx.c, tls_conn.c) ---- */

struct tls_contexts {
  atomic_int refs;
  uint64_t generation;
  struct tls_certset *set; /* Owned: freed with the last reference. */
  SSL_CTX *server;
  SSL_CTX *client; /* NULL for a serving-only set (no trust bundle, nobody to verify). */
};

struct tls_conn {
  SSL *ssl;
  struct tls_contexts *ctxs; /* One reference; NULL on a probe's unverified connection. */
  const struct tls_peer_policy *policy;
  bool is_server;
  bool failure_set;
  enum tls_failure failure;
  const char *detail;
  char detail_buf[160];
  char *peer_identity;
  char peer_root[TLS_PEER_ROOT_HEX + 1];
  int64_t peer_not_after;
  struct tls_session_cache *cache; /* Borrowed: the worker's, which outlives it. */
  char *cache_key;
  int fd;      /* Borrowed: the caller closes it. */
  bool gather; /* Inside a write of several records: gather them for one send(2). */
  /* Records waiting for the socket: gathered so that several go out in one send(2). */
  uint8_t *wbuf;
  size_t wlen;
  size_t woff;
  bool close_notify_queued;
};

/* The ex_data index under which an SSL of the mesh contexts points to its tls_conn, so
 * that the verification and session callbacks find it. Set by the first
 * tls_contexts_new, which runs on the main thread before any worker starts. */
extern int tls_conn_ex_index;

/* tls_probe_ctx returns the context of the kubelet-style HTTPS probes (made on first
 * use, kept for the process), or NULL when it could not be made. */
SSL_CTX *tls_probe_ctx(void);

/* tls_conn_set_failure records why |conn| failed; the first reason wins, as the later
 * ones are its consequences. Inline: the handshake and the record path both call it. */
static inline void tls_conn_set_failure(struct tls_conn *conn, enum tls_failure failure,
                                        const char *detail) {
  if (!conn->failure_set) {
    conn->failure_set = true;
    conn->failure = failure;
    snprintf(conn->detail_buf, sizeof(conn->detail_buf), "%s", detail);
    conn->detail = conn->detail_buf;
  }
}

/* ---- Peer verification (tls_verify.c) ---- */

/* tls_verify_peer is the custom verify callback of the mesh contexts: it verifies the
 * peer's chain against the trust bundle, then its identity against the connection's
 * policy, so a refused peer never completes the handshake. */
enum ssl_verify_result_t tls_verify_peer(SSL *ssl, uint8_t *out_alert);

/* tls_verify_resumed_peer applies the clock and the policy again to the chain of a
 * resumed session, which skipped tls_verify_peer; false with the failure recorded. */
bool tls_verify_resumed_peer(struct tls_conn *conn);

/* ---- The client session cache (tls_session.c) ---- */

/* tls_session_new_cb is the client contexts' new-session callback: it stores the
 * session in the connection's cache, under its key. */
int tls_session_new_cb(SSL *ssl, SSL_SESSION *session);

/* tls_session_resume offers |ssl| the session cached under |key| when it was made with
 * contexts of |generation| and is still resumable, and drops it otherwise. */
void tls_session_resume(struct tls_session_cache *cache, const char *key, uint64_t generation,
                        SSL *ssl);

/* ---- The socket BIO and the record path (tls_bio.c) ---- */

/* tls_bio_attach gives |conn->ssl| a gathering socket BIO on |conn->fd|. */
bool tls_bio_attach(struct tls_conn *conn);

/* tls_bio_release gives back |conn|'s gathering buffer, if it holds one. */
void tls_bio_release(struct tls_conn *conn);

/* tls_conn_map_error maps a failed SSL call's result |ret| to an IO_* result, recording
 * why it failed. */
int tls_conn_map_error(struct tls_conn *conn, int ret);

/* ---- Certificates (tls_certs.c) ---- */

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
 * X.509-SVID rules (docs/configuration.md); the caller releases them with
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

/* tls_pem_parse_key returns the private key of the PEM text |pem|, which the caller
 * frees, or NULL (with the reason on BoringSSL's error queue) when there is none or it
 * is encrypted: there is no password callback, so that nothing ever prompts. */
EVP_PKEY *tls_pem_parse_key(const uint8_t *pem, size_t len);

/* tls_pem_file_read reads the certificate or key file |path| into a new buffer of
 * |*out_len| bytes that the caller releases with tls_pem_file_free: a regular file of at
 * most 1 MiB, as file_read_all reads it. Returns 0 or a negative errno (-EFBIG when
 * larger; see file_read_all). */
int tls_pem_file_read(const char *path, uint8_t **out, size_t *out_len);

/* tls_pem_file_free wipes (the buffer may hold a key) and frees |len| bytes at |data|;
 * NULL is a no-op. */
void tls_pem_file_free(uint8_t *data, size_t len);

/* tls_buffer_pool returns the process-wide pool that deduplicates certificate bytes
 * across connections (every peer of one identity shares one copy). */
CRYPTO_BUFFER_POOL *tls_buffer_pool(void);

#endif
