/* tls_verify: who the peer is, decided inside the handshake (tls_verify_peer, the mesh
 * contexts' custom verify callback) and again after a resumption, which skips it
 * (tls_verify_resumed_peer).
 *
 * Verification works on X509 objects parsed from the peer's CRYPTO_BUFFERs for that
 * moment only, and freed before it returns: the contexts use TLS_with_buffers_method, so
 * an established connection keeps no parsed certificate. What it keeps goes into the
 * tls_conn (peer_identity, owned by it; peer_root; peer_not_after), and a refusal is
 * recorded there with tls_conn_set_failure. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "mtlsd/base/identity.h"
#include "tls_internal.h"

/* Applies the SVID rules and the connection's identity policy to the peer's leaf
 * certificate; the identity kept for logs, metrics and the PROXY header is the one that
 * satisfied the policy (or, for a refused peer, the one it named). */
static bool check_identity(struct tls_conn *conn, X509 *leaf) {
  struct cert_identities ids;
  if (!tls_cert_identities(&ids, leaf)) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    return false;
  }
  bool ok = false;
  char detail[sizeof(conn->detail_buf)];
  if (ids.invalid != NULL) {
    snprintf(detail, sizeof(detail), "peer certificate: %s", ids.invalid);
    tls_conn_set_failure(conn, TLS_FAIL_UNTRUSTED, detail);
    goto done;
  }
  struct peer_identity peer = {
      .spiffe_id = ids.spiffe_id,
      .dns_names = (const char *const *)ids.dns,
      .dns_count = ids.dns_count,
  };
  const struct tls_peer_policy *policy = conn->policy;
  const char *matched =
      conn->is_server
          ? identity_allowed(policy->allow, policy->allow_count, policy->trust_domain, &peer)
          : identity_server_match(policy->server_identity, policy->trust_domain, &peer);
  const char *who = matched != NULL ? matched : identity_primary(&peer);
  /* Kept even when refused: the access log names who was turned away. */
  free(conn->peer_identity);
  conn->peer_identity = strdup(who);
  if (conn->peer_identity == NULL) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (matched == NULL) {
    snprintf(detail, sizeof(detail), "peer identity \"%.100s\" is not allowed",
             who[0] != '\0' ? who : "(none)");
    tls_conn_set_failure(conn, TLS_FAIL_IDENTITY_DENIED, detail);
    goto done;
  }
  ok = true;
done:
  tls_cert_identities_free(&ids);
  return ok;
}

/* The validity window of a chain is the intersection of its certificates' windows: a
 * connection must not outlive, nor start before, any certificate its trust rests on.
 * window_add narrows [*not_before, *not_after] to |cert|'s window. */
static void window_add(const X509 *cert, int64_t *not_before, int64_t *not_after) {
  int64_t t;
  if (tls_asn1_time_to_unix(&t, X509_get0_notAfter(cert)) && t < *not_after) {
    *not_after = t;
  }
  if (tls_asn1_time_to_unix(&t, X509_get0_notBefore(cert)) && t > *not_before) {
    *not_before = t;
  }
}

static void chain_window(STACK_OF(X509) * chain, int64_t *not_before, int64_t *not_after) {
  *not_before = INT64_MIN;
  *not_after = INT64_MAX;
  for (size_t i = 0; i < sk_X509_num(chain); i++) {
    window_add(sk_X509_value(chain, i), not_before, not_after);
  }
}

/* Parses the peer's chain, leaf first, into |*leaf| and |intermediates|. */
static bool parse_peer_chain(struct tls_conn *conn, const STACK_OF(CRYPTO_BUFFER) * chain,
                             X509 **leaf, STACK_OF(X509) * intermediates) {
  *leaf = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0));
  if (*leaf == NULL) {
    tls_conn_set_failure(conn, TLS_FAIL_UNTRUSTED, "peer certificate does not parse");
    return false;
  }
  for (size_t i = 1; i < sk_CRYPTO_BUFFER_num(chain); i++) {
    X509 *cert = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, i));
    if (cert == NULL || !sk_X509_push(intermediates, cert)) {
      X509_free(cert);
      tls_conn_set_failure(conn, TLS_FAIL_UNTRUSTED, "peer chain does not parse");
      return false;
    }
  }
  return true;
}

/* Verifies the peer's chain against the trust bundle, then its identity. On failure
 * |*alert| is the alert to send. */
