/* Helpers for unit tests that run a libuv loop: run it for a bounded time, and end the
 * way libuv's own tests do, with a check that no handle is left open. */
#ifndef MTLSD_TEST_UV_H
#define MTLSD_TEST_UV_H

#include <uv.h>

#include "test.h"

static void test_uv_stop(uv_timer_t *timer) {
  uv_stop(timer->loop);
}

/* test_uv_run_for runs |loop| for |ms| milliseconds of loop time. */
static inline void test_uv_run_for(uv_loop_t *loop, uint64_t ms) {
  uv_timer_t stop;
  uv_timer_init(loop, &stop);
  uv_timer_start(&stop, test_uv_stop, ms, 0);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&stop, NULL);
  uv_run(loop, UV_RUN_NOWAIT);
}

static void test_uv_report_open(uv_handle_t *handle, void *arg) {
  (void)arg;
  if (!uv_is_closing(handle)) {
    fprintf(stderr, "  handle left open: %s\n", uv_handle_type_name(uv_handle_get_type(handle)));
  }
}

/* CHECK_LOOP_CLOSES lets pending close callbacks run, then checks that |loop| holds no
 * handle and closes it. */
#define CHECK_LOOP_CLOSES(loop)                 \
  do {                                          \
    uv_run((loop), UV_RUN_NOWAIT);              \
    uv_walk((loop), test_uv_report_open, NULL); \
    CHECK(uv_loop_close(loop) == 0);            \
  } while (0)

#endif
