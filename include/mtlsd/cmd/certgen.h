/* certgen: "mtlsd cert ca" and "mtlsd cert issue" (the README, Command line), a small development
 * CA that writes the same files cert-manager and SPIRE do, so that tests, demos and local
 * clusters need no other tool.
 *
 * The command is src/cmd_cert.c; the keys and certificates it writes come from
 * tls_x509 (mtlsd/tls_x509.h), the part built on BoringSSL. It shares nothing with the
 * proxy at run time: it is a command, run once, that exits. */
#ifndef MTLSD_CERTGEN_H
#define MTLSD_CERTGEN_H

/* certgen_main runs one "cert" subcommand: |argv[0]| is "cert" and |argv[1]| is "ca" or
 * "issue", followed by that subcommand's options (see "mtlsd cert --help"). It reads and
 * writes files only under the directories named by the options, prints a one-line
 * summary on stdout and errors on stderr, and never prints key material.
 *
 * It returns the process exit code: 0 on success (or after --help, printed on stdout), 1
 * when the work failed (an unreadable CA, a file that cannot be written), 2 on a usage
 * error (an unknown option, a malformed value), with the usage printed on stderr. It
 * neither keeps nor modifies |argv|, and frees everything it allocates. */
int certgen_main(int argc, char **argv);

#endif
