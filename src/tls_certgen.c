/* tls_certgen: the development CA behind "mtlsd cert ca" and "mtlsd cert issue".
 *
 * It writes the Kubernetes/cert-manager layout that mtlsd reads (SPEC section 4): a root
 * CA (ca.crt, ca.key), leaves (tls.crt with the leaf first, tls.key, ca.crt as the trust
 * bundle) and optionally one level of intermediate CA. Every key is PKCS#8 PEM, every file
 * is replaced atomically (temporary file, fsync, rename), and keys are created 0600 from
 * the start, so that a watcher or a reader never sees a torn or world-readable file.
 *
 * The certificates follow the SPIFFE X.509-SVID profile: the identity is the URI SAN,
 * leaves are CA:FALSE with digitalSignature and both server and client auth, and CA
 * certificates carry only keyCertSign and cRLSign. Options that make a certificate
 * already expired or not yet valid exist because the tests of mtlsd itself need them. */
#include "mtlsd/certgen.h"
#include "mtlsd/log.h"
#include "mtlsd/timefmt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtlsd/exit.h"
#include "mtlsd/file.h"
#include "mtlsd/identity.h"
#include "tls_internal.h"

/* Inputs are PEM files of a few KiB; a bigger one is a wrong path, not a real CA. */
#define CERTGEN_FILE_MAX (1 << 20)
/* X.520 caps a commonName at 64 characters, and BoringSSL refuses longer ones. */
#define CERTGEN_CN_MAX 64
/* Certificates start this many seconds in the past, so that a peer whose clock is a
 * little behind does not see a certificate that is "not yet valid". */
#define CERTGEN_BACKDATE_SECS 60
#define CERTGEN_SERIAL_LEN 16

/* Not an exit code: parse_args printed --help. */
enum { CERTGEN_HELP_SHOWN = -1 };

enum key_type { KEY_ECDSA_P256, KEY_ECDSA_P384, KEY_RSA_2048 };

