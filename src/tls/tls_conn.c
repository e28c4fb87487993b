/* tls_conn: one TLS connection of mtlsd/tls.h on a non-blocking socket: its creation
 * (server, client with the session cache, the probes' unverified client), the
 * handshake, what the handshake established, and its end. Moving records once the
 * handshake is done is tls_bio.c's, beside the BIO they go through.
 *
 * A tls_conn owns its SSL (which owns the BIO), its peer_identity and cache_key strings
 * and its gathering buffer, and one reference to its contexts; it borrows its socket,
 * its peer policy and its worker's session cache. tls_conn_free releases what it owns. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/sha.h>

#include "tls_internal.h"

static const char *const failure_names[TLS_FAIL_COUNT] = {
    "no_peer_cert", "untrusted", "expired", "identity_denied", "protocol", "timeout",
};

const char *tls_failure_name(enum tls_failure failure) {
  return failure < TLS_FAIL_COUNT ? failure_names[failure] : "protocol";
}

static struct tls_conn *conn_new(struct tls_contexts *ctxs, bool server, int fd,
                                 const struct tls_peer_policy *policy) {
  struct tls_conn *conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    return NULL;
  }
  conn->fd = fd;
  conn->ssl = SSL_new(server ? ctxs->server : ctxs->client);
  if (conn->ssl == NULL || !tls_bio_attach(conn) ||
      !SSL_set_ex_data(conn->ssl, tls_conn_ex_index, conn)) {
    SSL_free(conn->ssl);
    free(conn);
    ERR_clear_error();
    return NULL;
  }
  tls_contexts_up_ref(ctxs);
  conn->ctxs = ctxs;
  conn->policy = policy;
  conn->is_server = server;
  conn->peer_not_after = INT64_MAX;
  return conn;
}

struct tls_conn *tls_conn_new_server(struct tls_contexts *ctxs, int fd,
                                     const struct tls_peer_policy *policy) {
  struct tls_conn *conn = conn_new(ctxs, true, fd, policy);
  if (conn == NULL) {
    return NULL;
  }
  SSL_set_accept_state(conn->ssl);
  if (policy->session_context != NULL) {
    /* Tickets are bound to the listener that issued them: a ticket from a listener with
     * a wider allow list must not resume on a stricter one. */
    uint8_t sid_ctx[SHA256_DIGEST_LENGTH];
    SHA256((const uint8_t *)policy->session_context, strlen(policy->session_context), sid_ctx);
    SSL_set_session_id_context(conn->ssl, sid_ctx, sizeof(sid_ctx));
  }
  return conn;
}

struct tls_conn *tls_conn_new_client(struct tls_contexts *ctxs, int fd,
                                     const struct tls_peer_policy *policy, const char *sni,
                                     struct tls_session_cache *cache, const char *cache_key) {
  struct tls_conn *conn = conn_new(ctxs, false, fd, policy);
  if (conn == NULL) {
    return NULL;
  }
  SSL_set_connect_state(conn->ssl);
  if (sni != NULL && !SSL_set_tlsext_host_name(conn->ssl, sni)) {
    ERR_clear_error();
  }
  if (cache != NULL && cache_key != NULL &&
      SSL_CTX_get_session_cache_mode(ctxs->client) != SSL_SESS_CACHE_OFF) {
    conn->cache = cache;
    conn->cache_key = strdup(cache_key);
    tls_session_resume(cache, cache_key, ctxs->generation, conn->ssl);
  }
  return conn;
}

struct tls_conn *tls_conn_new_unverified_client(int fd, const char *sni) {
  SSL_CTX *probe_ctx = tls_probe_ctx();
  if (probe_ctx == NULL) {
    return NULL;
  }
  struct tls_conn *conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    return NULL;
  }
  conn->fd = fd;
  conn->peer_not_after = INT64_MAX;
  conn->ssl = SSL_new(probe_ctx);
  /* No ex_data: none of the mesh contexts' callbacks runs on this context. */
  if (conn->ssl == NULL || !tls_bio_attach(conn)) {
    SSL_free(conn->ssl);
    free(conn);
    ERR_clear_error();
    return NULL;
  }
  SSL_set_connect_state(conn->ssl);
  if (sni != NULL && !SSL_set_tlsext_host_name(conn->ssl, sni)) {
    ERR_clear_error();
  }
  return conn;
}

void tls_conn_free(struct tls_conn *conn) {
  if (conn == NULL) {
    return;
  }
  SSL_free(conn->ssl);
  tls_contexts_free(conn->ctxs);
  free(conn->peer_identity);
  free(conn->cache_key);
  tls_bio_release(conn);
  free(conn);
}

bool tls_conn_peer_spoke(const struct tls_conn *conn) {
  /* BIO_read counts what every read returned: nothing for the relay's reads to keep. */
  return BIO_number_read(SSL_get_rbio(conn->ssl)) > 0;
}

int tls_conn_handshake(struct tls_conn *conn) {
  int ret = SSL_do_handshake(conn->ssl);
  if (ret == 1) {
    if (SSL_session_reused(conn->ssl) && !tls_verify_resumed_peer(conn)) {
      return IO_ERROR;
    }
    return IO_OK;
  }
  int result = tls_conn_map_error(conn, ret);
  /* EOF in the middle of a handshake is a failure, not a clean end. */
  return result == IO_EOF ? IO_ERROR : result;
}

enum tls_failure tls_conn_failure(const struct tls_conn *conn, const char **detail) {
  if (detail != NULL) {
    *detail = conn->failure_set ? conn->detail : "TLS error";
  }
  return conn->failure_set ? conn->failure : TLS_FAIL_PROTOCOL;
}

const char *tls_conn_peer_identity(const struct tls_conn *conn) {
  return conn->peer_identity != NULL ? conn->peer_identity : "";
}

void tls_conn_get_info(const struct tls_conn *conn, struct tls_conn_info *out) {
  const SSL_CIPHER *cipher = SSL_get_current_cipher(conn->ssl);
  out->peer_identity = conn->peer_identity != NULL ? conn->peer_identity : "";
  out->version = SSL_get_version(conn->ssl);
  out->cipher = cipher != NULL ? SSL_CIPHER_standard_name(cipher) : "";
  out->resumed = SSL_session_reused(conn->ssl);
  out->peer_root = out->resumed ? "" : conn->peer_root;
  out->peer_not_after = conn->peer_not_after;
}
