/* iptables: the pod's NAT redirect rules (see mtlsd/iptables.h).
 *
 * The rules follow what istio-init and linkerd's proxy-init install, in chains of our
 * own so that they can be found, replaced and removed as a unit:
 *   PREROUTING -> MTLSD_INBOUND -> MTLSD_IN_REDIRECT (REDIRECT to the inbound port)
 *   OUTPUT     -> MTLSD_OUTPUT  -> MTLSD_REDIRECT    (REDIRECT to the outbound port)
 * The sidecar's own traffic (its UID and GID) and loopback traffic return early, so the
 * sidecar's connections are never redirected back into itself. */
#include "mtlsd/iptables.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mtlsd/exit.h"
#include "mtlsd/textbuf.h"

static const char *const own_chains[] = {"MTLSD_INBOUND", "MTLSD_IN_REDIRECT", "MTLSD_OUTPUT",
                                         "MTLSD_REDIRECT"};

/* The filter chains that close IPv6 when it is not intercepted. */
static const char *const closed_chains[] = {"MTLSD_IN_CLOSED", "MTLSD_OUT_CLOSED"};

void iptables_default_opts(struct iptables_opts *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->outbound_port = 15001;
  opts->inbound_port = 15006;
  opts->admin_port = 15000;
  opts->proxy_uid = 1337;
  opts->proxy_gid = 1337;
  opts->exclude_api_server = true;
}

/* Whether |installed| (iptables-save output) has a rule "-A CHAIN ... -j TARGET". */
static bool has_jump(const char *installed, const char *chain, const char *target) {
  if (installed == NULL) {
    return false;
  }
  char prefix[64], jump[64];
  snprintf(prefix, sizeof(prefix), "-A %s ", chain);
  snprintf(jump, sizeof(jump), "-j %s", target);
  for (const char *line = installed; *line != '\0';) {
    const char *end = strchr(line, '\n');
    size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
    if (strncmp(line, prefix, strlen(prefix)) == 0) {
      const char *j = memmem(line, len, jump, strlen(jump));
      /* The target must end the word: MTLSD_OUTPUT is not MTLSD_OUTPUT_X. */
      if (j != NULL && (j + strlen(jump) == line + len || j[strlen(jump)] == ' ')) {
        return true;
      }
    }
    line += len + (end != NULL ? 1 : 0);
  }
  return false;
}

static bool cidr_is_ipv6(const char *cidr) {
  return strchr(cidr, ':') != NULL;
}

/* mtlsd's own ports, never redirected in |chain|: a connection to the admin or the
 * health port of the pod itself is for its sidecar. Inbound, every destination is the
 * pod's own; outbound, only the pod's own addresses are (||local|: `addrtype LOCAL`), so
 * that the same port of another host (Envoy's admin port, say) is intercepted like any
 * other. */
static void own_ports(struct textbuf *t, const char *chain, const struct iptables_opts *o,
                      bool local) {
  const char *only_local = local ? " -m addrtype --dst-type LOCAL" : "";
  textbuf_printf(t,
                 "-A %s -p tcp --dport %u%s -m comment --comment \"mtlsd: admin port\" -j "
                 "RETURN\n",
                 chain, o->admin_port, only_local);
  if (o->health_port != 0) {
    textbuf_printf(t,
                   "-A %s -p tcp --dport %u%s -m comment --comment \"mtlsd: health port\" -j "
                   "RETURN\n",
                   chain, o->health_port, only_local);
  }
}