static const struct {
  const char *name;
  enum key_type type;
} kKeyTypes[] = {
    {"ecdsa-p256", KEY_ECDSA_P256},
    {"ecdsa-p384", KEY_ECDSA_P384},
    {"rsa-2048", KEY_RSA_2048},
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
  enum key_type key_type;
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

/* What a new certificate is made of; the issuer fields are NULL for a self-signed one. */
struct cert_spec {
  X509_NAME *subject;   /* Borrowed. */
  EVP_PKEY *key;        /* Borrowed: the subject's key pair. */
  X509 *issuer_cert;    /* Borrowed, or NULL. */
  EVP_PKEY *issuer_key; /* Borrowed, or NULL. */
  int64_t not_before;
  int64_t not_after;
  bool is_ca;
  long path_len; /* For a CA: -1 for no limit. */
  const char *const *uris;
  size_t uri_count;
  const char *const *dns_names;
  size_t dns_count;
};

/* The CA that signs in "cert issue", loaded from --ca DIR. */
struct issuer {
  X509 *cert; /* The certificate in DIR/ca.crt that matches DIR/ca.key. */
  EVP_PKEY *key;
  bool self_signed;
  uint8_t *bundle; /* The root bundle that goes to the output ca.crt. */
  size_t bundle_len;
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

/* ssl_errorf reports a failed BoringSSL call with the library's first queued reason,
 * and empties the queue so that a later message does not inherit it. */
static void ssl_errorf(const struct cert_opts *o, const char *what) {
  char reason[256] = "unknown error";
  uint32_t code = ERR_get_error();
  if (code != 0) {
    ERR_error_string_n(code, reason, sizeof(reason));
  }
  ERR_clear_error();
  errorf(o, "%s: %s", what, reason);
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

/* file_read reads a whole file into a new buffer that the caller frees with
 * free_secret. On failure it returns false with |*why| saying what is wrong. */
static bool file_read(const char *path, uint8_t **out, size_t *out_len, const char **why) {
  int r = file_read_all(path, CERTGEN_FILE_MAX, FILE_REGULAR_ONLY, out, out_len);
  *why = r != 0 ? file_error_string(r) : NULL;
  return r == 0;
}

static void free_secret(uint8_t *buf, size_t len) {
  if (buf != NULL) {
    OPENSSL_cleanse(buf, len);
    free(buf);
  }
}

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

/* write_file replaces DIR/NAME with |data| (see file_write_atomic), saying what failed. */
static bool write_file(const struct cert_opts *o, const char *dir, const char *name,
                       const uint8_t *data, size_t len, mode_t mode) {
  const char *step = NULL;
  int r = file_write_atomic(dir, name, data, len, mode, &step);
  if (r != 0) {
    errorf(o, "cannot write %s/%s (%s): %s", dir, name, step, strerror(-r));
  }
  return r == 0;
}

/* bio_contents points |*out| at a memory BIO's bytes, which the BIO keeps owning. */
static bool bio_contents(BIO *bio, const uint8_t **out, size_t *out_len) {
  return BIO_mem_contents(bio, out, out_len) != 0;
}

/* write_certs writes |certs| (in order) as PEM to DIR/NAME, mode 0644. */
static bool write_certs(const struct cert_opts *o, const char *dir, const char *name,
                        X509 *const *certs, size_t count) {
  BIO *bio = BIO_new(BIO_s_mem());
  bool ok = bio != NULL;
  for (size_t i = 0; ok && i < count; i++) {
    ok = PEM_write_bio_X509(bio, certs[i]) != 0;
  }
  const uint8_t *data;
  size_t len;
  if (!ok || !bio_contents(bio, &data, &len)) {
    ssl_errorf(o, "encoding a certificate");
    BIO_free(bio);
    return false;
  }
  ok = write_file(o, dir, name, data, len, 0644);
  BIO_free(bio);
  return ok;
}

/* write_key writes |key| as unencrypted PKCS#8 PEM to DIR/NAME, mode 0600. BoringSSL
 * zeroes the memory BIO's buffer when it frees it. */
static bool write_key(const struct cert_opts *o, const char *dir, const char *name, EVP_PKEY *key) {
  BIO *bio = BIO_new(BIO_s_mem());
  const uint8_t *data;
  size_t len;
  if (bio == NULL || !PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) ||
      !bio_contents(bio, &data, &len)) {
    ssl_errorf(o, "encoding the private key");
    BIO_free(bio);
    return false;
  }
  bool ok = write_file(o, dir, name, data, len, 0600);
  BIO_free(bio);
  return ok;
}

/* --- Keys and certificates ---------------------------------------------------------- */

/* key_generate returns a new key pair that the caller frees, or NULL. */
static EVP_PKEY *key_generate(enum key_type type) {
  EVP_PKEY *key = NULL;
  EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type == KEY_RSA_2048 ? EVP_PKEY_RSA : EVP_PKEY_EC, NULL);
  if (ctx == NULL || !EVP_PKEY_keygen_init(ctx)) {
    goto out;
  }
  bool ok = type == KEY_RSA_2048
                ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048)
                : EVP_PKEY_CTX_set_ec_paramgen_curve_nid(
                      ctx, type == KEY_ECDSA_P384 ? NID_secp384r1 : NID_X9_62_prime256v1);
  if (ok && !EVP_PKEY_keygen(ctx, &key)) {
    key = NULL;
  }
out:
  EVP_PKEY_CTX_free(ctx);
  return key;
}

/* sign_digest picks the hash that matches the signing key's strength; Ed25519 (a CA
 * made elsewhere) signs without a separate digest. */
static const EVP_MD *sign_digest(const EVP_PKEY *key) {
  switch (EVP_PKEY_id(key)) {
    case EVP_PKEY_EC: {
      int bits = EVP_PKEY_bits(key);
      return bits > 384 ? EVP_sha512() : bits > 256 ? EVP_sha384() : EVP_sha256();
    }
    case EVP_PKEY_ED25519:
      return NULL;
    default:
      return EVP_sha256();
  }
}

