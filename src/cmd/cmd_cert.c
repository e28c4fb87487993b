/* cmd_cert: "mtlsd cert ca" and "mtlsd cert issue" (see mtlsd/certgen.h), the
 * development CA behind them: the command line, the validity window, the names, the
 * output directory and what is printed. Keys and certificates are made by tls_x509 (the
 * only part that needs BoringSSL), so this file includes no <openssl/...> header.
 *
 * It writes the Kubernetes/cert-manager layout that mtlsd reads (docs/configuration.md, certs): a
 * root CA (ca.crt, ca.key), leaves (tls.crt with the leaf first, tls.key, ca.crt as the trust
 * bundle) and optionally one level of intermediate CA. Options that make a certificate
 * already expired or not yet valid exist because the tests of mtlsd itself need them.
 *
 * Options are borrowed from argv; the two arrays of repeatable options are the only
 * allocations of its own, freed before certgen_main returns, as is every tls_x509
 * object. */
#include "mtlsd/cmd/certgen.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "mtlsd/base/exit.h"
#include "mtlsd/base/identity.h"
#include "mtlsd/base/timefmt.h"
#include "mtlsd/tls/tls_x509.h"

/* X.520 caps a commonName at 64 characters, and BoringSSL refuses longer ones. */
#define CERTGEN_CN_MAX 64
/* Certificates start this many seconds in the past, so that a peer whose clock is a
 * little behind does not see a certificate that is "not yet valid". */
#define CERTGEN_BACKDATE_SECS 60

/* Not an exit code: parse_args printed --help. */
enum { CERTGEN_HELP_SHOWN = -1 };

static const struct {
  const char *name;
  enum tls_x509_key_type type;
} kKeyTypes[] = {
    {"ecdsa-p256", TLS_X509_ECDSA_P256},
    {"ecdsa-p384", TLS_X509_ECDSA_P384},
    {"rsa-2048", TLS_X509_RSA_2048},
};

enum command { CMD_CA = 1, CMD_ISSUE = 2 };

/* The parsed command line. Strings are borrowed from argv. */
struct cert_opts {
  enum command cmd;
  const char *prefix; /* "cert ca" or "cert issue", for messages. */
  const char *out_dir;
  const char *ca_dir;
  const char *trust_domain;
  const char *name;
  enum tls_x509_key_type key_type;
  const char *key_type_name;
  long days;  /* 0 when not given. */
  long hours; /* 0 when not given. */
  bool has_not_before;
  bool has_not_after;
  int64_t not_before;
  int64_t not_after;
  bool intermediate;
  const char **spiffe_ids; /* Up to argc entries, allocated. */
  size_t spiffe_count;
  const char **dns_names; /* Up to argc entries, allocated. */
  size_t dns_count;
};

static void usage(FILE *out) {
  fputs(
      "usage: mtlsd cert ca --out DIR [--trust-domain TD] [--name CN] [--key-type TYPE]\n"
      "                     [--days N | --hours N] [--not-before TIME] [--not-after TIME]\n"
      "       mtlsd cert issue --ca DIR --out DIR (--spiffe-id URI | --dns NAME)...\n"
      "                     [--name CN] [--key-type TYPE] [--days N | --hours N]\n"
      "                     [--not-before TIME] [--not-after TIME]\n"
      "       mtlsd cert issue --ca DIR --out DIR --intermediate [--name CN] [...]\n"
      "\n"
      "Development certificates in the layout mtlsd reads. Production certificates come\n"
      "from cert-manager, SPIRE or any CA that writes the same files.\n"
      "\n"
      "  ca     A self-signed root CA: DIR/ca.crt and DIR/ca.key. With --trust-domain, it\n"
      "         carries the URI SAN spiffe://TD. Valid 3650 days by default.\n"
      "  issue  A leaf signed by the CA in --ca DIR (its ca.crt and ca.key): DIR/tls.crt\n"
      "         (the leaf, then the issuing CA when that is an intermediate), DIR/tls.key\n"
      "         and DIR/ca.crt (the root bundle). Valid 90 days by default.\n"
      "         With --intermediate: an intermediate CA (path length 0) signed by the root\n"
      "         CA in --ca DIR, written as DIR/ca.crt, DIR/ca.key and DIR/root.crt, so that\n"
      "         DIR can be given to \"cert issue --ca\". Valid 365 days by default.\n"
      "\n"
      "  --out DIR          where to write (created 0755 if missing; files are replaced)\n"
      "  --ca DIR           the signing CA's directory\n"
      "  --spiffe-id URI    a URI SAN; must be a valid SPIFFE ID (repeatable)\n"
      "  --dns NAME         a DNS SAN, \"*.example.com\" allowed (repeatable)\n"
      "  --trust-domain TD  (ca) the trust domain, in the subject and a URI SAN\n"
      "  --name CN          the subject's common name (at most 64 characters)\n"
      "  --key-type TYPE    ecdsa-p256 (default), ecdsa-p384 or rsa-2048\n"
      "  --days N, --hours N  how long the certificate is valid\n"
      "  --not-before TIME, --not-after TIME\n"
      "                     pin the validity window; TIME is RFC 3339, such as\n"
      "                     2030-01-02T03:04:05Z or 2030-01-02T05:04:05+02:00. A window in\n"
      "                     the past or the future makes expired or not-yet-valid\n"
      "                     certificates for tests.\n"
      "  --help             show this help\n",
      out);
}

