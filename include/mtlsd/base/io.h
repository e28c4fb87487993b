/* io: the result codes and sizes that every non-blocking byte stream of mtlsd shares
 * (the TLS connection, the transports and the relay over them), so that one layer's
 * "wait for the socket" means the same thing in the next. */
#ifndef MTLSD_IO_H
#define MTLSD_IO_H

#include <stddef.h>

/* Results of a non-blocking read, write, flush or shutdown; a positive value is a byte
 * count. */
enum io_result {
  IO_OK = 0,
  IO_WANT_READ = -1,  /* Call again once the socket is readable. */
  IO_WANT_WRITE = -2, /* Call again once the socket is writable. */
  IO_EOF = -3,        /* The stream ended cleanly (a FIN, or TLS close_notify). */
  IO_ERROR = -4
};

/* Socket readiness a stream waits for, as a bit set. The values are libuv's UV_READABLE
 * and UV_WRITABLE (checked where both are visible), so no translation is needed. */
enum io_wait { IO_WAIT_READ = 1, IO_WAIT_WRITE = 2 };

/* io_wait_for returns the readiness that the WANT result |r| waits for. */
static inline int io_wait_for(long r) {
  return r == IO_WANT_READ ? IO_WAIT_READ : IO_WAIT_WRITE;
}

/* The largest plaintext one TLS record carries (RFC 8446 section 5.1). */
#define IO_TLS_RECORD_MAX 16384

/* The relay's buffer: four TLS records of plaintext, so that bulk transfers cost few
 * system calls; a connection holds buffers only while bytes are in flight. */
#define IO_RELAY_BUFFER_SIZE ((size_t)4 * IO_TLS_RECORD_MAX)

#endif
