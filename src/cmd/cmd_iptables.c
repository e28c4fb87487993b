/* cmd_iptables: `mtlsd iptables` (README, "Transparent interception"): the options,
 * the API server's address from this environment, and the rules of the iptables module
 * printed, or applied through iptables-restore and ip6tables-restore in one transaction
 * per table. */
#include "mtlsd/cmd/cmd_iptables.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/base/exit.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/kube/iptables.h"

static const char usage_text[] =
    "usage: mtlsd iptables [--print | --apply | --clean] [options]\n"
    "\n"
    "Prints (the default) or applies, through iptables-restore, the NAT rules that send a\n"
    "pod's TCP traffic through its sidecar; --clean removes them.\n"
    "\n"
    "  --outbound-port N            the transparent outbound listener (" MTLSD_TEXT(
        MTLSD_OUTBOUND_PORT) ")\n"
    "  --inbound-port N             the transparent inbound listener (" MTLSD_TEXT(
        MTLSD_INBOUND_PORT) ")\n"
    "  --admin-port N               never redirected (" MTLSD_TEXT(MTLSD_ADMIN_PORT) ")\n"
    "  --health-port N              never redirected either (the sidecar's health port)\n"
    "  --proxy-uid N, --proxy-gid N the sidecar's own traffic is not redirected (" MTLSD_TEXT(
        MTLSD_PROXY_ID) ")\n"
    "  --inbound-ports P,P...       intercept only these inbound ports (default: all)\n"
    "  --exclude-inbound-ports P,P...\n"
    "  --exclude-outbound-ports P,P...\n"
    "  --exclude-outbound-cidrs C,C...  (IPv4 or IPv6 CIDRs)\n"
    "  --include-outbound-cidrs C,C...  redirect only connections to these (default: all)\n"
    "  --no-exclude-api-server      intercept the API server too (by default its address,\n"
    "                               KUBERNETES_SERVICE_HOST here, is excluded)\n"
    "  --ipv6                       also the IPv6 rules, through ip6tables-restore; without\n"
    "                               it, where the pod has IPv6, IPv6 TCP is rejected\n";

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

/* What the command line asks for. */
struct command {
  struct iptables_opts o;
  char action; /* 'p'rint, 'a'pply or 'c'lean. */
  bool ipv6;
};

/* The long options; those without a short letter are numbered past any char. */
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

/* Reads the options into |cmd|: true to go on, else false with the exit code in |*code|
 * (0 after --help; the problem is on stderr). */
static bool parse_options(int argc, char **argv, struct command *cmd, int *code) {
  struct iptables_opts *o = &cmd->o;
  *code = MTLSD_EXIT_USAGE;
  optind = 1;
  opterr = 0;
  int idx = 0;
  for (int c; (c = getopt_long(argc, argv, "h", long_opts, &idx)) != -1;) {
    bool ok = true;
    char why[160] = "";
    switch (c) {
      case 'p':
      case 'a':
      case 'c':
        cmd->action = (char)c;
        break;
      case '6':
        cmd->ipv6 = true;
        break;
      case 'h':
        fputs(usage_text, stdout);
        *code = MTLSD_EXIT_OK;
        return false;
      case OPT_OUT:
        ok = iptables_parse_port(&o->outbound_port, optarg);
        break;
      case OPT_IN:
        ok = iptables_parse_port(&o->inbound_port, optarg);
        break;
      case OPT_ADMIN:
        ok = iptables_parse_port(&o->admin_port, optarg);
        break;
      case OPT_HEALTH:
        ok = iptables_parse_port(&o->health_port, optarg);
        break;
      case OPT_UID:
        ok = iptables_parse_u32(&o->proxy_uid, optarg, UINT32_MAX - 1);
        break;
      case OPT_GID:
        ok = iptables_parse_u32(&o->proxy_gid, optarg, UINT32_MAX - 1);
        break;
      case OPT_IN_PORTS:
        ok = iptables_parse_ports(o->inbound_ports, &o->inbound_count, optarg, why, sizeof(why));
        break;
      case OPT_EX_IN:
        ok = iptables_parse_ports(o->exclude_inbound_ports, &o->exclude_inbound_count, optarg, why,
                                  sizeof(why));
        break;
      case OPT_EX_OUT:
        ok = iptables_parse_ports(o->exclude_outbound_ports, &o->exclude_outbound_count, optarg,
                                  why, sizeof(why));
        break;
      case OPT_EX_CIDR:
        ok = iptables_parse_cidrs(&o->exclude_outbound_cidrs, optarg, why, sizeof(why));
        break;
      case OPT_IN_CIDR:
        ok = iptables_parse_cidrs(&o->include_outbound_cidrs, optarg, why, sizeof(why));
        break;
      case OPT_NO_API:
        o->exclude_api_server = false;
        break;
      default:
        fprintf(stderr, "mtlsd iptables: unknown or incomplete option \"%s\"\n", argv[optind - 1]);
        fputs(usage_text, stderr);
        return false;
    }
    if (!ok) {
      fprintf(stderr, "mtlsd iptables: --%s: invalid value \"%s\"%s%s\n", long_opts[idx].name,
              optarg, why[0] != '\0' ? ": " : "", why);
      return false;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mtlsd iptables: unexpected argument \"%s\"\n", argv[optind]);
    return false;
  }
  return true;
}