static void errorf(const struct cert_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void errorf(const struct cert_opts *o, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s: %s\n", o->prefix, msg);
}

/* --- Parsing option values ---------------------------------------------------------- */

/* parse_count parses a decimal integer in [1, max]. strtol rather than atoi, so that
 * "12x", "" and overflow are refused instead of read as something else. */
static bool parse_count(const char *text, long max, long *out) {
  if (text[0] < '0' || text[0] > '9') {
    return false;
  }
  errno = 0;
  char *end = NULL;
  long v = strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || v < 1 || v > max) {
    return false;
  }
  *out = v;
  return true;
}

/* --- Command line ------------------------------------------------------------------- */

enum opt_id {
  OPT_OUT,
  OPT_CA,
  OPT_TRUST_DOMAIN,
  OPT_NAME,
  OPT_KEY_TYPE,
  OPT_DAYS,
  OPT_HOURS,
  OPT_NOT_BEFORE,
  OPT_NOT_AFTER,
  OPT_SPIFFE_ID,
  OPT_DNS,
  OPT_INTERMEDIATE,
};

static const struct {
  const char *name;
  enum opt_id id;
  unsigned cmds; /* A mask of the commands that take it. */
  bool takes_value;
} kOptions[] = {
    {"--out", OPT_OUT, CMD_CA | CMD_ISSUE, true},
    {"--ca", OPT_CA, CMD_ISSUE, true},
    {"--trust-domain", OPT_TRUST_DOMAIN, CMD_CA, true},
    {"--name", OPT_NAME, CMD_CA | CMD_ISSUE, true},
    {"--key-type", OPT_KEY_TYPE, CMD_CA | CMD_ISSUE, true},
    {"--days", OPT_DAYS, CMD_CA | CMD_ISSUE, true},
    {"--hours", OPT_HOURS, CMD_CA | CMD_ISSUE, true},
    {"--not-before", OPT_NOT_BEFORE, CMD_CA | CMD_ISSUE, true},
    {"--not-after", OPT_NOT_AFTER, CMD_CA | CMD_ISSUE, true},
    {"--spiffe-id", OPT_SPIFFE_ID, CMD_ISSUE, true},
    {"--dns", OPT_DNS, CMD_ISSUE, true},
    {"--intermediate", OPT_INTERMEDIATE, CMD_ISSUE, false},
};

/* set_once stores a single-valued option, refusing a second occurrence: a repeated
 * "--out" is more likely a mistake than a wish for the last one to win. */
static bool set_once(const struct cert_opts *o, const char **slot, const char *opt,
                     const char *value) {
  if (*slot != NULL) {
    errorf(o, "%s given more than once", opt);
    return false;
  }
  *slot = value;
  return true;
}

