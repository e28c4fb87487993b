/* defaults: the numbers and names a meshed pod is built around, in one place: the
 * sidecar's ports, the proxy's user and group, where its certificates are mounted. The
 * injector writes them into pods, `mtlsd iptables` into the rules, and the sidecar's
 * configuration takes them as defaults (README, Kubernetes; docs/injection.md). */
#ifndef MTLSD_DEFAULTS_H
#define MTLSD_DEFAULTS_H

#define MTLSD_ADMIN_PORT 15000
#define MTLSD_OUTBOUND_PORT 15001
#define MTLSD_INBOUND_PORT 15006
#define MTLSD_HEALTH_PORT 15020
/* The proxy's UID and GID: what the interception rules let through. */
#define MTLSD_PROXY_ID 1337
#define MTLSD_CERTS_DIR "/var/run/mtlsd/certs"

/* MTLSD_TEXT(MTLSD_ADMIN_PORT) is "15000": for the strings built from these. */
#define MTLSD_TEXT_(x) #x
#define MTLSD_TEXT(x) MTLSD_TEXT_(x)

#endif
