/* admission: one Kubernetes AdmissionReview (admission.k8s.io/v1) in, its answer out,
 * for `mtlsd webhook` (docs/injection.md). Pure: JSON text in, JSON text out, no I/O; the
 * mutation itself is the inject module's, so the webhook's patch and `mtlsd inject`'s
 * output are the same pod by construction.
 *
 * The answer has the request's uid and, by outcome: injected, allowed with the base64
 * RFC 6902 patch of "add" operations against the object received; skipped, allowed
 * with no patch and a warning saying why (none for a pod injected already, so that the
 * API server's reinvocation is silent); refused, not allowed, with the reason. */
#ifndef MTLSD_ADMISSION_H
#define MTLSD_ADMISSION_H

#include <stddef.h>

#include "mtlsd/kube/inject.h"

enum admission_result {
  ADMISSION_INJECTED,
  ADMISSION_SKIPPED, /* Also a review of anything but a CREATE, and of a kind without pods. */
  ADMISSION_REFUSED,
  ADMISSION_BAD_REVIEW, /* The body is no AdmissionReview v1: answer 400 with |msg|. */
  ADMISSION_ERROR,      /* Out of memory: answer 500. */
};

/* admission_review answers the AdmissionReview in |body| (|len| bytes) with |cfg|. It
 * returns the JSON text of the answering AdmissionReview, which the caller frees, and
 * sets |*result|; or NULL with ADMISSION_BAD_REVIEW or ADMISSION_ERROR. |msg| gets one
 * line for the log: what was reviewed and what happened, or what is wrong with |body|. */
char *admission_review(const struct inject_config *cfg, const char *body, size_t len,
                       enum admission_result *result, char *msg, size_t msg_len);

#endif
