/* certwatch: notices when the certificate directory changes and asks its owner to
 * reload it (docs/configuration.md, certs), on the main thread's loop.
 *
 * Two sources of "something changed": an inotify watch on the directory (uv_fs_event_t),
 * which is fast but misses some volume types and dies with the directory it watches, and
 * a poll every certs.poll_interval. Either one only (re)starts a debounce timer; the
 * check that runs when it fires compares a digest of the files' contents with the last
 * one handled. Contents, not sizes and timestamps: two certificates of the same size
 * written within one timestamp tick look alike to stat(2). The files are small, so a
 * look costs three reads and a hash, and a reload happens once per burst of writes.
 *
 * Tools that write the certificate and then the key, or rewrite a file in place, leave
 * the directory inconsistent for a moment. Such a state is tried quietly (nothing logged
 * or counted) and given SETTLE_MS to become consistent; only a set that is still invalid,
 * and unchanged, after that is refused for real, which logs, counts and records the
 * failure exactly once per set, and only if the files read then are that same set. A
 * valid set is loaded at once, from the same read that found it valid. */
#include "mtlsd/proxy/certwatch.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <uv.h>

#include "mtlsd/base/file.h"
#include "mtlsd/base/log.h"

/* Quiet time after the last event before looking: long enough to cover a certificate
 * and its key written one after the other, short enough to keep a rotation well inside
 * the second docs/configuration.md promises. */
enum { DEBOUNCE_MS = 150 };
/* How long an invalid set must stay unchanged before it counts as a failed reload rather
 * than a half-written one. */
enum { SETTLE_MS = 1000 };

struct certwatch {
  uv_loop_t *loop;
  const struct certs_config *certs;
  const struct certwatch_ops *ops;
  void *arg;
  uv_fs_event_t event;
  uv_timer_t poll;
  uv_timer_t debounce;
  int open_handles; /* Handles whose close callback has not run yet. */

  bool watching; /* |event| is started on the directory identified below. */
  bool rewatch;  /* The watch reported its own directory gone or moved. */
  dev_t watched_dev;
  ino_t watched_ino;
  int watch_error; /* Last uv_fs_event_start error, so it is logged once. */

  /* Digests (tls_certfiles_digest) of the files. */
  uint8_t seen[TLS_DIGEST_LEN]; /* What the last check or poll observed. */
  uint8_t done[TLS_DIGEST_LEN]; /* The set last loaded, found unchanged, or refused. */
  bool done_failed;             /* |done| was refused: retry it quietly, it may become valid. */

  bool settling; /* |settling_sig| failed a quiet try and is given SETTLE_MS. */
  uint8_t settling_sig[TLS_DIGEST_LEN];
  uint64_t settling_since;

  uint64_t warned_generation;  /* The generation whose near expiry was logged. */
  uint64_t expired_generation; /* The generation whose expiry was logged. */
};

static bool same(const uint8_t *a, const uint8_t *b) {
  return memcmp(a, b, TLS_DIGEST_LEN) == 0;
}

static void on_fs_event(uv_fs_event_t *handle, const char *filename, int events, int status);

/* Starts the inotify watch when it is not running on the directory that is there now:
 * at start-up the directory may not exist yet, and a directory that is replaced takes
 * the old watch with it. */
static void ensure_watch(struct certwatch *w) {
  const char *dir = w->certs->dir;
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
    if (w->watching) {
      log_write(LOG_INFO, "certwatch", "%s is gone; polling every %llu ms until it is back", dir,
                (unsigned long long)w->certs->poll_interval);
      uv_fs_event_stop(&w->event);
      w->watching = false;
    }
    return;
  }
  if (w->watching && !w->rewatch && st.st_dev == w->watched_dev && st.st_ino == w->watched_ino) {
    return;
  }
  if (w->watching) {
    uv_fs_event_stop(&w->event);
    w->watching = false;
  }
  w->rewatch = false;
  int r = uv_fs_event_start(&w->event, on_fs_event, dir, 0);
  if (r != 0) {
    if (r != w->watch_error) {
      log_write(LOG_WARN, "certwatch", "cannot watch %s (%s); polling it every %llu ms instead",
                dir, uv_strerror(r), (unsigned long long)w->certs->poll_interval);
    }
    w->watch_error = r;
    return;
  }
  w->watch_error = 0;
  w->watching = true;
  w->watched_dev = st.st_dev;
  w->watched_ino = st.st_ino;
  LOG_DEBUGF("certwatch", "watching %s", dir);
}

