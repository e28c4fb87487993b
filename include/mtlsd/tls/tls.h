/* tls: every use of BoringSSL in mtlsd (the tls_*.c files: contexts, verification,
 * sessions, the BIO, connections, certificate sets, X.509); the rest of the proxy never
 * sees an SSL *.
 *
 * Owns three kinds of object:
 *   struct tls_certset   one validated set of certificate files (leaf chain, key, trust
 *                        bundle), immutable once loaded;
 *   struct tls_contexts  the server and client SSL_CTX built from one certset and the
 *                        TLS settings; reference-counted, so connections keep the
 *                        generation they started with while new ones take a newer one;
 *   struct tls_conn      one TLS connection on a non-blocking socket, driven by the
 *                        caller's event loop: every call returns at once with progress,
 *                        or with what it waits for (IO_WANT_READ / IO_WANT_WRITE,
 *                        mtlsd/io.h).
 * Peer verification (chain, validity, identity policy) runs inside the handshake, so a
 * refused peer never gets past it. */
#ifndef MTLSD_TLS_H
#define MTLSD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "mtlsd/base/io.h"
#include "mtlsd/config/config.h"

struct cJSON;

/* Why a handshake failed: the label values of mtlsd_handshake_failures_total. */
enum tls_failure {
  TLS_FAIL_NO_PEER_CERT,
  TLS_FAIL_UNTRUSTED,
  TLS_FAIL_EXPIRED,
  TLS_FAIL_IDENTITY_DENIED,
  TLS_FAIL_PROTOCOL,
  TLS_FAIL_TIMEOUT,
  TLS_FAIL_COUNT
};

/* tls_failure_name returns the metric label of |failure| ("no_peer_cert", ...). */
const char *tls_failure_name(enum tls_failure failure);

/* Hex digits of the SHA-256 prefix that names a trust root in metrics and logs. */
#define TLS_PEER_ROOT_HEX 16

/* ---- Certificate sets (tls_certs.c) ---- */

struct tls_certset;

/* Bytes of a digest of certificate files (SHA-256). */
#define TLS_DIGEST_LEN 32

/* tls_certset_load reads the files named by |cfg->certs| and validates them: PEM parses,
 * the key matches the leaf, the leaf chains to the bundle, now is inside the leaf's
 * validity window, and the leaf has a valid SPIFFE ID or DNS SANs. Without
 * |cfg->certs.ca_file| the set is a serving certificate only (the webhook's): no bundle,
 * the chain is the server's to present and nobody's to verify. On success it returns
 * a set the caller frees with tls_certset_free. On failure it returns NULL and writes a
 * one-line reason into |err| (e.g. "tls.key does not match tls.crt"). Either way, unless
 * |digest| is NULL, it writes there the tls_certfiles_digest of what it read. */
struct tls_certset *tls_certset_load(const struct config *cfg, uint8_t digest[TLS_DIGEST_LEN],
                                     char *err, size_t err_len);

/* The contents of one set's files (borrowed), with the names that messages use; no
 * |ca| (ca_name NULL) for a serving certificate. */
struct tls_pem_files {
  const uint8_t *cert, *key, *ca;
  size_t cert_len, key_len, ca_len;
  const char *cert_name, *key_name, *ca_name;
};

/* tls_certset_parse is tls_certset_load on contents already read: the same checks and
 * messages. The loader reads the files and calls it; the fuzz target feeds it hostile
 * bytes directly. */
struct tls_certset *tls_certset_parse(const struct tls_pem_files *files, char *err, size_t err_len);

/* tls_certset_free releases |set|; NULL is a no-op. */
void tls_certset_free(struct tls_certset *set);

/* tls_certset_same returns whether |a| and |b| were loaded from identical file contents,
 * so that a reload which changes nothing swaps nothing. */
bool tls_certset_same(const struct tls_certset *a, const struct tls_certset *b);