/* name_new returns a new subject "O=mtlsd, CN=|cn|" (no CN when |cn| is NULL). */
static X509_NAME *name_new(const char *cn) {
  X509_NAME *name = X509_NAME_new();
  if (name == NULL ||
      !X509_NAME_add_entry_by_NID(name, NID_organizationName, MBSTRING_UTF8,
                                  (const uint8_t *)"mtlsd", -1, -1, 0) ||
      (cn != NULL && !X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8,
                                                 (const uint8_t *)cn, -1, -1, 0))) {
    X509_NAME_free(name);
    return NULL;
  }
  return name;
}

/* set_serial gives |cert| a random 16-byte serial (RFC 5280 section 4.1.2.2 allows 20),
 * so that no two runs collide: the top bit clear keeps it positive, and the next one set
 * keeps its DER encoding exactly 16 bytes long. */
static bool set_serial(X509 *cert) {
  uint8_t bytes[CERTGEN_SERIAL_LEN];
  RAND_bytes(bytes, sizeof(bytes));
  bytes[0] = (uint8_t)((bytes[0] & 0x7f) | 0x40);
  BIGNUM *bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
  ASN1_INTEGER *serial = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
  bool ok = serial != NULL && X509_set_serialNumber(cert, serial);
  ASN1_INTEGER_free(serial);
  BN_free(bn);
  return ok;
}

static bool set_validity(X509 *cert, int64_t not_before, int64_t not_after) {
  ASN1_TIME *nb = ASN1_TIME_set(NULL, (time_t)not_before);
  ASN1_TIME *na = ASN1_TIME_set(NULL, (time_t)not_after);
  bool ok =
      nb != NULL && na != NULL && X509_set1_notBefore(cert, nb) && X509_set1_notAfter(cert, na);
  ASN1_TIME_free(nb);
  ASN1_TIME_free(na);
  return ok;
}

static bool add_basic_constraints(X509 *cert, bool is_ca, long path_len) {
  BASIC_CONSTRAINTS *bc = BASIC_CONSTRAINTS_new();
  bool ok = bc != NULL;
  if (ok && is_ca) {
    bc->ca = 1;
    if (path_len >= 0) {
      bc->pathlen = ASN1_INTEGER_new();
      ok = bc->pathlen != NULL && ASN1_INTEGER_set(bc->pathlen, path_len);
    }
  }
  ok = ok && X509_add1_ext_i2d(cert, NID_basic_constraints, bc, 1, X509V3_ADD_DEFAULT) == 1;
  BASIC_CONSTRAINTS_free(bc);
  return ok;
}

/* Bit numbers of KeyUsage (RFC 5280 section 4.2.1.3). */
enum {
  KU_BIT_DIGITAL_SIGNATURE = 0,
  KU_BIT_KEY_ENCIPHERMENT = 2,
  KU_BIT_KEY_CERT_SIGN = 5,
  KU_BIT_CRL_SIGN = 6,
};

static bool add_key_usage(X509 *cert, bool is_ca, bool is_rsa) {
  ASN1_BIT_STRING *ku = ASN1_BIT_STRING_new();
  bool ok = ku != NULL;
  if (ok && is_ca) {
    ok = ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_CERT_SIGN, 1) &&
         ASN1_BIT_STRING_set_bit(ku, KU_BIT_CRL_SIGN, 1);
  } else if (ok) {
    /* TLS 1.2's RSA key exchange encrypts to the key; ECDSA keys only sign. */
    ok = ASN1_BIT_STRING_set_bit(ku, KU_BIT_DIGITAL_SIGNATURE, 1) &&
         (!is_rsa || ASN1_BIT_STRING_set_bit(ku, KU_BIT_KEY_ENCIPHERMENT, 1));
  }
  ok = ok && X509_add1_ext_i2d(cert, NID_key_usage, ku, 1, X509V3_ADD_DEFAULT) == 1;
  ASN1_BIT_STRING_free(ku);
  return ok;
}

