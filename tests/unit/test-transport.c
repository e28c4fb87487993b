/* The plain transport over a socketpair, and the relay over two of them: what the
 * transport reports (bytes, WANT, EOF, the drained hint), and that the relay moves bytes
 * both ways, passes half-close on and stops reading when its destination is full. */
#include "mtlsd/net/dial.h"
#include "mtlsd/net/relay.h"
#include "mtlsd/net/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"

static void socketpair_nb(int fds[2]) {
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
}

TEST(plain_read_write_eof) {
  int fds[2];
  socketpair_nb(fds);
  struct transport a, b;
  transport_init_plain(&a, fds[0]);
  transport_init_plain(&b, fds[1]);
  char buf[64];
  int next;
  CHECK_INTEQ(transport_read(&b, buf, sizeof(buf), &next), IO_WANT_READ);
  CHECK_INTEQ(transport_write(&a, "hello", 5), 5);
  CHECK_INTEQ(transport_flush(&a), IO_OK);
  CHECK_INTEQ(transport_read(&b, buf, sizeof(buf), &next), 5);
  CHECK(memcmp(buf, "hello", 5) == 0);
  /* A short read says the queue is empty, so the relay skips the read that would fail. */
  CHECK_INTEQ(next, IO_WANT_READ);
  CHECK_INTEQ(transport_shutdown(&a), IO_OK);
  CHECK_INTEQ(transport_read(&b, buf, sizeof(buf), &next), IO_EOF);
  /* The other direction still flows after a half-close. */
  CHECK_INTEQ(transport_write(&b, "back", 4), 4);
  CHECK_INTEQ(transport_read(&a, buf, sizeof(buf), &next), 4);
  close(fds[0]);
  close(fds[1]);
  CHECK(!a.ops->secure && strcmp(a.ops->error_result, "reset") == 0);
}

TEST(plain_write_full_socket_wants_write) {
  int fds[2];
  socketpair_nb(fds);
  struct transport a;
  transport_init_plain(&a, fds[0]);
  static char chunk[65536];
  ssize_t n;
  int rounds = 0;
  while ((n = transport_write(&a, chunk, sizeof(chunk))) > 0 && rounds < 10000) {
    rounds++;
  }
  CHECK_INTEQ(n, IO_WANT_WRITE);
  close(fds[1]);
  /* Writing to a socket whose peer is gone is an error, never a SIGPIPE. */
  while ((n = transport_write(&a, chunk, sizeof(chunk))) > 0) {
  }
  CHECK_INTEQ(n, IO_ERROR);
  close(fds[0]);
}

/* down[0] is the client, down[1] mtlsd's accepted end; up[0] mtlsd's upstream end, up[1]
 * the application. */
struct relay_fixture {
  int down[2], up[2];
  struct transport tdown, tup;
  struct bufpool pool;
  struct listener_stats *stats;
  struct relay relay;
};

static void fixture_init(struct relay_fixture *f) {
  memset(f, 0, sizeof(*f));
  socketpair_nb(f->down);
  socketpair_nb(f->up);
  transport_init_plain(&f->tdown, f->down[1]);
  transport_init_plain(&f->tup, f->up[0]);
  f->stats = aligned_alloc(64, sizeof(*f->stats));
  memset(f->stats, 0, sizeof(*f->stats));
  relay_init(&f->relay, &f->tdown, &f->tup, &f->pool, f->stats);
}

static void fixture_free(struct relay_fixture *f) {
  relay_release(&f->relay);
  bufpool_clear(&f->pool);
  free(f->stats);
  for (int i = 0; i < 2; i++) {
    close(f->down[i]);
    close(f->up[i]);
  }
}

static ssize_t read_all(int fd, char *buf, size_t cap) {
  size_t got = 0;
  ssize_t n;
  while (got < cap && (n = read(fd, buf + got, cap - got)) > 0) {
    got += (size_t)n;
  }
  return (ssize_t)got;
}

TEST(relay_moves_bytes_and_half_close) {
  struct relay_fixture f;
  fixture_init(&f);
  CHECK(write(f.down[0], "ping", 4) == 4);
  CHECK(relay_pump(&f.relay, &f.relay.d2u));
  char buf[16] = {0};
  CHECK_INTEQ(read_all(f.up[1], buf, sizeof(buf)), 4);
  CHECK(memcmp(buf, "ping", 4) == 0);
  /* Waiting for the source again, holding no buffer. */
  CHECK_INTEQ(relay_wants(&f.relay, &f.tdown), IO_WAIT_READ);
  CHECK(f.relay.d2u.buf == NULL);
  CHECK_INTEQ(f.stats->counters[LC_BYTES_RECEIVED_DOWNSTREAM], 4);
  CHECK_INTEQ(f.stats->counters[LC_BYTES_SENT_UPSTREAM], 4);

  /* The client's FIN becomes a FIN to the app; the app's answer still flows back. */
  CHECK(shutdown(f.down[0], SHUT_WR) == 0);
  CHECK(relay_pump(&f.relay, &f.relay.d2u));
  CHECK(f.relay.d2u.done && !relay_finished(&f.relay));
  CHECK_INTEQ(read(f.up[1], buf, sizeof(buf)), 0);
  CHECK(write(f.up[1], "pong", 4) == 4);
  CHECK(shutdown(f.up[1], SHUT_WR) == 0);
  CHECK(relay_pump(&f.relay, &f.relay.u2d));
  CHECK_INTEQ(read_all(f.down[0], buf, sizeof(buf)), 4);
  CHECK(memcmp(buf, "pong", 4) == 0);
  /* The short read said "wait for readable"; the FIN is what the next event brings. */
  CHECK(!relay_finished(&f.relay));
  CHECK(relay_pump(&f.relay, &f.relay.u2d));
  CHECK(relay_finished(&f.relay));
  fixture_free(&f);
}

