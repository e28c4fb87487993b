/* inject: the one mutation behind `mtlsd inject` and the admission webhook (docs/injection.md,
 * "What injection does to a pod"). Pure: a Kubernetes object in, the JSON Patch that injects it
 * out, no I/O.
 *
 * The result is a list of RFC 6902 "add" operations against the object as received, so
 * that the webhook can return it as is and `mtlsd inject` can apply it (jsonpatch_apply):
 * both give the same pod by construction. Nothing is removed or reordered and no field
 * is dropped, as the object is never re-serialized through a typed model: operations
 * only add members and array elements (and, for the probe rewrite, replace the probe
 * objects of the application containers, which "add" does on an existing member).
 *
 * Owns struct inject_config (inject_config_default) and the patch of an inject_result
 * (inject_result_clear). The modules behind it: inject.c (the driver and what is added),
 * inject_checks.c, inject_probes.c (src/inject_internal.h), over kjson and jsonpatch. */
#ifndef MTLSD_INJECT_H
#define MTLSD_INJECT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* The injector configuration: what every injected pod gets unless its annotations say
 * otherwise. */
struct inject_config {
  const char *image;
  const char *pull_policy;
  const char *trust_domain;
  const char *own_namespace; /* The injector's: never injected. */
  bool native_sidecar;
  const char *cpu_request, *memory_request, *cpu_limit, *memory_limit; /* NULL: none. */
  const char *csi_driver; /* The certificate volume, unless mtlsd.io/cert-secret is set. */
  /* Defaults of the exclusion annotations (comma-separated; NULL: none). */
  const char *exclude_inbound_ports, *exclude_outbound_ports;
  const char *exclude_outbound_cidrs, *include_outbound_cidrs;
  /* The init container excludes the API server it sees (KUBERNETES_SERVICE_HOST in the
   * pod, at run time); false adds --no-exclude-api-server. */
  bool exclude_api_server;
  bool ipv6; /* Intercept IPv6 and listen on it too (off where pods have no IPv6). */
  /* A JSON object of sidecar settings (tls, limits, ...) that MTLSD_CONFIG starts from;
   * the injection sets the addresses, listeners and certificates over it. NULL: none. */
  const char *sidecar_base;
};

/* inject_config_default fills |cfg| with the built-in defaults. */
void inject_config_default(struct inject_config *cfg);

/* inject_quantity_valid tells whether |s| is a Kubernetes resource quantity ("100m",
 * "64Mi", "1.5", "2e3"). */
bool inject_quantity_valid(const char *s);

enum inject_outcome {
  INJECT_INJECTED,
  INJECT_SKIPPED, /* Returned unchanged (hostNetwork, disabled, a system namespace, done). */
  INJECT_REFUSED, /* Must not run as it is (UID 1337, a bad annotation, an unknown port). */
};

enum { INJECT_WARNINGS_MAX = 4 };

struct inject_result {
  enum inject_outcome outcome;
  char reason[512];      /* Why it was skipped or refused; what was added when injected. */
  cJSON *patch;          /* INJECT_INJECTED: the array of "add" operations; else NULL. */
  bool already_injected; /* INJECT_SKIPPED because an injector has been here before. */
  /* What the user should know of an injection that is no reason to refuse it (a Job that
   * will not complete by itself, a group set on the pod), one sentence each. */
  char warnings[INJECT_WARNINGS_MAX][256];
  size_t warning_count;
};

/* inject_object computes the mutation of |object|, a Pod or a workload with a pod template
 * (Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob,
 * OpenShift's DeploymentConfig; matched by kind and API group), in |ns| (NULL: the
 * object's own metadata.namespace, else "default"). Fills |*out|; returns false only when
 * |object| is not one of these kinds (|out->reason| says why), which a caller passes
 * through untouched. */
bool inject_object(const struct inject_config *cfg, const cJSON *object, const char *ns,
                   struct inject_result *out);

/* inject_result_clear frees the patch of |r|. */
void inject_result_clear(struct inject_result *r);

#endif
