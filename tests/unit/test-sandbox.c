/* The sandbox from inside: a child process enters it as mtlsd does and tries what a
 * compromised mtlsd would (a keystroke pushed into the terminal, a new UDP service, an
 * abstract UNIX socket, a dump of every socket through inet_diag) and what serving needs
 * (non-blocking sockets, name resolution's UDP, the routing netlink). Each outcome is
 * reported to the parent through a pipe. */
#include "mtlsd/os/sandbox.h"

#include <errno.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "test.h"

/* What each attempt gave: 0, or the errno it failed with. */
enum {
  TRY_NONBLOCK,
  TRY_UDP_CONNECT,
  TRY_ROUTE_NETLINK,
  TRY_TIOCSTI,
  TRY_BIND,
  TRY_LISTEN,
  TRY_UNIX,
  TRY_ABSTRACT,
  TRY_DIAG_NETLINK,
  TRY_COUNT
};

static int result_of(int r) {
  return r >= 0 ? 0 : errno;
}

static void try_all(int out[TRY_COUNT]) {
  int udp = socket(AF_INET, SOCK_DGRAM, 0);
  int on = 1;
  out[TRY_NONBLOCK] = result_of(ioctl(udp, FIONBIO, &on));
  struct sockaddr_in lo = {.sin_family = AF_INET, .sin_port = htons(9)};
  lo.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  out[TRY_UDP_CONNECT] = result_of(connect(udp, (struct sockaddr *)&lo, sizeof(lo)));
  int route = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
  out[TRY_ROUTE_NETLINK] = result_of(route);
  char key = 'x';
  out[TRY_TIOCSTI] = result_of(ioctl(STDIN_FILENO, TIOCSTI, &key));
  int service = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in any = {.sin_family = AF_INET};
  out[TRY_BIND] = result_of(bind(service, (struct sockaddr *)&any, sizeof(any)));
  int tcp = socket(AF_INET, SOCK_STREAM, 0);
  out[TRY_LISTEN] = result_of(listen(tcp, 1));
  out[TRY_UNIX] = result_of(socket(AF_UNIX, SOCK_STREAM, 0));
  out[TRY_ABSTRACT] = result_of(socket(AF_UNIX, SOCK_DGRAM, 0));
  out[TRY_DIAG_NETLINK] = result_of(socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG));
}

TEST(what_a_compromised_process_would_try_fails) {
  int fds[2];
  CHECK_INTEQ(pipe(fds), 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    close(fds[0]);
    struct sandbox_paths paths = {.certs_dir = "/tmp", .access_log = NULL};
    struct sandbox_status status;
    char err[256];
    int out[TRY_COUNT];
    memset(out, 0xff, sizeof(out));
    if (sandbox_enter(&paths, &status, err, sizeof(err))) {
      try_all(out);
    } else {
      fprintf(stderr, "sandbox_enter: %s\n", err);
    }
    _exit(write(fds[1], out, sizeof(out)) == (ssize_t)sizeof(out) ? 0 : 1);
  }
  close(fds[1]);
  int out[TRY_COUNT];
  CHECK_INTEQ((int)read(fds[0], out, sizeof(out)), (int)sizeof(out));
  close(fds[0]);
  int wstatus;
  CHECK_INTEQ(waitpid(pid, &wstatus, 0), pid);
  CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  /* What serving needs. */
  CHECK_INTEQ(out[TRY_NONBLOCK], 0);
  CHECK_INTEQ(out[TRY_UDP_CONNECT], 0);
  CHECK_INTEQ(out[TRY_ROUTE_NETLINK], 0);
  /* What it must not do. */
  CHECK_INTEQ(out[TRY_TIOCSTI], EPERM);
  CHECK_INTEQ(out[TRY_BIND], EPERM);
  CHECK_INTEQ(out[TRY_LISTEN], EPERM);
  CHECK_INTEQ(out[TRY_UNIX], EAFNOSUPPORT);
  CHECK_INTEQ(out[TRY_ABSTRACT], EAFNOSUPPORT);
  CHECK_INTEQ(out[TRY_DIAG_NETLINK], EPERM);
}

TEST_MAIN(TEST_ENTRY(what_a_compromised_process_would_try_fails))
