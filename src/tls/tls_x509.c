/* tls_x509: key pairs, certificates, their PEM files and the signing CA of "mtlsd cert"
 * (see mtlsd/tls_x509.h; the command itself is src/cmd_cert.c).
 *
 * Every key is PKCS#8 PEM, every file is replaced atomically (temporary file, fsync,
 * rename), and keys are created 0600 from the start, so that a watcher or a reader never
 * sees a torn or world-readable file.
 *
 * The certificates follow the SPIFFE X.509-SVID profile: the identity is the URI SAN,
 * leaves are CA:FALSE with digitalSignature and both server and client auth, and CA
 * certificates carry only keyCertSign and cRLSign.
 *
 * A struct tls_x509 owns its key and certificate; a struct tls_x509_issuer owns its
 * certificate, key and bundle. Buffers that held a key are wiped before they are freed
 * (tls_pem_file_free; BoringSSL wipes its own memory BIOs). */
#include "mtlsd/tls/tls_x509.h"

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/nid.h>
#include <openssl/obj.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "mtlsd/base/file.h"
#include "tls_internal.h"

/* RFC 5280 section 4.1.2.2 allows serials of up to 20 bytes. */
#define CERT_SERIAL_LEN 16

/* The CA that signs, loaded from a directory (--ca DIR of "cert issue"). */
struct tls_x509_issuer {
  X509 *cert; /* The certificate in DIR/ca.crt that matches DIR/ca.key. */
  EVP_PKEY *key;
  bool self_signed;
  uint8_t *bundle; /* The root bundle that goes to the output ca.crt. */
  size_t bundle_len;
};

/* A new key pair and its certificate; owns both. */
struct tls_x509 {
  EVP_PKEY *key;
  X509 *cert;
};

/* ssl_error writes "|what|: " and BoringSSL's first queued reason into |err|, and
 * empties the queue so that a later message does not inherit it. */
static void ssl_error(char *err, size_t err_len, const char *what) {
  char reason[256] = "unknown error";
  uint32_t code = ERR_get_error();
  if (code != 0) {
    ERR_error_string_n(code, reason, sizeof(reason));
  }
  ERR_clear_error();
  snprintf(err, err_len, "%s: %s", what, reason);
}

/* --- Files ---------------------------------------------------------------------------- */

/* file_read reads a CA file (see tls_pem_file_read); on failure |*why| says what is
 * wrong. */
static bool file_read(const char *path, uint8_t **out, size_t *out_len, const char **why) {
  int r = tls_pem_file_read(path, out, out_len);
  *why = r != 0 ? file_error_string(r) : NULL;
  return r == 0;
}

/* write_file replaces DIR/NAME with |data| (see file_write_atomic), saying what failed. */
static bool write_file(const char *dir, const char *name, const uint8_t *data, size_t len,
                       mode_t mode, char *err, size_t err_len) {
  const char *step = NULL;
  int r = file_write_atomic(dir, name, data, len, mode, &step);
  if (r != 0) {
    snprintf(err, err_len, "cannot write %s/%s (%s): %s", dir, name, step, strerror(-r));
  }
  return r == 0;
}

/* bio_contents points |*out| at a memory BIO's bytes, which the BIO keeps owning. */
static bool bio_contents(BIO *bio, const uint8_t **out, size_t *out_len) {
  return BIO_mem_contents(bio, out, out_len) != 0;
}

/* write_certs writes |certs| (in order) as PEM to DIR/NAME, mode 0644. */
static bool write_certs(const char *dir, const char *name, X509 *const *certs, size_t count,
                        char *err, size_t err_len) {
  BIO *bio = BIO_new(BIO_s_mem());
  bool ok = bio != NULL;
  for (size_t i = 0; ok && i < count; i++) {
    ok = PEM_write_bio_X509(bio, certs[i]) != 0;
  }
  const uint8_t *data;
  size_t len;
  if (!ok || !bio_contents(bio, &data, &len)) {
    ssl_error(err, err_len, "encoding a certificate");
    BIO_free(bio);
    return false;
  }
  ok = write_file(dir, name, data, len, 0644, err, err_len);
  BIO_free(bio);
  return ok;
}

/* write_key writes |key| as unencrypted PKCS#8 PEM to DIR/NAME, mode 0600. BoringSSL
 * zeroes the memory BIO's buffer when it frees it. */
