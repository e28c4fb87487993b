/* relay: two flows over two transports (see mtlsd/relay.h). */
#include "mtlsd/net/relay.h"

#include <stddef.h>

static void flow_init(struct relay_flow *f, struct transport *src, struct transport *dst,
                      enum listener_counter rx, enum listener_counter tx) {
  *f = (struct relay_flow){.src = src, .dst = dst, .rx_counter = rx, .tx_counter = tx};
}

void relay_init(struct relay *r, struct transport *down, struct transport *up, struct bufpool *pool,
                struct listener_stats *stats) {
  flow_init(&r->d2u, down, up, LC_BYTES_RECEIVED_DOWNSTREAM, LC_BYTES_SENT_UPSTREAM);
  flow_init(&r->u2d, up, down, LC_BYTES_RECEIVED_UPSTREAM, LC_BYTES_SENT_DOWNSTREAM);
  r->pool = pool;
  r->stats = stats;
}

static void flow_release(struct relay *r, struct relay_flow *f) {
  if (f->buf != NULL) {
    bufpool_put(r->pool, f->buf);
    f->buf = NULL;
  }
  f->len = 0;
  f->off = 0;
}

void relay_release(struct relay *r) {
  flow_release(r, &r->d2u);
  flow_release(r, &r->u2d);
}

void relay_queue(struct relay *r, struct relay_flow *f, uint8_t *buf, uint32_t len) {
  flow_release(r, f);
  f->buf = buf;
  f->off = 0;
  f->len = len;
}

/* Waits for |events| on the destination (|on_dst|) or the source. */
static bool wait_for(struct relay_flow *f, bool on_dst, int events) {
  f->want_dst = on_dst ? events : 0;
  f->want_src = on_dst ? 0 : events;
  return true;
}

/* Reads are gathered up to the buffer's size (several TLS records, or a large plaintext
 * read) so that each write hands the kernel as much as possible, and a read that says
 * the source is drained saves the read that would only say EAGAIN. */
bool relay_pump(struct relay *r, struct relay_flow *f) {
  for (;;) {
    if (f->len > 0) {
      ssize_t n = transport_write(f->dst, f->buf + f->off, f->len);
      if (n > 0) {
        f->off += (uint32_t)n;
        f->len -= (uint32_t)n;
        stats_add(r->stats, f->tx_counter, (uint64_t)n);
        if (f->len == 0) {
          flow_release(r, f);
        }
        continue;
      }
      if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
        return wait_for(f, true, io_wait_for(n));
      }
      return false;
    }
    /* Bytes the destination took but still buffers go out before anything more is
     * read. */
    int flushed = transport_flush(f->dst);
    if (flushed == IO_WANT_WRITE) {
      return wait_for(f, true, IO_WAIT_WRITE);
    }
    if (flushed != IO_OK) {
      return false;
    }
    if (f->src_next == IO_ERROR) {
      return false;
    }
    if (f->src_next == IO_EOF) {
      f->src_eof = true;
    }
    if ((f->src_next == IO_WANT_READ || f->src_next == IO_WANT_WRITE) && !f->src_eof) {
      int events = io_wait_for(f->src_next);
      f->src_next = IO_OK;
      return wait_for(f, false, events);
    }
    if (f->src_eof) {
      if (!f->done) {
        int s = transport_shutdown(f->dst);
        if (s == IO_WANT_READ || s == IO_WANT_WRITE) {
          return wait_for(f, true, io_wait_for(s));
        }
        if (s != IO_OK) {
          return false;
        }
        f->done = true;
      }
      return wait_for(f, false, 0);
    }
    if (f->buf == NULL) {
      f->buf = bufpool_get(r->pool);
      if (f->buf == NULL) {
        return false;
      }
    }
    ssize_t n = transport_read(f->src, f->buf, BUFPOOL_BUFFER_SIZE, &f->src_next);
    if (n > 0) {
      f->off = 0;
      f->len = (uint32_t)n;
      f->bytes += (uint64_t)n;
      stats_add(r->stats, f->rx_counter, (uint64_t)n);
      continue;
    }
    flow_release(r, f);
    if (n == IO_WANT_READ || n == IO_WANT_WRITE) {
      return wait_for(f, false, io_wait_for(n));
    }
    if (n == IO_EOF) {
      f->src_eof = true;
      continue;
    }
    return false;
  }
}

bool relay_flow_waits(const struct relay_flow *f, const struct transport *t, int events) {
  if (f->done) {
    return false;
  }
  int wants = (f->src == t ? f->want_src : 0) | (f->dst == t ? f->want_dst : 0);
  return (wants & events) != 0;
}

int relay_wants(const struct relay *r, const struct transport *t) {
  int wants = 0;
  const struct relay_flow *flows[2] = {&r->d2u, &r->u2d};
  for (int i = 0; i < 2; i++) {
    const struct relay_flow *f = flows[i];
    wants |= (f->src == t ? f->want_src : 0) | (f->dst == t ? f->want_dst : 0);
  }
  return wants;
}

const char *relay_error(const struct relay_flow *f) {
  return f->src->ops->secure ? f->src->ops->error_result : f->dst->ops->error_result;
}