char *iptables_render(const struct iptables_opts *o, bool ipv6, const char *installed) {
  struct textbuf t = {0};
  const char *loopback = ipv6 ? "::1/128" : "127.0.0.1/32";
  textbuf_printf(&t, "*nat\n");
  for (size_t i = 0; i < sizeof(own_chains) / sizeof(own_chains[0]); i++) {
    /* Declaring a chain creates it, or flushes it when it exists: re-applying replaces
     * our rules instead of appending copies. */
    textbuf_printf(&t, ":%s - [0:0]\n", own_chains[i]);
  }
  textbuf_printf(&t,
                 "-A MTLSD_IN_REDIRECT -p tcp -m comment --comment \"mtlsd: to the inbound "
                 "listener\" -j REDIRECT --to-ports %u\n",
                 o->inbound_port);
  textbuf_printf(&t,
                 "-A MTLSD_REDIRECT -p tcp -m comment --comment \"mtlsd: to the outbound "
                 "listener\" -j REDIRECT --to-ports %u\n",
                 o->outbound_port);

  if (!has_jump(installed, "PREROUTING", "MTLSD_INBOUND")) {
    textbuf_printf(&t,
                   "-A PREROUTING -p tcp -m comment --comment \"mtlsd: inbound interception\" -j "
                   "MTLSD_INBOUND\n");
  }
  own_ports(&t, "MTLSD_INBOUND", o, false);
  for (size_t i = 0; i < o->exclude_inbound_count; i++) {
    textbuf_printf(&t,
                   "-A MTLSD_INBOUND -p tcp --dport %u -m comment --comment \"mtlsd: excluded "
                   "inbound port\" -j RETURN\n",
                   o->exclude_inbound_ports[i]);
  }
  if (o->inbound_count > 0) {
    for (size_t i = 0; i < o->inbound_count; i++) {
      textbuf_printf(&t,
                     "-A MTLSD_INBOUND -p tcp --dport %u -m comment --comment \"mtlsd: intercepted "
                     "inbound port\" -j MTLSD_IN_REDIRECT\n",
                     o->inbound_ports[i]);
    }
  } else {
    textbuf_printf(&t,
                   "-A MTLSD_INBOUND -p tcp -m comment --comment \"mtlsd: every other inbound "
                   "port\" -j MTLSD_IN_REDIRECT\n");
  }

  if (!has_jump(installed, "OUTPUT", "MTLSD_OUTPUT")) {
    textbuf_printf(&t,
                   "-A OUTPUT -p tcp -m comment --comment \"mtlsd: outbound interception\" -j "
                   "MTLSD_OUTPUT\n");
  }
  textbuf_printf(&t,
                 "-A MTLSD_OUTPUT -m owner --uid-owner %u -m comment --comment \"mtlsd: the "
                 "sidecar's own traffic\" -j RETURN\n",
                 o->proxy_uid);
  textbuf_printf(&t,
                 "-A MTLSD_OUTPUT -m owner --gid-owner %u -m comment --comment \"mtlsd: the "
                 "sidecar's own traffic\" -j RETURN\n",
                 o->proxy_gid);
  textbuf_printf(&t,
                 "-A MTLSD_OUTPUT -o lo -m comment --comment \"mtlsd: loopback traffic to the "
                 "app\" -j RETURN\n");
  textbuf_printf(&t,
                 "-A MTLSD_OUTPUT -d %s -m comment --comment \"mtlsd: loopback traffic to the "
                 "app\" -j RETURN\n",
                 loopback);
  own_ports(&t, "MTLSD_OUTPUT", o, true);
  for (size_t i = 0; i < o->exclude_outbound_count; i++) {
    textbuf_printf(&t,
                   "-A MTLSD_OUTPUT -p tcp --dport %u -m comment --comment \"mtlsd: excluded "
                   "outbound port\" -j RETURN\n",
                   o->exclude_outbound_ports[i]);
  }
  const struct iptables_cidrs *ex = &o->exclude_outbound_cidrs;
  for (size_t i = 0; i < ex->count; i++) {
    if (cidr_is_ipv6(ex->items[i]) == ipv6) {
      textbuf_printf(&t,
                     "-A MTLSD_OUTPUT -d %s -m comment --comment \"mtlsd: excluded outbound "
                     "CIDR\" -j RETURN\n",
                     ex->items[i]);
    }
  }
  const struct iptables_cidrs *in = &o->include_outbound_cidrs;
  if (in->count == 0) {
    textbuf_printf(&t,
                   "-A MTLSD_OUTPUT -p tcp -m comment --comment \"mtlsd: every other outbound "
                   "connection\" -j MTLSD_REDIRECT\n");
  }
  /* With an include list, a family none of whose ranges is listed is not intercepted. */
  for (size_t i = 0; i < in->count; i++) {
    if (cidr_is_ipv6(in->items[i]) == ipv6) {
      textbuf_printf(&t,
                     "-A MTLSD_OUTPUT -d %s -p tcp -m comment --comment \"mtlsd: included "
                     "outbound CIDR\" -j MTLSD_REDIRECT\n",
                     in->items[i]);
    }
  }
  textbuf_printf(&t, "COMMIT\n");
  return textbuf_finish(&t);
}