static bool add_ext_key_usage(X509 *cert) {
  EXTENDED_KEY_USAGE *eku = sk_ASN1_OBJECT_new_null();
  /* OBJ_nid2obj returns static objects, so the stack owns none of its elements. */
  bool ok = eku != NULL && sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_server_auth)) &&
            sk_ASN1_OBJECT_push(eku, OBJ_nid2obj(NID_client_auth)) &&
            X509_add1_ext_i2d(cert, NID_ext_key_usage, eku, 0, X509V3_ADD_DEFAULT) == 1;
  sk_ASN1_OBJECT_free(eku);
  return ok;
}

/* key_id_new returns a new key identifier for |cert|'s public key: the SHA-1 of the
 * subjectPublicKey bits, method (1) of RFC 5280 section 4.2.1.2. */
static ASN1_OCTET_STRING *key_id_new(const X509 *cert) {
  uint8_t md[EVP_MAX_MD_SIZE];
  unsigned md_len = 0;
  ASN1_OCTET_STRING *id = ASN1_OCTET_STRING_new();
  if (id == NULL || !X509_pubkey_digest(cert, EVP_sha1(), md, &md_len) ||
      !ASN1_OCTET_STRING_set(id, md, (int)md_len)) {
    ASN1_OCTET_STRING_free(id);
    return NULL;
  }
  return id;
}

static bool add_subject_key_id(X509 *cert) {
  ASN1_OCTET_STRING *id = key_id_new(cert);
  bool ok = id != NULL &&
            X509_add1_ext_i2d(cert, NID_subject_key_identifier, id, 0, X509V3_ADD_DEFAULT) == 1;
  ASN1_OCTET_STRING_free(id);
  return ok;
}

/* add_authority_key_id names the issuer's key, by the issuer's own subject key
 * identifier when it has one (so chain builders match it), else by the same hash. A
 * NULL |issuer| means |cert| signs itself. */
static bool add_authority_key_id(X509 *cert, X509 *issuer) {
  AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
  if (akid == NULL) {
    return false;
  }
  /* Not X509_get0_subject_key_id(cert) for a root: it would cache the extensions of a
   * certificate that is still being built. */
  const ASN1_OCTET_STRING *ski = issuer != NULL ? X509_get0_subject_key_id(issuer) : NULL;
  akid->keyid =
      ski != NULL ? ASN1_OCTET_STRING_dup(ski) : key_id_new(issuer != NULL ? issuer : cert);
  bool ok = akid->keyid != NULL &&
            X509_add1_ext_i2d(cert, NID_authority_key_identifier, akid, 0, X509V3_ADD_DEFAULT) == 1;
  AUTHORITY_KEYID_free(akid);
  return ok;
}

static bool push_general_name(GENERAL_NAMES *names, int type, const char *value) {
  GENERAL_NAME *gn = GENERAL_NAME_new();
  ASN1_IA5STRING *str = ASN1_IA5STRING_new();
  if (gn == NULL || str == NULL || !ASN1_STRING_set(str, value, (int)strlen(value))) {
    GENERAL_NAME_free(gn);
    ASN1_IA5STRING_free(str);
    return false;
  }
  GENERAL_NAME_set0_value(gn, type, str); /* |gn| owns |str| from here. */
  if (!sk_GENERAL_NAME_push(names, gn)) {
    GENERAL_NAME_free(gn);
    return false;
  }
  return true;
}