/* Logs, once per generation, that the loaded leaf is close to or past its expiry: the
 * operator's cue that rotation is not happening. */
static void check_expiry(struct certwatch *w) {
  struct tls_contexts *ctxs = w->ops->current(w->arg);
  if (ctxs == NULL) {
    return;
  }
  uint64_t generation = tls_contexts_generation(ctxs);
  const struct tls_certset *set = tls_contexts_certset(ctxs);
  int64_t left = tls_certset_not_after(set) - (int64_t)time(NULL);
  if (left <= 0) {
    if (w->expired_generation != generation) {
      w->expired_generation = generation;
      log_write(LOG_ERROR, "certwatch",
                "the certificate of %s (generation %llu) expired %lld s ago and %s holds no "
                "valid replacement; peers will refuse it",
                tls_certset_primary_identity(set), (unsigned long long)generation, (long long)-left,
                w->certs->dir);
    }
  } else if ((uint64_t)left * 1000 < w->certs->expiry_warning &&
             w->warned_generation != generation) {
    w->warned_generation = generation;
    log_write(LOG_WARN, "certwatch",
              "the certificate of %s (generation %llu) expires in %lld s, and no replacement "
              "from %s has been loaded yet",
              tls_certset_primary_identity(set), (unsigned long long)generation, (long long)left,
              w->certs->dir);
  }
  tls_contexts_free(ctxs);
}

static void on_debounce(uv_timer_t *timer);

static void schedule_check(struct certwatch *w, uint64_t delay_ms) {
  uv_timer_start(&w->debounce, on_debounce, delay_ms, 0);
}

/* The set |sig| was handled: loaded (or found serving already) when |ok|, else refused
 * and counted. */
static void handled(struct certwatch *w, const uint8_t *sig, bool ok) {
  memcpy(w->done, sig, TLS_DIGEST_LEN);
  w->done_failed = !ok;
  w->settling = false;
  check_expiry(w);
}

/* Re-arms the watch and reads the files' digest into |sig|; when it differs from the
 * last one seen, records it and restarts the quiet time, and returns true. */
static bool files_changed(struct certwatch *w, uint8_t sig[TLS_DIGEST_LEN]) {
  ensure_watch(w);
  tls_certfiles_digest(w->certs, sig);
  if (same(sig, w->seen)) {
    return false;
  }
  memcpy(w->seen, sig, TLS_DIGEST_LEN);
  schedule_check(w, DEBOUNCE_MS);
  return true;
}

/* Loads the set |sig| quietly: a valid set is handled, an invalid one only described in
 * |msg|. */
static enum certload_result try_load(struct certwatch *w, const uint8_t *sig, char *msg,
                                     size_t msg_len) {
  enum certload_result r = w->ops->reload(w->arg, CERTLOAD_TRY, sig, msg, msg_len);
  if (r == CERTLOAD_LOADED || r == CERTLOAD_UNCHANGED) {
    LOG_DEBUGF("certwatch", "reload of %s: %s", w->certs->dir, msg);
    handled(w, sig, true);
  }
  return r;
}

/* Runs after DEBOUNCE_MS of quiet (or SETTLE_MS for a set that failed a quiet try). */
static void on_debounce(uv_timer_t *timer) {
  struct certwatch *w = timer->data;
  uint8_t sig[TLS_DIGEST_LEN];
  if (files_changed(w, sig)) {
    /* Changed since the event or poll that scheduled this check: not quiet yet. */
    return;
  }
  if (same(sig, w->done)) {
    w->settling = false;
    return;
  }
  char msg[512];
  enum certload_result r = try_load(w, sig, msg, sizeof(msg));
  if (r == CERTLOAD_CHANGED) {
    /* Written to again just now: a new burst, with its own quiet time. */
    schedule_check(w, DEBOUNCE_MS);
    return;
  }
  if (r != CERTLOAD_REFUSED) {
    return;
  }
  uint64_t now = uv_now(w->loop);
  if (!w->settling || !same(sig, w->settling_sig)) {
    LOG_DEBUGF("certwatch", "%s is not a valid set yet (%s); waiting %d ms for it to settle",
               w->certs->dir, msg, SETTLE_MS);
    w->settling = true;
    memcpy(w->settling_sig, sig, TLS_DIGEST_LEN);
    w->settling_since = now;
    schedule_check(w, SETTLE_MS);
    return;
  }
  if (now - w->settling_since < SETTLE_MS) {
    /* An event about some other file in the directory; keep waiting. */
    schedule_check(w, SETTLE_MS - (now - w->settling_since));
    return;
  }
  r = w->ops->reload(w->arg, CERTLOAD_APPLY, sig, msg, sizeof(msg));
  if (r == CERTLOAD_CHANGED) {
    /* Written to again just now: a new burst, with its own quiet time. */
    schedule_check(w, DEBOUNCE_MS);
    return;
  }
  handled(w, sig, r != CERTLOAD_REFUSED);
}

