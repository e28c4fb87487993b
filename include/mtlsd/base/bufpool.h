/* bufpool: a free list of relay buffers (IO_RELAY_BUFFER_SIZE bytes each), so that the
 * data path does not call malloc per read. One pool per worker thread; not thread-safe.
 *
 * Owns the idle buffers it keeps; a buffer handed out belongs to the caller until it is
 * given back. */
#ifndef MTLSD_BUFPOOL_H
#define MTLSD_BUFPOOL_H

#include <stddef.h>

#include "mtlsd/base/io.h"

#define BUFPOOL_BUFFER_SIZE IO_RELAY_BUFFER_SIZE

struct bufpool {
  void *free_list;
  size_t free_count;
};

/* bufpool_get returns a BUFPOOL_BUFFER_SIZE buffer, or NULL when out of memory. */
void *bufpool_get(struct bufpool *pool);

/* bufpool_put gives |buf| back: it is kept for the next bufpool_get, or freed when the
 * pool already holds enough idle buffers. */
void bufpool_put(struct bufpool *pool, void *buf);

/* bufpool_clear frees every idle buffer; the pool can be used again afterwards. */
void bufpool_clear(struct bufpool *pool);

#endif
