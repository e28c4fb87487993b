/* Unit tests for config: every class of bad configuration with its exact message, the
 * defaults, every key, the round trip through config_to_json, durations, file reading
 * and allocation failure; and for the readers that share jsonread with it (app_probes,
 * injector_config) and the CPU count (sysinfo).
 *
 * The modules' .c files are included (as h2o's t/00unit does) to reach their static
 * helpers and jsonread's allocation-failure hook; the library's copies of their objects
 * are then never linked, since nothing else refers to them. */
#include "base/jsonread.c"
#include "config/config.c"
#include "os/sysinfo.c"

#include <sys/stat.h>

#include "mtlsd/config/app_probes.h"
#include "mtlsd/kube/injector_config.h"
#include "test.h"

/* JSON written with single quotes reads better in C; dq turns them into double quotes. */
static char *dq(const char *single_quoted) {
  char *s = strdup(single_quoted);
  for (char *c = s; *c != '\0'; c++) {
    if (*c == '\'') {
      *c = '"';
    }
  }
  return s;
}

static struct config *parse_sq(const char *single_quoted, char *err, size_t err_len) {
  char *json = dq(single_quoted);
  struct config *cfg = config_parse("config.json", json, strlen(json), err, err_len);
  free(json);
  return cfg;
}

/* A listener that is valid on its own, to put around the key under test. */
#define OUT_T "{'name':'out','mode':'outbound','listen':'127.0.0.1:15001','transparent':true}"
#define WITH_LISTENER(extra) "{" extra ",'listeners':[" OUT_T "]}"
#define LISTENER(body) "{'listeners':[{" body "}]}"
#define IN_EXPLICIT "'name':'api','mode':'inbound','listen':'0.0.0.0:8443'"
#define OUT_EXPLICIT "'name':'to','mode':'outbound','listen':'127.0.0.1:9001'"

struct bad_case {
  const char *json; /* Single-quoted JSON. */
  const char *err;
};