/* tls_certfiles_digest writes into |out| a digest of the files |certs| names as they are
 * now: each one's contents, or how reading it failed. It equals tls_certset_digest of a
 * set loaded from those same contents, so a watcher can tell a change that leaves sizes
 * and timestamps as they were, and whether the files hold the set that serves. */
void tls_certfiles_digest(const struct certs_config *certs, uint8_t out[TLS_DIGEST_LEN]);

/* tls_certset_digest returns the digest (TLS_DIGEST_LEN bytes, living as long as |set|)
 * of the file contents |set| was parsed from. */
const uint8_t *tls_certset_digest(const struct tls_certset *set);

/* tls_certset_not_after returns the leaf's expiry time (seconds since the epoch). */
int64_t tls_certset_not_after(const struct tls_certset *set);

/* tls_certset_primary_identity returns the leaf's identity (its SPIFFE ID, else its first
 * DNS SAN); the string lives as long as |set|. */
const char *tls_certset_primary_identity(const struct tls_certset *set);

/* tls_certset_add_info adds |set| as the members "leaf" and "bundle" of /certs (docs/admin.md) to
 * the JSON object |root|, which keeps owning them. Returns false when out of memory (|root| may
 * then hold some of them). */
bool tls_certset_add_info(struct cJSON *root, const struct tls_certset *set);

/* ---- Contexts ---- */

struct tls_contexts;

/* tls_contexts_new builds the server and client contexts for |set| and the TLS settings
 * of |cfg| (versions, AEAD suites, groups, resumption); for a serving certificate (no
 * |cfg->certs.ca_file|) only a server context that asks clients for no certificate. It takes
 * ownership of |set| on success (and only then). |generation| numbers successful loads, starting
 * at 1. Returns NULL and writes a reason into |err| on failure. The result starts with one
 * reference. */
struct tls_contexts *tls_contexts_new(const struct config *cfg, struct tls_certset *set,
                                      uint64_t generation, char *err, size_t err_len);

/* tls_contexts_up_ref takes another reference to |ctxs|; thread-safe. */
void tls_contexts_up_ref(struct tls_contexts *ctxs);

/* tls_contexts_free drops a reference; the last one releases everything. NULL is a
 * no-op. Thread-safe. */
void tls_contexts_free(struct tls_contexts *ctxs);

/* tls_contexts_generation returns the generation |ctxs| was built with. */
uint64_t tls_contexts_generation(const struct tls_contexts *ctxs);

/* tls_contexts_certset returns the certset |ctxs| owns. */
const struct tls_certset *tls_contexts_certset(const struct tls_contexts *ctxs);

/* ---- Client session cache (one per worker thread; not thread-safe) ---- */

struct tls_session_cache;

/* tls_session_cache_new returns an empty cache holding at most |capacity| sessions, one
 * per key (listener and destination); the caller frees it with tls_session_cache_free. */
struct tls_session_cache *tls_session_cache_new(size_t capacity);
void tls_session_cache_free(struct tls_session_cache *cache);

/* ---- Connections ---- */

/* Who the peer must be. The strings are borrowed from the immutable config and must
 * outlive every connection that uses the policy. */
struct tls_peer_policy {
  const char *trust_domain;
  const char *const *allow; /* Inbound allow list; NULL: any identity in trust_domain. */
  size_t allow_count;
  const char *server_identity; /* Outbound: exact SPIFFE ID or DNS name; NULL: trust domain. */
  const char *session_context; /* Binds resumed sessions to one listener's policy. */
};

struct tls_conn;

/* tls_conn_new_server starts a server-side connection on the connected socket |fd| (which
 * stays owned by the caller) with a reference to |ctxs|. Returns NULL on allocation
 * failure. */
struct tls_conn *tls_conn_new_server(struct tls_contexts *ctxs, int fd,
                                     const struct tls_peer_policy *policy);

/* tls_conn_new_client starts a client-side connection on |fd|. |sni| (may be NULL) is sent
 * as the server name when it is a DNS name. When |cache| is not NULL and resumption is
 * enabled, a session stored under |cache_key| is offered, and new ones are stored. */