char *iptables_render_closed(const struct iptables_opts *o, const char *installed) {
  struct textbuf t = {0};
  textbuf_printf(&t, "*filter\n");
  for (size_t i = 0; i < sizeof(closed_chains) / sizeof(closed_chains[0]); i++) {
    textbuf_printf(&t, ":%s - [0:0]\n", closed_chains[i]);
  }
  if (!has_jump(installed, "INPUT", "MTLSD_IN_CLOSED")) {
    textbuf_printf(&t,
                   "-A INPUT -p tcp -m comment --comment \"mtlsd: IPv6 is not intercepted\" -j "
                   "MTLSD_IN_CLOSED\n");
  }
  if (!has_jump(installed, "OUTPUT", "MTLSD_OUT_CLOSED")) {
    textbuf_printf(&t,
                   "-A OUTPUT -p tcp -m comment --comment \"mtlsd: IPv6 is not intercepted\" -j "
                   "MTLSD_OUT_CLOSED\n");
  }
  /* New connections only (a SYN without ACK): the replies to the sidecar's own
   * connections come in through INPUT too. */
  textbuf_printf(&t,
                 "-A MTLSD_IN_CLOSED -i lo -m comment --comment \"mtlsd: loopback\" -j RETURN\n"
                 "-A MTLSD_IN_CLOSED -p tcp --syn -m comment --comment \"mtlsd: no inbound IPv6 "
                 "without --ipv6\" -j REJECT --reject-with tcp-reset\n"
                 "-A MTLSD_OUT_CLOSED -o lo -m comment --comment \"mtlsd: loopback\" -j RETURN\n"
                 "-A MTLSD_OUT_CLOSED -m owner --uid-owner %u -m comment --comment \"mtlsd: the "
                 "sidecar's own traffic\" -j RETURN\n"
                 "-A MTLSD_OUT_CLOSED -p tcp --syn -m comment --comment \"mtlsd: no outbound IPv6 "
                 "without --ipv6\" -j REJECT --reject-with tcp-reset\n",
                 o->proxy_uid);
  textbuf_printf(&t, "COMMIT\n");
  return textbuf_finish(&t);
}

char *iptables_render_clean(const char *table, const char *installed) {
  struct textbuf t = {0};
  textbuf_printf(&t, "*%s\n", table);
  /* Jumps into our chains first: a chain cannot be deleted while referenced. */
  for (const char *line = installed != NULL ? installed : ""; *line != '\0';) {
    const char *end = strchr(line, '\n');
    size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
    if (strncmp(line, "-A ", 3) == 0 && strncmp(line + 3, "MTLSD_", 6) != 0 &&
        memmem(line, len, "-j MTLSD_", 9) != NULL) {
      textbuf_printf(&t, "-D%.*s\n", (int)(len - 2), line + 2);
    }
    line += len + (end != NULL ? 1 : 0);
  }
  /* Then every chain of ours that is there, flushed before any is deleted (they jump to
   * each other). */
  for (int pass = 0; pass < 2; pass++) {
    for (const char *line = installed != NULL ? installed : ""; *line != '\0';) {
      const char *end = strchr(line, '\n');
      size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
      if (strncmp(line, ":MTLSD_", 7) == 0) {
        textbuf_printf(&t, "%s %.*s\n", pass == 0 ? "-F" : "-X", (int)strcspn(line + 1, " \n"),
                       line + 1);
      }
      line += len + (end != NULL ? 1 : 0);
    }
  }
  textbuf_printf(&t, "COMMIT\n");
  return textbuf_finish(&t);
}

/* ---- The command ---- */

