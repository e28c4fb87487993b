/* inject_internal: what the modules of the injection share (inject.c drives, inject_checks.c
 * decides whether and how a pod may be injected, inject_probes.c rewrites what the kubelet
 * calls): the state of one mutation and the names and numbers the injection adds.
 *
 * A struct mutation lives on inject_object's stack; it borrows the object and the
 * configuration, and owns its patch and the two environment objects until
 * inject_object hands the patch to the result or deletes them. */
#ifndef MTLSD_INJECT_INTERNAL_H
#define MTLSD_INJECT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "mtlsd/base/defaults.h"
#include "mtlsd/config/app_probes.h"
#include "mtlsd/kube/inject.h"

#define ANNOTATION_PREFIX "mtlsd.io/"
#define CERTS_VOLUME "mtlsd-certs"
#define SIDECAR_NAME "mtlsd"
#define INIT_NAME "mtlsd-init"
#define INJECTED_LABEL "mtlsd.io/injected"
/* The kubelet's default terminationGracePeriodSeconds. */
#define DEFAULT_GRACE_SECONDS 30

struct mutation {
  const struct inject_config *cfg;
  struct inject_result *out;
  cJSON *patch;
  char meta_ptr[64];
  char spec_ptr[64];
  const cJSON *meta;
  const cJSON *spec;
  const cJSON *annotations;
  const cJSON *labels;
  bool job; /* A Job's or CronJob's pod: it must end for the Job to complete. */
  bool native;
  bool rewrite_probes;
  double grace_seconds; /* The pod's terminationGracePeriodSeconds: a hook's timeout. */
  cJSON *app_probes;    /* MTLSD_APP_PROBES, built while rewriting. */
  cJSON *app_metrics;   /* MTLSD_APP_METRICS, or NULL. */
};

/* inject_settle records the outcome (once: the first reason stands) and returns false, so
 * that a check can "return inject_settle(...)". */
bool inject_settle(struct mutation *m, enum inject_outcome outcome, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* inject_warn adds a warning to the result (up to INJECT_WARNINGS_MAX). */
void inject_warn(struct mutation *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* inject_annotation returns the pod's annotation |key|, or NULL. */
const char *inject_annotation(const struct mutation *m, const char *key);

/* inject_add_op adds the operation {"op": "add", "path": |path|, "value": |value|},
 * taking |value|; false (refused: out of memory) when it could not be made. */
bool inject_add_op(struct mutation *m, const char *path, cJSON *value);

/* inject_next_item copies the next comma-separated item of |*p| into |item| (|cap|
 * bytes), the spaces and tabs around it trimmed (people write "a, b"), and moves |*p|
 * past it; false at the end of the list. An item too long for |item| comes out empty,
 * which every check refuses. */
bool inject_next_item(const char **p, char *item, size_t cap);

/* inject_one_of tells whether |s| is one of the NULL-terminated |choices|. */
bool inject_one_of(const char *s, const char *const *choices);

/* The checks, in the order inject_object runs them: each returns false (the object
 * skipped or refused, with the reason settled) or true to go on; inject_should_skip
 * returns true when the object is skipped. */
bool inject_should_skip(struct mutation *m, const char *ns);
bool inject_check_shape(struct mutation *m);
bool inject_check_annotations(struct mutation *m);
bool inject_check_conflicts(struct mutation *m);
bool inject_check_identities(struct mutation *m);

/* inject_rewrite_probes rewrites the probes and lifecycle hooks the kubelet calls on the
 * pod's network to the health port, recording the originals in m->app_probes. */
bool inject_rewrite_probes(struct mutation *m);

#endif
