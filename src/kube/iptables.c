/* iptables: the pod's NAT redirect rules (see mtlsd/iptables.h).
 *
 * The rules follow what istio-init and linkerd's proxy-init install, in chains of our
 * own so that they can be found, replaced and removed as a unit:
 *   PREROUTING -> MTLSD_INBOUND -> MTLSD_IN_REDIRECT (REDIRECT to the inbound port)
 *   OUTPUT     -> MTLSD_OUTPUT  -> MTLSD_REDIRECT    (REDIRECT to the outbound port)
 * The sidecar's own traffic (its UID and GID) and loopback traffic return early, so the
 * sidecar's connections are never redirected back into itself. */
#include "mtlsd/kube/iptables.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/textbuf.h"

static const char *const own_chains[] = {"MTLSD_INBOUND", "MTLSD_IN_REDIRECT", "MTLSD_OUTPUT",
                                         "MTLSD_REDIRECT"};

/* The filter chains that close IPv6 when it is not intercepted. */
static const char *const closed_chains[] = {"MTLSD_IN_CLOSED", "MTLSD_OUT_CLOSED"};

void iptables_default_opts(struct iptables_opts *opts) {
  memset(opts, 0, sizeof(*opts));
  opts->outbound_port = MTLSD_OUTBOUND_PORT;
  opts->inbound_port = MTLSD_INBOUND_PORT;
  opts->admin_port = MTLSD_ADMIN_PORT;
  opts->proxy_uid = MTLSD_PROXY_ID;
  opts->proxy_gid = MTLSD_PROXY_ID;
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

/* ---- Lists and numbers, as the options and the annotations give them ---- */

bool iptables_parse_u32(uint32_t *out, const char *s, uint32_t max) {
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

bool iptables_parse_port(uint16_t *out, const char *s) {
  uint32_t v;
  if (!iptables_parse_u32(&v, s, 65535) || v == 0) {
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
  if (!iptables_parse_port(&l->ports[*l->count], item)) {
    return "is not a port (1 to 65535)";
  }
  (*l->count)++;
  return NULL;
}

bool iptables_parse_ports(uint16_t *ports, size_t *count, const char *list, char *err,
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
  return slash == NULL || iptables_parse_u32(&prefix, slash + 1, v6 ? 128 : 32);
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

bool iptables_parse_cidrs(struct iptables_cidrs *cidrs, const char *list, char *err,
                          size_t err_len) {
  return each_item(list, take_cidr, cidrs, err, err_len);
}

void iptables_cidrs_free(struct iptables_cidrs *cidrs) {
  for (size_t i = 0; i < cidrs->count; i++) {
    free(cidrs->items[i]);
  }
  cidrs->count = 0;
}

bool iptables_port_list_check(const char *list, char *err, size_t err_len) {
  uint16_t ports[IPTABLES_MAX_PORTS];
  size_t count = 0;
  return iptables_parse_ports(ports, &count, list, err, err_len);
}

bool iptables_cidr_list_check(const char *list, char *err, size_t err_len) {
  struct iptables_cidrs cidrs = {0};
  bool ok = iptables_parse_cidrs(&cidrs, list, err, err_len);
  iptables_cidrs_free(&cidrs);
  return ok;
}
