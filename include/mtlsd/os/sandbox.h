/* sandbox: mtlsd confines itself once its sockets are bound and before any other thread
 * runs (Linux): no_new_privs, a Landlock ruleset (where the kernel has Landlock) that
 * leaves the filesystem readable only where mtlsd still reads (the certificate
 * directory and its parent, /etc and the libraries for name resolution, /proc),
 * and writable only for the access-log file, then a seccomp-BPF allow-list of the system
 * calls that serving needs. A call outside the list fails with EPERM and is logged by
 * name ("sandbox: denied system call ..."), so that a path the list missed shows up as a
 * clear error instead of a crash; the calls that only an attacker would make (exec,
 * ptrace, module loading, namespaces, mounts, BPF, kexec...) kill the process at once.
 *
 * Owns nothing once entered: the filters belong to the kernel and cannot be lifted. */
#ifndef MTLSD_SANDBOX_H
#define MTLSD_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>

/* What the process still reads and writes once confined. */
struct sandbox_paths {
  const char *certs_dir;  /* Read, with its parent (a directory swap lands there). */
  const char *access_log; /* Written (the file only); NULL when the log is no file. */
};

/* What was put in place, for the log, /server_info and mtlsd_sandbox_active. */
struct sandbox_status {
  bool no_new_privs;
  bool seccomp;
  int landlock_abi;          /* The kernel's Landlock ABI in use; 0 when it has none. */
  char landlock_detail[160]; /* Why Landlock is not in use, when it is not. */
};

/* sandbox_enter confines the calling process (call it while it has one thread). On
 * failure to set up seccomp it returns false with the reason in |err|: the caller stops,
 * as a sandbox that was asked for must not silently be absent. A kernel without
 * Landlock is not a failure: |out->landlock_detail| says so. */
bool sandbox_enter(const struct sandbox_paths *paths, struct sandbox_status *out, char *err,
                   size_t err_len);

#endif
