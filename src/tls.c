/* tls: TLS contexts, client session caching and non-blocking connections over BoringSSL
 * (see mtlsd/tls.h).
 *
 * Contexts use TLS_with_buffers_method: certificates stay as CRYPTO_BUFFERs deduplicated
 * in one pool, so a thousand connections from one peer hold one copy of its chain, and
 * X509 objects exist only for the moment of verification. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "mtlsd/identity.h"
#include "tls_internal.h"

static const char *const failure_names[TLS_FAIL_COUNT] = {
    "no_peer_cert", "untrusted", "expired", "identity_denied", "protocol", "timeout",
};

const char *tls_failure_name(enum tls_failure failure) {
  return failure < TLS_FAIL_COUNT ? failure_names[failure] : "protocol";
}

struct tls_contexts {
  atomic_int refs;
  uint64_t generation;
  struct tls_certset *set;
  SSL_CTX *server;
  SSL_CTX *client;
};

struct session_entry {
  char *key;
  uint64_t key_hash;
  uint64_t generation;
  uint64_t last_used;
  SSL_SESSION *session;
};

struct tls_session_cache {
  struct session_entry *entries;
  size_t capacity;
  uint64_t clock;
};

struct tls_conn {
  SSL *ssl;
  struct tls_contexts *ctxs;
  const struct tls_peer_policy *policy;
  bool is_server;
  bool failure_set;
  enum tls_failure failure;
  const char *detail;
  char detail_buf[160];
  char *peer_identity;
  char peer_root[TLS_PEER_ROOT_HEX + 1];
  int64_t peer_not_after;
  struct tls_session_cache *cache;
  char *cache_key;
  int fd;
  bool gather; /* Inside a write of several records: gather them for one send(2). */
  /* Records waiting for the socket: gathered so that several go out in one send(2). */
  uint8_t *wbuf;
  size_t wlen;
  size_t woff;
  bool close_notify_queued;
};

static int g_conn_index = -1;

/* ---- Session cache ---- */

static uint64_t hash_key(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s != '\0'; s++) {
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  }
  return h;
}

struct tls_session_cache *tls_session_cache_new(size_t capacity) {
  struct tls_session_cache *cache = calloc(1, sizeof(*cache));
  if (cache == NULL) {
    return NULL;
  }
  cache->entries = calloc(capacity, sizeof(*cache->entries));
  if (cache->entries == NULL) {
    free(cache);
    return NULL;
  }
  cache->capacity = capacity;
  return cache;
}

void tls_session_cache_free(struct tls_session_cache *cache) {
  if (cache == NULL) {
    return;
  }
  for (size_t i = 0; i < cache->capacity; i++) {
    free(cache->entries[i].key);
    SSL_SESSION_free(cache->entries[i].session);
  }
  free(cache->entries);
  free(cache);
}

static struct session_entry *cache_find(struct tls_session_cache *cache, const char *key) {
  uint64_t h = hash_key(key);
  for (size_t i = 0; i < cache->capacity; i++) {
    struct session_entry *e = &cache->entries[i];
    if (e->key != NULL && e->key_hash == h && strcmp(e->key, key) == 0) {
      return e;
    }
  }
  return NULL;
}

/* Takes ownership of |session|. The least recently used entry makes room. */
static void cache_store(struct tls_session_cache *cache, const char *key, uint64_t generation,
                        SSL_SESSION *session) {
  struct session_entry *e = cache_find(cache, key);
  if (e == NULL) {
    e = &cache->entries[0];
    for (size_t i = 0; i < cache->capacity; i++) {
      struct session_entry *c = &cache->entries[i];
      if (c->key == NULL) {
        e = c;
        break;
      }
      if (c->last_used < e->last_used) {
        e = c;
      }
    }
    free(e->key);
    e->key = strdup(key);
    if (e->key == NULL) {
      SSL_SESSION_free(e->session);
      e->session = NULL;
      SSL_SESSION_free(session);
      return;
    }
    e->key_hash = hash_key(key);
  }
  SSL_SESSION_free(e->session);
  e->session = session;
  e->generation = generation;
  e->last_used = ++cache->clock;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *session) {
  struct tls_conn *conn = SSL_get_ex_data(ssl, g_conn_index);
  if (conn == NULL || conn->cache == NULL || conn->cache_key == NULL) {
    return 0;
  }
  cache_store(conn->cache, conn->cache_key, conn->ctxs->generation, session);
  return 1;
}

/* ---- Peer verification ---- */

