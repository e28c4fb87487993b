/* sandbox: no_new_privs, Landlock and a seccomp allow-list (see mtlsd/sandbox.h). */
#include "mtlsd/os/sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/landlock.h>
#include <linux/netlink.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <termios.h>
#include <unistd.h>

#include <seccomp.h>

#include "mtlsd/base/log.h"

/* Landlock rights newer than the build machine's headers; the numbers are the kernel's
 * ABI, which never changes. */
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14)
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15)
#endif

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer) || \
    __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* ---- Landlock ---- */

/* Every filesystem right that the kernel's ABI |abi| knows, so that all of them are
 * denied except where a rule grants one. */
static uint64_t handled_rights(int abi) {
  uint64_t rights = (LANDLOCK_ACCESS_FS_MAKE_SYM << 1) - 1; /* ABI 1: bits 0 to 12. */
  if (abi >= 2) {
    rights |= LANDLOCK_ACCESS_FS_REFER;
  }
  if (abi >= 3) {
    rights |= LANDLOCK_ACCESS_FS_TRUNCATE;
  }
  if (abi >= 5) {
    rights |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
  }
  return rights;
}

#define READ_RIGHTS (LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR)

/* Grants |rights| beneath |path| (for a file, only its file rights); a path that does
 * not exist is skipped. Returns false only when the kernel refuses the rule. */
static bool allow_path(int ruleset, const char *path, uint64_t rights, uint64_t handled) {
  int fd = open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) {
    return true;
  }
  struct stat st;
  if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode)) {
    rights &= LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_WRITE_FILE |
              LANDLOCK_ACCESS_FS_TRUNCATE | LANDLOCK_ACCESS_FS_IOCTL_DEV;
  }
  struct landlock_path_beneath_attr attr = {.allowed_access = rights & handled, .parent_fd = fd};
  long r = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &attr, 0);
  close(fd);
  return r == 0;
}

/* Allows reading |dir| and its parent, both as given and resolved: a Kubernetes volume
 * swaps "..data" inside the directory, other tools swap the directory itself. */
static bool allow_certs(int ruleset, const char *dir, uint64_t handled) {
  char paths[4][PATH_MAX];
  snprintf(paths[0], sizeof(paths[0]), "%s", dir);
  if (realpath(dir, paths[1]) == NULL) {
    snprintf(paths[1], sizeof(paths[1]), "%s", dir);
  }
  for (int i = 0; i < 2; i++) {
    memcpy(paths[2 + i], paths[i], sizeof(paths[i]));
    char *slash = strrchr(paths[2 + i], '/');
    if (slash == paths[2 + i]) {
      slash[1] = '\0';
    } else if (slash != NULL) {
      *slash = '\0';
    } else {
      snprintf(paths[2 + i], sizeof(paths[2 + i]), ".");
    }
  }
  for (int i = 0; i < 4; i++) {
    if (!allow_path(ruleset, paths[i], READ_RIGHTS, handled)) {
      return false;
    }
  }
  return true;
}

/* Applies the Landlock ruleset; a kernel without Landlock leaves |out->landlock_abi| 0
 * with the reason. Returns false only when Landlock exists and refused the ruleset. */
static bool enter_landlock(const struct sandbox_paths *paths, struct sandbox_status *out, char *err,
                           size_t err_len) {
  long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
  if (abi < 1) {
    snprintf(out->landlock_detail, sizeof(out->landlock_detail), "the kernel has no Landlock (%s)",
             strerror(errno));
    return true;
  }
  uint64_t handled = handled_rights((int)abi);
  struct landlock_ruleset_attr attr = {.handled_access_fs = handled};
  int ruleset = (int)syscall(SYS_landlock_create_ruleset, &attr, sizeof(attr), 0);
  if (ruleset < 0) {
    snprintf(err, err_len, "landlock: cannot create a ruleset: %s", strerror(errno));
    return false;
  }
  /* Name resolution reads /etc (resolv.conf, hosts, nsswitch.conf, gai.conf) and may load
   * NSS modules; the process's own figures come from /proc/self. That is all of /proc:
   * /proc/PID is a new inode at each lookup, so a rule on the one seen now would not hold
   * (and in a container's PID namespace /proc shows the pod's own processes only). */
  static const char *const kReadOnly[] = {"/etc",  "/usr",         "/lib",        "/lib64",
                                          "/proc", "/dev/urandom", "/dev/random", "/dev/null"};
  bool ok = allow_certs(ruleset, paths->certs_dir, handled);
  for (size_t i = 0; ok && i < sizeof(kReadOnly) / sizeof(kReadOnly[0]); i++) {
    ok = allow_path(ruleset, kReadOnly[i], READ_RIGHTS, handled);
  }
  if (ok && paths->access_log != NULL) {
    ok = allow_path(ruleset, paths->access_log, LANDLOCK_ACCESS_FS_WRITE_FILE, handled);
  }
  if (!ok || syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) {
    snprintf(err, err_len, "landlock: %s", strerror(errno));
    close(ruleset);
    return false;
  }
  close(ruleset);
  out->landlock_abi = (int)abi;
  return true;
}

