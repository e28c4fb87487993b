/* tls_certs: loading and validating one certificate set (leaf chain, key, trust bundle)
 * from the certificate directory, and describing it for /certs.
 *
 * A set is only ever built whole: every check passes or the caller gets NULL and one
 * line saying why, so an invalid rotation can never replace a good set. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/bytestring.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "mtlsd/base/file.h"
#include "mtlsd/base/identity.h"
#include "mtlsd/base/log.h"
#include "mtlsd/base/timefmt.h"
#include "tls_internal.h"

/* Certificate files are small; anything bigger is a mistake, not a bundle. */
enum { CERT_FILE_MAX = 1 << 20 };

int tls_pem_file_read(const char *path, uint8_t **out, size_t *out_len) {
  return file_read_all(path, CERT_FILE_MAX, FILE_REGULAR_ONLY, out, out_len);
}

void tls_pem_file_free(uint8_t *data, size_t len) {
  if (data != NULL) {
    OPENSSL_cleanse(data, len);
    free(data);
  }
}

static pthread_once_t g_pool_once = PTHREAD_ONCE_INIT;
static CRYPTO_BUFFER_POOL *g_pool;

static void pool_init(void) {
  g_pool = CRYPTO_BUFFER_POOL_new();
}

CRYPTO_BUFFER_POOL *tls_buffer_pool(void) {
  pthread_once(&g_pool_once, pool_init);
  return g_pool;
}

bool tls_asn1_time_to_unix(int64_t *out, const ASN1_TIME *t) {
  int days, secs;
  ASN1_TIME *epoch = ASN1_TIME_set(NULL, 0);
  bool ok = epoch != NULL && ASN1_TIME_diff(&days, &secs, epoch, t);
  ASN1_TIME_free(epoch);
  if (ok) {
    *out = (int64_t)days * 86400 + secs;
  }
  return ok;
}

void tls_cert_sha256_hex(char *out, size_t hex_len, const X509 *cert) {
  static const char hex[] = "0123456789abcdef";
  uint8_t digest[SHA256_DIGEST_LENGTH];
  unsigned len = 0;
  if (!X509_digest(cert, EVP_sha256(), digest, &len)) {
    memset(digest, 0, sizeof(digest));
  }
  if (hex_len > (size_t)2 * SHA256_DIGEST_LENGTH) {
    hex_len = (size_t)2 * SHA256_DIGEST_LENGTH;
  }
  for (size_t i = 0; i < hex_len; i++) {
    uint8_t b = digest[i / 2];
    out[i] = hex[i % 2 == 0 ? b >> 4 : b & 0xf];
  }
  out[hex_len] = '\0';
}

/* dup_san returns a SAN's bytes as a new string, or NULL with |*bad| set when they may
 * not name anyone (see identity_san_acceptable) or, without |*bad|, when out of memory. */
static char *dup_san(const ASN1_STRING *s, bool *bad) {
  const unsigned char *data = ASN1_STRING_get0_data(s);
  int len = ASN1_STRING_length(s);
  if (len < 0 || !identity_san_acceptable(data, (size_t)len)) {
    *bad = true;
    return NULL;
  }
  char *out = malloc((size_t)len + 1);
  if (out != NULL) {
    memcpy(out, data, (size_t)len);
    out[len] = '\0';
  }
  return out;
}

void tls_cert_identities_free(struct cert_identities *ids) {
  free(ids->spiffe_id);
  for (size_t i = 0; i < ids->dns_count; i++) {
    free(ids->dns[i]);
  }
  free(ids->dns);
  memset(ids, 0, sizeof(*ids));
}

/* is_ca tells whether |cert| may issue certificates, which a leaf must not. */
static bool is_ca(X509 *cert) {
  return (X509_get_extension_flags(cert) & EXFLAG_CA) != 0 ||
         (X509_get_key_usage(cert) & KU_KEY_CERT_SIGN) != 0;
}