static const char usage_text[] =
    "usage: mtlsd iptables [--print | --apply | --clean] [options]\n"
    "\n"
    "Prints (the default) or applies, through iptables-restore, the NAT rules that send a\n"
    "pod's TCP traffic through its sidecar; --clean removes them.\n"
    "\n"
    "  --outbound-port N            the transparent outbound listener (15001)\n"
    "  --inbound-port N             the transparent inbound listener (15006)\n"
    "  --admin-port N               never redirected (15000)\n"
    "  --health-port N              never redirected either (the sidecar's health port)\n"
    "  --proxy-uid N, --proxy-gid N the sidecar's own traffic is not redirected (1337)\n"
    "  --inbound-ports P,P...       intercept only these inbound ports (default: all)\n"
    "  --exclude-inbound-ports P,P...\n"
    "  --exclude-outbound-ports P,P...\n"
    "  --exclude-outbound-cidrs C,C...  (IPv4 or IPv6 CIDRs)\n"
    "  --include-outbound-cidrs C,C...  redirect only connections to these (default: all)\n"
    "  --no-exclude-api-server      intercept the API server too (by default its address,\n"
    "                               KUBERNETES_SERVICE_HOST here, is excluded)\n"
    "  --ipv6                       also the IPv6 rules, through ip6tables-restore; without\n"
    "                               it, where the pod has IPv6, IPv6 TCP is rejected\n";

static bool parse_u32(uint32_t *out, const char *s, uint32_t max) {
  if (*s == '\0') {
    return false;
  }
  uint64_t v = 0;
  for (const char *p = s; *p != '\0'; p++) {
    if (*p < '0' || *p > '9' || (v = v * 10 + (uint64_t)(*p - '0')) > max) {
      return false;
    }
  }
  *out = (uint32_t)v;
  return true;
}

static bool parse_port(uint16_t *out, const char *s) {
  uint32_t v;
  if (!parse_u32(&v, s, 65535) || v == 0) {
    return false;
  }
  *out = (uint16_t)v;
  return true;
}

/* Calls |take| on each comma-separated item of |list|, spaces and tabs around it trimmed
 * ("5432, 6379" is how people write lists), until one fails; false when one did, when an
 * item is empty ("80,,81", "80,") or when the list has none, with the item and its
 * problem in |err|. The list is copied whole: a fixed buffer would cut a long one short,
 * silently. |take| returns NULL when it took the item, else what is wrong with it. */
static bool each_item(const char *list, const char *(*take)(void *arg, const char *item), void *arg,
                      char *err, size_t err_len) {
  char *buf = strdup(list);
  if (buf == NULL) {
    snprintf(err, err_len, "out of memory");
    return false;
  }
  const char *problem = NULL;
  for (char *item = buf; problem == NULL;) {
    char *comma = strchr(item, ',');
    if (comma != NULL) {
      *comma = '\0';
    }
    item += strspn(item, " \t");
    size_t len = strlen(item);
    while (len > 0 && (item[len - 1] == ' ' || item[len - 1] == '\t')) {
      item[--len] = '\0';
    }
    if (len == 0) {
      snprintf(err, err_len, "an empty item (two commas in a row, or one at an end)");
      free(buf);
      return false;
    }
    problem = take(arg, item);
    if (problem != NULL) {
      snprintf(err, err_len, "\"%.100s\" %s", item, problem);
    }
    if (comma == NULL) {
      break;
    }
    item = comma + 1;
  }
  free(buf);
  return problem == NULL;
}

#define TEXT_OF_(x) #x
#define TEXT_OF(x) TEXT_OF_(x)

struct port_list {
  uint16_t *ports;
  size_t *count;
};

static const char *take_port(void *arg, const char *item) {
  struct port_list *l = arg;
  if (*l->count >= IPTABLES_MAX_PORTS) {
    return "is one port too many (at most " TEXT_OF(IPTABLES_MAX_PORTS) ")";
  }
  if (!parse_port(&l->ports[*l->count], item)) {
    return "is not a port (1 to 65535)";
  }
  (*l->count)++;
  return NULL;
}

static bool parse_port_list(uint16_t *ports, size_t *count, const char *list, char *err,
                            size_t err_len) {
  struct port_list l = {ports, count};
  return each_item(list, take_port, &l, err, err_len);
}

bool iptables_cidr_valid(const char *cidr) {
  char addr[INET6_ADDRSTRLEN + 1];
  const char *slash = strchr(cidr, '/');
  size_t len = slash != NULL ? (size_t)(slash - cidr) : strlen(cidr);
  if (len == 0 || len >= sizeof(addr)) {
    return false;
  }
  memcpy(addr, cidr, len);
  addr[len] = '\0';
  unsigned char bin[16];
  bool v6 = strchr(addr, ':') != NULL;
  if (inet_pton(v6 ? AF_INET6 : AF_INET, addr, bin) != 1) {
    return false;
  }
  uint32_t prefix;
  return slash == NULL || parse_u32(&prefix, slash + 1, v6 ? 128 : 32);
}