/* ---- seccomp ---- */

/* The system calls of serving: sockets and the event loop, the certificate reloads,
 * threads (workers, libuv's pool for name resolution), memory, time, signals, and the
 * process's own figures. */
static const char *const kAllowed[] = {
    /* Files and descriptors. */
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "close",
    "lseek",
    "fstat",
    "newfstatat",
    "stat",
    "lstat",
    "statx",
    "fstatfs",
    "statfs",
    "getdents",
    "getdents64",
    "openat",
    "open",
    "readlink",
    "readlinkat",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "pipe",
    "pipe2",
    "access",
    "faccessat",
    "faccessat2",
    "fsync",
    "fdatasync",
    "close_range",
    /* Sockets (socket itself is filtered by family below; no bind after start: every
     * listening socket is bound before, and a socket bound later would be a new service). */
    "connect",
    "accept",
    "accept4",
    "shutdown",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "sendmmsg",
    "recvmmsg",
    "getsockopt",
    "setsockopt",
    "getsockname",
    "getpeername",
    /* The event loop and the certificate watch. */
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect6",
    "eventfd",
    "eventfd2",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "timerfd_create",
    "timerfd_settime",
    "timerfd_gettime",
    /* Threads (clone is filtered below) and their synchronisation. */
    "futex",
    "futex_waitv",
    "set_robust_list",
    "get_robust_list",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "gettid",
    "getpid",
    "getppid",
    "exit",
    "exit_group",
    "set_tid_address",
    "membarrier",
    "prctl",
    /* Memory. */
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "brk",
    "madvise",
    "mincore",
    /* Signals (kill and tgkill to this process only, below). */
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "restart_syscall",
    /* Time, randomness, identity, limits. */
    "clock_gettime",
    "clock_getres",
    "gettimeofday",
    "time",
    "nanosleep",
    "clock_nanosleep",
    "getrandom",
    "uname",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getresuid",
    "getresgid",
    "getgroups",
    "getrlimit",
    "prlimit64",
    "getrusage",
    "sysinfo",
    "umask",
};

/* What only an attacker would call: the process is killed at once. */
static const char *const kFatal[] = {
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "open_by_handle_at",
    "iopl",
    "ioperm",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "fsopen",
    "fsmount",
    "move_mount",
    "open_tree",
};

/* The sanitizer runtimes need more: LeakSanitizer stops the threads with ptrace from a
 * helper it clones at exit, and a report runs the symbolizer. */
static const char *const kSanitizerAllowed[] = {"ptrace", "wait4", "waitid", "personality",
                                                "process_vm_readv"};

enum { SYSCALL_NAMES = 512, SYSCALL_NAME_MAX = 32 };
static char g_names[SYSCALL_NAMES][SYSCALL_NAME_MAX];

/* Writes |s| to stderr from a signal handler. */
static void write_str(const char *s) {
  (void)!write(STDERR_FILENO, s, strlen(s));
}

/* A call outside the list: say which, make it fail with EPERM, and go on. */
static void on_sigsys(int sig, siginfo_t *info, void *context) {
  (void)sig;
  int nr = info->si_syscall;
  char num[16];
  int n = 0;
  char digits[16];
  unsigned v = nr < 0 ? 0 : (unsigned)nr;
  do {
    digits[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 && n < (int)sizeof(digits));
  for (int i = 0; i < n; i++) {
    num[i] = digits[n - 1 - i];
  }
  num[n] = '\0';
  write_str("mtlsd: sandbox: denied system call ");
  write_str(nr >= 0 && nr < SYSCALL_NAMES && g_names[nr][0] != '\0' ? g_names[nr] : "?");
  write_str(" (");
  write_str(num);
  write_str("): it fails with EPERM\n");
  ucontext_t *uc = context;
#if defined(__x86_64__)
  uc->uc_mcontext.gregs[REG_RAX] = -EPERM;
#elif defined(__aarch64__)
  uc->uc_mcontext.regs[0] = (unsigned long long)-EPERM;
#else
#error "sandbox: no SIGSYS return register for this architecture"
#endif
}

static int resolve(const char *name) {
  return seccomp_syscall_resolve_name(name);
}

/* Adds |action| for every call of |names| the architecture has. */
static int add_rules(scmp_filter_ctx ctx, uint32_t action, const char *const *names, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int nr = resolve(names[i]);
    if (nr == __NR_SCMP_ERROR || nr < 0) {
      continue;
    }
    int r = seccomp_rule_add(ctx, action, nr, 0);
    if (r != 0 && r != -EEXIST) {
      return r;
    }
  }
  return 0;
}

/* A condition on the first argument: it equals |a|, or (SCMP_CMP_MASKED_EQ) its |a|
 * bits equal |b|. */
static struct scmp_arg_cmp arg0(enum scmp_compare op, scmp_datum_t a, scmp_datum_t b) {
  return (struct scmp_arg_cmp){.arg = 0, .op = op, .datum_a = a, .datum_b = b};
}