static bool write_key(const char *dir, const char *name, EVP_PKEY *key, char *err, size_t err_len) {
  BIO *bio = BIO_new(BIO_s_mem());
  const uint8_t *data;
  size_t len;
  if (bio == NULL || !PEM_write_bio_PKCS8PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) ||
      !bio_contents(bio, &data, &len)) {
    ssl_error(err, err_len, "encoding the private key");
    BIO_free(bio);
    return false;
  }
  bool ok = write_file(dir, name, data, len, 0600, err, err_len);
  BIO_free(bio);
  return ok;
}

/* --- Keys and certificates ---------------------------------------------------------- */

/* key_generate returns a new key pair that the caller frees, or NULL. */
static EVP_PKEY *key_generate(enum tls_x509_key_type type) {
  EVP_PKEY *key = NULL;
  EVP_PKEY_CTX *ctx =
      EVP_PKEY_CTX_new_id(type == TLS_X509_RSA_2048 ? EVP_PKEY_RSA : EVP_PKEY_EC, NULL);
  if (ctx == NULL || !EVP_PKEY_keygen_init(ctx)) {
    goto out;
  }
  bool ok = type == TLS_X509_RSA_2048
                ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 2048)
                : EVP_PKEY_CTX_set_ec_paramgen_curve_nid(
                      ctx, type == TLS_X509_ECDSA_P384 ? NID_secp384r1 : NID_X9_62_prime256v1);
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

/* set_serial gives |cert| a random 16-byte serial (CERT_SERIAL_LEN),
 * so that no two runs collide: the top bit clear keeps it positive, and the next one set
 * keeps its DER encoding exactly 16 bytes long. */