bool tls_cert_identities(struct cert_identities *out, X509 *cert) {
  memset(out, 0, sizeof(*out));
  if (is_ca(cert)) {
    out->invalid = "the leaf is a CA certificate (CA:TRUE or keyCertSign)";
    return true;
  }
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
  if (names == NULL) {
    return true;
  }
  bool ok = true;
  size_t n = sk_GENERAL_NAME_num(names);
  size_t uri_count = 0;
  out->dns = calloc(n > 0 ? n : 1, sizeof(char *));
  if (out->dns == NULL) {
    ok = false;
    goto done;
  }
  for (size_t i = 0; i < n && out->invalid == NULL; i++) {
    const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != GEN_URI && gn->type != GEN_DNS) {
      continue;
    }
    bool bad = false;
    char *name =
        dup_san(gn->type == GEN_URI ? gn->d.uniformResourceIdentifier : gn->d.dNSName, &bad);
    if (bad) {
      out->invalid =
          "a subject alternative name holds control characters, spaces or non-ASCII bytes, "
          "or is longer than 2048 bytes";
      break;
    }
    if (name == NULL) {
      ok = false;
      break;
    }
    if (gn->type == GEN_DNS) {
      out->dns[out->dns_count++] = name;
      continue;
    }
    uri_count++;
    if (strncmp(name, "spiffe://", 9) != 0) {
      free(name);
    } else if (out->spiffe_id != NULL || !identity_spiffe_valid(name, NULL)) {
      out->invalid = out->spiffe_id != NULL ? "an X.509-SVID has exactly one URI SAN"
                                            : "malformed spiffe:// URI SAN";
      free(name);
    } else {
      out->spiffe_id = name;
    }
  }
  /* A SPIFFE ID beside other URIs makes the certificate's identity ambiguous. */
  if (ok && out->invalid == NULL && out->spiffe_id != NULL && uri_count > 1) {
    out->invalid = "an X.509-SVID has exactly one URI SAN";
  }
done:
  GENERAL_NAMES_free(names);
  if (!ok) {
    tls_cert_identities_free(out);
  }
  return ok;
}

/* Adds one file to a set's digest: how reading it ended (0 or a negative errno), its
 * length, then its bytes, so that no two sets of files share a digest by moving bytes
 * from one file to the next. */
static void digest_add_file(SHA256_CTX *sha, int read_result, const uint8_t *data, size_t len) {
  uint8_t head[12];
  uint32_t result = (uint32_t)read_result;
  uint64_t n = len;
  memcpy(head, &result, sizeof(result));
  memcpy(head + sizeof(result), &n, sizeof(n));
  SHA256_Update(sha, head, sizeof(head));
  SHA256_Update(sha, data, len);
}

EVP_PKEY *tls_pem_parse_key(const uint8_t *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  /* No password callback: an encrypted key fails instead of prompting. */
  EVP_PKEY *key = bio != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
  BIO_free(bio);
  return key;
}

STACK_OF(X509) * tls_pem_parse_certs(const uint8_t *pem, size_t len) {
  STACK_OF(X509) *certs = sk_X509_new_null();
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  if (certs == NULL || bio == NULL) {
    goto err;
  }
  for (;;) {
    X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    if (cert == NULL) {
      uint32_t e = ERR_peek_last_error();
      if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
        ERR_clear_error();
        break;
      }
      goto err;
    }
    if (!sk_X509_push(certs, cert)) {
      X509_free(cert);
      goto err;
    }
  }
  BIO_free(bio);
  return certs;
err:
  ERR_clear_error();
  BIO_free(bio);
  sk_X509_pop_free(certs, X509_free);
  return NULL;
}

void tls_certset_free(struct tls_certset *set) {
  if (set == NULL) {
    return;
  }
  for (size_t i = 0; i < set->chain_len; i++) {
    CRYPTO_BUFFER_free(set->chain[i]);
  }
  free(set->chain);
  EVP_PKEY_free(set->key);
  X509_free(set->leaf);
  sk_X509_pop_free(set->bundle, X509_free);
  X509_STORE_free(set->store);
  free(set->identity);
  free(set);
}

static bool chain_to_buffers(struct tls_certset *set, STACK_OF(X509) * certs) {
  size_t n = sk_X509_num(certs);
  set->chain = calloc(n, sizeof(CRYPTO_BUFFER *));
  if (set->chain == NULL) {
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    uint8_t *der = NULL;
    int len = i2d_X509(sk_X509_value(certs, i), &der);
    if (len <= 0) {
      return false;
    }
    set->chain[i] = CRYPTO_BUFFER_new(der, (size_t)len, tls_buffer_pool());
    OPENSSL_free(der);
    if (set->chain[i] == NULL) {
      return false;
    }
    set->chain_len++;
  }
  return true;
}

