/* tls_session: the client session cache of mtlsd/tls.h (one per worker thread, not
 * thread-safe), like curl's vtls_scache.c beside its backends.
 *
 * A cache owns its entries: each entry's key string and one reference to its
 * SSL_SESSION, released when the entry is replaced or the cache is freed. A session is
 * kept under the listener and destination it was made for, with the generation of the
 * contexts that made it, so that a certificate reload retires the older sessions. The
 * server side keeps no sessions at all (stateless tickets, tls_ctx.c). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tls_internal.h"

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

int tls_session_new_cb(SSL *ssl, SSL_SESSION *session) {
  struct tls_conn *conn = SSL_get_ex_data(ssl, tls_conn_ex_index);
  if (conn == NULL || conn->cache == NULL || conn->cache_key == NULL) {
    return 0;
  }
  cache_store(conn->cache, conn->cache_key, conn->ctxs->generation, session);
  return 1;
}

void tls_session_resume(struct tls_session_cache *cache, const char *key, uint64_t generation,
                        SSL *ssl) {
  struct session_entry *e = cache_find(cache, key);
  /* The session stays cached for the connections that start before this one gets its
   * own fresh tickets: between two sidecars of one mesh, ticket reuse links nothing an
   * observer did not already know, and it spares each concurrent connection a full
   * handshake. */
  if (e != NULL && e->session != NULL) {
    if (e->generation == generation && SSL_SESSION_is_resumable(e->session)) {
      SSL_set_session(ssl, e->session);
      e->last_used = ++cache->clock;
    } else {
      SSL_SESSION_free(e->session);
      e->session = NULL;
    }
  }
}
