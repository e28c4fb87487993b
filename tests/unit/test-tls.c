/* TLS verification policy and the client session cache, over real handshakes between a
 * client and a server tls_conn on a socketpair, with certificates from certgen: who is
 * admitted (exact IDs, prefixes, trust domain, DNS names), who is refused and why
 * (identity, an untrusted CA, wildcard client certificates), the server identity check,
 * and resumption that never crosses a certificate generation. (The X.509-SVID rules on a
 * peer's certificate are tested end to end in test_security.py: certgen's sets that
 * break them are refused here already when loaded as the client's own.) */
#include "mtlsd/tls/tls.h"

#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "test.h"
#include "test_certgen.h"

static char g_dir[64];

/* Issues a leaf into g_dir/|name| signed by the CA in g_dir/|ca_name|; |sans| alternate
 * --spiffe-id and --dns with their values. */
static void issue(const char *ca_name, const char *name, const char *const *sans) {
  char out[128], ca[128];
  snprintf(out, sizeof(out), "%s/%s", g_dir, name);
  snprintf(ca, sizeof(ca), "%s/%s", g_dir, ca_name);
  const char *args[16] = {"cert", "issue", "--ca", ca, "--out", out};
  size_t n = 6;
  for (; *sans != NULL && n < 14; sans++) {
    args[n++] = *sans;
  }
  CHECK_INTEQ(certgen(args), 0);
}

static void make_certs(void) {
  snprintf(g_dir, sizeof(g_dir), "/tmp/mtlsd-test-tls-XXXXXX");
  CHECK(mkdtemp(g_dir) != NULL);
  const char *cas[] = {"ca", "foreign_ca"};
  for (size_t i = 0; i < 2; i++) {
    char ca[128];
    snprintf(ca, sizeof(ca), "%s/%s", g_dir, cas[i]);
    CHECK_INTEQ(certgen((const char *[]){"cert", "ca", "--out", ca, NULL}), 0);
  }
  issue("ca", "server",
        (const char *[]){"--spiffe-id", "spiffe://cluster.local/ns/a/sa/server", NULL});
  issue("ca", "client",
        (const char *[]){"--spiffe-id", "spiffe://cluster.local/ns/a/sa/client", NULL});
  issue("ca", "other",
        (const char *[]){"--spiffe-id", "spiffe://cluster.local/ns/b/sa/other", NULL});
  issue("ca", "wildcard", (const char *[]){"--dns", "*.example.com", NULL});
  issue("ca", "dns", (const char *[]){"--dns", "api.example.com", NULL});
  /* The same identity as "client", from a CA the server does not trust. */
  issue("foreign_ca", "foreign",
        (const char *[]){"--spiffe-id", "spiffe://cluster.local/ns/a/sa/client", NULL});
  /* ...which itself trusts the server's CA too, so that the refusal is the server's. */
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "cat '%s/ca/ca.crt' >> '%s/foreign/ca.crt'", g_dir, g_dir);
  CHECK(system(cmd) == 0);
}

static void remove_certs(void) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
  CHECK(system(cmd) == 0);
}

/* Contexts for the files in g_dir/|name|, as generation |generation|. */
static struct tls_contexts *contexts(const char *name, uint64_t generation) {
  char json[512], err[512];
  int n = snprintf(json, sizeof(json),
                   "{\"certs\":{\"dir\":\"%s/%s\"},\"listeners\":[{\"name\":\"l\",\"mode\":"
                   "\"inbound\",\"listen\":\"127.0.0.1:1\",\"forward\":\"127.0.0.1:2\"}]}",
                   g_dir, name);
  struct config *cfg = config_parse("t.json", json, (size_t)n, err, sizeof(err));
  CHECK(cfg != NULL);
  struct tls_certset *set = cfg != NULL ? tls_certset_load(cfg, NULL, err, sizeof(err)) : NULL;
  if (set == NULL) {
    fprintf(stderr, "  %s: %s\n", name, err);
  }
  struct tls_contexts *ctxs =
      set != NULL ? tls_contexts_new(cfg, set, generation, err, sizeof(err)) : NULL;
  CHECK(ctxs != NULL);
  /* The contexts copy what they need of the config. */
  config_free(cfg);
  return ctxs;
}

struct outcome {
  int client;
  int server;
  enum tls_failure client_failure;
  enum tls_failure server_failure;
  bool resumed;
  char server_saw[128]; /* The identity the server admitted. */
};

static bool finished(int r) {
  return r == IO_OK || r == IO_ERROR;
}

/* One connection: |client_name|'s certificate against a server on "server" with
 * |allow|; the client expects |server_identity| (NULL: the trust domain). */