/* Checks that the leaf chains to the bundle through the given intermediates, at now. */
static bool verify_own_chain(struct tls_certset *set, STACK_OF(X509) * certs, const char *cert_name,
                             const char *ca_name, char *err, size_t err_len) {
  STACK_OF(X509) *intermediates = sk_X509_new_null();
  X509_STORE_CTX *ctx = X509_STORE_CTX_new();
  bool ok = false;
  if (intermediates == NULL || ctx == NULL) {
    snprintf(err, err_len, "out of memory");
    goto done;
  }
  for (size_t i = 1; i < sk_X509_num(certs); i++) {
    if (!sk_X509_push(intermediates, sk_X509_value(certs, i))) {
      snprintf(err, err_len, "out of memory");
      goto done;
    }
  }
  if (!X509_STORE_CTX_init(ctx, set->store, set->leaf, intermediates)) {
    snprintf(err, err_len, "out of memory");
    goto done;
  }
  if (X509_verify_cert(ctx) != 1) {
    int code = X509_STORE_CTX_get_error(ctx);
    if (code == X509_V_ERR_CERT_HAS_EXPIRED) {
      snprintf(err, err_len, "%s has expired", cert_name);
    } else if (code == X509_V_ERR_CERT_NOT_YET_VALID) {
      snprintf(err, err_len, "%s is not valid yet", cert_name);
    } else {
      snprintf(err, err_len, "%s does not chain to %s: %s", cert_name, ca_name,
               X509_verify_cert_error_string(code));
    }
    goto done;
  }
  ok = true;
done:
  X509_STORE_CTX_free(ctx);
  sk_X509_free(intermediates);
  ERR_clear_error();
  return ok;
}

/* Builds the trust store of the bundle and checks the leaf's chain against it. */
static bool load_store(struct tls_certset *set, STACK_OF(X509) * certs, const char *cert_name,
                       const char *ca_name, char *err, size_t err_len) {
  set->store = X509_STORE_new();
  if (set->store == NULL) {
    snprintf(err, err_len, "out of memory");
    return false;
  }
  for (size_t i = 0; i < sk_X509_num(set->bundle); i++) {
    if (!X509_STORE_add_cert(set->store, sk_X509_value(set->bundle, i))) {
      ERR_clear_error();
    }
  }
  return verify_own_chain(set, certs, cert_name, ca_name, err, err_len);
}

struct tls_certset *tls_certset_parse(const struct tls_pem_files *files, char *err,
                                      size_t err_len) {
  const char *cert_name = files->cert_name;
  const char *key_name = files->key_name;
  const char *ca_name = files->ca_name;
  const uint8_t *cert_pem = files->cert, *key_pem = files->key, *ca_pem = files->ca;
  size_t cert_len = files->cert_len, key_len = files->key_len, ca_len = files->ca_len;
  STACK_OF(X509) *certs = NULL;
  struct cert_identities ids = {0};
  struct tls_certset *set = calloc(1, sizeof(*set));
  if (set == NULL) {
    snprintf(err, err_len, "out of memory");
    return NULL;
  }

  certs = tls_pem_parse_certs(cert_pem, cert_len);
  if (certs == NULL || sk_X509_num(certs) == 0) {
    snprintf(err, err_len, "%s: no PEM certificate found", cert_name);
    goto err;
  }
  set->leaf = X509_dup(sk_X509_value(certs, 0));
  if (ca_name != NULL) {
    set->bundle = tls_pem_parse_certs(ca_pem, ca_len);
    if (set->bundle == NULL || sk_X509_num(set->bundle) == 0) {
      snprintf(err, err_len, "%s: no PEM certificate found", ca_name);
      goto err;
    }
  }

  set->key = tls_pem_parse_key(key_pem, key_len);
  ERR_clear_error();
  if (set->key == NULL) {
    snprintf(err, err_len, "%s: no PEM private key found", key_name);
    goto err;
  }
  if (set->leaf == NULL || !X509_check_private_key(set->leaf, set->key)) {
    ERR_clear_error();
    snprintf(err, err_len, "%s does not match %s", key_name, cert_name);
    goto err;
  }

  if (ca_name != NULL && !load_store(set, certs, cert_name, ca_name, err, err_len)) {
    goto err;
  }
  if (!tls_asn1_time_to_unix(&set->not_before, X509_get0_notBefore(set->leaf)) ||
      !tls_asn1_time_to_unix(&set->not_after, X509_get0_notAfter(set->leaf))) {
    snprintf(err, err_len, "%s: unreadable validity dates", cert_name);
    goto err;
  }
  /* With a bundle, the chain's verification has checked the dates already. */
  int64_t now = time(NULL);
  if (now > set->not_after || now < set->not_before) {
    snprintf(err, err_len, "%s %s", cert_name,
             now > set->not_after ? "has expired" : "is not valid yet");
    goto err;
  }

  if (!tls_cert_identities(&ids, set->leaf)) {
    snprintf(err, err_len, "out of memory");
    goto err;
  }
  if (ids.invalid != NULL) {
    snprintf(err, err_len, "%s: %s", cert_name, ids.invalid);
    goto err;
  }
  if (ids.spiffe_id == NULL && ids.dns_count == 0) {
    snprintf(err, err_len, "%s has neither a SPIFFE ID nor a DNS SAN", cert_name);
    goto err;
  }
  set->identity = strdup(ids.spiffe_id != NULL ? ids.spiffe_id : ids.dns[0]);
  if (set->identity == NULL || !chain_to_buffers(set, certs)) {
    snprintf(err, err_len, "out of memory");
    goto err;
  }

  SHA256_CTX sha;
  SHA256_Init(&sha);
  digest_add_file(&sha, 0, cert_pem, cert_len);
  digest_add_file(&sha, 0, key_pem, key_len);
  digest_add_file(&sha, 0, ca_pem, ca_len);
  SHA256_Final(set->content_digest, &sha);

  tls_cert_identities_free(&ids);
  sk_X509_pop_free(certs, X509_free);
  return set;

err:
  tls_cert_identities_free(&ids);
  sk_X509_pop_free(certs, X509_free);
  tls_certset_free(set);
  return NULL;
}

