/* json_alloc: cJSON's counting allocator (see mtlsd/json_alloc.h). */
#include "mtlsd/base/json_alloc.h"

#include <stdatomic.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

static _Thread_local unsigned long t_failures;
static _Atomic long g_budget = -1;

static void *counting_malloc(size_t size) {
  long budget = atomic_load_explicit(&g_budget, memory_order_relaxed);
  void *p = NULL;
  if (budget != 0) {
    if (budget > 0) {
      atomic_store_explicit(&g_budget, budget - 1, memory_order_relaxed);
    }
    p = malloc(size);
  }
  if (p == NULL) {
    t_failures++;
  }
  return p;
}

void json_alloc_install(void) {
  cJSON_Hooks hooks = {counting_malloc, free};
  cJSON_InitHooks(&hooks);
}

unsigned long json_alloc_failures(void) {
  return t_failures;
}

void json_alloc_fail_after(long n) {
  atomic_store_explicit(&g_budget, n, memory_order_relaxed);
}