/* apply_option validates one option's value and stores it in |o|. */
static bool apply_option(struct cert_opts *o, enum opt_id id, const char *opt, const char *value) {
  const char *err = NULL;
  if (value == NULL && id != OPT_INTERMEDIATE) {
    return false; /* Only flags come without a value; parse_args makes sure. */
  }
  switch (id) {
    case OPT_OUT:
    case OPT_CA:
      if (value[0] == '\0') {
        errorf(o, "%s: the directory name is empty", opt);
        return false;
      }
      return set_once(o, id == OPT_OUT ? &o->out_dir : &o->ca_dir, opt, value);
    case OPT_TRUST_DOMAIN:
      if (!identity_trust_domain_valid(value)) {
        errorf(o,
               "%s \"%s\": not a valid trust domain (lowercase letters, digits, '.', '-' "
               "and '_', at most 255)",
               opt, value);
        return false;
      }
      return set_once(o, &o->trust_domain, opt, value);
    case OPT_NAME:
      if (value[0] == '\0' || strnlen(value, CERTGEN_CN_MAX + 1) > CERTGEN_CN_MAX) {
        errorf(o, "%s: must be 1 to %d characters", opt, CERTGEN_CN_MAX);
        return false;
      }
      return set_once(o, &o->name, opt, value);
    case OPT_KEY_TYPE:
      for (size_t i = 0; i < sizeof(kKeyTypes) / sizeof(kKeyTypes[0]); i++) {
        if (strcmp(value, kKeyTypes[i].name) == 0) {
          o->key_type = kKeyTypes[i].type;
          return set_once(o, &o->key_type_name, opt, kKeyTypes[i].name);
        }
      }
      errorf(o, "%s \"%s\": must be ecdsa-p256, ecdsa-p384 or rsa-2048", opt, value);
      return false;
    case OPT_DAYS:
    case OPT_HOURS: {
      long *slot = id == OPT_DAYS ? &o->days : &o->hours;
      /* 100 years: beyond that a typo is likelier than a wish. */
      long max = id == OPT_DAYS ? 36500 : 36500L * 24;
      if (*slot != 0) {
        errorf(o, "%s given more than once", opt);
        return false;
      }
      if (!parse_count(value, max, slot)) {
        errorf(o, "%s \"%s\": must be a whole number from 1 to %ld", opt, value, max);
        return false;
      }
      return true;
    }
    case OPT_NOT_BEFORE:
    case OPT_NOT_AFTER: {
      bool *has = id == OPT_NOT_BEFORE ? &o->has_not_before : &o->has_not_after;
      int64_t *slot = id == OPT_NOT_BEFORE ? &o->not_before : &o->not_after;
      if (*has) {
        errorf(o, "%s given more than once", opt);
        return false;
      }
      if (!timefmt_parse_rfc3339(value, slot)) {
        errorf(o, "%s \"%s\": not an RFC 3339 time such as 2030-01-02T03:04:05Z", opt, value);
        return false;
      }
      *has = true;
      return true;
    }
    case OPT_SPIFFE_ID:
      if (!identity_spiffe_valid(value, &err)) {
        errorf(o, "%s \"%s\": invalid SPIFFE ID: %s", opt, value, err);
        return false;
      }
      o->spiffe_ids[o->spiffe_count++] = value;
      return true;
    case OPT_DNS:
      if (!identity_dns_name_valid(value, true, &err)) {
        errorf(o, "%s \"%s\": invalid DNS name: %s", opt, value, err);
        return false;
      }
      o->dns_names[o->dns_count++] = value;
      return true;
    case OPT_INTERMEDIATE:
      o->intermediate = true;
      return true;
  }
  return false;
}

/* parse_args fills |o| from argv[2..]. It returns MTLSD_EXIT_OK to go on,
 * MTLSD_EXIT_USAGE after printing why not, or CERTGEN_HELP_SHOWN after printing the
 * help, which is not an error. */