/* A set's files as read: contents (NULL for an absent name or a failed read) and how
 * each read ended (0 or a negative errno). */
struct certfiles {
  const char *names[3]; /* Certificate, key, bundle; a NULL name is not read. */
  uint8_t *data[3];
  size_t len[3];
  int result[3];
};

/* Reads the files of |certs| into |f| and their digest into |digest|. */
static void certfiles_read(struct certfiles *f, const struct certs_config *certs,
                           uint8_t digest[TLS_DIGEST_LEN]) {
  *f = (struct certfiles){.names = {certs->cert_file, certs->key_file, certs->ca_file}};
  SHA256_CTX sha;
  SHA256_Init(&sha);
  for (size_t i = 0; i < 3; i++) {
    char path[PATH_MAX];
    if (f->names[i] != NULL) {
      f->result[i] = file_path_join(path, sizeof(path), certs->dir, f->names[i])
                         ? tls_pem_file_read(path, &f->data[i], &f->len[i])
                         : -ENAMETOOLONG;
    }
    digest_add_file(&sha, f->result[i], f->data[i], f->len[i]);
  }
  SHA256_Final(digest, &sha);
}

static void certfiles_release(struct certfiles *f) {
  for (size_t i = 0; i < 3; i++) {
    tls_pem_file_free(f->data[i], f->len[i]); /* One of them is a key. */
  }
}

void tls_certfiles_digest(const struct certs_config *certs, uint8_t out[TLS_DIGEST_LEN]) {
  struct certfiles f;
  certfiles_read(&f, certs, out);
  certfiles_release(&f);
}

struct tls_certset *tls_certset_load(const struct config *cfg, uint8_t digest[TLS_DIGEST_LEN],
                                     char *err, size_t err_len) {
  struct certfiles f;
  uint8_t unused[TLS_DIGEST_LEN];
  certfiles_read(&f, &cfg->certs, digest != NULL ? digest : unused);
  struct tls_certset *set = NULL;
  for (size_t i = 0; i < 3; i++) {
    if (f.result[i] == -EFBIG) {
      snprintf(err, err_len, "%s: larger than 1 MiB", f.names[i]);
      goto out;
    }
    if (f.result[i] == -ENAMETOOLONG) {
      snprintf(err, err_len, "%s: the path is too long", f.names[i]);
      goto out;
    }
    if (f.result[i] != 0) {
      snprintf(err, err_len, "%s: cannot read: %s", f.names[i], file_error_string(f.result[i]));
      goto out;
    }
  }
  struct tls_pem_files files = {
      .cert = f.data[0],
      .key = f.data[1],
      .ca = f.data[2],
      .cert_len = f.len[0],
      .key_len = f.len[1],
      .ca_len = f.len[2],
      .cert_name = f.names[0],
      .key_name = f.names[1],
      .ca_name = f.names[2],
  };
  set = tls_certset_parse(&files, err, err_len);
out:
  certfiles_release(&f);
  return set;
}