static const char *take_cidr(void *arg, const char *item) {
  struct iptables_cidrs *cidrs = arg;
  if (cidrs->count >= IPTABLES_MAX_CIDRS) {
    return "is one CIDR too many (at most " TEXT_OF(IPTABLES_MAX_CIDRS) ")";
  }
  if (!iptables_cidr_valid(item)) {
    return "is not an IPv4 or IPv6 address with an optional /prefix";
  }
  cidrs->items[cidrs->count] = strdup(item);
  if (cidrs->items[cidrs->count] == NULL) {
    return "could not be stored (out of memory)";
  }
  cidrs->count++;
  return NULL;
}

static bool parse_cidr_list(struct iptables_cidrs *cidrs, const char *list, char *err,
                            size_t err_len) {
  return each_item(list, take_cidr, cidrs, err, err_len);
}

static void free_cidrs(struct iptables_cidrs *cidrs) {
  for (size_t i = 0; i < cidrs->count; i++) {
    free(cidrs->items[i]);
  }
  cidrs->count = 0;
}

bool iptables_port_list_check(const char *list, char *err, size_t err_len) {
  uint16_t ports[IPTABLES_MAX_PORTS];
  size_t count = 0;
  return parse_port_list(ports, &count, list, err, err_len);
}

bool iptables_cidr_list_check(const char *list, char *err, size_t err_len) {
  struct iptables_cidrs cidrs = {0};
  bool ok = parse_cidr_list(&cidrs, list, err, err_len);
  free_cidrs(&cidrs);
  return ok;
}

/* Runs a fixed command (no shell input comes from the user) and returns its stdout. */
static char *capture(const char *command) {
  FILE *p = popen(command, "r");
  if (p == NULL) {
    return NULL;
  }
  struct textbuf t = {0};
  char chunk[4096];
  size_t n;
  while ((n = fread(chunk, 1, sizeof(chunk), p)) > 0) {
    textbuf_append(&t, chunk, n);
  }
  int status = pclose(p);
  char *out = textbuf_finish(&t);
  if (status != 0) {
    free(out);
    return NULL;
  }
  return out != NULL ? out : strdup("");
}

static bool feed(const char *command, const char *input) {
  FILE *p = popen(command, "w");
  if (p == NULL) {
    return false;
  }
  size_t len = strlen(input);
  bool ok = fwrite(input, 1, len, p) == len;
  int status = pclose(p);
  return ok && status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* What one iptables-restore transaction does. */
enum rules { RULES_INTERCEPT, RULES_CLOSED, RULES_CLEAN };

/* Applies |what| to one family's |table| in one iptables-restore transaction. */
static int apply(const struct iptables_opts *o, bool ipv6, const char *table, enum rules what) {
  const char *tool = ipv6 ? "ip6tables" : "iptables";
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "%s --version 2>/dev/null", tool);
  char *version = capture(cmd);
  if (version == NULL) {
    fprintf(stderr, "mtlsd iptables: %s is not installed (apt-get install iptables)\n", tool);
    return MTLSD_EXIT_FAILED;
  }
  const char *backend = strstr(version, "nf_tables") != NULL ? "nf_tables"
                        : strstr(version, "legacy") != NULL  ? "legacy"
                                                             : "unknown";
  fprintf(stderr, "mtlsd iptables: %s uses the %s backend\n", tool, backend);
  free(version);

  snprintf(cmd, sizeof(cmd), "%s-save -t %s 2>/dev/null", tool, table);
  char *installed = capture(cmd);
  char *rules = what == RULES_CLEAN    ? iptables_render_clean(table, installed)
                : what == RULES_CLOSED ? iptables_render_closed(o, installed)
                                       : iptables_render(o, ipv6, installed);
  free(installed);
  if (rules == NULL) {
    fprintf(stderr, "mtlsd iptables: out of memory\n");
    return MTLSD_EXIT_FAILED;
  }
  snprintf(cmd, sizeof(cmd), "%s-restore --noflush", tool);
  bool ok = feed(cmd, rules);
  free(rules);
  if (!ok) {
    fprintf(stderr,
            "mtlsd iptables: %s-restore failed (is this a network namespace with "
            "CAP_NET_ADMIN?)\n",
            tool);
    return MTLSD_EXIT_FAILED;
  }
  static const char *const kDone[] = {"applied the rules of", "closed (no --ipv6)",
                                      "removed the rules of"};
  fprintf(stderr, "mtlsd iptables: %s %s (%s table)\n", kDone[what], ipv6 ? "IPv6" : "IPv4", table);
  return MTLSD_EXIT_OK;
}