static bool verify_chain(struct tls_conn *conn, const STACK_OF(CRYPTO_BUFFER) * chain,
                         uint8_t *alert) {
  bool ok = false;
  X509 *leaf = NULL;
  STACK_OF(X509) *intermediates = sk_X509_new_null();
  X509_STORE_CTX *store_ctx = X509_STORE_CTX_new();
  *alert = SSL_AD_INTERNAL_ERROR;
  if (intermediates == NULL || store_ctx == NULL) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
    tls_conn_set_failure(conn, TLS_FAIL_NO_PEER_CERT, "peer sent no certificate");
    *alert = SSL_AD_CERTIFICATE_REQUIRED;
    goto done;
  }
  *alert = SSL_AD_BAD_CERTIFICATE;
  if (!parse_peer_chain(conn, chain, &leaf, intermediates)) {
    goto done;
  }
  if (!X509_STORE_CTX_init(store_ctx, conn->ctxs->set->store, leaf, intermediates) ||
      !X509_STORE_CTX_set_purpose(
          store_ctx, conn->is_server ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER)) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (X509_verify_cert(store_ctx) != 1) {
    int code = X509_STORE_CTX_get_error(store_ctx);
    char detail[sizeof(conn->detail_buf)];
    snprintf(detail, sizeof(detail), "peer certificate: %s", X509_verify_cert_error_string(code));
    if (code == X509_V_ERR_CERT_HAS_EXPIRED || code == X509_V_ERR_CERT_NOT_YET_VALID) {
      tls_conn_set_failure(conn, TLS_FAIL_EXPIRED, detail);
      *alert = SSL_AD_CERTIFICATE_EXPIRED;
    } else {
      tls_conn_set_failure(conn, TLS_FAIL_UNTRUSTED, detail);
      *alert = SSL_AD_UNKNOWN_CA;
    }
    goto done;
  }
  STACK_OF(X509) *verified = X509_STORE_CTX_get0_chain(store_ctx);
  int64_t not_before;
  chain_window(verified, &not_before, &conn->peer_not_after);
  tls_cert_sha256_hex(conn->peer_root, sizeof(conn->peer_root) - 1,
                      sk_X509_value(verified, sk_X509_num(verified) - 1));
  if (!check_identity(conn, leaf)) {
    *alert = conn->failure == TLS_FAIL_UNTRUSTED ? SSL_AD_BAD_CERTIFICATE : SSL_AD_ACCESS_DENIED;
    goto done;
  }
  ok = true;
done:
  X509_STORE_CTX_free(store_ctx);
  sk_X509_pop_free(intermediates, X509_free);
  X509_free(leaf);
  ERR_clear_error();
  return ok;
}

/* Runs inside the handshake, so a refused peer never completes it. */
enum ssl_verify_result_t tls_verify_peer(SSL *ssl, uint8_t *out_alert) {
  struct tls_conn *conn = SSL_get_ex_data(ssl, tls_conn_ex_index);
  if (conn == NULL) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  return verify_chain(conn, SSL_get0_peer_certificates(ssl), out_alert) ? ssl_verify_ok
                                                                        : ssl_verify_invalid;
}

/* A resumed session skips tls_verify_peer. Its chain (kept in the session, which our own
 * ticket key or client cache vouches for) was verified when the session was made, so
 * the signatures are not checked again; but the clock and the policy may have moved, so
 * the chain's whole validity window, leaf to the trusted root, and the identity policy
 * are applied again: a resumed connection gets the same deadline as a full handshake. */
bool tls_verify_resumed_peer(struct tls_conn *conn) {
  const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(conn->ssl);
  if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
    tls_conn_set_failure(conn, TLS_FAIL_NO_PEER_CERT, "resumed session has no peer certificate");
    return false;
  }
  bool ok = false;
  X509 *leaf = NULL;
  X509 *root = NULL;
  STACK_OF(X509) *intermediates = sk_X509_new_null();
  X509_STORE_CTX *store_ctx = X509_STORE_CTX_new();
  if (intermediates == NULL || store_ctx == NULL) {
    tls_conn_set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (!parse_peer_chain(conn, chain, &leaf, intermediates)) {
    goto done;
  }
  size_t n = sk_X509_num(intermediates);
  X509 *top = n > 0 ? sk_X509_value(intermediates, n - 1) : leaf;
  if (!X509_STORE_CTX_init(store_ctx, conn->ctxs->set->store, leaf, intermediates) ||
      X509_STORE_CTX_get1_issuer(&root, store_ctx, top) != 1) {
    tls_conn_set_failure(conn, TLS_FAIL_UNTRUSTED, "resumed session's chain has no trusted root");
    goto done;
  }
  int64_t not_before, not_after, now = time(NULL);
  chain_window(intermediates, &not_before, &not_after);
  window_add(leaf, &not_before, &not_after);
  window_add(root, &not_before, &not_after);
  if (not_after <= now || not_before > now) {
    tls_conn_set_failure(conn, TLS_FAIL_EXPIRED,
                         "resumed session's peer chain is outside its validity window");
    goto done;
  }
  conn->peer_not_after = not_after;
  ok = check_identity(conn, leaf);
done:
  X509_STORE_CTX_free(store_ctx);
  X509_free(root);
  X509_free(leaf);
  sk_X509_pop_free(intermediates, X509_free);
  ERR_clear_error();
  return ok;
}
