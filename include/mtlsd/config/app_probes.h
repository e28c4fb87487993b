/* app_probes: what the injector hands the sidecar about the application beside it, in
 * two environment variables: MTLSD_APP_PROBES, the containers' original probes and
 * lifecycle hooks, and MTLSD_APP_METRICS, where the application serves its metrics. Read
 * as strictly as the configuration file (with jsonread), into struct config.
 *
 * Ownership: the probes and the metrics path go into the struct config passed in, which
 * owns them from then on (config_free frees them). struct app_probe stays in config.h,
 * beside struct config that holds an array of them. */
#ifndef MTLSD_APP_PROBES_H
#define MTLSD_APP_PROBES_H

#include <stdbool.h>
#include <stddef.h>

#include "mtlsd/config/config.h"

/* The bounds MTLSD_APP_PROBES and MTLSD_APP_METRICS hold their values to: the injector
 * keeps within them, so that a pod it writes has a sidecar that starts. */
enum { APP_PROBE_TIMEOUT_MAX_S = 86400, APP_METRICS_PATH_MAX = 1024 };

/* config_parse_app_probes reads |json| (|len| bytes; MTLSD_APP_PROBES, named |name| in
 * messages): an object mapping "<container>/<kind>" to the original probe of the pod
 * spec, of which it keeps httpGet, tcpSocket or grpc (exactly one) and timeoutSeconds,
 * and accepts the other probe fields (periodSeconds, ...), which the kubelet applies to
 * the rewritten probe; and "<container>/<poststartz|prestopz>" to an original lifecycle
 * handler (httpGet or tcpSocket) with the timeoutSeconds the injector gave it. Ports must be
 * numbers (the injector resolves named ports). The probes go into |cfg|, which owns them. Returns
 * false with "NAME: PATH: problem" in |err| on anything else, leaving |cfg| unchanged. */
bool config_parse_app_probes(struct config *cfg, const char *name, const char *json, size_t len,
                             char *err, size_t err_len);

/* config_parse_app_metrics reads |json| (|len| bytes; MTLSD_APP_METRICS, named |name| in
 * messages): {"port": N, "path": "/metrics"}, the pod's own prometheus.io/port and path;
 * port 1-65535 is required, path defaults to "/metrics" and must start with '/'; any
 * other key is refused. Sets cfg->app_metrics; returns false with "NAME: PATH: problem"
 * in |err| on anything else, leaving |cfg| unchanged. */
bool config_parse_app_metrics(struct config *cfg, const char *name, const char *json, size_t len,
                              char *err, size_t err_len);

/* config_find_app_probe returns the probe of |key| ("<container>/<kind>", |key_len|
 * bytes), or NULL. */
const struct app_probe *config_find_app_probe(const struct config *cfg, const char *key,
                                              size_t key_len);

/* app_probes_dns_label_valid tells whether the |len| bytes at |s| are an RFC 1123 label
 * (lowercase letters, digits and '-', at most 63, starting and ending with a letter or
 * digit), as the names of Kubernetes containers and namespaces are. */
bool app_probes_dns_label_valid(const char *s, size_t len);

#endif