/* Whether this network namespace has IPv6 at all: an interface address other than
 * loopback's, or at least the protocol (a pod may get its address later). */
static bool has_ipv6(void) {
  FILE *f = fopen("/proc/net/if_inet6", "r");
  if (f == NULL) {
    return false;
  }
  fclose(f);
  return true;
}

/* Adds the API server's address, from this environment, to the excluded CIDRs; returns
 * false (with the reason on stderr) when the list is full. */
static bool exclude_api_server(struct iptables_opts *o) {
  const char *host = getenv("KUBERNETES_SERVICE_HOST");
  if (host == NULL || host[0] == '\0') {
    fprintf(stderr,
            "mtlsd iptables: KUBERNETES_SERVICE_HOST is not set: no API server to "
            "exclude\n");
    return true;
  }
  char cidr[80];
  snprintf(cidr, sizeof(cidr), "%s/%s", host, strchr(host, ':') != NULL ? "128" : "32");
  if (!iptables_cidr_valid(cidr)) {
    fprintf(stderr,
            "mtlsd iptables: KUBERNETES_SERVICE_HOST \"%.64s\" is not an IP address: the API "
            "server is not excluded\n",
            host);
    return true;
  }
  struct iptables_cidrs *ex = &o->exclude_outbound_cidrs;
  if (ex->count == IPTABLES_MAX_CIDRS) {
    fprintf(stderr,
            "mtlsd iptables: --exclude-outbound-cidrs: more than %d CIDRs with the API "
            "server's\n",
            IPTABLES_MAX_CIDRS);
    return false;
  }
  ex->items[ex->count] = strdup(cidr);
  if (ex->items[ex->count] == NULL) {
    fprintf(stderr, "mtlsd iptables: out of memory\n");
    return false;
  }
  ex->count++;
  fprintf(stderr, "mtlsd iptables: excluding the API server, %s (KUBERNETES_SERVICE_HOST)\n", cidr);
  return true;
}