const uint8_t *tls_certset_digest(const struct tls_certset *set) {
  return set->content_digest;
}

bool tls_certset_same(const struct tls_certset *a, const struct tls_certset *b) {
  return a != NULL && b != NULL &&
         memcmp(a->content_digest, b->content_digest, sizeof(a->content_digest)) == 0;
}

int64_t tls_certset_not_after(const struct tls_certset *set) {
  return set->not_after;
}

const char *tls_certset_primary_identity(const struct tls_certset *set) {
  return set->identity;
}

/* "O=example, CN=root", the form operators know from openssl's output. */
static char *name_oneline(const X509_NAME *name) {
  BIO *bio = BIO_new(BIO_s_mem());
  char *out = NULL;
  if (bio != NULL &&
      X509_NAME_print_ex(bio, name, 0, XN_FLAG_SEP_CPLUS_SPC | ASN1_STRFLGS_RFC2253) >= 0) {
    const uint8_t *data;
    size_t len;
    /* Not strndup: the BIO's bytes have no terminating NUL, and strndup may look for one
     * past |len| (AddressSanitizer's strict_string_checks reports that read). */
    if (BIO_mem_contents(bio, &data, &len)) {
      out = malloc(len + 1);
    }
    if (out != NULL) {
      memcpy(out, data, len);
      out[len] = '\0';
    }
  }
  BIO_free(bio);
  return out;
}

static void add_cert_common(cJSON *obj, const X509 *cert) {
  char *subject = name_oneline(X509_get_subject_name(cert));
  cJSON_AddStringToObject(obj, "subject", subject != NULL ? subject : "");
  free(subject);
  char fp[65];
  tls_cert_sha256_hex(fp, 64, cert);
  cJSON_AddStringToObject(obj, "sha256", fp);
}

static void add_time(cJSON *obj, const char *key, int64_t t) {
  char buf[32];
  timefmt_rfc3339(buf, sizeof(buf), t);
  cJSON_AddStringToObject(obj, key, buf);
}

bool tls_certset_add_info(cJSON *root, const struct tls_certset *set) {
  cJSON *leaf = cJSON_AddObjectToObject(root, "leaf");
  cJSON *bundle = cJSON_AddArrayToObject(root, "bundle");
  if (leaf == NULL || bundle == NULL) {
    return false;
  }
  struct cert_identities ids;
  if (!tls_cert_identities(&ids, set->leaf)) {
    return false;
  }
  char *subject = name_oneline(X509_get_subject_name(set->leaf));
  cJSON_AddStringToObject(leaf, "subject", subject != NULL ? subject : "");
  free(subject);
  cJSON *idents = cJSON_AddArrayToObject(leaf, "identities");
  if (ids.spiffe_id != NULL) {
    cJSON_AddItemToArray(idents, cJSON_CreateString(ids.spiffe_id));
  }
  for (size_t i = 0; i < ids.dns_count; i++) {
    cJSON_AddItemToArray(idents, cJSON_CreateString(ids.dns[i]));
  }
  tls_cert_identities_free(&ids);

  BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(set->leaf), NULL);
  char *serial_hex = serial != NULL ? BN_bn2hex(serial) : NULL;
  if (serial_hex != NULL) {
    for (char *p = serial_hex; *p != '\0'; p++) {
      *p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
    }
  }
  cJSON_AddStringToObject(leaf, "serial", serial_hex != NULL ? serial_hex : "");
  OPENSSL_free(serial_hex);
  BN_free(serial);
  char fp[65];
  tls_cert_sha256_hex(fp, 64, set->leaf);
  cJSON_AddStringToObject(leaf, "sha256", fp);
  add_time(leaf, "not_before", set->not_before);
  add_time(leaf, "not_after", set->not_after);
  cJSON_AddNumberToObject(leaf, "seconds_to_expiry", (double)(set->not_after - time(NULL)));

  for (size_t i = 0; i < sk_X509_num(set->bundle); i++) {
    const X509 *ca = sk_X509_value(set->bundle, i);
    cJSON *entry = cJSON_CreateObject();
    add_cert_common(entry, ca);
    int64_t not_after = 0;
    tls_asn1_time_to_unix(&not_after, X509_get0_notAfter(ca));
    add_time(entry, "not_after", not_after);
    cJSON_AddItemToArray(bundle, entry);
  }
  return true;
}
