/* tls_x509: the BoringSSL half of "mtlsd cert" (src/cmd_cert.c): key pairs,
 * certificates in the SPIFFE X.509-SVID profile, their PEM files, and the CA that signs
 * them. The command keeps the command line and the wording; everything that needs
 * <openssl/...> is here, so that the command includes none of it. Nothing here runs in
 * the proxy.
 *
 * Owns two kinds of object, opaque to the caller:
 *   struct tls_x509_issuer  the CA of a directory (its certificate, key and root bundle):
 *                           tls_x509_issuer_load makes one, tls_x509_issuer_free frees it;
 *   struct tls_x509         a new key pair and the certificate made for it: tls_x509_new
 *                           makes one, tls_x509_free frees it.
 * Every function that fails writes one line saying what failed into the caller's |err|
 * (|err_len| bytes) and leaves nothing behind. */
#ifndef MTLSD_TLS_X509_H
#define MTLSD_TLS_X509_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tls_x509_key_type { TLS_X509_ECDSA_P256, TLS_X509_ECDSA_P384, TLS_X509_RSA_2048 };

struct tls_x509_issuer;
struct tls_x509;

/* What a new certificate is. The strings are borrowed for the call. */
struct tls_x509_spec {
  enum tls_x509_key_type key_type;
  const char *cn;                       /* Subject commonName; NULL for none (O=mtlsd). */
  const struct tls_x509_issuer *issuer; /* The CA that signs; NULL: self-signed. */
  int64_t not_before;
  int64_t not_after;
  bool is_ca;
  long path_len; /* For a CA: -1 for no limit. */
  const char *const *uris;
  size_t uri_count;
  const char *const *dns_names;
  size_t dns_count;
};

/* tls_x509_new generates a key pair of |spec->key_type| and a certificate for it, signed
 * by |spec->issuer| or by itself, with a random serial, SKI and AKI. Returns NULL on
 * failure, with |err| naming the step ("generating the key: ...", "building the subject
 * name: ...", "building the CA certificate: ..." or "signing the certificate: ..."). */
struct tls_x509 *tls_x509_new(const struct tls_x509_spec *spec, char *err, size_t err_len);

/* tls_x509_free releases |x|; NULL is a no-op. */
void tls_x509_free(struct tls_x509 *x);

/* tls_x509_write_key replaces |dir|/|name| with |x|'s private key as unencrypted PKCS#8
 * PEM, mode 0600 from the start. */
bool tls_x509_write_key(const struct tls_x509 *x, const char *dir, const char *name, char *err,
                        size_t err_len);

/* tls_x509_write_cert replaces |dir|/|name| (mode 0644) with |x|'s certificate as PEM,
 * followed by |issuer|'s certificate unless |issuer| is NULL: a leaf signed by an
 * intermediate carries it, so that peers who trust only the root can build the chain. */
bool tls_x509_write_cert(const struct tls_x509 *x, const struct tls_x509_issuer *issuer,
                         const char *dir, const char *name, char *err, size_t err_len);

/* tls_x509_issuer_load reads the CA in |dir|: the certificate of ca.crt that matches
 * ca.key (during a rotation ca.crt may hold several), that key, and the root bundle to
 * hand out (ca.crt itself for a root, root.crt for an intermediate). Returns NULL on
 * failure; |err| then says why without naming |dir|, which the caller's message does. */
struct tls_x509_issuer *tls_x509_issuer_load(const char *dir, char *err, size_t err_len);

/* tls_x509_issuer_self_signed says whether |is| is a root CA (not an intermediate). */
bool tls_x509_issuer_self_signed(const struct tls_x509_issuer *is);

/* tls_x509_issuer_write_bundle replaces |dir|/|name| (mode 0644) with |is|'s root
 * bundle as it was read. */
bool tls_x509_issuer_write_bundle(const struct tls_x509_issuer *is, const char *dir,
                                  const char *name, char *err, size_t err_len);

/* tls_x509_issuer_free releases |is|; NULL is a no-op. */
void tls_x509_issuer_free(struct tls_x509_issuer *is);

#endif