static const struct bad_case kBadCases[] = {
    /* Syntax and shape. */
    {"", "config.json: top level: the file is empty (expected a JSON object)"},
    {" \n\t ", "config.json: top level: the file is empty (expected a JSON object)"},
    {"{",
     "config.json: line 1, column 2: JSON syntax error: unexpected end of file (expected a "
     "key)"},
    {"{\n  'workers': 1\n  'access_log': 'off'\n}",
     "config.json: line 3, column 3: JSON syntax error: expected ',' or '}'"},
    {"{'listeners': [" OUT_T "]} trailing",
     "config.json: line 1, column 97: JSON syntax error: unexpected text after the JSON "
     "value"},
    {"{'a':'x\\u0000y'}", "config.json: line 1, column 8: \"\\u0000\" is not allowed in strings"},
    {"[]", "config.json: top level: expected an object, got array"},
    {"'just a string'", "config.json: top level: expected an object, got string"},
    {"{}", "config.json: top level: missing required key \"listeners\""},
    {"{'listeners':[]}", "config.json: listeners: at least one listener is required"},
    {"{'listeners':{}}", "config.json: listeners: expected an array of listeners, got object"},
    {"{'listeners':['out']}", "config.json: listeners[0]: expected an object, got string"},

    /* Unknown and duplicate keys, at every level. */
    {"{'listener':[]}", "config.json: listener: unknown key (did you mean \"listeners\"?)"},
    {WITH_LISTENER("'limits':{'idle_timout':'1h'}"),
     "config.json: limits.idle_timout: unknown key (did you mean \"idle_timeout\"?)"},
    {WITH_LISTENER("'tls':{'min_versoin':'1.2'}"),
     "config.json: tls.min_versoin: unknown key (did you mean \"min_version\"?)"},
    {WITH_LISTENER("'admin':{'port':15000}"), "config.json: admin.port: unknown key"},
    {WITH_LISTENER("'certs':{'directory':'/x'}"), "config.json: certs.directory: unknown key"},
    {WITH_LISTENER("'max_connections':10"),
     "config.json: max_connections: unknown key (it belongs in \"limits\")"},
    {WITH_LISTENER("'a.b':1"), "config.json: [\"a.b\"]: unknown key"},
    {WITH_LISTENER("'admin':{'listen':'127.0.0.1:1','trust_domain':'x'}"),
     "config.json: admin.trust_domain: unknown key (it belongs at the top level)"},
    {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','alow':[]"),
     "config.json: listeners[0].alow: unknown key (did you mean \"allow\"?)"},
    {WITH_LISTENER("'workers':1,'workers':2"), "config.json: workers: duplicate key"},
    {LISTENER(IN_EXPLICIT ",'name':'x','forward':'127.0.0.1:8080'"),
     "config.json: listeners[0].name: duplicate key"},

    /* Wrong JSON types. */
    {WITH_LISTENER("'tls':{'min_version':1.2}"),
     "config.json: tls.min_version: expected a string, got number"},
    {WITH_LISTENER("'tls':[]"), "config.json: tls: expected an object, got array"},
    {WITH_LISTENER("'admin':{'lifecycle':'yes'}"),
     "config.json: admin.lifecycle: expected a boolean, got string"},
    {WITH_LISTENER("'trust_domain':null"),
     "config.json: trust_domain: expected a string, got null"},
    {WITH_LISTENER("'tls':{'groups':'X25519'}"),
     "config.json: tls.groups: expected an array of strings, got string"},
    {WITH_LISTENER("'tls':{'groups':['X25519',25519]}"),
     "config.json: tls.groups[1]: expected a string, got number"},
    {WITH_LISTENER("'workers':'4'"), "config.json: workers: expected an integer, got string"},
    {WITH_LISTENER("'limits':{'idle_timeout':3600}"),
     "config.json: limits.idle_timeout: expected a string with a unit such as \"5s\", got "
     "number"},

    /* Numbers. */
    {WITH_LISTENER("'workers':257"), "config.json: workers: 257: out of range (0 to 256)"},
    {WITH_LISTENER("'workers':-1"), "config.json: workers: -1: out of range (0 to 256)"},
    {WITH_LISTENER("'workers':1.5"), "config.json: workers: 1.5: expected an integer"},
    {WITH_LISTENER("'workers':1e999"), "config.json: workers: inf: expected an integer"},
    {WITH_LISTENER("'limits':{'max_connections':0}"),
     "config.json: limits.max_connections: 0: out of range (1 to 1000000)"},
    {WITH_LISTENER("'limits':{'max_connections':1000001}"),
     "config.json: limits.max_connections: 1000001: out of range (1 to 1000000)"},
    {WITH_LISTENER("'limits':{'max_handshaking':0}"),
     "config.json: limits.max_handshaking: 0: out of range (1 to 1000000)"},
    {WITH_LISTENER("'limits':{'max_handshaking':'10'}"),
     "config.json: limits.max_handshaking: expected an integer, got string"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'a:1','max_connections':0"),
     "config.json: listeners[0].max_connections: 0: out of range (1 to 1000000)"},
    {"{'limits':{'max_connections':100},'listeners':[{" OUT_EXPLICIT
     ",'upstream':'a:1','max_connections':101}]}",
     "config.json: listeners[0].max_connections: 101: higher than limits.max_connections "
     "(100)"},

    /* Durations. */
    {WITH_LISTENER("'limits':{'connect_timeout':'5'}"),
     "config.json: limits.connect_timeout: \"5\": invalid duration (expected a number and a "
     "unit: ms, s, m or h, e.g. \"250ms\", \"1.5s\", \"1h\")"},
    {WITH_LISTENER("'limits':{'drain_timeout':'-1s'}"),
     "config.json: limits.drain_timeout: \"-1s\": invalid duration (expected a number and a "
     "unit: ms, s, m or h, e.g. \"250ms\", \"1.5s\", \"1h\")"},
    {WITH_LISTENER("'limits':{'idle_timeout':'1d'}"),
     "config.json: limits.idle_timeout: \"1d\": invalid duration (expected a number and a "
     "unit: ms, s, m or h, e.g. \"250ms\", \"1.5s\", \"1h\")"},
    {WITH_LISTENER("'limits':{'handshake_timeout':'0s'}"),
     "config.json: limits.handshake_timeout: \"0s\": must be greater than 0"},
    {WITH_LISTENER("'limits':{'handshake_timeout':'1.0005s'}"),
     "config.json: limits.handshake_timeout: \"1.0005s\": not a whole number of milliseconds"},
    {WITH_LISTENER("'limits':{'idle_timeout':'99999999999999999999h'}"),
     "config.json: limits.idle_timeout: \"99999999999999999999h\": duration too large"},
    {WITH_LISTENER("'limits':{'idle_timeout':'8761h'}"),
     "config.json: limits.idle_timeout: \"8761h\": must be at most 8760h"},
    {WITH_LISTENER("'certs':{'poll_interval':'50ms'}"),
     "config.json: certs.poll_interval: \"50ms\": must be at least 100ms"},
    {WITH_LISTENER("'certs':{'expiry_warning':''}"),
     "config.json: certs.expiry_warning: must not be empty"},

    /* Addresses. */
    {LISTENER("'name':'a','mode':'outbound','listen':'0.0.0.0:99999','transparent':true"),
     "config.json: listeners[0].listen: \"0.0.0.0:99999\": port out of range"},
    {"{'listeners':[" OUT_T ",{'name':'b','mode':'inbound','listen':'0.0.0.0:99999',"
     "'transparent':true}]}",
     "config.json: listeners[1].listen: \"0.0.0.0:99999\": port out of range"},
    {LISTENER("'name':'a','mode':'outbound','listen':'127.0.0.1','transparent':true"),
     "config.json: listeners[0].listen: \"127.0.0.1\": missing port"},
    {LISTENER("'name':'a','mode':'outbound','listen':'::1:15001','transparent':true"),
     "config.json: listeners[0].listen: \"::1:15001\": IPv6 address must be in brackets"},
    {LISTENER("'name':'a','mode':'outbound','listen':'localhost:15001','transparent':true"),
     "config.json: listeners[0].listen: \"localhost:15001\": host must be an IP address (a "
     "listening address is bound, not resolved)"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'bad_host:443'"),
     "config.json: listeners[0].upstream: \"bad_host:443\": invalid host"},
    {WITH_LISTENER("'admin':{'listen':'localhost:15000'}"),
     "config.json: admin.listen: \"localhost:15000\": host must be an IP address (a listening "
     "address is bound, not resolved)"},
    {WITH_LISTENER("'admin':{'listen':'127.0.0.1:0'}"),
     "config.json: admin.listen: \"127.0.0.1:0\": port out of range"},

    /* Listeners: required keys, values, modes and clashes. */
    {LISTENER("'mode':'outbound','listen':'127.0.0.1:1'"),
     "config.json: listeners[0]: missing required key \"name\""},
    {LISTENER("'name':'a','listen':'127.0.0.1:1'"),
     "config.json: listeners[0]: missing required key \"mode\""},
    {LISTENER("'name':'a','mode':'inbound'"),
     "config.json: listeners[0]: missing required key \"listen\""},
    {LISTENER("'name':'a','mode':'both','listen':'127.0.0.1:1'"),
     "config.json: listeners[0].mode: \"both\": invalid mode (expected \"outbound\" or "
     "\"inbound\")"},
    {LISTENER("'name':'','mode':'inbound','listen':'127.0.0.1:1'"),
     "config.json: listeners[0].name: must not be empty"},
    {LISTENER("'name':'my api','mode':'inbound','listen':'127.0.0.1:1'"),
     "config.json: listeners[0].name: \"my api\": invalid name (at most 64 letters, digits, "
     "'.', '-' or '_')"},
    {LISTENER("'name':'a\\nb','mode':'inbound','listen':'127.0.0.1:1'"),
     "config.json: listeners[0].name: \"a\\x0ab\": control characters are not allowed"},
    {LISTENER(OUT_EXPLICIT),
     "config.json: listeners[0]: missing required key \"upstream\" (an outbound listener needs "
     "it unless \"transparent\" is true)"},
    {LISTENER(IN_EXPLICIT),
     "config.json: listeners[0]: missing required key \"forward\" (an inbound listener needs it "
     "unless \"transparent\" is true)"},
    {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','upstream':'x:1'"),
     "config.json: listeners[0].upstream: only valid on outbound listeners"},
    {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','server_identity':'x'"),
     "config.json: listeners[0].server_identity: only valid on outbound listeners"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','forward':'127.0.0.1:8080'"),
     "config.json: listeners[0].forward: only valid on inbound listeners"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','allow':['spiffe://cluster.local/*']"),
     "config.json: listeners[0].allow: only valid on inbound listeners"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','proxy_protocol':true"),
     "config.json: listeners[0].proxy_protocol: only valid on inbound listeners"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','permissive':true"),
     "config.json: listeners[0].permissive: only valid on inbound listeners"},
    {LISTENER(IN_EXPLICIT ",'forward':'x:1','permissive':'yes'"),
     "config.json: listeners[0].permissive: expected a boolean, got string"},
    {WITH_LISTENER("'health':{}"),
     "config.json: health: missing required key \"listen\" (omit \"health\" to leave the port "
     "off)"},
    {WITH_LISTENER("'health':{'listen':'localhost:15020'}"),
     "config.json: health.listen: \"localhost:15020\": host must be an IP address (a listening "
     "address is bound, not resolved)"},
    {WITH_LISTENER("'health':{'listen':'127.0.0.1:15000'}"),
     "config.json: health.listen: \"127.0.0.1:15000\": address already used by admin.listen"},
    {WITH_LISTENER("'health':{'listen':'0.0.0.0:15020','port':1}"),
     "config.json: health.port: unknown key"},
    {"{'health':{'listen':'127.0.0.1:15001'},'listeners':[" OUT_T "]}",
     "config.json: listeners[0].listen: \"127.0.0.1:15001\": address already used by "
     "health.listen"},
    {WITH_LISTENER("'limits':{'detect_timeout':'0s'}"),
     "config.json: limits.detect_timeout: \"0s\": must be greater than 0"},
    {LISTENER(OUT_EXPLICIT ",'transparent':true,'forward_host':'127.0.0.1'"),
     "config.json: listeners[0].forward_host: only valid on inbound listeners"},
    {LISTENER(IN_EXPLICIT ",'transparent':true,'forward':'127.0.0.1:8080'"),
     "config.json: listeners[0].forward: cannot be combined with \"transparent\": true (a "
     "transparent listener uses the original destination)"},
    {LISTENER(OUT_EXPLICIT ",'transparent':true,'upstream':'x:1'"),
     "config.json: listeners[0].upstream: cannot be combined with \"transparent\": true (a "
     "transparent listener uses the original destination)"},
    {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','forward_host':'127.0.0.2'"),
     "config.json: listeners[0].forward_host: only valid on a transparent listener (an "
     "explicit one uses \"forward\")"},
    {LISTENER(IN_EXPLICIT ",'transparent':true,'forward_host':'127.0.0.1:8080'"),
     "config.json: listeners[0].forward_host: \"127.0.0.1:8080\": invalid host (expected an IP "
     "address or a DNS name, without port)"},
    {LISTENER(IN_EXPLICIT ",'transparent':true,'forward_host':'[::1]'"),
     "config.json: listeners[0].forward_host: \"[::1]\": invalid host (expected an IP address "
     "or a DNS name, without port)"},
    {LISTENER(IN_EXPLICIT ",'transparent':'true'"),
     "config.json: listeners[0].transparent: expected a boolean, got string"},
    {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','allow':[]"),
     "config.json: listeners[0].allow: must not be empty (omit it to allow any identity in the "
     "trust domain)"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','server_identity':'not an id!'"),
     "config.json: listeners[0].server_identity: \"not an id!\": not a SPIFFE ID or DNS name"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','server_identity':'db.example.com.'"),
     "config.json: listeners[0].server_identity: \"db.example.com.\": not a SPIFFE ID or DNS "
     "name"},
    {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','server_identity':'10.0.0.1'"),
     "config.json: listeners[0].server_identity: \"10.0.0.1\": not a SPIFFE ID or DNS name"},
    {"{'listeners':[" OUT_T ",{'name':'out','mode':'inbound','listen':'0.0.0.0:15006',"
     "'transparent':true}]}",
     "config.json: listeners[1].name: \"out\": name already used by listeners[0]"},
    {"{'listeners':[" OUT_T ",{'name':'b','mode':'inbound','listen':'127.0.0.1:15001',"
     "'transparent':true}]}",
     "config.json: listeners[1].listen: \"127.0.0.1:15001\": address already used by "
     "listeners[0]"},
    {"{'listeners':[{'name':'a','mode':'inbound','listen':'[::1]:80','transparent':true},"
     "{'name':'b','mode':'inbound','listen':'[0:0::1]:80','transparent':true}]}",
     "config.json: listeners[1].listen: \"[0:0::1]:80\": address already used by listeners[0]"},
    {LISTENER("'name':'a','mode':'outbound','listen':'127.0.0.1:15000','transparent':true"),
     "config.json: listeners[0].listen: \"127.0.0.1:15000\": address already used by "
     "admin.listen"},

    /* TLS. */
    {WITH_LISTENER("'tls':{'min_version':'1.1'}"),
     "config.json: tls.min_version: \"1.1\": unsupported TLS version (expected \"1.2\" or "
     "\"1.3\")"},
    {WITH_LISTENER("'tls':{'min_version':'1.3','max_version':'1.2'}"),
     "config.json: tls.min_version: \"1.3\": higher than max_version \"1.2\""},
    {WITH_LISTENER("'tls':{'cipher_suites':['ECDHE-RSA-AES128-SHA']}"),
     "config.json: tls.cipher_suites[0]: \"ECDHE-RSA-AES128-SHA\": unsupported cipher suite: "
     "only ECDHE AEAD suites are allowed (ECDHE-ECDSA-AES128-GCM-SHA256, "
     "ECDHE-RSA-AES128-GCM-SHA256, ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-RSA-AES256-GCM-SHA384, "
     "ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-CHACHA20-POLY1305)"},
    {WITH_LISTENER("'tls':{'cipher_suites':['TLS_AES_128_GCM_SHA256']}"),
     "config.json: tls.cipher_suites[0]: \"TLS_AES_128_GCM_SHA256\": TLS 1.3 suites cannot be "
     "configured (all of them are AEAD and always enabled); this list is for TLS 1.2"},
    {WITH_LISTENER("'tls':{'cipher_suites':['ECDHE-RSA-AES128-GCM-SHA256',"
                   "'ECDHE-RSA-AES128-GCM-SHA256']}"),
     "config.json: tls.cipher_suites[1]: \"ECDHE-RSA-AES128-GCM-SHA256\": listed twice"},
    {WITH_LISTENER("'tls':{'cipher_suites':[]}"),
     "config.json: tls.cipher_suites: must not be empty (omit it for the default AEAD suites)"},
    {WITH_LISTENER("'tls':{'groups':['X25519','P-521']}"),
     "config.json: tls.groups[1]: \"P-521\": unsupported group (expected \"X25519\", \"P-256\" "
     "or \"P-384\")"},
    {WITH_LISTENER("'tls':{'groups':['P-256','P-256']}"),
     "config.json: tls.groups[1]: \"P-256\": listed twice"},
    {WITH_LISTENER("'tls':{'groups':[]}"),
     "config.json: tls.groups: must not be empty (omit it for X25519 and P-256)"},

    /* Other top-level values. */
    {WITH_LISTENER("'trust_domain':'Cluster.Local'"),
     "config.json: trust_domain: \"Cluster.Local\": invalid trust domain (lowercase letters, "
     "digits, '.', '-' and '_' only)"},
    {WITH_LISTENER("'trust_domain':''"), "config.json: trust_domain: must not be empty"},
    {WITH_LISTENER("'access_log':''"), "config.json: access_log: must not be empty"},
    {WITH_LISTENER("'access_log':'/var/log/'"),
     "config.json: access_log: \"/var/log/\": expected \"stdout\", \"stderr\", \"off\" or a file "
     "path, not a directory"},
    {WITH_LISTENER("'certs':{'dir':''}"), "config.json: certs.dir: must not be empty"},
    {WITH_LISTENER("'certs':{'cert_file':'\\t'}"),
     "config.json: certs.cert_file: \"\\x09\": control characters are not allowed"},
};

