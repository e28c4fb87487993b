/* iptables: `mtlsd iptables` (the README, Transparent interception), the NAT rules that send a
 * pod's TCP traffic through its sidecar, as an init container installs them.
 *
 * Owns the rule set: generating it (a pure function of the options and of the rules
 * already installed, so it can be unit-tested), and printing, applying or removing it
 * through iptables-restore / ip6tables-restore in one transaction, never one iptables
 * call per rule. */
#ifndef MTLSD_IPTABLES_H
#define MTLSD_IPTABLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IPTABLES_MAX_PORTS 64
#define IPTABLES_MAX_CIDRS 64

/* IPv4 and IPv6 CIDRs, as given (validated); the strings are owned by whoever filled
 * the list. */
struct iptables_cidrs {
  char *items[IPTABLES_MAX_CIDRS];
  size_t count;
};

struct iptables_opts {
  uint16_t outbound_port; /* The transparent outbound listener (15001). */
  uint16_t inbound_port;  /* The transparent inbound listener (15006). */
  uint16_t admin_port;    /* Never redirected, either way (15000). */
  uint16_t health_port;   /* Never redirected either, when not 0 (the sidecar's 15020). */
  uint32_t proxy_uid;     /* The sidecar's own traffic is never redirected (1337). */
  uint32_t proxy_gid;
  uint16_t exclude_inbound_ports[IPTABLES_MAX_PORTS];
  size_t exclude_inbound_count;
  uint16_t exclude_outbound_ports[IPTABLES_MAX_PORTS];
  size_t exclude_outbound_count;
  uint16_t inbound_ports[IPTABLES_MAX_PORTS]; /* Only these, when any are given. */
  size_t inbound_count;
  struct iptables_cidrs exclude_outbound_cidrs;
  /* When any are given, only outbound connections to these are redirected. */
  struct iptables_cidrs include_outbound_cidrs;
  /* The cluster's API server (KUBERNETES_SERVICE_HOST where the rules are made) joins the
   * excluded CIDRs: it is no mesh peer (true unless --no-exclude-api-server). */
  bool exclude_api_server;
};

/* iptables_cidr_valid tells whether |cidr| is an IPv4 or IPv6 address with an optional
 * "/prefix" in range, as the CIDR options take it. */
bool iptables_cidr_valid(const char *cidr);

/* iptables_port_list_check and iptables_cidr_list_check tell whether |list| is what the
 * port and CIDR list options take: comma-separated (spaces around an item allowed), no
 * empty item, no more than IPTABLES_MAX_PORTS or IPTABLES_MAX_CIDRS items; when not, the
 * offending item and its problem go to |err|. */
bool iptables_port_list_check(const char *list, char *err, size_t err_len);
bool iptables_cidr_list_check(const char *list, char *err, size_t err_len);

/* iptables_default_opts fills |opts| with the defaults above. */
void iptables_default_opts(struct iptables_opts *opts);

/* iptables_render returns, as a new string the caller frees, the iptables-restore input
 * that installs the rules for one family (|ipv6| selects which CIDRs apply and the
 * loopback address). |installed| is the current `iptables-save -t nat` output (may be
 * NULL): jumps from the built-in chains that already exist are not added again, which
 * makes applying twice leave the same rules. Returns NULL on allocation failure. */
char *iptables_render(const struct iptables_opts *opts, bool ipv6, const char *installed);

/* iptables_render_closed returns the ip6tables-restore input (filter table) that closes
 * IPv6 where it is not intercepted (no --ipv6): new TCP connections in and out are
 * rejected, loopback and the sidecar's own excepted, so that nothing passes in plaintext
 * around the sidecar. |installed| as for iptables_render (`ip6tables-save -t filter`). */
char *iptables_render_closed(const struct iptables_opts *opts, const char *installed);

/* iptables_render_clean returns the restore input that removes, from |table| ("nat" or
 * "filter"), every MTLSD_ chain and every jump to one, given the |installed| rules of
 * that table: what iptables_render and iptables_render_closed install. */
char *iptables_render_clean(const char *table, const char *installed);

/* iptables_parse_u32 reads a decimal number up to |max|; iptables_parse_port a port from 1
 * to 65535. False on anything else. */
bool iptables_parse_u32(uint32_t *out, const char *s, uint32_t max);
bool iptables_parse_port(uint16_t *out, const char *s);

/* iptables_parse_ports and iptables_parse_cidrs add the items of the comma-separated
 * |list| to |ports| (|*count| of them so far) or |cidrs|, as iptables_port_list_check and
 * iptables_cidr_list_check check them (the problem in |err|). The CIDRs are copies that
 * iptables_cidrs_free frees. */
bool iptables_parse_ports(uint16_t *ports, size_t *count, const char *list, char *err,
                          size_t err_len);
bool iptables_parse_cidrs(struct iptables_cidrs *cidrs, const char *list, char *err,
                          size_t err_len);
void iptables_cidrs_free(struct iptables_cidrs *cidrs);

#endif