static int parse_args(struct cert_opts *o, int argc, char **argv) {
  for (int i = 2; i < argc; i++) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      usage(stdout);
      return CERTGEN_HELP_SHOWN;
    }
    if (strncmp(arg, "--", 2) != 0) {
      errorf(o, "unexpected argument \"%s\"", arg);
      return MTLSD_EXIT_USAGE;
    }
    /* "--opt=value" and "--opt value" are both accepted. */
    const char *eq = strchr(arg, '=');
    size_t name_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
    size_t k = 0;
    size_t n_opts = sizeof(kOptions) / sizeof(kOptions[0]);
    while (k < n_opts && (strlen(kOptions[k].name) != name_len ||
                          strncmp(kOptions[k].name, arg, name_len) != 0)) {
      k++;
    }
    if (k == n_opts || (kOptions[k].cmds & o->cmd) == 0) {
      errorf(o, "unknown option \"%.*s\"", (int)name_len, arg);
      return MTLSD_EXIT_USAGE;
    }
    const char *opt = kOptions[k].name;
    const char *value = NULL;
    if (kOptions[k].takes_value) {
      if (eq != NULL) {
        value = eq + 1;
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        errorf(o, "%s needs a value", opt);
        return MTLSD_EXIT_USAGE;
      }
    } else if (eq != NULL) {
      errorf(o, "%s takes no value", opt);
      return MTLSD_EXIT_USAGE;
    }
    if (!apply_option(o, kOptions[k].id, opt, value)) {
      return MTLSD_EXIT_USAGE;
    }
  }

  if (o->out_dir == NULL) {
    errorf(o, "--out DIR is required");
    return MTLSD_EXIT_USAGE;
  }
  if (o->cmd == CMD_ISSUE) {
    if (o->ca_dir == NULL) {
      errorf(o, "--ca DIR is required");
      return MTLSD_EXIT_USAGE;
    }
    if (o->intermediate && o->spiffe_count + o->dns_count > 0) {
      errorf(o, "--intermediate makes a CA, which takes no --spiffe-id or --dns");
      return MTLSD_EXIT_USAGE;
    }
    if (!o->intermediate && o->spiffe_count + o->dns_count == 0) {
      errorf(o, "at least one --spiffe-id or --dns is required");
      return MTLSD_EXIT_USAGE;
    }
  }
  if (o->days != 0 && o->hours != 0) {
    errorf(o, "--days and --hours cannot both be given");
    return MTLSD_EXIT_USAGE;
  }
  if (o->has_not_before && o->has_not_after && (o->days != 0 || o->hours != 0)) {
    errorf(o, "--days/--hours cannot be given with both --not-before and --not-after");
    return MTLSD_EXIT_USAGE;
  }
  return MTLSD_EXIT_OK;
}

/* resolve_validity turns the options into a validity window. A pinned end is kept as
 * given; a free start is a minute ago, unless only --not-after is given and is already
 * past, in which case the window is the default length ending there (an expired
 * certificate, as tests need). */
static bool resolve_validity(const struct cert_opts *o, long default_days, int64_t *out_nb,
                             int64_t *out_na) {
  int64_t now = (int64_t)time(NULL);
  int64_t length = o->hours != 0  ? (int64_t)o->hours * 3600
                   : o->days != 0 ? (int64_t)o->days * 86400
                                  : (int64_t)default_days * 86400;
  int64_t nb, na;
  if (o->has_not_before && o->has_not_after) {
    nb = o->not_before;
    na = o->not_after;
  } else if (o->has_not_before) {
    nb = o->not_before;
    na = nb + length;
  } else if (o->has_not_after) {
    na = o->not_after;
    nb = na > now - CERTGEN_BACKDATE_SECS ? now - CERTGEN_BACKDATE_SECS : na - length;
  } else {
    nb = now - CERTGEN_BACKDATE_SECS;
    na = now + length;
  }
  if (na <= nb) {
    errorf(o,
           "the certificate would end before it starts: --not-after must be later than "
           "--not-before");
    return false;
  }
  if (na >= TIMEFMT_YEAR_10000) {
    errorf(o, "the certificate would end after the year 9999");
    return false;
  }
  *out_nb = nb;
  *out_na = na;
  return true;
}

/* --- Files ---------------------------------------------------------------------------- */

/* dir_create makes |path| and its missing parents, 0755, like "mkdir -p". */
static bool dir_create(const struct cert_opts *o, const char *path) {
  char buf[PATH_MAX];
  size_t len = strnlen(path, sizeof(buf));
  if (len >= sizeof(buf)) {
    errorf(o, "--out %s: path too long", path);
    return false;
  }
  memcpy(buf, path, len + 1);
  for (size_t i = 1; i <= len; i++) {
    if (buf[i] != '/' && buf[i] != '\0') {
      continue;
    }
    char saved = buf[i];
    buf[i] = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
      errorf(o, "--out %s: cannot create %s: %s", path, buf, strerror(errno));
      return false;
    }
    buf[i] = saved;
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    errorf(o, "--out %s: not a directory", path);
    return false;
  }
  return true;
}

/* --- Subcommands ---------------------------------------------------------------------- */

