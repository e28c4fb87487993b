/* certwatch's change detection and debounce on a real loop and a real directory, with
 * fake ops: a "set" is valid when tls.crt and tls.key hold the same text, which is how a
 * certificate written before its key looks for a moment. */
#include "mtlsd/proxy/certwatch.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "test_uv.h"

struct fake {
  char dir[64];
  const struct certs_config *certs;
  int tries;          /* Quiet tries (CERTLOAD_TRY). */
  int reloads;        /* Sets loaded, or refused for real. */
  int failed_reloads; /* Sets refused for real. */
  int changed;        /* Loads that found other files than expected. */
  /* A writer caught halfway: the next load reads tls.crt while it is empty, then the
   * writer finishes. */
  bool tear_next_load;
};

static void read_file(char *out, size_t cap, const char *dir, const char *name) {
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  out[0] = '\0';
  int fd = open(path, O_RDONLY);
  if (fd >= 0) {
    ssize_t n = read(fd, out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
  }
}

static void write_file(const char *dir, const char *name, const char *text);

/* As certload_reload: one read, compared with |expect|, then loaded or refused. */
static enum certload_result fake_reload(void *arg, enum certload_mode mode, const uint8_t *expect,
                                        char *msg, size_t msg_len) {
  struct fake *f = arg;
  char cert[32], key[32];
  read_file(cert, sizeof(cert), f->dir, "tls.crt");
  if (f->tear_next_load) {
    f->tear_next_load = false;
    write_file(f->dir, "tls.crt", "");
    read_file(cert, sizeof(cert), f->dir, "tls.crt");
  }
  read_file(key, sizeof(key), f->dir, "tls.key");
  uint8_t digest[TLS_DIGEST_LEN];
  tls_certfiles_digest(f->certs, digest);
  if (strcmp(cert, "") == 0 && key[0] != '\0') {
    write_file(f->dir, "tls.crt", key); /* The writer finishes. */
  }
  if (expect != NULL && memcmp(digest, expect, sizeof(digest)) != 0) {
    f->changed++;
    snprintf(msg, msg_len, "changed");
    return CERTLOAD_CHANGED;
  }
  bool valid = cert[0] != '\0' && strcmp(cert, key) == 0;
  snprintf(msg, msg_len, "%s", valid ? "valid" : "tls.key does not match tls.crt");
  CHECK(mode != CERTLOAD_DRY_RUN);
  if (mode == CERTLOAD_TRY) {
    f->tries++;
    f->reloads += valid ? 1 : 0;
  } else {
    f->reloads++;
    f->failed_reloads += valid ? 0 : 1;
  }
  return valid ? CERTLOAD_LOADED : CERTLOAD_REFUSED;
}

static struct tls_contexts *fake_current(void *arg) {
  (void)arg;
  return NULL;
}

static const struct certwatch_ops kOps = {.reload = fake_reload, .current = fake_current};

static void write_file(const char *dir, const char *name, const char *text) {
  char path[128];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0);
  CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
  close(fd);
}

struct fixture {
  uv_loop_t loop;
  struct fake fake;
  struct certs_config certs;
  struct certwatch *watch;
};

static void fixture_start(struct fixture *t) {
  memset(t, 0, sizeof(*t));
  snprintf(t->fake.dir, sizeof(t->fake.dir), "/tmp/mtlsd-test-certwatch-XXXXXX");
  CHECK(mkdtemp(t->fake.dir) != NULL);
  t->certs = (struct certs_config){
      .dir = t->fake.dir,
      .cert_file = "tls.crt",
      .key_file = "tls.key",
      .ca_file = "ca.crt",
      .poll_interval = 60000, /* Out of the way: these tests watch the events. */
      .expiry_warning = 0,
  };
  t->fake.certs = &t->certs;
  CHECK(uv_loop_init(&t->loop) == 0);
  write_file(t->fake.dir, "ca.crt", "ca");
  t->watch = certwatch_start(&t->loop, &t->certs, &kOps, &t->fake);
  CHECK(t->watch != NULL);
}

static void fixture_stop(struct fixture *t) {
  certwatch_close(t->watch);
  CHECK_LOOP_CLOSES(&t->loop);
  const char *names[] = {"tls.crt", "tls.key", "ca.crt"};
  for (size_t i = 0; i < 3; i++) {
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", t->fake.dir, names[i]);
    unlink(path);
  }
  rmdir(t->fake.dir);
}

