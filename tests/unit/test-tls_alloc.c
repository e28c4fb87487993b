/* Allocation failures in the certificate loader ("torture", as SQLite and curl do it):
 * BoringSSL takes its memory through OPENSSL_memory_alloc when the program defines it, so
 * this binary defines it to fail the Nth allocation, for every N that loading a set and
 * building its contexts makes. Each run must end in contexts or in NULL with a message;
 * never a crash, a half-built set or a leak (LeakSanitizer checks at exit). */
#include "mtlsd/tls/tls.h"

#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "test_certgen.h"

/* ---- BoringSSL's allocator hooks ---- */

void *OPENSSL_memory_alloc(size_t size);
void OPENSSL_memory_free(void *ptr);
size_t OPENSSL_memory_get_size(void *ptr);

/* The allocation to fail, counted down; negative: none. */
static long g_fail_countdown = -1;
static bool g_failed;

/* A prefix of 16 bytes keeps the size and the alignment malloc gives. */
enum { PREFIX = 16 };

void *OPENSSL_memory_alloc(size_t size) {
  if (g_fail_countdown == 0) {
    g_fail_countdown = -1;
    g_failed = true;
    return NULL;
  }
  if (g_fail_countdown > 0) {
    g_fail_countdown--;
  }
  if (size > SIZE_MAX - PREFIX) {
    return NULL;
  }
  unsigned char *p = malloc(size + PREFIX);
  if (p == NULL) {
    return NULL;
  }
  memcpy(p, &size, sizeof(size));
  return p + PREFIX;
}

void OPENSSL_memory_free(void *ptr) {
  unsigned char *p = (unsigned char *)ptr - PREFIX;
  size_t size;
  memcpy(&size, p, sizeof(size));
  /* BoringSSL leaves the wiping of freed memory (keys among it) to this hook. */
  explicit_bzero(p, size + PREFIX);
  free(p);
}

size_t OPENSSL_memory_get_size(void *ptr) {
  size_t size;
  memcpy(&size, (unsigned char *)ptr - PREFIX, sizeof(size));
  return size;
}

/* ---- the loader ---- */

static char g_dir[64];

/* Loads the set in g_dir/leaf and builds its contexts; true when both worked. */
static bool load(const struct config *cfg, char *err, size_t err_len) {
  err[0] = '\0';
  struct tls_certset *set = tls_certset_load(cfg, NULL, err, err_len);
  if (set == NULL) {
    return false;
  }
  struct tls_contexts *ctxs = tls_contexts_new(cfg, set, 1, err, err_len);
  if (ctxs == NULL) {
    tls_certset_free(set); /* Still the caller's when the contexts failed. */
    return false;
  }
  tls_contexts_free(ctxs);
  return true;
}

TEST(every_allocation_of_a_load_may_fail) {
  snprintf(g_dir, sizeof(g_dir), "/tmp/mtlsd-test-tls_alloc-XXXXXX");
  CHECK(mkdtemp(g_dir) != NULL);
  char ca[96], leaf[96];
  snprintf(ca, sizeof(ca), "%s/ca", g_dir);
  snprintf(leaf, sizeof(leaf), "%s/leaf", g_dir);
  CHECK_INTEQ(certgen((const char *[]){"cert", "ca", "--out", ca, NULL}), 0);
  CHECK_INTEQ(certgen((const char *[]){"cert", "issue", "--ca", ca, "--out", leaf, "--spiffe-id",
                                       "spiffe://cluster.local/ns/a/sa/server", NULL}),
              0);
  char json[512], err[512];
  int n = snprintf(json, sizeof(json),
                   "{\"certs\":{\"dir\":\"%s\"},\"listeners\":[{\"name\":\"l\",\"mode\":"
                   "\"inbound\",\"listen\":\"127.0.0.1:1\",\"forward\":\"127.0.0.1:2\"}]}",
                   leaf);
  struct config *cfg = config_parse("t.json", json, (size_t)n, err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  CHECK(load(cfg, err, sizeof(err)));

  long refused = 0, survived = 0, fail_at = 0;
  for (; fail_at < 100000; fail_at++) {
    g_failed = false;
    g_fail_countdown = fail_at;
    bool ok = load(cfg, err, sizeof(err));
    g_fail_countdown = -1;
    if (!g_failed) {
      CHECK(ok); /* Past the last allocation: nothing failed, so the load must work. */
      break;
    }
    if (ok) {
      survived++; /* BoringSSL went on without it (e.g. an error queue entry). */
    } else {
      refused++;
      if (err[0] == '\0') {
        fprintf(stderr, "  allocation %ld failed the load without a message\n", fail_at);
        CHECK(err[0] != '\0');
        break;
      }
    }
  }
  fprintf(stderr,
          "  %ld allocations per load: %ld failures refused with a message, %ld "
          "survived\n",
          fail_at, refused, survived);
  CHECK(fail_at > 100 && fail_at < 100000);
  /* And the loader still works afterwards: nothing was left half-done. */
  CHECK(load(cfg, err, sizeof(err)));
  config_free(cfg);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  CHECK(system(cmd) == 0);
}

TEST_MAIN(TEST_ENTRY(every_allocation_of_a_load_may_fail))