static void print_written(const struct cert_opts *o, const char *what, const char *files,
                          int64_t not_after) {
  char until[32];
  timefmt_rfc3339(until, sizeof(until), not_after);
  printf("%s: wrote %s (%s) to %s: %s, valid until %s\n", o->prefix, what,
         o->key_type_name != NULL ? o->key_type_name : "ecdsa-p256", o->out_dir, files, until);
}

/* make_cert makes the key and certificate |spec| describes, then the output directory
 * they go to; NULL, after saying why, when either fails. */
static struct tls_x509 *make_cert(const struct cert_opts *o, const struct tls_x509_spec *spec) {
  char err[1024];
  struct tls_x509 *made = tls_x509_new(spec, err, sizeof(err));
  if (made == NULL) {
    errorf(o, "%s", err);
    return NULL;
  }
  if (!dir_create(o, o->out_dir)) {
    tls_x509_free(made);
    return NULL;
  }
  return made;
}

static int cmd_ca(const struct cert_opts *o) {
  int ret = MTLSD_EXIT_FAILED;
  struct tls_x509 *made = NULL;
  char err[1024];
  int64_t nb, na;
  if (!resolve_validity(o, 3650, &nb, &na)) {
    return MTLSD_EXIT_USAGE;
  }

  char cn[CERTGEN_CN_MAX + 1];
  if (o->name != NULL) {
    snprintf(cn, sizeof(cn), "%s", o->name);
  } else if (o->trust_domain == NULL ||
             snprintf(cn, sizeof(cn), "%s root CA", o->trust_domain) >= (int)sizeof(cn)) {
    snprintf(cn, sizeof(cn), "mtlsd root CA");
  }
  char td_uri[IDENTITY_MAX];
  const char *uris[1] = {td_uri};
  size_t uri_count = 0;
  if (o->trust_domain != NULL) {
    snprintf(td_uri, sizeof(td_uri), "spiffe://%s", o->trust_domain);
    uri_count = 1;
  }

  const struct tls_x509_spec spec = {
      .key_type = o->key_type,
      .cn = cn,
      .not_before = nb,
      .not_after = na,
      .is_ca = true,
      .path_len = -1,
      .uris = uris,
      .uri_count = uri_count,
  };
  made = make_cert(o, &spec);
  if (made == NULL) {
    goto out;
  }
  if (!tls_x509_write_key(made, o->out_dir, "ca.key", err, sizeof(err)) ||
      !tls_x509_write_cert(made, NULL, o->out_dir, "ca.crt", err, sizeof(err))) {
    errorf(o, "%s", err);
    goto out;
  }
  print_written(o, "a root CA", "ca.crt, ca.key", na);
  ret = MTLSD_EXIT_OK;

out:
  tls_x509_free(made);
  return ret;
}

