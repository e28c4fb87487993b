/* relay: the bytes of one connection, moved both ways between two transports with
 * half-close and backpressure (the README).
 *
 * Each direction is a flow with at most one buffer in flight, taken from a bufpool only
 * while bytes are in it; a flow whose destination is full stops reading its source
 * (backpressure), and an end of stream on a source becomes a shutdown of the destination
 * (half-close) while the other flow goes on. The relay knows no event loop: it says
 * which readiness each transport waits for (relay_wants), and its owner calls
 * relay_pump when that comes.
 *
 * Owns the buffers its flows hold (relay_release gives them back); borrows the
 * transports, the pool and the stats. */
#ifndef MTLSD_RELAY_H
#define MTLSD_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "mtlsd/base/bufpool.h"
#include "mtlsd/net/stats.h"
#include "mtlsd/net/transport.h"

/* Bytes moving from |src| to |dst|. */
struct relay_flow {
  struct transport *src;
  struct transport *dst;
  uint8_t *buf;
  uint32_t off;
  uint32_t len;
  int src_next; /* What the source's next read would return, learnt by the last one. */
  bool src_eof; /* The source's stream ended. */
  bool done;    /* ...and the end was passed on to the destination. */
  int want_src; /* IO_WAIT_* the flow waits for on src, or 0. */
  int want_dst; /* IO_WAIT_* the flow waits for on dst, or 0. */
  uint64_t bytes;
  enum listener_counter rx_counter;
  enum listener_counter tx_counter;
};

struct relay {
  struct relay_flow d2u; /* Downstream (the accepted socket) to upstream. */
  struct relay_flow u2d;
  struct bufpool *pool;
  struct listener_stats *stats;
};

/* relay_init prepares |r| to move bytes between |down| and |up|. */
void relay_init(struct relay *r, struct transport *down, struct transport *up, struct bufpool *pool,
                struct listener_stats *stats);

/* relay_queue makes the |len| bytes of |buf| (a buffer from |r|'s pool, which the relay
 * takes) the first bytes |f| writes. Only before |f| has read anything. */
void relay_queue(struct relay *r, struct relay_flow *f, uint8_t *buf, uint32_t len);

/* relay_pump moves bytes through |f| until it must wait for a transport. Returns false
 * on an error that ends the connection (see relay_error). */
bool relay_pump(struct relay *r, struct relay_flow *f);

/* relay_wants returns the IO_WAIT_* bits that the flows of |r| wait for on |t|. */
int relay_wants(const struct relay *r, const struct transport *t);

/* relay_flow_waits tells whether |f| waits for one of |events| on |t|. */
bool relay_flow_waits(const struct relay_flow *f, const struct transport *t, int events);

/* relay_finished tells whether both directions ended and were passed on. */
static inline bool relay_finished(const struct relay *r) {
  return r->d2u.done && r->u2d.done;
}

/* relay_error returns the result a connection ends with when |f| failed. */
const char *relay_error(const struct relay_flow *f);

/* relay_release gives the flows' buffers back to the pool. */
void relay_release(struct relay *r);

#endif