static void set_failure(struct tls_conn *conn, enum tls_failure failure, const char *detail) {
  if (!conn->failure_set) {
    conn->failure_set = true;
    conn->failure = failure;
    snprintf(conn->detail_buf, sizeof(conn->detail_buf), "%s", detail);
    conn->detail = conn->detail_buf;
  }
}

/* Applies the SVID rules and the connection's identity policy to the peer's leaf
 * certificate; the identity kept for logs, metrics and the PROXY header is the one that
 * satisfied the policy (or, for a refused peer, the one it named). */
static bool check_identity(struct tls_conn *conn, X509 *leaf) {
  struct cert_identities ids;
  if (!tls_cert_identities(&ids, leaf)) {
    set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    return false;
  }
  bool ok = false;
  char detail[sizeof(conn->detail_buf)];
  if (ids.invalid != NULL) {
    snprintf(detail, sizeof(detail), "peer certificate: %s", ids.invalid);
    set_failure(conn, TLS_FAIL_UNTRUSTED, detail);
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
    set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (matched == NULL) {
    snprintf(detail, sizeof(detail), "peer identity \"%.100s\" is not allowed",
             who[0] != '\0' ? who : "(none)");
    set_failure(conn, TLS_FAIL_IDENTITY_DENIED, detail);
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
    set_failure(conn, TLS_FAIL_UNTRUSTED, "peer certificate does not parse");
    return false;
  }
  for (size_t i = 1; i < sk_CRYPTO_BUFFER_num(chain); i++) {
    X509 *cert = X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, i));
    if (cert == NULL || !sk_X509_push(intermediates, cert)) {
      X509_free(cert);
      set_failure(conn, TLS_FAIL_UNTRUSTED, "peer chain does not parse");
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
    set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
    set_failure(conn, TLS_FAIL_NO_PEER_CERT, "peer sent no certificate");
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
    set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (X509_verify_cert(store_ctx) != 1) {
    int code = X509_STORE_CTX_get_error(store_ctx);
    char detail[sizeof(conn->detail_buf)];
    snprintf(detail, sizeof(detail), "peer certificate: %s", X509_verify_cert_error_string(code));
    if (code == X509_V_ERR_CERT_HAS_EXPIRED || code == X509_V_ERR_CERT_NOT_YET_VALID) {
      set_failure(conn, TLS_FAIL_EXPIRED, detail);
      *alert = SSL_AD_CERTIFICATE_EXPIRED;
    } else {
      set_failure(conn, TLS_FAIL_UNTRUSTED, detail);
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
static enum ssl_verify_result_t verify_peer(SSL *ssl, uint8_t *out_alert) {
  struct tls_conn *conn = SSL_get_ex_data(ssl, g_conn_index);
  if (conn == NULL) {
    *out_alert = SSL_AD_INTERNAL_ERROR;
    return ssl_verify_invalid;
  }
  return verify_chain(conn, SSL_get0_peer_certificates(ssl), out_alert) ? ssl_verify_ok
                                                                        : ssl_verify_invalid;
}

/* A resumed session skips verify_peer. Its chain (kept in the session, which our own
 * ticket key or client cache vouches for) was verified when the session was made, so
 * the signatures are not checked again; but the clock and the policy may have moved, so
 * the chain's whole validity window, leaf to the trusted root, and the identity policy
 * are applied again: a resumed connection gets the same deadline as a full handshake. */
static bool check_resumed_peer(struct tls_conn *conn) {
  const STACK_OF(CRYPTO_BUFFER) *chain = SSL_get0_peer_certificates(conn->ssl);
  if (chain == NULL || sk_CRYPTO_BUFFER_num(chain) == 0) {
    set_failure(conn, TLS_FAIL_NO_PEER_CERT, "resumed session has no peer certificate");
    return false;
  }
  bool ok = false;
  X509 *leaf = NULL;
  X509 *root = NULL;
  STACK_OF(X509) *intermediates = sk_X509_new_null();
  X509_STORE_CTX *store_ctx = X509_STORE_CTX_new();
  if (intermediates == NULL || store_ctx == NULL) {
    set_failure(conn, TLS_FAIL_PROTOCOL, "out of memory");
    goto done;
  }
  if (!parse_peer_chain(conn, chain, &leaf, intermediates)) {
    goto done;
  }
  size_t n = sk_X509_num(intermediates);
  X509 *top = n > 0 ? sk_X509_value(intermediates, n - 1) : leaf;
  if (!X509_STORE_CTX_init(store_ctx, conn->ctxs->set->store, leaf, intermediates) ||
      X509_STORE_CTX_get1_issuer(&root, store_ctx, top) != 1) {
    set_failure(conn, TLS_FAIL_UNTRUSTED, "resumed session's chain has no trusted root");
    goto done;
  }
  int64_t not_before, not_after, now = time(NULL);
  chain_window(intermediates, &not_before, &not_after);
  window_add(leaf, &not_before, &not_after);
  window_add(root, &not_before, &not_after);
  if (not_after <= now || not_before > now) {
    set_failure(conn, TLS_FAIL_EXPIRED,
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

/* ---- Contexts ---- */

/* Joins |names| with ':' (BoringSSL's list syntax) into a new string in |*out|. */
static bool join_names(char **out, const char *const *names, size_t count) {
  size_t len = 1;
  for (size_t i = 0; i < count; i++) {
    len += strlen(names[i]) + 1;
  }
  char *joined = malloc(len);
  if (joined == NULL) {
    return false;
  }
  size_t pos = 0;
  joined[0] = '\0';
  for (size_t i = 0; i < count; i++) {
    int n = snprintf(joined + pos, len - pos, "%s%s", i > 0 ? ":" : "", names[i]);
    pos += n > 0 ? (size_t)n : 0;
  }
  *out = joined;
  return true;
}

static SSL_CTX *new_ctx(const struct config *cfg, const struct tls_certset *set, bool server,
                        char *err, size_t err_len) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_with_buffers_method());
  char *ciphers = NULL;
  char *groups = NULL;
  if (ctx == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  SSL_CTX_set0_buffer_pool(ctx, tls_buffer_pool());
  uint16_t min = cfg->tls.min_version == TLS_VERSION_1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
  uint16_t max = cfg->tls.max_version == TLS_VERSION_1_2 ? TLS1_2_VERSION : TLS1_3_VERSION;
  if (!SSL_CTX_set_min_proto_version(ctx, min) || !SSL_CTX_set_max_proto_version(ctx, max)) {
    snprintf(err, err_len, "tls: cannot set protocol versions");
    goto err;
  }

  /* Only AEAD suites with forward secrecy: TLS 1.3's are fixed by BoringSSL; the TLS 1.2
   * ones are the configured list, or the config module's default one. */
  size_t suite_count = cfg->tls.cipher_suite_count;
  const char *const *suites = (const char *const *)cfg->tls.cipher_suites;
  if (suite_count == 0) {
    suites = config_default_cipher_suites(&suite_count);
  }
  if (!join_names(&ciphers, suites, suite_count)) {
    snprintf(err, err_len, "out of memory");
    goto err;
  }
  if (!SSL_CTX_set_strict_cipher_list(ctx, ciphers)) {
    snprintf(err, err_len, "tls.cipher_suites: BoringSSL refused \"%s\"", ciphers);
    goto err;
  }

  if (!join_names(&groups, (const char *const *)cfg->tls.groups, cfg->tls.group_count)) {
    snprintf(err, err_len, "out of memory");
    goto err;
  }
  if (groups[0] != '\0' && !SSL_CTX_set1_curves_list(ctx, groups)) {
    snprintf(err, err_len, "tls.groups: BoringSSL refused \"%s\"", groups);
    goto err;
  }

  if (!SSL_CTX_set_chain_and_key(ctx, set->chain, set->chain_len, set->key, NULL)) {
    snprintf(err, err_len, "tls: the certificate and key were refused");
    goto err;
  }
  if (set->store != NULL) {
    SSL_CTX_set_custom_verify(
        ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
        verify_peer);
  }
  /* Partial writes let the relay account for every record it hands to the kernel. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);

  if (server) {
    /* Stateless tickets only: no per-session memory on the server. BoringSSL rotates
     * the ticket keys itself, and all workers share this context and so its keys. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (!cfg->tls.session_resumption) {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    }
  } else if (cfg->tls.session_resumption) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  free(ciphers);
  free(groups);
  ERR_clear_error();
  return ctx;
err:
  free(ciphers);
  free(groups);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return NULL;
}

struct tls_contexts *tls_contexts_new(const struct config *cfg, struct tls_certset *set,
                                      uint64_t generation, char *err, size_t err_len) {
  if (g_conn_index < 0) {
    /* The first call happens on the main thread before any worker starts. */
    g_conn_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
  }
  struct tls_contexts *ctxs = calloc(1, sizeof(*ctxs));
  if (ctxs == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  bool serving_only = set->store == NULL;
  ctxs->server = new_ctx(cfg, set, true, err, err_len);
  ctxs->client =
      ctxs->server != NULL && !serving_only ? new_ctx(cfg, set, false, err, err_len) : NULL;
  if (ctxs->server == NULL || (ctxs->client == NULL && !serving_only)) {
    SSL_CTX_free(ctxs->server);
    free(ctxs);
    return NULL;
  }
  atomic_init(&ctxs->refs, 1);
  ctxs->generation = generation;
  ctxs->set = set;
  return ctxs;
}

void tls_contexts_up_ref(struct tls_contexts *ctxs) {
  atomic_fetch_add_explicit(&ctxs->refs, 1, memory_order_relaxed);
}

void tls_contexts_free(struct tls_contexts *ctxs) {
  if (ctxs == NULL || atomic_fetch_sub_explicit(&ctxs->refs, 1, memory_order_acq_rel) != 1) {
    return;
  }
  SSL_CTX_free(ctxs->server);
  SSL_CTX_free(ctxs->client);
  tls_certset_free(ctxs->set);
  free(ctxs);
}

uint64_t tls_contexts_generation(const struct tls_contexts *ctxs) {
  return ctxs->generation;
}

const struct tls_certset *tls_contexts_certset(const struct tls_contexts *ctxs) {
  return ctxs->set;
}

/* ---- The socket BIO ----
 *
 * BoringSSL's own socket BIO makes one write(2) per TLS record. This one gathers the
 * records of one tls_conn_write call and of a handshake flight and hands them to the
 * kernel with one send(2): on a bulk transfer a quarter of the system calls, and of the
 * wake-ups of the reader on the other side. The buffer exists only while bytes wait in
 * it, so an idle connection holds none. */

/* Room for the records that one relay buffer makes, with their overhead: a write of a
 * full relay buffer then costs one send(2). */
enum { WBUF_CAP = 80 * 1024 };
_Static_assert(WBUF_CAP >= IO_RELAY_BUFFER_SIZE +
                               (IO_RELAY_BUFFER_SIZE / IO_TLS_RECORD_MAX) *
                                   (SSL3_RT_HEADER_LENGTH + SSL3_RT_MAX_ENCRYPTED_OVERHEAD),
               "the gathering buffer holds the records of one relay buffer");

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

/* One spare gathering buffer per thread: a bulk transfer takes and returns it per write,
 * which must not cost a malloc, a free and the heap trimming that follows each time. */
static _Thread_local uint8_t *t_spare_wbuf;

static uint8_t *wbuf_take(void) {
  uint8_t *buf = t_spare_wbuf;
  t_spare_wbuf = NULL;
  return buf != NULL ? buf : malloc(WBUF_CAP);
}

void tls_thread_release(void) {
  free(t_spare_wbuf);
  t_spare_wbuf = NULL;
}

static void wbuf_give(uint8_t *buf) {
  if (t_spare_wbuf == NULL) {
    t_spare_wbuf = buf;
  } else {
    free(buf);
  }
}

/* Sends what is buffered: 1 when all of it went out, 0 when the socket is full, -1 on an
 * error (errno set). */
static int wbuf_flush(struct tls_conn *conn) {
  while (conn->woff < conn->wlen) {
    ssize_t n = send(conn->fd, conn->wbuf + conn->woff, conn->wlen - conn->woff, MSG_NOSIGNAL);
    if (n > 0) {
      conn->woff += (size_t)n;
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return 0;
    } else {
      return -1;
    }
  }
  if (conn->wbuf != NULL) {
    wbuf_give(conn->wbuf);
  }
  conn->wbuf = NULL;
  conn->wlen = 0;
  conn->woff = 0;
  return 1;
}

static int bio_sock_write(BIO *bio, const char *data, int len) {
  struct tls_conn *conn = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  size_t n = (size_t)len;
  if (!conn->gather && conn->wbuf == NULL) {
    /* A single record (a small message, a handshake flight): straight to the socket;
     * only what the socket does not take is buffered. */
    ssize_t sent;
    do {
      sent = send(conn->fd, data, n, MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
      return -1;
    }
    size_t taken = sent > 0 ? (size_t)sent : 0;
    if (taken == n) {
      return len;
    }
    data += taken;
    n -= taken;
  }
  if (conn->wlen - conn->woff + n > WBUF_CAP) {
    if (wbuf_flush(conn) < 0) {
      return -1;
    }
    if (conn->wlen - conn->woff + n > WBUF_CAP) {
      BIO_set_retry_write(bio);
      return -1;
    }
  }
  if (conn->wbuf == NULL) {
    conn->wbuf = wbuf_take();
    if (conn->wbuf == NULL) {
      return -1;
    }
  } else if (conn->wlen + n > WBUF_CAP) {
    memmove(conn->wbuf, conn->wbuf + conn->woff, conn->wlen - conn->woff);
    conn->wlen -= conn->woff;
    conn->woff = 0;
  }
  memcpy(conn->wbuf + conn->wlen, data, n);
  conn->wlen += n;
  return len;
}

static int bio_sock_read(BIO *bio, char *out, int len) {
  struct tls_conn *conn = BIO_get_data(bio);
  BIO_clear_retry_flags(bio);
  for (;;) {
    ssize_t n = recv(conn->fd, out, (size_t)len, 0);
    if (n >= 0) {
      return (int)n;
    }
    if (errno == EINTR) {
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      BIO_set_retry_read(bio);
    }
    return -1;
  }
}

static long bio_sock_ctrl(BIO *bio, int cmd, long num, void *ptr) {
  (void)num;
  (void)ptr;
  struct tls_conn *conn = BIO_get_data(bio);
  if (cmd != BIO_CTRL_FLUSH) {
    return 0;
  }
  BIO_clear_retry_flags(bio);
  int r = wbuf_flush(conn);
  if (r == 0) {
    BIO_set_retry_write(bio);
  }
  return r;
}

static void bio_method_init(void) {
  g_bio_method = BIO_meth_new(BIO_TYPE_SOCKET, "mtlsd socket");
  if (g_bio_method != NULL) {
    BIO_meth_set_write(g_bio_method, bio_sock_write);
    BIO_meth_set_read(g_bio_method, bio_sock_read);
    BIO_meth_set_ctrl(g_bio_method, bio_sock_ctrl);
  }
}

/* Attaches a gathering socket BIO for |conn->fd| to |conn->ssl|. */
static bool attach_bio(struct tls_conn *conn) {
  pthread_once(&g_bio_once, bio_method_init);
  BIO *bio = g_bio_method != NULL ? BIO_new(g_bio_method) : NULL;
  if (bio == NULL) {
    return false;
  }
  BIO_set_data(bio, conn);
  BIO_set_init(bio, 1);
  SSL_set_bio(conn->ssl, bio, bio);
  return true;
}

/* ---- Connections ---- */

static struct tls_conn *conn_new(struct tls_contexts *ctxs, bool server, int fd,
                                 const struct tls_peer_policy *policy) {
  struct tls_conn *conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    return NULL;
  }
  conn->fd = fd;
  conn->ssl = SSL_new(server ? ctxs->server : ctxs->client);
  if (conn->ssl == NULL || !attach_bio(conn) || !SSL_set_ex_data(conn->ssl, g_conn_index, conn)) {
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
    struct session_entry *e = cache_find(cache, cache_key);
    /* The session stays cached for the connections that start before this one gets its
     * own fresh tickets: between two sidecars of one mesh, ticket reuse links nothing an
     * observer did not already know, and it spares each concurrent connection a full
     * handshake. */
    if (e != NULL && e->session != NULL) {
      if (e->generation == ctxs->generation && SSL_SESSION_is_resumable(e->session)) {
        SSL_set_session(conn->ssl, e->session);
        e->last_used = ++cache->clock;
      } else {
        SSL_SESSION_free(e->session);
        e->session = NULL;
      }
    }
  }
  return conn;
}

/* The context of the kubelet-style HTTPS probes: no client certificate, and the server's
 * certificate is not verified (the kubelet's InsecureSkipVerify), as an application's
 * own probe endpoint usually has a self-signed one. Made on first use, kept for the
 * process. */
static SSL_CTX *g_probe_ctx;
static pthread_once_t g_probe_once = PTHREAD_ONCE_INIT;

static void probe_ctx_init(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_method());
  if (ctx == NULL || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return;
  }
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  g_probe_ctx = ctx;
}

struct tls_conn *tls_conn_new_unverified_client(int fd, const char *sni) {
  pthread_once(&g_probe_once, probe_ctx_init);
  if (g_probe_ctx == NULL) {
    return NULL;
  }
  struct tls_conn *conn = calloc(1, sizeof(*conn));
  if (conn == NULL) {
    return NULL;
  }
  conn->fd = fd;
  conn->peer_not_after = INT64_MAX;
  conn->ssl = SSL_new(g_probe_ctx);
  /* No ex_data: none of the mesh contexts' callbacks runs on this context. */
  if (conn->ssl == NULL || !attach_bio(conn)) {
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
  if (conn->wbuf != NULL) {
    wbuf_give(conn->wbuf);
  }
  free(conn);
}

/* Maps a failed call's SSL error to the relay's results, recording why it failed. */
static int map_error(struct tls_conn *conn, int ret) {
  int code = SSL_get_error(conn->ssl, ret);
  switch (code) {
    case SSL_ERROR_WANT_READ:
      return IO_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
      return IO_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
      return IO_EOF;
    case SSL_ERROR_SYSCALL:
      if (ERR_peek_error() == 0 && (ret == 0 || errno == 0)) {
        ERR_clear_error();
        set_failure(conn, TLS_FAIL_PROTOCOL, "connection closed by peer");
        /* A peer that closes TCP without close_notify still ended its stream. */
        return IO_EOF;
      }
      set_failure(conn, TLS_FAIL_PROTOCOL, strerror(errno));
      ERR_clear_error();
      return IO_ERROR;
    default: {
      uint32_t e = ERR_peek_error();
      if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
          ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
        set_failure(conn, TLS_FAIL_NO_PEER_CERT, "peer sent no certificate");
      } else {
        const char *reason = ERR_reason_error_string(e);
        set_failure(conn, TLS_FAIL_PROTOCOL, reason != NULL ? reason : "TLS error");
      }
      ERR_clear_error();
      return IO_ERROR;
    }
  }
}

bool tls_conn_peer_spoke(const struct tls_conn *conn) {
  /* BIO_read counts what every read returned: nothing for the relay's reads to keep. */
  return BIO_number_read(SSL_get_rbio(conn->ssl)) > 0;
}

int tls_conn_handshake(struct tls_conn *conn) {
  int ret = SSL_do_handshake(conn->ssl);
  if (ret == 1) {
    if (SSL_session_reused(conn->ssl) && !check_resumed_peer(conn)) {
      return IO_ERROR;
    }
    return IO_OK;
  }
  int result = map_error(conn, ret);
  /* EOF in the middle of a handshake is a failure, not a clean end. */
  return result == IO_EOF ? IO_ERROR : result;
}

enum tls_failure tls_conn_failure(const struct tls_conn *conn, const char **detail) {
  if (detail != NULL) {
    *detail = conn->failure_set ? conn->detail : "TLS error";
  }
  return conn->failure_set ? conn->failure : TLS_FAIL_PROTOCOL;
}

ssize_t tls_conn_read(struct tls_conn *conn, void *buf, size_t len) {
  int ret = SSL_read(conn->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
  return ret > 0 ? ret : map_error(conn, ret);
}

ssize_t tls_conn_write(struct tls_conn *conn, const void *buf, size_t len) {
  const uint8_t *bytes = buf;
  size_t done = 0;
  conn->gather = len > IO_TLS_RECORD_MAX;
  /* One record per SSL_write (partial writes), gathered in the BIO until it is full. */
  while (done < len) {
    size_t chunk = len - done > INT32_MAX ? INT32_MAX : len - done;
    int ret = SSL_write(conn->ssl, bytes + done, (int)chunk);
    if (ret <= 0) {
      int result = map_error(conn, ret);
      if (done == 0) {
        return result;
      }
      /* Report the progress; the call that follows retries and meets the same state. */
      break;
    }
    done += (size_t)ret;
  }
  conn->gather = false;
  if (wbuf_flush(conn) < 0) {
    set_failure(conn, TLS_FAIL_PROTOCOL, strerror(errno));
    return IO_ERROR;
  }
  return (ssize_t)done;
}

int tls_conn_flush(struct tls_conn *conn) {
  if (conn->wbuf == NULL) {
    return IO_OK;
  }
  int r = wbuf_flush(conn);
  return r > 0 ? IO_OK : r == 0 ? IO_WANT_WRITE : IO_ERROR;
}

int tls_conn_shutdown(struct tls_conn *conn) {
  /* Once close_notify is queued, only flushing remains: a second SSL_shutdown would read
   * and discard the peer's data, which half-close must still deliver. */
  if (!conn->close_notify_queued) {
    int ret = SSL_shutdown(conn->ssl);
    if (ret < 0) {
      int result = map_error(conn, ret);
      if (result != IO_EOF) {
        return result;
      }
    }
    conn->close_notify_queued = true;
  }
  return tls_conn_flush(conn);
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

const char *tls_library_version(void) {
  return MTLSD_BORINGSSL_DESCRIPTION;
}
