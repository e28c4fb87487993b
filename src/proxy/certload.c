/* certload: loading the certificate directory into a runtime (see mtlsd/certload.h). */
#include "mtlsd/proxy/certload.h"

#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "mtlsd/base/log.h"
#include "mtlsd/tls/tls.h"

static void refuse_set(struct runtime *rt, const char *err) {
  log_write(LOG_WARN, "certs", "refused the certificate set in %s: %s", rt->cfg->certs.dir, err);
  runtime_record_reload(rt, false, err, true);
}

enum certload_result certload_reload(struct runtime *rt, enum certload_mode mode,
                                     const uint8_t *expect, char *msg, size_t msg_len) {
  char err[512];
  uint8_t digest[TLS_DIGEST_LEN];
  struct tls_certset *set = tls_certset_load(rt->cfg, digest, err, sizeof(err));
  if (expect != NULL && memcmp(digest, expect, sizeof(digest)) != 0) {
    tls_certset_free(set);
    snprintf(msg, msg_len, "the files changed since they were looked at");
    return CERTLOAD_CHANGED;
  }
  if (set == NULL) {
    snprintf(msg, msg_len, "%s", err);
    if (mode == CERTLOAD_APPLY) {
      refuse_set(rt, err);
    }
    return CERTLOAD_REFUSED;
  }
  if (mode == CERTLOAD_DRY_RUN) {
    snprintf(msg, msg_len, "valid: %s, expires in %lld s", tls_certset_primary_identity(set),
             (long long)(tls_certset_not_after(set) - time(NULL)));
    tls_certset_free(set);
    return CERTLOAD_VALID;
  }
  struct tls_contexts *current = runtime_tls_acquire(rt);
  bool unchanged = current != NULL && tls_certset_same(tls_contexts_certset(current), set);
  tls_contexts_free(current);
  if (unchanged) {
    /* The files are good again (a refused set may have been put back): say so. */
    runtime_record_reload(rt, true, "", false);
    tls_certset_free(set);
    snprintf(msg, msg_len, "unchanged");
    return CERTLOAD_UNCHANGED;
  }
  uint64_t generation = runtime_tls_generation(rt) + 1;
  int64_t not_after = tls_certset_not_after(set);
  char identity[256];
  snprintf(identity, sizeof(identity), "%.200s", tls_certset_primary_identity(set));
  struct tls_contexts *ctxs = tls_contexts_new(rt->cfg, set, generation, err, sizeof(err));
  if (ctxs == NULL) {
    tls_certset_free(set);
    snprintf(msg, msg_len, "%s", err);
    refuse_set(rt, err);
    return CERTLOAD_REFUSED;
  }
  runtime_tls_publish(rt, ctxs);
  runtime_record_reload(rt, true, "", true);
  atomic_store(&rt->stats->global.cert_generation, generation);
  atomic_store(&rt->stats->global.cert_expiry, not_after);
  log_write(LOG_INFO, "certs", "loaded generation %llu: %s, expires in %lld s",
            (unsigned long long)generation, identity, (long long)(not_after - time(NULL)));
  snprintf(msg, msg_len, "loaded generation %llu", (unsigned long long)generation);
  return CERTLOAD_LOADED;
}
