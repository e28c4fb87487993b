/* bufpool: the relay buffers' free list (see mtlsd/bufpool.h). */
#include "mtlsd/base/bufpool.h"

#include <stdlib.h>

/* Idle buffers kept per pool; more are returned to the allocator. */
enum { POOL_KEEP = 16 };

struct free_buffer {
  struct free_buffer *next;
};

void *bufpool_get(struct bufpool *pool) {
  struct free_buffer *b = pool->free_list;
  if (b == NULL) {
    return malloc(BUFPOOL_BUFFER_SIZE);
  }
  pool->free_list = b->next;
  pool->free_count--;
  return b;
}

void bufpool_put(struct bufpool *pool, void *buf) {
  if (pool->free_count >= POOL_KEEP) {
    free(buf);
    return;
  }
  struct free_buffer *b = buf;
  b->next = pool->free_list;
  pool->free_list = b;
  pool->free_count++;
}

void bufpool_clear(struct bufpool *pool) {
  while (pool->free_list != NULL) {
    struct free_buffer *b = pool->free_list;
    pool->free_list = b->next;
    free(b);
  }
  pool->free_count = 0;
}