static bool set_serial(X509 *cert) {
  uint8_t bytes[CERT_SERIAL_LEN];
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

static bool add_subject_alt_names(X509 *cert, const struct tls_x509_spec *spec) {
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

/* cert_build returns a new signed certificate for |key| as |spec| describes, with the
 * subject |subject|, which the caller frees, or NULL with the reason on BoringSSL's error
 * queue. */
static X509 *cert_build(const struct tls_x509_spec *spec, X509_NAME *subject, EVP_PKEY *key) {
  X509 *cert = X509_new();
  if (cert == NULL) {
    return NULL;
  }
  X509 *issuer_cert = spec->issuer != NULL ? spec->issuer->cert : NULL;
  bool self_signed = issuer_cert == NULL;
  X509_NAME *issuer_name = self_signed ? subject : X509_get_subject_name(issuer_cert);
  EVP_PKEY *signer = self_signed ? key : spec->issuer->key;
  if (!X509_set_version(cert, X509_VERSION_3) || !set_serial(cert) ||
      !X509_set_subject_name(cert, subject) || !X509_set_issuer_name(cert, issuer_name) ||
      !set_validity(cert, spec->not_before, spec->not_after) || !X509_set_pubkey(cert, key) ||
      !add_basic_constraints(cert, spec->is_ca, spec->path_len) ||
      !add_key_usage(cert, spec->is_ca, EVP_PKEY_id(key) == EVP_PKEY_RSA) ||
      (!spec->is_ca && !add_ext_key_usage(cert)) || !add_subject_key_id(cert) ||
      !add_authority_key_id(cert, issuer_cert) || !add_subject_alt_names(cert, spec) ||
      !X509_sign(cert, signer, sign_digest(signer))) {
    X509_free(cert);
    return NULL;
  }
  return cert;
}

/* --- The CA that signs ---------------------------------------------------------------- */

static void issuer_clear(struct tls_x509_issuer *is) {
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

/* issuer_load reads the CA in |dir| into |is| (see tls_x509_issuer_load). On failure
 * it writes why into |err| and leaves |is| empty. */
static bool issuer_load(const char *dir, struct tls_x509_issuer *is, char *err, size_t err_len) {
  char crt_path[PATH_MAX], key_path[PATH_MAX], root_path[PATH_MAX];
  uint8_t *crt = NULL, *key = NULL;
  size_t crt_len = 0, key_len = 0;
  STACK_OF(X509) *certs = NULL;
  memset(is, 0, sizeof(*is));

  if (!file_path_join(crt_path, sizeof(crt_path), dir, "ca.crt") ||
      !file_path_join(key_path, sizeof(key_path), dir, "ca.key") ||
      !file_path_join(root_path, sizeof(root_path), dir, "root.crt")) {
    snprintf(err, err_len, "path too long");
    return false;
  }
  const char *why;
  if (!file_read(crt_path, &crt, &crt_len, &why)) {
    snprintf(err, err_len, "cannot read %s: %s", crt_path, why);
    goto err;
  }
  if (!file_read(key_path, &key, &key_len, &why)) {
    snprintf(err, err_len, "cannot read %s: %s", key_path, why);
    goto err;
  }
  certs = certs_parse(crt, crt_len);
  if (certs == NULL) {
    ERR_clear_error();
    snprintf(err, err_len, "%s: not a PEM certificate file", crt_path);
    goto err;
  }
  is->key = tls_pem_parse_key(key, key_len);
  if (is->key == NULL) {
    ERR_clear_error();
    snprintf(err, err_len, "%s: not an unencrypted PEM private key", key_path);
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
    snprintf(err, err_len, "%s matches no certificate in %s", key_path, crt_path);
    goto err;
  }
  if (X509_check_ca(is->cert) <= 0) {
    snprintf(err, err_len, "%s: the certificate is not a CA (no basicConstraints CA:TRUE)",
             crt_path);
    goto err;
  }
  is->self_signed = is_self_signed(is->cert);
  if (is->self_signed) {
    is->bundle = crt;
    is->bundle_len = crt_len;
    crt = NULL;
  } else if (!file_read(root_path, &is->bundle, &is->bundle_len, &why)) {
    snprintf(err, err_len,
             "the CA is an intermediate (not self-signed), and its root bundle %s cannot be "
             "read: %s",
             root_path, why);
    goto err;
  }
  free(crt);
  tls_pem_file_free(key, key_len);
  sk_X509_pop_free(certs, X509_free);
  return true;

err:
  free(crt);
  tls_pem_file_free(key, key_len);
  sk_X509_pop_free(certs, X509_free);
  issuer_clear(is);
  return false;
}

/* --- The API of mtlsd/tls_x509.h ------------------------------------------------------ */

struct tls_x509 *tls_x509_new(const struct tls_x509_spec *spec, char *err, size_t err_len) {
  struct tls_x509 *x = calloc(1, sizeof(*x));
  X509_NAME *subject = NULL;
  if (x == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  x->key = key_generate(spec->key_type);
  if (x->key == NULL) {
    ssl_error(err, err_len, "generating the key");
    goto err;
  }
  subject = name_new(spec->cn);
  if (subject == NULL) {
    ssl_error(err, err_len, "building the subject name");
    goto err;
  }
  x->cert = cert_build(spec, subject, x->key);
  if (x->cert == NULL) {
    ssl_error(err, err_len,
              spec->issuer == NULL ? "building the CA certificate" : "signing the certificate");
    goto err;
  }
  X509_NAME_free(subject);
  return x;
err:
  X509_NAME_free(subject);
  tls_x509_free(x);
  return NULL;
}

void tls_x509_free(struct tls_x509 *x) {
  if (x == NULL) {
    return;
  }
  X509_free(x->cert);
  EVP_PKEY_free(x->key);
  free(x);
}

bool tls_x509_write_key(const struct tls_x509 *x, const char *dir, const char *name, char *err,
                        size_t err_len) {
  return write_key(dir, name, x->key, err, err_len);
}

bool tls_x509_write_cert(const struct tls_x509 *x, const struct tls_x509_issuer *issuer,
                         const char *dir, const char *name, char *err, size_t err_len) {
  X509 *chain[2] = {x->cert, issuer != NULL ? issuer->cert : NULL};
  return write_certs(dir, name, chain, issuer != NULL ? 2 : 1, err, err_len);
}

struct tls_x509_issuer *tls_x509_issuer_load(const char *dir, char *err, size_t err_len) {
  struct tls_x509_issuer *is = malloc(sizeof(*is));
  if (is == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }
  if (!issuer_load(dir, is, err, err_len)) {
    free(is);
    return NULL;
  }
  return is;
}

bool tls_x509_issuer_self_signed(const struct tls_x509_issuer *is) {
  return is->self_signed;
}

bool tls_x509_issuer_write_bundle(const struct tls_x509_issuer *is, const char *dir,
                                  const char *name, char *err, size_t err_len) {
  return write_file(dir, name, is->bundle, is->bundle_len, 0644, err, err_len);
}

void tls_x509_issuer_free(struct tls_x509_issuer *is) {
  if (is == NULL) {
    return;
  }
  issuer_clear(is);
  free(is);
}