static struct outcome connect_once(struct tls_contexts *client_ctxs,
                                   struct tls_contexts *server_ctxs, const char *const *allow,
                                   size_t allow_count, const char *server_identity,
                                   struct tls_session_cache *cache) {
  int fds[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds) == 0);
  struct tls_peer_policy server_policy = {.trust_domain = "cluster.local",
                                          .allow = allow,
                                          .allow_count = allow_count,
                                          .session_context = "in"};
  struct tls_peer_policy client_policy = {.trust_domain = "cluster.local",
                                          .server_identity = server_identity,
                                          .session_context = "out"};
  struct tls_conn *s = tls_conn_new_server(server_ctxs, fds[1], &server_policy);
  struct tls_conn *c =
      tls_conn_new_client(client_ctxs, fds[0], &client_policy, NULL, cache, "out|server");
  struct outcome o = {.client = IO_WANT_WRITE, .server = IO_WANT_READ};
  for (int i = 0; i < 50 && !(finished(o.client) && finished(o.server)); i++) {
    if (!finished(o.client)) {
      o.client = tls_conn_handshake(c);
    }
    if (!finished(o.server)) {
      o.server = tls_conn_handshake(s);
    }
  }
  if (o.server == IO_OK) {
    struct tls_conn_info info;
    tls_conn_get_info(s, &info);
    snprintf(o.server_saw, sizeof(o.server_saw), "%s", info.peer_identity);
    o.resumed = info.resumed;
    /* The client reads the server's first bytes, and with them the session tickets. */
    CHECK(tls_conn_write(s, "x", 1) == 1);
    char byte;
    ssize_t n = IO_WANT_READ;
    for (int i = 0; i < 10 && n == IO_WANT_READ; i++) {
      n = tls_conn_read(c, &byte, 1);
    }
    CHECK_INTEQ(n, 1);
  }
  o.client_failure = tls_conn_failure(c, NULL);
  o.server_failure = tls_conn_failure(s, NULL);
  tls_conn_free(c);
  tls_conn_free(s);
  close(fds[0]);
  close(fds[1]);
  return o;
}

static struct tls_contexts *g_server;

static void teardown(void) {
  tls_contexts_free(g_server);
  tls_thread_release();
  remove_certs();
}

/* The certificates and the server's contexts, made by the first test that runs (so any
 * one can run alone) and removed at exit. */
static struct tls_contexts *server_contexts(void) {
  if (g_server == NULL) {
    make_certs();
    g_server = contexts("server", 1);
    atexit(teardown);
  }
  return g_server;
}

/* The client |name| against an allow list; returns the outcome. */
static struct outcome as_client(const char *name, const char *const *allow, size_t count) {
  struct tls_contexts *server = server_contexts();
  struct tls_contexts *client = contexts(name, 1);
  struct outcome o = connect_once(client, server, allow, count, NULL, NULL);
  tls_contexts_free(client);
  return o;
}

TEST(admitted_by_exact_id_prefix_and_trust_domain) {
  static const char *const exact[] = {"spiffe://cluster.local/ns/a/sa/client"};
  static const char *const prefix[] = {"spiffe://cluster.local/ns/a/*"};
  struct outcome o = as_client("client", exact, 1);
  CHECK_INTEQ(o.server, IO_OK);
  CHECK_STREQ(o.server_saw, "spiffe://cluster.local/ns/a/sa/client");
  CHECK_INTEQ(as_client("client", prefix, 1).server, IO_OK);
  CHECK_INTEQ(as_client("client", NULL, 0).server, IO_OK);
  /* A DNS-named peer is matched by a DNS entry. */
  static const char *const dns[] = {"api.example.com"};
  o = as_client("dns", dns, 1);
  CHECK_INTEQ(o.server, IO_OK);
  CHECK_STREQ(o.server_saw, "api.example.com");
}

TEST(refused_with_the_reason) {
  static const char *const only_a[] = {"spiffe://cluster.local/ns/a/*"};
  struct outcome o = as_client("other", only_a, 1);
  CHECK_INTEQ(o.server, IO_ERROR);
  CHECK_INTEQ(o.server_failure, TLS_FAIL_IDENTITY_DENIED);
  /* The right name from the wrong CA. */
  o = as_client("foreign", NULL, 0);
  CHECK_INTEQ(o.server, IO_ERROR);
  CHECK_INTEQ(o.server_failure, TLS_FAIL_UNTRUSTED);
  /* A wildcard client certificate satisfies no entry, not even the same pattern. */
  static const char *const wild[] = {"*.example.com"};
  o = as_client("wildcard", wild, 1);
  CHECK_INTEQ(o.server, IO_ERROR);
  CHECK_INTEQ(o.server_failure, TLS_FAIL_IDENTITY_DENIED);
}

TEST(client_checks_the_server_identity) {
  server_contexts();
  struct tls_contexts *client = contexts("client", 1);
  struct outcome o =
      connect_once(client, g_server, NULL, 0, "spiffe://cluster.local/ns/a/sa/server", NULL);
  CHECK_INTEQ(o.client, IO_OK);
  o = connect_once(client, g_server, NULL, 0, "spiffe://cluster.local/ns/a/sa/payments", NULL);
  CHECK_INTEQ(o.client, IO_ERROR);
  CHECK_INTEQ(o.client_failure, TLS_FAIL_IDENTITY_DENIED);
  tls_contexts_free(client);
}

TEST(sessions_resume_within_a_generation_only) {
  server_contexts();
  struct tls_session_cache *cache = tls_session_cache_new(4);
  struct tls_contexts *gen1 = contexts("client", 1);
  CHECK(!connect_once(gen1, g_server, NULL, 0, NULL, cache).resumed);
  struct outcome o = connect_once(gen1, g_server, NULL, 0, NULL, cache);
  CHECK_INTEQ(o.server, IO_OK);
  CHECK(o.resumed);
  /* The same files reloaded are a new generation: its first handshake is a full one. */
  struct tls_contexts *gen2 = contexts("client", 2);
  o = connect_once(gen2, g_server, NULL, 0, NULL, cache);
  CHECK_INTEQ(o.server, IO_OK);
  CHECK(!o.resumed);
  CHECK(connect_once(gen2, g_server, NULL, 0, NULL, cache).resumed);
  tls_contexts_free(gen1);
  tls_contexts_free(gen2);
  tls_session_cache_free(cache);
}

TEST_MAIN(TEST_ENTRY(admitted_by_exact_id_prefix_and_trust_domain),
          TEST_ENTRY(refused_with_the_reason), TEST_ENTRY(client_checks_the_server_identity),
          TEST_ENTRY(sessions_resume_within_a_generation_only))
