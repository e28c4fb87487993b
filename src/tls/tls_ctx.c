/* tls_ctx: the SSL_CTXs. A struct tls_contexts is the server and client context built
 * from one certificate set and the TLS settings; it owns the set, and it is
 * reference-counted (the runtime holds one reference, each tls_conn another), so a
 * connection keeps the generation it started with while new ones take a newer one.
 * Besides, the probes' unverified context, made once and kept for the process.
 *
 * Contexts use TLS_with_buffers_method: certificates stay as CRYPTO_BUFFERs deduplicated
 * in one pool, so a thousand connections from one peer hold one copy of its chain, and
 * X509 objects exist only for the moment of verification (tls_verify.c). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "tls_internal.h"

int tls_conn_ex_index = -1;

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
        tls_verify_peer);
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
    SSL_CTX_sess_set_new_cb(ctx, tls_session_new_cb);
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
  if (tls_conn_ex_index < 0) {
    /* The first call happens on the main thread before any worker starts. */
    tls_conn_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
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

SSL_CTX *tls_probe_ctx(void) {
  pthread_once(&g_probe_once, probe_ctx_init);
  return g_probe_ctx;
}

const char *tls_library_version(void) {
  return MTLSD_BORINGSSL_DESCRIPTION;
}