/* same_dir says whether |a| and |b| both exist and name one directory, however spelt. */
static bool same_dir(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* write_issued writes what "cert issue" made into |o->out_dir|: an intermediate as
 * root.crt, ca.key and ca.crt (so that the directory can be given to "cert issue --ca"),
 * a leaf as ca.crt (the root bundle), tls.key and tls.crt. A leaf signed by an
 * intermediate carries it, so that peers who trust only the root can build the chain;
 * a root is never sent. */
static bool write_issued(const struct cert_opts *o, const struct tls_x509_issuer *is,
                         bool self_signed, const struct tls_x509 *made, char *err, size_t err_len) {
  const char *dir = o->out_dir;
  if (o->intermediate) {
    return tls_x509_issuer_write_bundle(is, dir, "root.crt", err, err_len) &&
           tls_x509_write_key(made, dir, "ca.key", err, err_len) &&
           tls_x509_write_cert(made, NULL, dir, "ca.crt", err, err_len);
  }
  return tls_x509_issuer_write_bundle(is, dir, "ca.crt", err, err_len) &&
         tls_x509_write_key(made, dir, "tls.key", err, err_len) &&
         tls_x509_write_cert(made, self_signed ? NULL : is, dir, "tls.crt", err, err_len);
}

static int cmd_issue(const struct cert_opts *o) {
  int ret = MTLSD_EXIT_FAILED;
  struct tls_x509 *made = NULL;
  char err[1024];
  int64_t nb, na;
  if (!resolve_validity(o, o->intermediate ? 365 : 90, &nb, &na)) {
    return MTLSD_EXIT_USAGE;
  }
  if (same_dir(o->out_dir, o->ca_dir)) {
    errorf(o, "--out and --ca name the same directory, whose CA files would be replaced");
    return MTLSD_EXIT_USAGE;
  }
  struct tls_x509_issuer *is = tls_x509_issuer_load(o->ca_dir, err, sizeof(err));
  if (is == NULL) {
    errorf(o, "--ca %s: %s", o->ca_dir, err);
    return MTLSD_EXIT_FAILED;
  }
  bool self_signed = tls_x509_issuer_self_signed(is);
  if (o->intermediate && !self_signed) {
    /* The intermediate has path length 0, so it can sign leaves and nothing else. */
    errorf(o, "--intermediate: the CA in --ca %s is itself an intermediate; give a root CA",
           o->ca_dir);
    goto out;
  }
  if (o->spiffe_count > 1) {
    fprintf(stderr,
            "%s: warning: %zu --spiffe-id given; the SPIFFE X.509-SVID profile allows "
            "exactly one URI SAN, so peers (mtlsd among them) refuse this certificate\n",
            o->prefix, o->spiffe_count);
  }

  /* The common name is informational (the SANs are the identity), but people read it in
   * "openssl x509 -subject", so it repeats the first DNS name when there is one. */
  const char *cn = o->name;
  if (cn == NULL && o->intermediate) {
    cn = "mtlsd intermediate CA";
  }
  if (cn == NULL && o->dns_count > 0 && strlen(o->dns_names[0]) <= CERTGEN_CN_MAX) {
    cn = o->dns_names[0];
  }

  const struct tls_x509_spec spec = {
      .key_type = o->key_type,
      .cn = cn,
      .issuer = is,
      .not_before = nb,
      .not_after = na,
      .is_ca = o->intermediate,
      .path_len = 0,
      .uris = o->spiffe_ids,
      .uri_count = o->spiffe_count,
      .dns_names = o->dns_names,
      .dns_count = o->dns_count,
  };
  made = make_cert(o, &spec);
  if (made == NULL) {
    goto out;
  }
  if (!write_issued(o, is, self_signed, made, err, sizeof(err))) {
    errorf(o, "%s", err);
    goto out;
  }
  if (o->intermediate) {
    print_written(o, "an intermediate CA", "ca.crt, ca.key, root.crt", na);
  } else {
    print_written(o, "a leaf", "tls.crt, tls.key, ca.crt", na);
  }
  ret = MTLSD_EXIT_OK;

out:
  tls_x509_free(made);
  tls_x509_issuer_free(is);
  return ret;
}

int certgen_main(int argc, char **argv) {
  struct cert_opts o = {.prefix = "cert", .key_type = TLS_X509_ECDSA_P256};
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    bool help = argc >= 2;
    usage(help ? stdout : stderr);
    return help ? MTLSD_EXIT_OK : MTLSD_EXIT_USAGE;
  }
  if (strcmp(argv[1], "ca") == 0) {
    o.cmd = CMD_CA;
    o.prefix = "cert ca";
  } else if (strcmp(argv[1], "issue") == 0) {
    o.cmd = CMD_ISSUE;
    o.prefix = "cert issue";
  } else {
    errorf(&o, "unknown subcommand \"%s\" (want ca or issue)", argv[1]);
    usage(stderr);
    return MTLSD_EXIT_USAGE;
  }

  /* Each repeatable option can occur at most once per argument. */
  o.spiffe_ids = calloc((size_t)argc, sizeof(*o.spiffe_ids));
  o.dns_names = calloc((size_t)argc, sizeof(*o.dns_names));
  int ret;
  if (o.spiffe_ids == NULL || o.dns_names == NULL) {
    errorf(&o, "out of memory");
    ret = MTLSD_EXIT_FAILED;
    goto out;
  }
  ret = parse_args(&o, argc, argv);
  if (ret == CERTGEN_HELP_SHOWN) {
    ret = MTLSD_EXIT_OK;
    goto out;
  }
  if (ret != MTLSD_EXIT_OK) {
    usage(stderr);
    goto out;
  }
  ret = o.cmd == CMD_CA ? cmd_ca(&o) : cmd_issue(&o);
  if (ret == MTLSD_EXIT_USAGE) {
    usage(stderr);
  }

out:
  free(o.spiffe_ids);
  free(o.dns_names);
  return ret;
}