TEST(bad_configs) {
  for (size_t i = 0; i < sizeof(kBadCases) / sizeof(kBadCases[0]); i++) {
    char err[1024] = "";
    struct config *cfg = parse_sq(kBadCases[i].json, err, sizeof(err));
    CHECK(cfg == NULL);
    if (strcmp(err, kBadCases[i].err) != 0) {
      fprintf(stderr, "  case %zu: %s\n", i, kBadCases[i].json);
    }
    CHECK_STREQ(err, kBadCases[i].err);
    config_free(cfg);
  }
}

/* Messages whose last part comes from the identity module are built from its answer, so
 * that this test does not pin another module's wording. */
TEST(bad_identities) {
  static const struct {
    const char *json;
    const char *path;
    const char *value;
    bool pattern;
  } cases[] = {
      {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','allow':['spiffe://cluster.local/*',"
                            "'spiffe://cluster.local/ns/*/sa/x']"),
       "listeners[0].allow[1]", "spiffe://cluster.local/ns/*/sa/x", true},
      {LISTENER(IN_EXPLICIT ",'forward':'127.0.0.1:8080','allow':['SPIFFE://x/y']"),
       "listeners[0].allow[0]", "SPIFFE://x/y", true},
      {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','server_identity':'spiffe://cluster.local/ns/'"),
       "listeners[0].server_identity", "spiffe://cluster.local/ns/", false},
      {LISTENER(OUT_EXPLICIT ",'upstream':'x:1','server_identity':'Spiffe://td/x'"),
       "listeners[0].server_identity", "Spiffe://td/x", false},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    const char *reason = NULL;
    bool valid = cases[i].pattern ? identity_pattern_valid(cases[i].value, &reason)
                                  : identity_spiffe_valid(cases[i].value, &reason);
    CHECK(!valid);
    char want[1024];
    snprintf(want, sizeof(want), "config.json: %s: \"%s\": %s", cases[i].path, cases[i].value,
             reason != NULL ? reason : "(none)");
    char err[1024] = "";
    struct config *cfg = parse_sq(cases[i].json, err, sizeof(err));
    CHECK(cfg == NULL);
    CHECK_STREQ(err, want);
    config_free(cfg);
  }
}

TEST(raw_bytes) {
  static const char with_nul[] = "{\"listeners\":\0[]}";
  char err[256];
  CHECK(config_parse("c.json", with_nul, sizeof(with_nul) - 1, err, sizeof(err)) == NULL);
  CHECK_STREQ(err, "c.json: line 1, column 14: NUL byte in the file");

  /* An escaped backslash before "u0000" is text, not an escape: it reaches the usual
   * checks (here, an unknown key). */
  char *json = dq(WITH_LISTENER("'x\\\\u0000':1"));
  CHECK(config_parse("c.json", json, strlen(json), err, sizeof(err)) == NULL);
  CHECK_STREQ(err, "c.json: [\"x\\\\u0000\"]: unknown key");
  free(json);

  /* The input need not be terminated: only |json_len| bytes are read. */
  char *buf = dq(WITH_LISTENER("'workers':2") "garbage after the length");
  struct config *cfg =
      config_parse("c.json", buf, strlen(WITH_LISTENER("'workers':2")), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg != NULL) {
    CHECK_INTEQ(cfg->workers, 2);
  }
  config_free(cfg);
  free(buf);
}

TEST(line_and_column) {
  char err[256];
  /* Columns count characters, not bytes: "é" is one. */
  CHECK(parse_sq("{\n  'trust_domain': 'é',\n  'workers': 1,\n}", err, sizeof(err)) == NULL);
  CHECK_STREQ(err, "config.json: line 3, column 15: JSON syntax error: trailing comma");
  CHECK(parse_sq("{'trust_domain': 'é', x}", err, sizeof(err)) == NULL);
  CHECK_STREQ(err,
              "config.json: line 1, column 23: JSON syntax error: expected a key in double quotes");
}