int iptables_main(int argc, char **argv) {
  enum {
    OPT_OUT = 256,
    OPT_IN,
    OPT_ADMIN,
    OPT_HEALTH,
    OPT_UID,
    OPT_GID,
    OPT_IN_PORTS,
    OPT_EX_IN,
    OPT_EX_OUT,
    OPT_EX_CIDR,
    OPT_IN_CIDR,
    OPT_NO_API
  };
  static const struct option long_opts[] = {
      {"print", no_argument, NULL, 'p'},
      {"apply", no_argument, NULL, 'a'},
      {"clean", no_argument, NULL, 'c'},
      {"ipv6", no_argument, NULL, '6'},
      {"help", no_argument, NULL, 'h'},
      {"outbound-port", required_argument, NULL, OPT_OUT},
      {"inbound-port", required_argument, NULL, OPT_IN},
      {"admin-port", required_argument, NULL, OPT_ADMIN},
      {"health-port", required_argument, NULL, OPT_HEALTH},
      {"proxy-uid", required_argument, NULL, OPT_UID},
      {"proxy-gid", required_argument, NULL, OPT_GID},
      {"inbound-ports", required_argument, NULL, OPT_IN_PORTS},
      {"exclude-inbound-ports", required_argument, NULL, OPT_EX_IN},
      {"exclude-outbound-ports", required_argument, NULL, OPT_EX_OUT},
      {"exclude-outbound-cidrs", required_argument, NULL, OPT_EX_CIDR},
      {"include-outbound-cidrs", required_argument, NULL, OPT_IN_CIDR},
      {"no-exclude-api-server", no_argument, NULL, OPT_NO_API},
      {NULL, 0, NULL, 0},
  };
  struct iptables_opts o;
  iptables_default_opts(&o);
  char action = 'p';
  bool ipv6 = false;
  bool ok = true;
  char why[160] = "";
  int code = MTLSD_EXIT_USAGE;
  optind = 1;
  opterr = 0;
  int idx = 0;
  for (int c; ok && (c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1;) {
    switch (c) {
      case 'p':
      case 'a':
      case 'c':
        action = (char)c;
        break;
      case '6':
        ipv6 = true;
        break;
      case 'h':
        fputs(usage_text, stdout);
        code = MTLSD_EXIT_OK;
        goto out;
      case OPT_OUT:
        ok = parse_port(&o.outbound_port, optarg);
        break;
      case OPT_IN:
        ok = parse_port(&o.inbound_port, optarg);
        break;
      case OPT_ADMIN:
        ok = parse_port(&o.admin_port, optarg);
        break;
      case OPT_HEALTH:
        ok = parse_port(&o.health_port, optarg);
        break;
      case OPT_UID:
        ok = parse_u32(&o.proxy_uid, optarg, UINT32_MAX - 1);
        break;
      case OPT_GID:
        ok = parse_u32(&o.proxy_gid, optarg, UINT32_MAX - 1);
        break;
      case OPT_IN_PORTS:
        ok = parse_port_list(o.inbound_ports, &o.inbound_count, optarg, why, sizeof(why));
        break;
      case OPT_EX_IN:
        ok = parse_port_list(o.exclude_inbound_ports, &o.exclude_inbound_count, optarg, why,
                             sizeof(why));
        break;
      case OPT_EX_OUT:
        ok = parse_port_list(o.exclude_outbound_ports, &o.exclude_outbound_count, optarg, why,
                             sizeof(why));
        break;
      case OPT_EX_CIDR:
        ok = parse_cidr_list(&o.exclude_outbound_cidrs, optarg, why, sizeof(why));
        break;
      case OPT_IN_CIDR:
        ok = parse_cidr_list(&o.include_outbound_cidrs, optarg, why, sizeof(why));
        break;
      case OPT_NO_API:
        o.exclude_api_server = false;
        break;
      default:
        fprintf(stderr, "mtlsd iptables: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
        fputs(usage_text, stderr);
        goto out;
    }
    if (!ok) {
      fprintf(stderr, "mtlsd iptables: --%s: invalid value \"%s\"%s%s\n", long_opts[idx].name,
              optarg, why[0] != '\0' ? ": " : "", why);
      goto out;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mtlsd iptables: unexpected argument \"%s\"\n", argv[optind]);
    goto out;
  }

  if (action != 'c' && o.exclude_api_server && !exclude_api_server(&o)) {
    code = MTLSD_EXIT_USAGE;
    goto out;
  }
  if (action == 'p') {
    code = MTLSD_EXIT_OK;
    for (int family = 0; family < 2; family++) {
      char *rules = family == 0 || ipv6 ? iptables_render(&o, family == 1, NULL)
                                        : iptables_render_closed(&o, NULL);
      if (rules == NULL) {
        code = MTLSD_EXIT_FAILED;
        break;
      }
      printf("# %s (%s-restore --noflush)\n%s",
             family == 0 ? "IPv4"
             : ipv6      ? "IPv6"
                         : "IPv6, closed without --ipv6",
             family == 0 ? "iptables" : "ip6tables", rules);
      free(rules);
    }
    goto out;
  }
  if (action == 'c') {
    code = apply(&o, false, "nat", RULES_CLEAN);
    if (code == MTLSD_EXIT_OK && has_ipv6()) {
      code = apply(&o, true, "nat", RULES_CLEAN);
      if (code == MTLSD_EXIT_OK) {
        code = apply(&o, true, "filter", RULES_CLEAN);
      }
    }
    goto out;
  }
  code = apply(&o, false, "nat", RULES_INTERCEPT);
  if (code == MTLSD_EXIT_OK && ipv6) {
    code = apply(&o, true, "nat", RULES_INTERCEPT);
  } else if (code == MTLSD_EXIT_OK && has_ipv6()) {
    /* Not intercepted, so not open either: the pod's IPv6 would bypass the sidecar. */
    code = apply(&o, true, "filter", RULES_CLOSED);
  } else if (code == MTLSD_EXIT_OK) {
    fprintf(stderr, "mtlsd iptables: no IPv6 in this network namespace: nothing to close\n");
  }
out:
  free_cidrs(&o.exclude_outbound_cidrs);
  free_cidrs(&o.include_outbound_cidrs);
  return code;
}