static bool add_subject_alt_names(X509 *cert, const struct cert_spec *spec) {
  if (spec->uri_count + spec->dns_count == 0) {
    return true;
  }
  GENERAL_NAMES *names = GENERAL_NAMES_new();
  bool ok = names != NULL;
  for (size_t i = 0; ok && i < spec->uri_count; i++) {
    ok = push_general_name(names, GEN_URI, spec->uris[i]);
  }
  for (size_t i = 0; ok && i < spec->dns_count; i++) {
    ok = push_general_name(names, GEN_DNS, spec->dns_names[i]);
  }
  /* Not critical: the subject is never empty (it always has O=mtlsd). */
  ok = ok && X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1;
  GENERAL_NAMES_free(names);
  return ok;
}

/* cert_build returns a new signed certificate as |spec| describes, which the caller
 * frees, or NULL with the reason on BoringSSL's error queue. */
static X509 *cert_build(const struct cert_spec *spec) {
  X509 *cert = X509_new();
  if (cert == NULL) {
    return NULL;
  }
  bool self_signed = spec->issuer_cert == NULL;
  X509_NAME *issuer_name = self_signed ? spec->subject : X509_get_subject_name(spec->issuer_cert);
  EVP_PKEY *signer = self_signed ? spec->key : spec->issuer_key;
  if (!X509_set_version(cert, X509_VERSION_3) || !set_serial(cert) ||
      !X509_set_subject_name(cert, spec->subject) || !X509_set_issuer_name(cert, issuer_name) ||
      !set_validity(cert, spec->not_before, spec->not_after) || !X509_set_pubkey(cert, spec->key) ||
      !add_basic_constraints(cert, spec->is_ca, spec->path_len) ||
      !add_key_usage(cert, spec->is_ca, EVP_PKEY_id(spec->key) == EVP_PKEY_RSA) ||
      (!spec->is_ca && !add_ext_key_usage(cert)) || !add_subject_key_id(cert) ||
      !add_authority_key_id(cert, spec->issuer_cert) || !add_subject_alt_names(cert, spec) ||
      !X509_sign(cert, signer, sign_digest(signer))) {
    X509_free(cert);
    return NULL;
  }
  return cert;
}

/* --- The CA that signs ---------------------------------------------------------------- */

static void issuer_free(struct issuer *is) {
  X509_free(is->cert);
  EVP_PKEY_free(is->key);
  free(is->bundle);
  memset(is, 0, sizeof(*is));
}

/* certs_parse returns a new stack of the PEM certificates in |data|, which the caller
 * frees with sk_X509_pop_free, or NULL when there is none or one does not parse. */
static STACK_OF(X509) * certs_parse(const uint8_t *data, size_t len) {
  STACK_OF(X509) *certs = tls_pem_parse_certs(data, len);
  if (certs != NULL && sk_X509_num(certs) == 0) {
    sk_X509_free(certs);
    return NULL;
  }
  return certs;
}

static EVP_PKEY *key_parse(const uint8_t *data, size_t len) {
  BIO *bio = BIO_new_mem_buf(data, (int)len);
  /* No password callback: an encrypted key fails instead of prompting. */
  EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  return key;
}

/* is_self_signed says whether |cert| is a root: issued by its own name and signed by its
 * own key. A name match alone is not enough (a cross-signed CA has one too). */
static bool is_self_signed(X509 *cert) {
  if (X509_NAME_cmp(X509_get_subject_name(cert), X509_get_issuer_name(cert)) != 0) {
    return false;
  }
  EVP_PKEY *pub = X509_get_pubkey(cert);
  bool ok = pub != NULL && X509_verify(cert, pub) == 1;
  EVP_PKEY_free(pub);
  ERR_clear_error();
  return ok;
}

/* issuer_load reads the CA in |o->ca_dir| into |is|: the certificate of ca.crt that
 * matches ca.key, that key, and the root bundle to hand out (ca.crt itself for a root,
 * root.crt for an intermediate). On failure it prints why and leaves |is| empty. */