struct tls_conn *tls_conn_new_client(struct tls_contexts *ctxs, int fd,
                                     const struct tls_peer_policy *policy, const char *sni,
                                     struct tls_session_cache *cache, const char *cache_key);

/* tls_conn_new_unverified_client starts a client connection on |fd| that presents no
 * certificate and does not verify the server's: only for running an application's own
 * HTTPS probe the way the kubelet does (which skips verification too), never for mesh
 * traffic. |sni| (may be NULL) is sent when it is a DNS name. NULL on failure. */
struct tls_conn *tls_conn_new_unverified_client(int fd, const char *sni);

/* tls_conn_free releases |conn| (not its socket); NULL is a no-op. */
void tls_conn_free(struct tls_conn *conn);

/* tls_conn_peer_spoke returns whether any byte has come from the peer yet (a server
 * that has one has begun reading the ClientHello). */
bool tls_conn_peer_spoke(const struct tls_conn *conn);

/* tls_conn_handshake advances the handshake: IO_OK when complete, IO_WANT_READ or
 * IO_WANT_WRITE when the socket must become ready first, IO_ERROR when it failed (see
 * tls_conn_failure). */
int tls_conn_handshake(struct tls_conn *conn);

/* tls_conn_failure returns why the handshake failed, and a short human-readable detail
 * for logs in |*detail| (static or owned by |conn|). */
enum tls_failure tls_conn_failure(const struct tls_conn *conn, const char **detail);

/* tls_conn_read decrypts up to |len| bytes into |buf|: a positive count, IO_WANT_READ,
 * IO_WANT_WRITE, IO_EOF or IO_ERROR. */
ssize_t tls_conn_read(struct tls_conn *conn, void *buf, size_t len);

/* tls_conn_write encrypts up to |len| bytes of |buf| and sends what the socket takes: a
 * positive count of bytes taken (maybe fewer than |len|), IO_WANT_READ, IO_WANT_WRITE
 * or IO_ERROR. After a WANT result the same bytes must be offered again. Taken bytes may
 * still wait in the connection's buffer (see tls_conn_flush). */
ssize_t tls_conn_write(struct tls_conn *conn, const void *buf, size_t len);

/* tls_conn_flush hands the records still buffered for the socket to the kernel: IO_OK
 * once none is left, IO_WANT_WRITE while the socket is full, or IO_ERROR. Writes
 * flush what they can themselves; a caller waits for writability and calls this when a
 * write left bytes behind. */
int tls_conn_flush(struct tls_conn *conn);

/* tls_conn_shutdown sends close_notify: IO_OK once sent, a WANT result, or IO_ERROR. */
int tls_conn_shutdown(struct tls_conn *conn);

/* What the handshake established, for logs, metrics and PROXY protocol headers. The
 * strings live as long as the connection. */
struct tls_conn_info {
  const char *peer_identity; /* SPIFFE ID or first DNS SAN; "" if none. */
  const char *version;       /* "TLSv1.3" */
  const char *cipher;        /* "TLS_AES_128_GCM_SHA256" */
  const char *peer_root;     /* SHA-256 prefix of the verifying root, "" when resumed. */
  bool resumed;
  int64_t peer_not_after; /* Earliest expiry in the peer's chain (epoch seconds). */
};

/* tls_conn_peer_identity returns the identity the peer's certificate named, also when the
 * handshake then refused it, or "" when none was seen. The string lives as long as
 * |conn|. */
const char *tls_conn_peer_identity(const struct tls_conn *conn);

/* tls_conn_get_info fills |*out| for a connection whose handshake completed. */
void tls_conn_get_info(const struct tls_conn *conn, struct tls_conn_info *out);

/* ---- Library ---- */

/* tls_thread_release frees what the calling thread keeps cached for its connections; a
 * worker calls it when its loop ends. */
void tls_thread_release(void);

/* tls_library_version returns a description of the BoringSSL in use. */
const char *tls_library_version(void);

#endif