/* Writes the certificate, then the key, the way most tools do. */
static void write_set(struct fixture *t, const char *cert, const char *key) {
  write_file(t->fake.dir, "tls.crt", cert);
  write_file(t->fake.dir, "tls.key", key);
}

/* Runs the loop for |ms| and checks the real reloads counted by then. */
static void run_and_expect(struct fixture *t, uint64_t ms, int reloads, int failed) {
  test_uv_run_for(&t->loop, ms);
  CHECK_INTEQ(t->fake.reloads, reloads);
  CHECK_INTEQ(t->fake.failed_reloads, failed);
}

TEST(a_consistent_set_is_loaded_once) {
  struct fixture t;
  fixture_start(&t);
  write_set(&t, "v1", "v1");
  run_and_expect(&t, 600, 1, 0);
  /* Nothing changes: nothing more happens. */
  run_and_expect(&t, 400, 1, 0);
  fixture_stop(&t);
}

TEST(a_burst_of_writes_is_one_reload) {
  struct fixture t;
  fixture_start(&t);
  for (int i = 0; i < 5; i++) {
    char v[8];
    snprintf(v, sizeof(v), "v%d", i);
    write_set(&t, v, v);
    test_uv_run_for(&t.loop, 20);
  }
  run_and_expect(&t, 600, 1, 0);
  fixture_stop(&t);
}

TEST(a_half_written_set_settles_without_a_failure) {
  struct fixture t;
  fixture_start(&t);
  write_set(&t, "v2", "v1");
  /* Checked quietly, not yet counted as a failed reload. */
  run_and_expect(&t, 400, 0, 0);
  CHECK(t.fake.tries >= 1);
  write_file(t.fake.dir, "tls.key", "v2");
  run_and_expect(&t, 500, 1, 0);
  fixture_stop(&t);
}

TEST(a_set_that_stays_invalid_fails_once) {
  struct fixture t;
  fixture_start(&t);
  write_set(&t, "v2", "v1");
  run_and_expect(&t, 1700, 1, 1);
  run_and_expect(&t, 1300, 1, 1);
  fixture_stop(&t);
}

/* A rotation written in place and caught halfway by the load is neither loaded nor
 * refused: the files it read are not those that were looked at, so it looks again. */
TEST(a_write_caught_halfway_is_never_a_failure) {
  struct fixture t;
  fixture_start(&t);
  write_set(&t, "v1", "v1");
  run_and_expect(&t, 600, 1, 0);
  t.fake.tear_next_load = true;
  write_set(&t, "v2", "v2");
  run_and_expect(&t, 1600, 2, 0);
  CHECK(t.fake.changed >= 1);
  fixture_stop(&t);
}

/* Contents decide, not sizes or times: a set rewritten with bytes of the same length
 * and its timestamps put back is still a change. */
TEST(a_change_of_contents_alone_is_seen) {
  struct fixture t;
  fixture_start(&t);
  t.certs.poll_interval = 100;
  certwatch_close(t.watch);
  CHECK_LOOP_CLOSES(&t.loop);
  CHECK(uv_loop_init(&t.loop) == 0);
  write_set(&t, "v1", "v1");
  t.watch = certwatch_start(&t.loop, &t.certs, &kOps, &t.fake);
  run_and_expect(&t, 600, 1, 0);
  struct stat before;
  char path[128];
  snprintf(path, sizeof(path), "%s/tls.crt", t.fake.dir);
  CHECK(stat(path, &before) == 0);
  write_set(&t, "v9", "v9");
  struct timespec times[2] = {before.st_atim, before.st_mtim};
  CHECK(utimensat(AT_FDCWD, path, times, 0) == 0);
  run_and_expect(&t, 800, 2, 0);
  fixture_stop(&t);
}

TEST_MAIN(TEST_ENTRY(a_consistent_set_is_loaded_once), TEST_ENTRY(a_burst_of_writes_is_one_reload),
          TEST_ENTRY(a_write_caught_halfway_is_never_a_failure),
          TEST_ENTRY(a_change_of_contents_alone_is_seen),
          TEST_ENTRY(a_half_written_set_settles_without_a_failure),
          TEST_ENTRY(a_set_that_stays_invalid_fails_once))