static bool issuer_load(const struct cert_opts *o, struct issuer *is) {
  const char *dir = o->ca_dir;
  char crt_path[PATH_MAX], key_path[PATH_MAX], root_path[PATH_MAX];
  uint8_t *crt = NULL, *key = NULL;
  size_t crt_len = 0, key_len = 0;
  STACK_OF(X509) *certs = NULL;
  memset(is, 0, sizeof(*is));

  if (!file_path_join(crt_path, sizeof(crt_path), dir, "ca.crt") ||
      !file_path_join(key_path, sizeof(key_path), dir, "ca.key") ||
      !file_path_join(root_path, sizeof(root_path), dir, "root.crt")) {
    errorf(o, "--ca %s: path too long", dir);
    return false;
  }
  const char *why;
  if (!file_read(crt_path, &crt, &crt_len, &why)) {
    errorf(o, "--ca %s: cannot read %s: %s", dir, crt_path, why);
    goto err;
  }
  if (!file_read(key_path, &key, &key_len, &why)) {
    errorf(o, "--ca %s: cannot read %s: %s", dir, key_path, why);
    goto err;
  }
  certs = certs_parse(crt, crt_len);
  if (certs == NULL) {
    ERR_clear_error();
    errorf(o, "--ca %s: %s: not a PEM certificate file", dir, crt_path);
    goto err;
  }
  is->key = key_parse(key, key_len);
  if (is->key == NULL) {
    ERR_clear_error();
    errorf(o, "--ca %s: %s: not an unencrypted PEM private key", dir, key_path);
    goto err;
  }
  /* During a CA rotation ca.crt may hold several CAs; the one that signs is the one
   * whose key we have. */
  for (size_t i = 0; i < sk_X509_num(certs); i++) {
    X509 *cert = sk_X509_value(certs, i);
    if (X509_check_private_key(cert, is->key)) {
      is->cert = cert;
      X509_up_ref(cert);
      break;
    }
  }
  ERR_clear_error();
  if (is->cert == NULL) {
    errorf(o, "--ca %s: %s matches no certificate in %s", dir, key_path, crt_path);
    goto err;
  }
  if (X509_check_ca(is->cert) <= 0) {
    errorf(o, "--ca %s: %s: the certificate is not a CA (no basicConstraints CA:TRUE)", dir,
           crt_path);
    goto err;
  }
  is->self_signed = is_self_signed(is->cert);
  if (is->self_signed) {
    is->bundle = crt;
    is->bundle_len = crt_len;
    crt = NULL;
  } else if (!file_read(root_path, &is->bundle, &is->bundle_len, &why)) {
    errorf(o,
           "--ca %s: the CA is an intermediate (not self-signed), and its root bundle %s "
           "cannot be read: %s",
           dir, root_path, why);
    goto err;
  }
  free(crt);
  free_secret(key, key_len);
  sk_X509_pop_free(certs, X509_free);
  return true;

err:
  free(crt);
  free_secret(key, key_len);
  sk_X509_pop_free(certs, X509_free);
  issuer_free(is);
  return false;
}

/* --- Subcommands ---------------------------------------------------------------------- */

static void print_written(const struct cert_opts *o, const char *what, const char *files,
                          int64_t not_after) {
  char until[32];
  timefmt_rfc3339(until, sizeof(until), not_after);
  printf("%s: wrote %s (%s) to %s: %s, valid until %s\n", o->prefix, what,
         o->key_type_name != NULL ? o->key_type_name : "ecdsa-p256", o->out_dir, files, until);
}