/* Syntax errors, written with real double quotes since quoting is what some get wrong. */
TEST(syntax_errors) {
  static const struct {
    const char *json;
    const char *err;
  } cases[] = {
      {"{\"a\":1,}", "line 1, column 7: JSON syntax error: trailing comma"},
      {"[1,2,]", "line 1, column 5: JSON syntax error: trailing comma"},
      {"{\"a\" 1}", "line 1, column 6: JSON syntax error: expected ':' after the key"},
      {"{\"a\":}", "line 1, column 6: JSON syntax error: expected a value"},
      {"{'a':1}", "line 1, column 2: JSON syntax error: expected a key in double quotes"},
      {"{\"a\":'x'}",
       "line 1, column 6: JSON syntax error: expected a value (strings take double quotes)"},
      {"{\"a\":\"x}", "line 1, column 6: JSON syntax error: unterminated string"},
      {"{\"a\":\"\\q\"}", "line 1, column 7: JSON syntax error: invalid escape in string"},
      {"{\"a\":\"\\u12\"}",
       "line 1, column 7: JSON syntax error: invalid \\u escape (expected four hex digits)"},
      {"{\"a\":\"\\ud800x\"}",
       "line 1, column 7: JSON syntax error: invalid \\u escape (unpaired UTF-16 surrogate)"},
      {"{\"a\":\"\\udc00\"}",
       "line 1, column 7: JSON syntax error: invalid \\u escape (unpaired UTF-16 surrogate)"},
      {"{\"a\":tru}", "line 1, column 6: JSON syntax error: expected a value"},
      {"{\"a\":+1}", "line 1, column 6: JSON syntax error: expected a value"},
      {"{\"a\":-}", "line 1, column 6: JSON syntax error: invalid number"},
      {"{\"a\":1.2.3}", "line 1, column 9: JSON syntax error: expected ',' or '}'"},
      {"{\"a\":[1 2]}", "line 1, column 9: JSON syntax error: expected ',' or ']'"},
      {"{\"a\":[1,",
       "line 1, column 9: JSON syntax error: unexpected end of file (expected a "
       "value)"},
      {"{\"a\":1",
       "line 1, column 7: JSON syntax error: unexpected end of file (expected ',' "
       "or '}')"},
      {"\xef\xbb\xbf{\"a\":}", "line 1, column 7: JSON syntax error: expected a value"},
      {"{}{}", "line 1, column 3: JSON syntax error: unexpected text after the JSON value"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char err[256] = "";
    char want[256];
    snprintf(want, sizeof(want), "config.json: %s", cases[i].err);
    CHECK(config_parse("config.json", cases[i].json, strlen(cases[i].json), err, sizeof(err)) ==
          NULL);
    CHECK_STREQ(err, want);
  }

  /* cJSON's nesting limit is reported as such, not as a crash or a vague error. */
  size_t depth = 1200;
  char *deep = malloc(depth + 1);
  memset(deep, '[', depth);
  deep[depth] = '\0';
  char err[256] = "";
  CHECK(config_parse("config.json", deep, depth, err, sizeof(err)) == NULL);
  CHECK_STREQ(err, "config.json: line 1, column 1001: JSON syntax error: nesting too deep");
  free(deep);
}

TEST(error_buffer) {
  /* A short buffer gets a truncated, terminated message; none at all is fine too. */
  char err[16];
  memset(err, 'x', sizeof(err));
  CHECK(parse_sq("{}", err, sizeof(err)) == NULL);
  CHECK_STREQ(err, "config.json: to");
  CHECK(parse_sq("{}", NULL, 0) == NULL);
  CHECK(config_load("/nonexistent/mtlsd.json", NULL, 0) == NULL);
}

static void check_defaults(const struct config *cfg) {
  CHECK_STREQ(cfg->path, "config.json");
  CHECK_STREQ(cfg->trust_domain, "cluster.local");
  CHECK_STREQ(cfg->admin.listen.host, "127.0.0.1");
  CHECK_INTEQ(cfg->admin.listen.port, 15000);
  CHECK(cfg->admin.listen.host_is_ip);
  CHECK(cfg->admin.lifecycle);
  CHECK_STREQ(cfg->certs.dir, "/var/run/mtlsd/certs");
  CHECK_STREQ(cfg->certs.cert_file, "tls.crt");
  CHECK_STREQ(cfg->certs.key_file, "tls.key");
  CHECK_STREQ(cfg->certs.ca_file, "ca.crt");
  CHECK_INTEQ(cfg->certs.poll_interval, 5000);
  CHECK_INTEQ(cfg->certs.expiry_warning, 24 * 3600 * 1000);
  CHECK_INTEQ(cfg->tls.min_version, TLS_VERSION_1_2);
  CHECK_INTEQ(cfg->tls.max_version, TLS_VERSION_1_3);
  CHECK(cfg->tls.cipher_suites == NULL);
  CHECK_INTEQ(cfg->tls.cipher_suite_count, 0);
  CHECK_INTEQ(cfg->tls.group_count, 2);
  if (cfg->tls.group_count == 2) {
    CHECK_STREQ(cfg->tls.groups[0], "X25519");
    CHECK_STREQ(cfg->tls.groups[1], "P-256");
  }
  CHECK(cfg->tls.session_resumption);
  CHECK(cfg->tls.close_on_peer_expiry);
  CHECK_INTEQ(cfg->limits.max_connections, 16384);
  CHECK_INTEQ(cfg->limits.max_handshaking, 1024);
  CHECK_INTEQ(cfg->limits.detect_timeout, 1000);
  CHECK(!cfg->health.enabled);
  CHECK_INTEQ(cfg->limits.connect_timeout, 5000);
  CHECK_INTEQ(cfg->limits.handshake_timeout, 10000);
  CHECK_INTEQ(cfg->limits.idle_timeout, 3600 * 1000);
  CHECK_INTEQ(cfg->limits.drain_timeout, 20000);
  CHECK_INTEQ(cfg->workers_configured, 0);
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  CHECK_INTEQ(cfg->workers, cpus < 1 ? 1 : cpus > 256 ? 256 : cpus);
  CHECK(cfg->workers >= 1);
  CHECK_INTEQ(cfg->access_log, ACCESS_LOG_TARGET_STDOUT);
  CHECK(cfg->access_log_path == NULL);
}

TEST(defaults) {
  char err[256] = "";
  struct config *cfg = parse_sq("{'listeners':[" OUT_T "]}", err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  check_defaults(cfg);
  CHECK_INTEQ(cfg->listener_count, 1);
  const struct listener_config *l = &cfg->listeners[0];
  CHECK_STREQ(l->name, "out");
  CHECK_INTEQ(l->mode, LISTENER_OUTBOUND);
  CHECK_STREQ(l->listen.host, "127.0.0.1");
  CHECK_INTEQ(l->listen.port, 15001);
  CHECK(l->transparent);
  CHECK(!l->has_upstream);
  CHECK(!l->has_forward);
  CHECK(l->forward_host == NULL);
  CHECK(l->allow == NULL);
  CHECK_INTEQ(l->allow_count, 0);
  CHECK(l->server_identity == NULL);
  CHECK(!l->proxy_protocol);
  CHECK(!l->permissive);
  CHECK_INTEQ(l->max_connections, 0);
  config_free(cfg);
}

TEST(own_ports) {
  char err[256] = "";
  struct config *cfg = parse_sq(
      "{'admin':{'listen':'127.0.0.1:15050'},'listeners':[" OUT_T ",{" IN_EXPLICIT
      ",'forward':'127.0.0.1:8080'},{'name':'in','mode':'inbound','listen':'0.0.0.0:15006',"
      "'transparent':true,'forward_host':'localhost'}]}",
      err, sizeof(err));
  CHECK_STREQ(err, "");
  if (cfg == NULL) {
    return;
  }
  CHECK(config_is_own_port(cfg, 15001));
  CHECK(config_is_own_port(cfg, 8443));
  CHECK(config_is_own_port(cfg, 15006));
  CHECK(config_is_own_port(cfg, 15050));
  CHECK(!config_is_own_port(cfg, 15000));
  CHECK(!config_is_own_port(cfg, 8080)); /* Where a listener forwards is the app's. */
  CHECK_STREQ(cfg->listeners[2].forward_host, "localhost");
  CHECK(!cfg->listeners[2].forward_host_is_ip);
  config_free(cfg);
}

/* The example of the configuration reference, with every key. */
static const char kSpecExample[] =
    "{\n"
    "  'trust_domain': 'cluster.local',\n"
    "  'admin': { 'listen': '127.0.0.1:15000' },\n"
    "  'certs': {\n"
    "    'dir': '/var/run/mtlsd/certs',\n"
    "    'cert_file': 'tls.crt', 'key_file': 'tls.key', 'ca_file': 'ca.crt',\n"
    "    'poll_interval': '5s',\n"
    "    'expiry_warning': '24h'\n"
    "  },\n"
    "  'tls': {\n"
    "    'min_version': '1.2', 'max_version': '1.3',\n"
    "    'cipher_suites': ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256'],\n"
    "    'groups': ['X25519', 'P-256'],\n"
    "    'session_resumption': true\n"
    "  },\n"
    "  'listeners': [\n"
    "    { 'name': 'outbound', 'mode': 'outbound', 'listen': '127.0.0.1:15001',\n"
    "      'transparent': true },\n"
    "    { 'name': 'inbound', 'mode': 'inbound', 'listen': '0.0.0.0:15006',\n"
    "      'transparent': true, 'forward_host': '127.0.0.1',\n"
    "      'allow': ['spiffe://cluster.local/ns/default/sa/*'] },\n"
    "    { 'name': 'to-payments', 'mode': 'outbound', 'listen': '127.0.0.1:9001',\n"
    "      'upstream': 'payments.default.svc.cluster.local:8443',\n"
    "      'server_identity': 'spiffe://cluster.local/ns/default/sa/payments' },\n"
    "    { 'name': 'api', 'mode': 'inbound', 'listen': '0.0.0.0:8443',\n"
    "      'forward': '127.0.0.1:8080' }\n"
    "  ],\n"
    "  'limits': {\n"
    "    'max_connections': 16384,\n"
    "    'connect_timeout': '5s', 'handshake_timeout': '10s',\n"
    "    'idle_timeout': '1h', 'drain_timeout': '20s'\n"
    "  },\n"
    "  'workers': 0,\n"
    "  'access_log': 'stdout'\n"
    "}\n";

TEST(spec_example) {
  char err[256] = "";
  struct config *cfg = parse_sq(kSpecExample, err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  CHECK_INTEQ(cfg->tls.cipher_suite_count, 2);
  CHECK_STREQ(cfg->tls.cipher_suites[1], "ECDHE-RSA-AES128-GCM-SHA256");
  CHECK_INTEQ(cfg->listener_count, 4);

  const struct listener_config *l = &cfg->listeners[1];
  CHECK_STREQ(l->name, "inbound");
  CHECK_INTEQ(l->mode, LISTENER_INBOUND);
  CHECK(l->transparent);
  CHECK_STREQ(l->forward_host, "127.0.0.1");
  CHECK_INTEQ(l->allow_count, 1);
  CHECK_STREQ(l->allow[0], "spiffe://cluster.local/ns/default/sa/*");

  l = &cfg->listeners[2];
  CHECK_STREQ(l->name, "to-payments");
  CHECK(!l->transparent);
  CHECK(l->has_upstream);
  CHECK_STREQ(l->upstream.host, "payments.default.svc.cluster.local");
  CHECK_INTEQ(l->upstream.port, 8443);
  CHECK(!l->upstream.host_is_ip);
  CHECK_STREQ(l->server_identity, "spiffe://cluster.local/ns/default/sa/payments");

  l = &cfg->listeners[3];
  CHECK_STREQ(l->name, "api");
  CHECK(l->has_forward);
  CHECK_STREQ(l->forward.host, "127.0.0.1");
  CHECK_INTEQ(l->forward.port, 8080);
  CHECK(l->forward_host == NULL);
  CHECK(l->allow == NULL);
  config_free(cfg);
}

/* Every key set away from its default. */
static const char kEveryKey[] =
    "{\n"
    "  'trust_domain': 'prod.example',\n"
    "  'admin': { 'listen': '[::1]:9901', 'lifecycle': false },\n"
    "  'health': { 'listen': '[::]:15020' },\n"
    "  'certs': { 'dir': 'certs', 'cert_file': 'svid.pem', 'key_file': 'svid_key.pem',\n"
    "             'ca_file': 'bundle.pem', 'poll_interval': '1.5s', 'expiry_warning': '90m' },\n"
    "  'tls': { 'min_version': '1.3', 'max_version': '1.3',\n"
    "           'cipher_suites': ['ECDHE-RSA-CHACHA20-POLY1305', "
    "'ECDHE-ECDSA-AES256-GCM-SHA384'],\n"
    "           'groups': ['P-384', 'X25519'], 'session_resumption': false,\n"
    "           'close_on_peer_expiry': false },\n"
    "  'listeners': [\n"
    "    { 'name': 'in.t_1', 'mode': 'inbound', 'listen': '[::]:15006', 'transparent': true,\n"
    "      'forward_host': 'app.local', 'proxy_protocol': true, 'permissive': true,\n"
    "      'allow': ['spiffe://prod.example/ns/a/*', 'spiffe://other.example/sa/b',\n"
    "                '*.example.com', 'api.example.com'] },\n"
    "    { 'name': 'in-explicit', 'mode': 'inbound', 'listen': '10.0.0.1:443', 'transparent': "
    "false,\n"
    "      'forward': '[::1]:8080', 'proxy_protocol': false },\n"
    "    { 'name': 'out-dns', 'mode': 'outbound', 'listen': '127.0.0.1:9002',\n"
    "      'upstream': '[2001:db8::7]:8443', 'server_identity': 'db.example.com' },\n"
    "    { 'name': 'out-t', 'mode': 'outbound', 'listen': '127.0.0.1:15001', 'transparent': true,\n"
    "      'server_identity': 'spiffe://prod.example/ns/x/sa/y' },\n"
    "    { 'name': 'in-t-v6', 'mode': 'inbound', 'listen': '0.0.0.0:15007', 'transparent': true,\n"
    "      'forward_host': '::1' }\n"
    "  ],\n"
    "  'limits': { 'max_connections': 1000000, 'connect_timeout': '250ms',\n"
    "              'handshake_timeout': '0.5s', 'idle_timeout': '120s', 'drain_timeout': '2m',\n"
    "              'detect_timeout': '300ms' },\n"
    "  'workers': 3,\n"
    "  'access_log': 'logs/access.log'\n"
    "}\n";

TEST(every_key) {
  char err[256] = "";
  struct config *cfg = parse_sq(kEveryKey, err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  CHECK_STREQ(cfg->trust_domain, "prod.example");
  CHECK_STREQ(cfg->admin.listen.host, "::1");
  CHECK_INTEQ(cfg->admin.listen.port, 9901);
  CHECK(!cfg->admin.lifecycle);
  CHECK_STREQ(cfg->certs.dir, "certs");
  CHECK_STREQ(cfg->certs.cert_file, "svid.pem");
  CHECK_STREQ(cfg->certs.key_file, "svid_key.pem");
  CHECK_STREQ(cfg->certs.ca_file, "bundle.pem");
  CHECK_INTEQ(cfg->certs.poll_interval, 1500);
  CHECK_INTEQ(cfg->certs.expiry_warning, 90 * 60 * 1000);
  CHECK_INTEQ(cfg->tls.min_version, TLS_VERSION_1_3);
  CHECK_INTEQ(cfg->tls.max_version, TLS_VERSION_1_3);
  CHECK_INTEQ(cfg->tls.cipher_suite_count, 2);
  CHECK_STREQ(cfg->tls.cipher_suites[0], "ECDHE-RSA-CHACHA20-POLY1305");
  CHECK_STREQ(cfg->tls.cipher_suites[1], "ECDHE-ECDSA-AES256-GCM-SHA384");
  CHECK_INTEQ(cfg->tls.group_count, 2);
  CHECK_STREQ(cfg->tls.groups[0], "P-384");
  CHECK_STREQ(cfg->tls.groups[1], "X25519");
  CHECK(!cfg->tls.session_resumption);
  CHECK(!cfg->tls.close_on_peer_expiry);
  CHECK_INTEQ(cfg->limits.max_connections, 1000000);
  CHECK_INTEQ(cfg->limits.connect_timeout, 250);
  CHECK_INTEQ(cfg->limits.handshake_timeout, 500);
  CHECK_INTEQ(cfg->limits.idle_timeout, 120000);
  CHECK_INTEQ(cfg->limits.drain_timeout, 120000);
  CHECK_INTEQ(cfg->limits.detect_timeout, 300);
  CHECK(cfg->health.enabled);
  CHECK_STREQ(cfg->health.listen.host, "::");
  CHECK_INTEQ(cfg->health.listen.port, 15020);
  CHECK(config_is_own_port(cfg, 15020));
  CHECK(cfg->listeners[0].permissive);
  CHECK(!cfg->listeners[1].permissive);
  CHECK_INTEQ(cfg->workers, 3);
  CHECK_INTEQ(cfg->workers_configured, 3);
  CHECK_INTEQ(cfg->access_log, ACCESS_LOG_TARGET_FILE);
  CHECK_STREQ(cfg->access_log_path, "logs/access.log");

  CHECK_INTEQ(cfg->listener_count, 5);
  const struct listener_config *l = &cfg->listeners[0];
  CHECK_STREQ(l->name, "in.t_1");
  CHECK_STREQ(l->listen.host, "::");
  CHECK(l->proxy_protocol);
  CHECK_STREQ(l->forward_host, "app.local");
  CHECK_INTEQ(l->allow_count, 4);
  CHECK_STREQ(l->allow[2], "*.example.com");

  l = &cfg->listeners[1];
  CHECK(!l->transparent);
  CHECK(l->has_forward);
  CHECK_STREQ(l->forward.host, "::1");
  CHECK(l->forward.host_is_ip);
  CHECK(!l->proxy_protocol);

  l = &cfg->listeners[2];
  CHECK_STREQ(l->upstream.host, "2001:db8::7");
  CHECK(l->upstream.host_is_ip);
  CHECK_STREQ(l->server_identity, "db.example.com");

  l = &cfg->listeners[3];
  CHECK(l->transparent);
  CHECK(!l->has_upstream);
  CHECK_STREQ(l->server_identity, "spiffe://prod.example/ns/x/sa/y");

  CHECK_STREQ(cfg->listeners[4].forward_host, "::1");
  config_free(cfg);
}

TEST(access_log_values) {
  static const struct {
    const char *value;
    enum log_access_target target;
    const char *path;
  } cases[] = {
      {"stdout", ACCESS_LOG_TARGET_STDOUT, NULL},
      {"stderr", ACCESS_LOG_TARGET_STDERR, NULL},
      {"off", ACCESS_LOG_TARGET_OFF, NULL},
      {"/var/log/mtlsd/access.log", ACCESS_LOG_TARGET_FILE, "/var/log/mtlsd/access.log"},
      {"./off", ACCESS_LOG_TARGET_FILE, "./off"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char json[512];
    snprintf(json, sizeof(json), WITH_LISTENER("'access_log':'%s'"), cases[i].value);
    char err[256] = "";
    struct config *cfg = parse_sq(json, err, sizeof(err));
    CHECK_STREQ(err, "");
    if (cfg != NULL) {
      CHECK_INTEQ(cfg->access_log, cases[i].target);
      CHECK_STREQ(cfg->access_log_path, cases[i].path);
    }
    config_free(cfg);
  }
}

/* Two configurations are equal in effect; a NULL cipher list equals the default list. */
static bool strings_equal(char *const *a, size_t na, char *const *b, size_t nb) {
  if (na != nb) {
    return false;
  }
  for (size_t i = 0; i < na; i++) {
    if (strcmp(a[i], b[i]) != 0) {
      return false;
    }
  }
  return true;
}

static bool hostport_equal(const struct hostport *a, const struct hostport *b) {
  return strcmp(a->host, b->host) == 0 && a->port == b->port && a->host_is_ip == b->host_is_ip;
}

static bool same_opt_string(const char *a, const char *b) {
  return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

static void check_same_config(const struct config *a, const struct config *b) {
  CHECK_STREQ(a->trust_domain, b->trust_domain);
  CHECK(hostport_equal(&a->admin.listen, &b->admin.listen));
  CHECK_INTEQ(a->admin.lifecycle, b->admin.lifecycle);
  CHECK_STREQ(a->certs.dir, b->certs.dir);
  CHECK_STREQ(a->certs.cert_file, b->certs.cert_file);
  CHECK_STREQ(a->certs.key_file, b->certs.key_file);
  CHECK_STREQ(a->certs.ca_file, b->certs.ca_file);
  CHECK_INTEQ(a->certs.poll_interval, b->certs.poll_interval);
  CHECK_INTEQ(a->certs.expiry_warning, b->certs.expiry_warning);
  CHECK_INTEQ(a->tls.min_version, b->tls.min_version);
  CHECK_INTEQ(a->tls.max_version, b->tls.max_version);
  size_t ndefault = 0;
  char *const *def = (char *const *)config_default_cipher_suites(&ndefault);
  char *const *ca = a->tls.cipher_suites != NULL ? a->tls.cipher_suites : def;
  size_t nca = a->tls.cipher_suites != NULL ? a->tls.cipher_suite_count : ndefault;
  char *const *cb = b->tls.cipher_suites != NULL ? b->tls.cipher_suites : def;
  size_t ncb = b->tls.cipher_suites != NULL ? b->tls.cipher_suite_count : ndefault;
  CHECK(strings_equal(ca, nca, cb, ncb));
  CHECK(strings_equal(a->tls.groups, a->tls.group_count, b->tls.groups, b->tls.group_count));
  CHECK_INTEQ(a->tls.session_resumption, b->tls.session_resumption);
  CHECK_INTEQ(a->tls.close_on_peer_expiry, b->tls.close_on_peer_expiry);
  CHECK_INTEQ(a->limits.max_connections, b->limits.max_connections);
  CHECK_INTEQ(a->limits.connect_timeout, b->limits.connect_timeout);
  CHECK_INTEQ(a->limits.handshake_timeout, b->limits.handshake_timeout);
  CHECK_INTEQ(a->limits.idle_timeout, b->limits.idle_timeout);
  CHECK_INTEQ(a->limits.drain_timeout, b->limits.drain_timeout);
  CHECK_INTEQ(a->workers, b->workers);
  CHECK_INTEQ(a->workers_configured, b->workers_configured);
  CHECK_INTEQ(a->access_log, b->access_log);
  CHECK(same_opt_string(a->access_log_path, b->access_log_path));
  CHECK_INTEQ(a->listener_count, b->listener_count);
  for (size_t i = 0; i < a->listener_count && i < b->listener_count; i++) {
    const struct listener_config *x = &a->listeners[i];
    const struct listener_config *y = &b->listeners[i];
    CHECK_STREQ(x->name, y->name);
    CHECK_INTEQ(x->mode, y->mode);
    CHECK(hostport_equal(&x->listen, &y->listen));
    CHECK_INTEQ(x->transparent, y->transparent);
    CHECK_INTEQ(x->has_upstream, y->has_upstream);
    CHECK(!x->has_upstream || hostport_equal(&x->upstream, &y->upstream));
    CHECK_INTEQ(x->has_forward, y->has_forward);
    CHECK(!x->has_forward || hostport_equal(&x->forward, &y->forward));
    CHECK(same_opt_string(x->forward_host, y->forward_host));
    CHECK_INTEQ(x->allow == NULL, y->allow == NULL);
    CHECK(strings_equal(x->allow, x->allow_count, y->allow, y->allow_count));
    CHECK(same_opt_string(x->server_identity, y->server_identity));
    CHECK_INTEQ(x->proxy_protocol, y->proxy_protocol);
  }
}

static void check_round_trip(const char *single_quoted) {
  char err[256] = "";
  struct config *first = parse_sq(single_quoted, err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(first != NULL);
  if (first == NULL) {
    return;
  }
  char *json1 = config_to_json(first);
  CHECK(json1 != NULL);
  struct config *second = config_parse("config.json", json1, strlen(json1), err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(second != NULL);
  if (second != NULL) {
    check_same_config(first, second);
    /* The rendering is a fixed point: what it prints loads back and prints the same. */
    char *json2 = config_to_json(second);
    CHECK_STREQ(json2, json1);
    free(json2);
  }
  free(json1);
  config_free(second);
  config_free(first);
}

TEST(round_trip) {
  check_round_trip("{'listeners':[" OUT_T "]}");
  check_round_trip(kSpecExample);
  check_round_trip(kEveryKey);
}

TEST(to_json_renders_defaults) {
  char err[256] = "";
  struct config *cfg =
      parse_sq(WITH_LISTENER("'certs':{'poll_interval':'1500ms','expiry_warning':'7200s'},"
                             "'limits':{'connect_timeout':'60000ms','idle_timeout':'1441m'}"),
               err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  char *json = config_to_json(cfg);
  cJSON *root = cJSON_Parse(json);
  CHECK(root != NULL);
  const cJSON *certs = cJSON_GetObjectItemCaseSensitive(root, "certs");
  const cJSON *limits = cJSON_GetObjectItemCaseSensitive(root, "limits");
  const cJSON *tls = cJSON_GetObjectItemCaseSensitive(root, "tls");
  /* Durations in the largest exact unit. */
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(certs, "poll_interval")),
              "1500ms");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(certs, "expiry_warning")),
              "2h");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(limits, "connect_timeout")),
              "1m");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(limits, "idle_timeout")),
              "1441m");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(limits, "drain_timeout")),
              "20s");
  CHECK_INTEQ(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(limits, "max_connections")),
              16384);
  CHECK_INTEQ(cJSON_GetNumberValue(cJSON_GetObjectItemCaseSensitive(root, "workers")), 0);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "access_log")), "stdout");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                  cJSON_GetObjectItemCaseSensitive(root, "admin"), "listen")),
              "127.0.0.1:15000");
  /* The default suites are spelled out. */
  const cJSON *suites = cJSON_GetObjectItemCaseSensitive(tls, "cipher_suites");
  CHECK_INTEQ(cJSON_GetArraySize(suites), 6);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetArrayItem(suites, 0)), "ECDHE-ECDSA-AES128-GCM-SHA256");
  CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tls, "close_on_peer_expiry")));
  /* An outbound listener shows no inbound-only key, so that the output loads back. */
  const cJSON *l = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "listeners"), 0);
  CHECK(cJSON_GetObjectItemCaseSensitive(l, "proxy_protocol") == NULL);
  CHECK(cJSON_GetObjectItemCaseSensitive(l, "forward_host") == NULL);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(l, "transparent")));
  cJSON_Delete(root);
  free(json);
  config_free(cfg);
}