TEST(relay_backpressure_stops_reading) {
  struct relay_fixture f;
  fixture_init(&f);
  /* The app reads nothing: once its socket is full the flow waits on it, not on the
   * client, and holds one buffer at most. */
  static char chunk[65536];
  uint64_t sent = 0;
  for (int i = 0; i < 64; i++) {
    ssize_t n = write(f.down[0], chunk, sizeof(chunk));
    if (n > 0) {
      sent += (uint64_t)n;
    }
    CHECK(relay_pump(&f.relay, &f.relay.d2u));
    if (f.relay.d2u.want_dst != 0) {
      break;
    }
  }
  CHECK_INTEQ(f.relay.d2u.want_dst, IO_WAIT_WRITE);
  CHECK_INTEQ(f.relay.d2u.want_src, 0);
  CHECK(f.relay.d2u.len > 0);
  CHECK(f.relay.d2u.bytes <= sent);
  fixture_free(&f);
}

TEST(relay_queued_bytes_go_first) {
  struct relay_fixture f;
  fixture_init(&f);
  uint8_t *head = bufpool_get(&f.pool);
  memcpy(head, "HDR", 3);
  relay_queue(&f.relay, &f.relay.d2u, head, 3);
  CHECK(write(f.down[0], "body", 4) == 4);
  CHECK(relay_pump(&f.relay, &f.relay.d2u));
  char buf[16] = {0};
  CHECK_INTEQ(read_all(f.up[1], buf, sizeof(buf)), 7);
  CHECK(memcmp(buf, "HDRbody", 7) == 0);
  fixture_free(&f);
}

TEST(relay_error_names_the_transport) {
  struct relay_fixture f;
  fixture_init(&f);
  close(f.up[1]);
  f.up[1] = -1;
  CHECK(write(f.down[0], "x", 1) == 1);
  /* The app is gone: writing to it fails (at once, or after the first bytes). */
  bool ok = true;
  for (int i = 0; i < 4 && ok; i++) {
    ok = relay_pump(&f.relay, &f.relay.d2u) && write(f.down[0], "x", 1) == 1;
  }
  CHECK(!ok);
  CHECK_STREQ(relay_error(&f.relay.d2u), "reset");
  fixture_free(&f);
}

/* An upstream that accepts, writes and resets before the connect's outcome is looked at
 * (a loaded worker): the connect succeeded, its bytes are still read, and their end is a
 * reset, not an end of stream that would pass a truncated response off as complete. */
TEST(connect_then_reset_keeps_bytes_and_reset) {
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(addr);
  CHECK(bind(listener, (struct sockaddr *)&addr, len) == 0 && listen(listener, 1) == 0);
  CHECK(getsockname(listener, (struct sockaddr *)&addr, &len) == 0);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK(connect(fd, (struct sockaddr *)&addr, len) == 0 || errno == EINPROGRESS);
  int accepted = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
  CHECK(accepted >= 0 && write(accepted, "partial", 7) == 7);
  struct linger reset = {.l_onoff = 1, .l_linger = 0};
  CHECK(setsockopt(accepted, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset)) == 0);
  close(accepted);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  for (int i = 0; i < 100 && !(pfd.revents & (POLLERR | POLLHUP)); i++) {
    CHECK(poll(&pfd, 1, 20) >= 0);
  }
  struct dialer d = {.upstream = "127.0.0.1"};
  CHECK_INTEQ(dialer_connect_result(&d, fd), CONNECT_OK_THEN_RESET);
  struct transport t;
  transport_init_plain(&t, fd);
  t.peer_reset = true;
  char buf[64];
  int next;
  CHECK_INTEQ(transport_read(&t, buf, sizeof(buf), &next), 7);
  CHECK(memcmp(buf, "partial", 7) == 0);
  CHECK_INTEQ(transport_read(&t, buf, sizeof(buf), &next), IO_ERROR);
  close(fd);
  close(listener);
}

TEST_MAIN(TEST_ENTRY(plain_read_write_eof), TEST_ENTRY(plain_write_full_socket_wants_write),
          TEST_ENTRY(relay_moves_bytes_and_half_close),
          TEST_ENTRY(relay_backpressure_stops_reading), TEST_ENTRY(relay_queued_bytes_go_first),
          TEST_ENTRY(relay_error_names_the_transport),
          TEST_ENTRY(connect_then_reset_keeps_bytes_and_reset))