static int cmd_ca(const struct cert_opts *o) {
  int ret = MTLSD_EXIT_FAILED;
  EVP_PKEY *key = NULL;
  X509_NAME *subject = NULL;
  X509 *cert = NULL;
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

  key = key_generate(o->key_type);
  if (key == NULL) {
    ssl_errorf(o, "generating the key");
    goto out;
  }
  subject = name_new(cn);
  if (subject == NULL) {
    ssl_errorf(o, "building the subject name");
    goto out;
  }
  const struct cert_spec spec = {
      .subject = subject,
      .key = key,
      .not_before = nb,
      .not_after = na,
      .is_ca = true,
      .path_len = -1,
      .uris = uris,
      .uri_count = uri_count,
  };
  cert = cert_build(&spec);
  if (cert == NULL) {
    ssl_errorf(o, "building the CA certificate");
    goto out;
  }
  if (!dir_create(o, o->out_dir) || !write_key(o, o->out_dir, "ca.key", key) ||
      !write_certs(o, o->out_dir, "ca.crt", &cert, 1)) {
    goto out;
  }
  print_written(o, "a root CA", "ca.crt, ca.key", na);
  ret = MTLSD_EXIT_OK;

out:
  X509_free(cert);
  X509_NAME_free(subject);
  EVP_PKEY_free(key);
  return ret;
}

/* same_dir says whether |a| and |b| both exist and name one directory, however spelt. */
static bool same_dir(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int cmd_issue(const struct cert_opts *o) {
  int ret = MTLSD_EXIT_FAILED;
  struct issuer is = {0};
  EVP_PKEY *key = NULL;
  X509_NAME *subject = NULL;
  X509 *cert = NULL;
  int64_t nb, na;
  if (!resolve_validity(o, o->intermediate ? 365 : 90, &nb, &na)) {
    return MTLSD_EXIT_USAGE;
  }
  if (same_dir(o->out_dir, o->ca_dir)) {
    errorf(o, "--out and --ca name the same directory, whose CA files would be replaced");
    return MTLSD_EXIT_USAGE;
  }
  if (!issuer_load(o, &is)) {
    return MTLSD_EXIT_FAILED;
  }
  if (o->intermediate && !is.self_signed) {
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

  key = key_generate(o->key_type);
  if (key == NULL) {
    ssl_errorf(o, "generating the key");
    goto out;
  }
  subject = name_new(cn);
  if (subject == NULL) {
    ssl_errorf(o, "building the subject name");
    goto out;
  }
  const struct cert_spec spec = {
      .subject = subject,
      .key = key,
      .issuer_cert = is.cert,
      .issuer_key = is.key,
      .not_before = nb,
      .not_after = na,
      .is_ca = o->intermediate,
      .path_len = 0,
      .uris = o->spiffe_ids,
      .uri_count = o->spiffe_count,
      .dns_names = o->dns_names,
      .dns_count = o->dns_count,
  };
  cert = cert_build(&spec);
  if (cert == NULL) {
    ssl_errorf(o, "signing the certificate");
    goto out;
  }
  if (!dir_create(o, o->out_dir)) {
    goto out;
  }

  if (o->intermediate) {
    if (!write_file(o, o->out_dir, "root.crt", is.bundle, is.bundle_len, 0644) ||
        !write_key(o, o->out_dir, "ca.key", key) ||
        !write_certs(o, o->out_dir, "ca.crt", &cert, 1)) {
      goto out;
    }
    print_written(o, "an intermediate CA", "ca.crt, ca.key, root.crt", na);
  } else {
    /* A leaf signed by an intermediate carries it, so that peers who trust only the
     * root can build the chain; a root is never sent. */
    X509 *chain[2] = {cert, is.cert};
    size_t chain_len = is.self_signed ? 1 : 2;
    if (!write_file(o, o->out_dir, "ca.crt", is.bundle, is.bundle_len, 0644) ||
        !write_key(o, o->out_dir, "tls.key", key) ||
        !write_certs(o, o->out_dir, "tls.crt", chain, chain_len)) {
      goto out;
    }
    print_written(o, "a leaf", "tls.crt, tls.key, ca.crt", na);
  }
  ret = MTLSD_EXIT_OK;

out:
  X509_free(cert);
  X509_NAME_free(subject);
  EVP_PKEY_free(key);
  issuer_free(&is);
  return ret;
}

int certgen_main(int argc, char **argv) {
  struct cert_opts o = {.prefix = "cert", .key_type = KEY_ECDSA_P256};
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