TEST(durations) {
  static const struct {
    const char *text;
    bool ok;
    duration_ms ms;
  } cases[] = {
      {"250ms", true, 250},
      {"0ms", true, 0},
      {"1s", true, 1000},
      {"15s", true, 15000},
      {"5m", true, 300000},
      {"1h", true, 3600000},
      {"24h", true, 86400000},
      {"007s", true, 7000},
      {"1.5s", true, 1500},
      {"0.25s", true, 250},
      {"1.500s", true, 1500},
      {"0.001s", true, 1},
      {"1.5h", true, 5400000},
      {"0.5m", true, 30000},
      {"1.0ms", true, 1},
      {"0.1h", true, 360000},
      {"2.0000000000000000000000s", true, 2000},
      {"18446744073709551615ms", true, UINT64_MAX},
      {"18446744073709551616ms", false, 0},
      {"5124095576030431h", false, 0},
      {"0.0001s", false, 0},
      {"1.5ms", false, 0},
      {"1.0000000001s", false, 0},
      {"", false, 0},
      {"s", false, 0},
      {"5", false, 0},
      {"5 s", false, 0},
      {" 5s", false, 0},
      {"5s ", false, 0},
      {"+5s", false, 0},
      {"-5s", false, 0},
      {"5S", false, 0},
      {"5sec", false, 0},
      {"5us", false, 0},
      {"5d", false, 0},
      {"1h30m", false, 0},
      {".5s", false, 0},
      {"1.s", false, 0},
      {"1..5s", false, 0},
      {"1e3ms", false, 0},
      {"0x10s", false, 0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    duration_ms ms = 42;
    bool ok = duration_parse(&ms, NULL, cases[i].text);
    if (ok != cases[i].ok) {
      fprintf(stderr, "  durations case %zu\n", i);
    }
    CHECK_INTEQ(ok, cases[i].ok);
    if (ok) {
      CHECK(ms == cases[i].ms);
    } else {
      CHECK_INTEQ(ms, 42);
    }
  }
  duration_ms ms = 0;
  const char *problem = NULL;
  CHECK(!duration_parse(&ms, NULL, NULL));
  CHECK(!duration_parse(&ms, &problem, "0.0001s"));
  CHECK_STREQ(problem, "not a whole number of milliseconds");
  CHECK(!duration_parse(&ms, &problem, "18446744073709551616ms"));
  CHECK_STREQ(problem, "duration too large");
  CHECK(duration_parse(&ms, &problem, "18446744073709551.615s"));
  CHECK(ms == UINT64_MAX);
}

TEST(format_durations) {
  static const struct {
    duration_ms ms;
    const char *text;
  } cases[] = {
      {1, "1ms"},
      {999, "999ms"},
      {1000, "1s"},
      {1500, "1500ms"},
      {59000, "59s"},
      {60000, "1m"},
      {90000, "90s"},
      {3600000, "1h"},
      {5400000, "90m"},
      {86400000, "24h"},
      {UINT64_MAX, "18446744073709551615ms"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    char text[32];
    duration_format(text, sizeof(text), cases[i].ms);
    CHECK_STREQ(text, cases[i].text);
    duration_ms back = 0;
    CHECK(duration_parse(&back, NULL, text));
    CHECK(back == cases[i].ms);
  }
}

TEST(workers) {
  char err[256] = "";
  struct config *cfg = parse_sq(WITH_LISTENER("'workers':256"), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg != NULL) {
    CHECK_INTEQ(cfg->workers, 256);
    CHECK_INTEQ(cfg->workers_configured, 256);
  }
  config_free(cfg);
  cfg = parse_sq(WITH_LISTENER("'workers':1.0"), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg != NULL) {
    CHECK_INTEQ(cfg->workers, 1);
  }
  config_free(cfg);
}

TEST(load_file) {
  char dir[] = "/tmp/mtlsd-test-config-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof(path), "%s/mtlsd.json", dir);

  char err[512];
  CHECK(config_load(path, err, sizeof(err)) == NULL);
  char want[512];
  snprintf(want, sizeof(want), "%s: cannot read: No such file or directory", path);
  CHECK_STREQ(err, want);

  CHECK(config_load(dir, err, sizeof(err)) == NULL);
  snprintf(want, sizeof(want), "%s: cannot read: Is a directory", dir);
  CHECK_STREQ(err, want);

  /* Bigger than the first read buffer, so that it grows. */
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    char *json = dq(kEveryKey);
    fprintf(f, "%s%*s\n", json, 9000, "");
    free(json);
    fclose(f);
  }
  err[0] = '\0';
  struct config *cfg = config_load(path, err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(cfg != NULL);
  if (cfg != NULL) {
    CHECK_STREQ(cfg->path, path);
    CHECK_INTEQ(cfg->listener_count, 5);
  }
  config_free(cfg);

  f = fopen(path, "w");
  CHECK(f != NULL);
  if (f != NULL) {
    fputs("{\"listeners\": 1}", f);
    fclose(f);
  }
  CHECK(config_load(path, err, sizeof(err)) == NULL);
  snprintf(want, sizeof(want), "%s: listeners: expected an array of listeners, got number", path);
  CHECK_STREQ(err, want);

  CHECK(unlink(path) == 0);
  CHECK(rmdir(dir) == 0);
}

/* cJSON's allocations count against the same budget as config's own. */
static void *budget_malloc(size_t size) {
  return jr_alloc_ok() ? malloc(size) : NULL;
}

/* Fails every allocation in turn, on the biggest configuration and on a rendering of it:
 * each run must fail cleanly (LeakSanitizer checks that nothing leaks) until the budget
 * is large enough to succeed. */
TEST(allocation_failures) {
  cJSON_Hooks hooks = {budget_malloc, free};
  cJSON_InitHooks(&hooks);
  char *json = dq(kEveryKey);
  bool parsed = false;
  long budget = 0;
  for (; budget < 10000 && !parsed; budget++) {
    jr_alloc_budget = budget;
    char err[256] = "";
    struct config *cfg = config_parse("config.json", json, strlen(json), err, sizeof(err));
    if (cfg == NULL) {
      /* cJSON cannot tell a failed allocation from a syntax error. */
      CHECK(strstr(err, "out of memory") != NULL || strstr(err, "JSON syntax error") != NULL);
      continue;
    }
    parsed = true;
    long rendered_at = -1;
    for (long render = 0; render < 10000; render++) {
      jr_alloc_budget = render;
      char *text = config_to_json(cfg);
      if (text != NULL) {
        rendered_at = render;
        free(text);
        break;
      }
    }
    CHECK(rendered_at > 0);
    config_free(cfg);
  }
  jr_alloc_budget = -1;
  cJSON_InitHooks(NULL);
  CHECK(parsed);
  CHECK(budget > 50);
  free(json);
}

/* MTLSD_APP_PROBES: the probes kept, their defaults, and every bad input's message. */
TEST(app_probes) {
  char err[512] = "";
  struct config *cfg =
      parse_sq(WITH_LISTENER("'health':{'listen':'0.0.0.0:15020'}"), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  char *good =
      dq("{'app/livez':{'httpGet':{'path':'/healthz','port':8080,'scheme':'HTTPS',"
         "'httpHeaders':[{'name':'X-A','value':'b'},{'name':'Host','value':'h'}]},"
         "'timeoutSeconds':3,'periodSeconds':10,'failureThreshold':3},"
         "'app/readyz':{'tcpSocket':{'port':8080,'host':'10.0.0.9'}},"
         "'side-car2/startupz':{'grpc':{'port':9090,'service':'db'}},"
         "'app/startupz':{'httpGet':{'port':81}},"
         "'api-server/livez':{'grpc':{'port':9090,'service':''}},"
         "'api-server/readyz':{'grpc':{'port':9090,'service':null}},"
         "'api-server/startupz':{'httpGet':{'port':81,'path':'healthz',"
         "'httpHeaders':[{'name':'X-Empty','value':''}]}}}");
  CHECK(config_parse_app_probes(cfg, "MTLSD_APP_PROBES", good, strlen(good), err, sizeof(err)));
  CHECK_STREQ(err, "");
  free(good);
  CHECK_INTEQ(cfg->app_probe_count, 7);
  const struct app_probe *a = config_find_app_probe(cfg, "app/livez", 9);
  CHECK(a != NULL && a->type == APP_PROBE_HTTP && a->https && a->port == 8080);
  if (a != NULL) {
    CHECK_STREQ(a->container, "app");
    CHECK_STREQ(a->kind, "livez");
    CHECK_STREQ(a->path, "/healthz");
    CHECK(a->host == NULL);
    CHECK_INTEQ(a->timeout, 3000);
    CHECK_INTEQ(a->header_count, 2);
    CHECK_STREQ(a->headers[1].name, "Host");
  }
  a = config_find_app_probe(cfg, "app/readyz", 10);
  CHECK(a != NULL && a->type == APP_PROBE_TCP && a->timeout == 1000);
  CHECK(a != NULL && a->host != NULL && strcmp(a->host, "10.0.0.9") == 0);
  a = config_find_app_probe(cfg, "side-car2/startupz", 18);
  CHECK(a != NULL && a->type == APP_PROBE_GRPC && strcmp(a->service, "db") == 0);
  a = config_find_app_probe(cfg, "app/startupz", 12);
  CHECK(a != NULL && strcmp(a->path, "/") == 0 && !a->https);
  CHECK(config_find_app_probe(cfg, "app/live", 8) == NULL);
  /* What the API server writes back for unset fields is accepted as such. */
  a = config_find_app_probe(cfg, "api-server/livez", 16);
  CHECK(a != NULL && a->service != NULL && a->service[0] == '\0');
  a = config_find_app_probe(cfg, "api-server/readyz", 17);
  CHECK(a != NULL && a->service != NULL && a->service[0] == '\0');
  a = config_find_app_probe(cfg, "api-server/startupz", 19);
  CHECK(a != NULL && strcmp(a->path, "/healthz") == 0 && a->header_count == 1 &&
        strcmp(a->headers[0].value, "") == 0);

  static const struct bad_case bad[] = {
      {"{'app/livez':{'httpGet':{'port':'http'}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].httpGet.port: \"http\": a named port: resolve it to "
       "the container's port number"},
      {"{'App/livez':{'tcpSocket':{'port':1}}}",
       "MTLSD_APP_PROBES: [\"App/livez\"]: expected "
       "\"<container>/<livez|readyz|startupz|poststartz|prestopz>\", with the container's name"},
      {"{'app/alive':{'tcpSocket':{'port':1}}}",
       "MTLSD_APP_PROBES: [\"app/alive\"]: expected "
       "\"<container>/<livez|readyz|startupz|poststartz|prestopz>\", with the container's name"},
      {"{'app/prestopz':{'grpc':{'port':1}}}",
       "MTLSD_APP_PROBES: [\"app/prestopz\"].grpc: a lifecycle hook has no grpc handler "
       "(httpGet or tcpSocket only)"},
      {"{'app/livez':{'exec':{'command':['x']}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].exec: exec probes run in the container itself; the "
       "sidecar runs httpGet, tcpSocket and grpc only"},
      {"{'app/livez':{'tcpSocket':{'port':1},'grpc':{'port':2}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"]: expected exactly one of \"httpGet\", \"tcpSocket\" "
       "or \"grpc\""},
      {"{'app/livez':{'httpGet':{'port':1,'scheme':'FTP'}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].httpGet.scheme: \"FTP\": invalid scheme (expected "
       "\"HTTP\" or \"HTTPS\")"},
      {"{'app/livez':{'httpGet':{'port':1,'httpHeaders':[{'name':'a b','value':'x'}]}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].httpGet.httpHeaders[0].name: \"a b\": not an HTTP "
       "header name"},
      {"{'app/livez':{'httpGet':{'port':1,'httpHeaders':[{'name':'a','value':'x\\ny'}]}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].httpGet.httpHeaders[0].value: \"x\\x0ay\": control "
       "characters are not allowed"},
      {"{'app/livez':{'httpGet':{'port':1,'path':'/a b'}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].httpGet.path: \"/a b\": a path cannot hold spaces"},
      {"{'app/livez':{'grpc':{'port':1,'service':7}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].grpc.service: expected a string, got number"},
      {"{'app/livez':{'tcpSocket':{'port':1,'hots':'x'}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].tcpSocket.hots: unknown key (did you mean \"host\"?)"},
      {"{'app/livez':{'tcpSocket':{}}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].tcpSocket: missing required key \"port\""},
      {"{'app/livez':{'tcpSocket':{'port':1},'timeoutSeconds':0}}",
       "MTLSD_APP_PROBES: [\"app/livez\"].timeoutSeconds: 0: out of range (1 to 86400)"},
      {"[1]", "MTLSD_APP_PROBES: top level: expected an object, got array"},
      {"{",
       "MTLSD_APP_PROBES: line 1, column 2: JSON syntax error: unexpected end of file (expected a "
       "key)"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char *json = dq(bad[i].json);
    err[0] = '\0';
    CHECK(!config_parse_app_probes(cfg, "MTLSD_APP_PROBES", json, strlen(json), err, sizeof(err)));
    CHECK_STREQ(err, bad[i].err);
    free(json);
  }
  /* A refused set leaves the good one in place. */
  CHECK_INTEQ(cfg->app_probe_count, 7);
  config_free(cfg);
}

/* Lifecycle hooks in MTLSD_APP_PROBES: kept beside the probes, with the timeout the
 * injector gave them (the grace period), 30 s when it gave none. */
TEST(app_hooks) {
  char err[512] = "";
  struct config *cfg =
      parse_sq(WITH_LISTENER("'health':{'listen':'0.0.0.0:15020'}"), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  char *good =
      dq("{'app/poststartz':{'httpGet':{'path':'/started','port':8080},'timeoutSeconds':45},"
         "'app/prestopz':{'tcpSocket':{'port':8080}},'app/livez':{'tcpSocket':{'port':8080}}}");
  CHECK(config_parse_app_probes(cfg, "MTLSD_APP_PROBES", good, strlen(good), err, sizeof(err)));
  CHECK_STREQ(err, "");
  free(good);
  const struct app_probe *a = config_find_app_probe(cfg, "app/poststartz", 14);
  CHECK(a != NULL && a->type == APP_PROBE_HTTP && a->timeout == 45000);
  CHECK(a != NULL && strcmp(a->kind, "poststartz") == 0 && strcmp(a->path, "/started") == 0);
  a = config_find_app_probe(cfg, "app/prestopz", 12);
  CHECK(a != NULL && a->type == APP_PROBE_TCP && a->timeout == 30000);
  a = config_find_app_probe(cfg, "app/livez", 9);
  CHECK(a != NULL && a->timeout == 1000);
  config_free(cfg);
}

/* MTLSD_APP_METRICS: the port and path kept, the default path, every bad input's
 * message. */
TEST(app_metrics) {
  char err[512] = "";
  struct config *cfg =
      parse_sq(WITH_LISTENER("'health':{'listen':'0.0.0.0:15020'}"), err, sizeof(err));
  CHECK(cfg != NULL);
  if (cfg == NULL) {
    return;
  }
  CHECK_INTEQ(cfg->app_metrics.port, 0);
  static const char kGood[] = "{\"port\": 9090, \"path\": \"/stats/prometheus?x=1\"}";
  CHECK(config_parse_app_metrics(cfg, "MTLSD_APP_METRICS", kGood, strlen(kGood), err, sizeof(err)));
  CHECK_INTEQ(cfg->app_metrics.port, 9090);
  CHECK_STREQ(cfg->app_metrics.path, "/stats/prometheus?x=1");
  static const char kPortOnly[] = "{\"port\": 8080}";
  CHECK(config_parse_app_metrics(cfg, "MTLSD_APP_METRICS", kPortOnly, strlen(kPortOnly), err,
                                 sizeof(err)));
  CHECK_INTEQ(cfg->app_metrics.port, 8080);
  CHECK_STREQ(cfg->app_metrics.path, "/metrics");

  static const struct bad_case bad[] = {
      {"{'path':'/metrics'}", "MTLSD_APP_METRICS: top level: missing required key \"port\""},
      {"{'port':0}", "MTLSD_APP_METRICS: port: 0: out of range (1 to 65535)"},
      {"{'port':65536}", "MTLSD_APP_METRICS: port: 65536: out of range (1 to 65535)"},
      {"{'port':'metrics'}",
       "MTLSD_APP_METRICS: port: \"metrics\": a named port: resolve it to the container's port "
       "number"},
      {"{'port':1.5}", "MTLSD_APP_METRICS: port: 1.5: expected an integer"},
      {"{'port':9090,'path':'metrics'}",
       "MTLSD_APP_METRICS: path: \"metrics\": the path must start with '/'"},
      {"{'port':9090,'path':'/a b'}",
       "MTLSD_APP_METRICS: path: \"/a b\": a path cannot hold spaces"},
      {"{'port':9090,'path':''}", "MTLSD_APP_METRICS: path: must not be empty"},
      {"{'port':9090,'scheme':'https'}", "MTLSD_APP_METRICS: scheme: unknown key"},
      {"[9090]", "MTLSD_APP_METRICS: top level: expected an object, got array"},
      {"", "MTLSD_APP_METRICS: top level: the file is empty (expected a JSON object)"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char *json = dq(bad[i].json);
    err[0] = '\0';
    CHECK(
        !config_parse_app_metrics(cfg, "MTLSD_APP_METRICS", json, strlen(json), err, sizeof(err)));
    CHECK_STREQ(err, bad[i].err);
    free(json);
  }
  /* A refused value leaves the good one in place. */
  CHECK_INTEQ(cfg->app_metrics.port, 8080);
  CHECK_STREQ(cfg->app_metrics.path, "/metrics");
  config_free(cfg);
}

/* workers: 0 follows the CPUs the process may use, a cgroup quota included. */
TEST(cpu_quota) {
  CHECK_INTEQ(cpus_within_quota(64, "max 100000\n"), 64);
  CHECK_INTEQ(cpus_within_quota(64, "100000 100000\n"), 1);
  CHECK_INTEQ(cpus_within_quota(64, "150000 100000\n"), 2);
  CHECK_INTEQ(cpus_within_quota(64, "50000 100000\n"), 1);
  CHECK_INTEQ(cpus_within_quota(2, "800000 100000\n"), 2);
  CHECK_INTEQ(cpus_within_quota(8, "garbage"), 8);
  CHECK_INTEQ(cpus_within_quota(8, NULL), 8);
  CHECK(sysinfo_available_cpus() >= 1);
}

/* The injector's configuration file: every key, its defaults left unset, and the errors. */
static struct injector_file *load_injector_sq(const char *single_quoted, char *err,
                                              size_t err_len) {
  char path[] = "/tmp/mtlsd-test-injector-XXXXXX";
  int fd = mkstemp(path);
  char *json = dq(single_quoted);
  CHECK(fd >= 0 && write(fd, json, strlen(json)) == (ssize_t)strlen(json));
  close(fd);
  free(json);
  struct injector_file *f = injector_config_load(path, err, err_len);
  /* Messages name the file: make them comparable. */
  size_t n = strlen(path);
  if (strncmp(err, path, n) == 0) {
    memmove(err, "inj.json", 8);
    memmove(err + 8, err + n, strlen(err + n) + 1);
  }
  unlink(path);
  return f;
}

TEST(injector_file) {
  char err[512] = "";
  struct injector_file *f = load_injector_sq(
      "{'image':'r/m:1','image_pull_policy':'Never','trust_domain':'prod.example',"
      "'namespace':'mesh','native_sidecar':false,"
      "'resources':{'requests':{'cpu':'100m','memory':'64Mi'},'limits':{'memory':'1Gi'}},"
      "'certs':{'csi_driver':'csi.example'},'exclude_inbound_ports':[22,9100],"
      "'exclude_outbound_cidrs':['10.96.0.1/32','fd00::/8'],'include_outbound_cidrs':['10.0.0.0/"
      "8']}",
      err, sizeof(err));
  CHECK_STREQ(err, "");
  CHECK(f != NULL);
  if (f != NULL) {
    CHECK_STREQ(f->image, "r/m:1");
    CHECK_STREQ(f->pull_policy, "Never");
    CHECK_STREQ(f->trust_domain, "prod.example");
    CHECK_STREQ(f->namespace, "mesh");
    CHECK_INTEQ(f->native_sidecar, 0);
    CHECK_STREQ(f->cpu_request, "100m");
    CHECK(f->cpu_limit == NULL);
    CHECK_STREQ(f->memory_limit, "1Gi");
    CHECK_STREQ(f->csi_driver, "csi.example");
    CHECK_STREQ(f->exclude_inbound_ports, "22,9100");
    CHECK(f->exclude_outbound_ports == NULL);
    CHECK_STREQ(f->exclude_outbound_cidrs, "10.96.0.1/32,fd00::/8");
  }
  injector_config_free(f);
  f = load_injector_sq("{}", err, sizeof(err));
  CHECK(f != NULL && f->image == NULL && f->native_sidecar == -1);
  injector_config_free(f);

  static const struct bad_case bad[] = {
      {"{'imag':'x'}", "inj.json: imag: unknown key (did you mean \"image\"?)"},
      {"{'image_pull_policy':'Sometimes'}",
       "inj.json: image_pull_policy: \"Sometimes\": invalid pull policy (expected "
       "\"IfNotPresent\", \"Always\" or \"Never\")"},
      {"{'resources':{'limits':{'cpu':'lots'}}}",
       "inj.json: resources.limits.cpu: \"lots\": not a resource quantity (e.g. 100m, 64Mi)"},
      {"{'resources':{'limit':{}}}",
       "inj.json: resources.limit: unknown key (did you mean \"limits\"?)"},
      {"{'exclude_inbound_ports':[0]}",
       "inj.json: exclude_inbound_ports[0]: expected a port number (1 to 65535)"},
      {"{'exclude_outbound_cidrs':['10.0.0.0/40']}",
       "inj.json: exclude_outbound_cidrs[0]: \"10.0.0.0/40\": not a CIDR"},
      {"{'exclude_outbound_cidrs':[]}",
       "inj.json: exclude_outbound_cidrs: expected a non-empty array of strings"},
      {"{'namespace':'Mesh'}", "inj.json: namespace: \"Mesh\": not a namespace name"},
      {"{'native_sidecar':'no'}", "inj.json: native_sidecar: expected a boolean, got string"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    err[0] = '\0';
    f = load_injector_sq(bad[i].json, err, sizeof(err));
    CHECK(f == NULL);
    CHECK_STREQ(err, bad[i].err);
    injector_config_free(f);
  }
}

TEST_MAIN(TEST_ENTRY(app_probes), TEST_ENTRY(app_hooks), TEST_ENTRY(app_metrics),
          TEST_ENTRY(injector_file), TEST_ENTRY(cpu_quota), TEST_ENTRY(bad_configs),
          TEST_ENTRY(bad_identities), TEST_ENTRY(raw_bytes), TEST_ENTRY(line_and_column),
          TEST_ENTRY(syntax_errors), TEST_ENTRY(error_buffer), TEST_ENTRY(defaults),
          TEST_ENTRY(own_ports), TEST_ENTRY(spec_example), TEST_ENTRY(every_key),
          TEST_ENTRY(access_log_values), TEST_ENTRY(round_trip),
          TEST_ENTRY(to_json_renders_defaults), TEST_ENTRY(durations), TEST_ENTRY(format_durations),
          TEST_ENTRY(workers), TEST_ENTRY(load_file), TEST_ENTRY(allocation_failures))