/* --print: both families' rules on stdout, as the init container would apply them. */
static int print_rules(const struct command *cmd) {
  for (int family = 0; family < 2; family++) {
    char *rules = family == 0 || cmd->ipv6 ? iptables_render(&cmd->o, family == 1, NULL)
                                           : iptables_render_closed(&cmd->o, NULL);
    if (rules == NULL) {
      return MTLSD_EXIT_FAILED;
    }
    printf("# %s (%s-restore --noflush)\n%s",
           family == 0 ? "IPv4"
           : cmd->ipv6 ? "IPv6"
                       : "IPv6, closed without --ipv6",
           family == 0 ? "iptables" : "ip6tables", rules);
    free(rules);
  }
  return MTLSD_EXIT_OK;
}

/* --clean: our chains out of every table that may hold them. */
static int clean_rules(const struct command *cmd) {
  int code = apply(&cmd->o, false, "nat", RULES_CLEAN);
  if (code == MTLSD_EXIT_OK && has_ipv6()) {
    code = apply(&cmd->o, true, "nat", RULES_CLEAN);
    if (code == MTLSD_EXIT_OK) {
      code = apply(&cmd->o, true, "filter", RULES_CLEAN);
    }
  }
  return code;
}

/* --apply: the interception, and IPv6 intercepted (--ipv6) or closed. */
static int apply_rules(const struct command *cmd) {
  int code = apply(&cmd->o, false, "nat", RULES_INTERCEPT);
  if (code == MTLSD_EXIT_OK && cmd->ipv6) {
    code = apply(&cmd->o, true, "nat", RULES_INTERCEPT);
  } else if (code == MTLSD_EXIT_OK && has_ipv6()) {
    /* Not intercepted, so not open either: the pod's IPv6 would bypass the sidecar. */
    code = apply(&cmd->o, true, "filter", RULES_CLOSED);
  } else if (code == MTLSD_EXIT_OK) {
    fprintf(stderr, "mtlsd iptables: no IPv6 in this network namespace: nothing to close\n");
  }
  return code;
}

int iptables_main(int argc, char **argv) {
  struct command cmd = {.action = 'p'};
  iptables_default_opts(&cmd.o);
  int code;
  if (parse_options(argc, argv, &cmd, &code)) {
    if (cmd.action != 'c' && cmd.o.exclude_api_server && !exclude_api_server(&cmd.o)) {
      code = MTLSD_EXIT_USAGE;
    } else {
      code = cmd.action == 'p'   ? print_rules(&cmd)
             : cmd.action == 'c' ? clean_rules(&cmd)
                                 : apply_rules(&cmd);
    }
  }
  iptables_cidrs_free(&cmd.o.exclude_outbound_cidrs);
  iptables_cidrs_free(&cmd.o.include_outbound_cidrs);
  return code;
}