static void on_fs_event(uv_fs_event_t *handle, const char *filename, int events, int status) {
  struct certwatch *w = handle->data;
  (void)events;
  if (status < 0) {
    log_write(LOG_WARN, "certwatch", "watch on %s failed (%s); polling until it is restored",
              w->certs->dir, uv_strerror(status));
    uv_fs_event_stop(&w->event);
    w->watching = false;
    schedule_check(w, DEBOUNCE_MS);
    return;
  }
  /* libuv reports the watched directory's own name when the directory is deleted or
   * moved away; the watch dies with it, so the next check starts a new one. */
  const char *dir = w->certs->dir;
  const char *slash = strrchr(dir, '/');
  if (filename == NULL || strcmp(filename, slash != NULL ? slash + 1 : dir) == 0) {
    w->rewatch = true;
  }
  /* The check after the quiet time reads the files; any later write brings its own
   * event and restarts the quiet time. */
  schedule_check(w, DEBOUNCE_MS);
}

static void on_poll(uv_timer_t *timer) {
  struct certwatch *w = timer->data;
  uint8_t sig[TLS_DIGEST_LEN];
  bool idle = !files_changed(w, sig) && !uv_is_active((uv_handle_t *)&w->debounce);
  if (idle && !same(sig, w->done)) {
    /* A change that neither an event nor an earlier poll turned into a check. */
    schedule_check(w, DEBOUNCE_MS);
  } else if (idle && w->done_failed) {
    /* Unchanged files can still become valid: a leaf that was not valid yet. */
    char msg[512];
    try_load(w, sig, msg, sizeof(msg));
  }
  check_expiry(w);
}

static void on_closed(uv_handle_t *handle) {
  struct certwatch *w = handle->data;
  if (--w->open_handles == 0) {
    free(w);
  }
}

struct certwatch *certwatch_start(uv_loop_t *loop, const struct certs_config *certs,
                                  const struct certwatch_ops *ops, void *arg) {
  struct certwatch *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    log_write(LOG_ERROR, "certwatch", "out of memory; certificates reload on SIGHUP only");
    return NULL;
  }
  w->loop = loop;
  w->certs = certs;
  w->ops = ops;
  w->arg = arg;
  uv_fs_event_init(loop, &w->event);
  w->event.data = w;
  uv_timer_init(loop, &w->poll);
  w->poll.data = w;
  uv_timer_init(loop, &w->debounce);
  w->debounce.data = w;
  w->open_handles = 3;

  /* The owner has just loaded the files, or counted them as failed. A failed set is not
   * counted again: it is retried quietly by every poll. Files that are not the serving
   * set (they changed in between) are checked after the quiet time. */
  tls_certfiles_digest(certs, w->seen);
  struct tls_contexts *ctxs = ops->current(arg);
  if (ctxs == NULL) {
    memcpy(w->done, w->seen, TLS_DIGEST_LEN);
    w->done_failed = true;
  } else {
    memcpy(w->done, tls_certset_digest(tls_contexts_certset(ctxs)), TLS_DIGEST_LEN);
    if (!same(w->done, w->seen)) {
      schedule_check(w, DEBOUNCE_MS);
    }
  }
  tls_contexts_free(ctxs);

  ensure_watch(w);
  uv_timer_start(&w->poll, on_poll, certs->poll_interval, certs->poll_interval);
  check_expiry(w);
  return w;
}

void certwatch_close(struct certwatch *watch) {
  if (watch == NULL) {
    return;
  }
  uv_close((uv_handle_t *)&watch->event, on_closed);
  uv_close((uv_handle_t *)&watch->poll, on_closed);
  uv_close((uv_handle_t *)&watch->debounce, on_closed);
}