/* A condition on the argument |arg|: it equals |value|. */
static struct scmp_arg_cmp arg_eq(unsigned arg, scmp_datum_t value) {
  return (struct scmp_arg_cmp){.arg = arg, .op = SCMP_CMP_EQ, .datum_a = value};
}

/* The ioctl requests mtlsd makes: libuv's non-blocking and close-on-exec switches, the
 * bytes waiting on a socket, and the C library's "is this a terminal" (TCGETS). Never
 * TIOCSTI, which pushes keystrokes into the terminal of whoever started the process. */
static const unsigned long kIoctls[] = {FIONBIO, FIOCLEX, FIONCLEX, FIONREAD, TCGETS};

/* The rules with conditions: socket families, ioctl requests, thread-only clone, signals
 * to ourselves. */
static int add_conditional_rules(scmp_filter_ctx ctx) {
  /* TCP and UDP (name resolution) over IPv4 and IPv6, and of netlink the routing family
   * only (interface addresses; not inet_diag, which lists every socket of the
   * namespace). UNIX sockets fail quietly, so that the C library's nscd lookup falls
   * back: none of them, abstract or on a path, is anything mtlsd talks to. */
  static const int kFamilies[] = {AF_INET, AF_INET6};
  int r = 0;
  for (size_t i = 0; r == 0 && i < sizeof(kFamilies) / sizeof(kFamilies[0]); i++) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 1,
                         arg0(SCMP_CMP_EQ, (scmp_datum_t)kFamilies[i], 0));
  }
  if (r == 0) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(socket), 2, arg0(SCMP_CMP_EQ, AF_NETLINK, 0),
                         arg_eq(2, NETLINK_ROUTE));
  }
  if (r == 0) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EAFNOSUPPORT), SCMP_SYS(socket), 1,
                         arg0(SCMP_CMP_EQ, AF_UNIX, 0));
  }
  for (size_t i = 0; r == 0 && i < sizeof(kIoctls) / sizeof(kIoctls[0]); i++) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
                         arg_eq(1, (scmp_datum_t)kIoctls[i]));
  }
  /* Threads, never a new process; clone3 hides its flags in memory the filter cannot
   * read, so it says "not here" and the C library falls back to clone. */
  if (r == 0) {
    r = SANITIZED ? seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 0)
                  : seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                                     arg0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
  }
  if (r == 0) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  }
  pid_t self = getpid();
  if (r == 0) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1,
                         arg0(SCMP_CMP_EQ, (scmp_datum_t)self, 0));
  }
  if (r == 0) {
    r = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                         arg0(SCMP_CMP_EQ, (scmp_datum_t)self, 0));
  }
  return r;
}

static bool enter_seccomp(char *err, size_t err_len) {
  for (int nr = 0; nr < SYSCALL_NAMES; nr++) {
    char *name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
    if (name != NULL) {
      snprintf(g_names[nr], sizeof(g_names[nr]), "%s", name);
      free(name);
    }
  }
  struct sigaction sa = {0};
  sa.sa_sigaction = on_sigsys;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  if (sigaction(SIGSYS, &sa, NULL) != 0) {
    snprintf(err, err_len, "seccomp: cannot handle SIGSYS: %s", strerror(errno));
    return false;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
  if (ctx == NULL) {
    snprintf(err, err_len, "seccomp: out of memory");
    return false;
  }
  int r = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1);
  if (r == 0) {
    r = add_rules(ctx, SCMP_ACT_ALLOW, kAllowed, sizeof(kAllowed) / sizeof(kAllowed[0]));
  }
  if (r == 0 && SANITIZED) {
    r = add_rules(ctx, SCMP_ACT_ALLOW, kSanitizerAllowed,
                  sizeof(kSanitizerAllowed) / sizeof(kSanitizerAllowed[0]));
  }
  if (r == 0) {
    /* A sanitizer's report may try to run its symbolizer: let it fail, not kill. */
    r = add_rules(ctx, SANITIZED ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_KILL_PROCESS, kFatal,
                  sizeof(kFatal) / sizeof(kFatal[0]));
  }
  if (r == 0) {
    r = add_conditional_rules(ctx);
  }
  if (r == 0) {
    r = seccomp_load(ctx);
  }
  seccomp_release(ctx);
  if (r != 0) {
    snprintf(err, err_len, "seccomp: %s", strerror(-r));
    return false;
  }
  return true;
}

bool sandbox_enter(const struct sandbox_paths *paths, struct sandbox_status *out, char *err,
                   size_t err_len) {
  memset(out, 0, sizeof(*out));
  /* Neither Landlock nor an unprivileged seccomp filter is allowed without it, and no
   * exec could gain privileges past them. */
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    snprintf(err, err_len, "no_new_privs: %s", strerror(errno));
    return false;
  }
  out->no_new_privs = true;
  if (!enter_landlock(paths, out, err, err_len) || !enter_seccomp(err, err_len)) {
    return false;
  }
  out->seccomp = true;
  return true;
}
