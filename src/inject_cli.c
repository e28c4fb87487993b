/* inject_cli: the `mtlsd inject` command (see mtlsd/inject_cli.h). */
#include "mtlsd/inject_cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtlsd/exit.h"
#include "mtlsd/file.h"
#include "mtlsd/inject.h"
#include "mtlsd/injector.h"
#include "mtlsd/json_syntax.h"
#include "mtlsd/textbuf.h"
#include "mtlsd/yaml.h"

/* Far beyond any manifest a person applies at once. */
enum { INPUT_MAX = 64 << 20 };

static const char usage_text[] =
    "usage: mtlsd inject [-f FILE] [--config FILE] [-o json|yaml]\n"
    "\n"
    "Reads Kubernetes objects (JSON or YAML, several documents, kind: List) from FILE or\n"
    "stdin and writes them to stdout with every Pod, Deployment, StatefulSet, DaemonSet,\n"
    "ReplicaSet, Job and CronJob injected with the mtlsd sidecar; other objects pass\n"
    "through. The output has the input's format unless -o says otherwise; YAML comments\n"
    "are not kept. What happened to each object goes to stderr. --config is the\n"
    "injector configuration (docs/injection.md); without it, built-in defaults.\n"
    "Exit 0, 1 when an object is refused (written out unchanged), 2 on bad input.\n";

/* Reads all of stdin (a pipe: no size to trust). */
static char *read_stdin(size_t *len) {
  struct textbuf b = {0};
  char chunk[65536];
  ssize_t n;
  while ((n = read(STDIN_FILENO, chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) {
      textbuf_append(&b, chunk, (size_t)n);
    }
    if (b.len > INPUT_MAX) {
      free(textbuf_finish(&b));
      return NULL;
    }
  }
  *len = b.len;
  return textbuf_finish(&b);
}

static const char *member(const cJSON *obj, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* "deployment/web" for the report. */
static void describe(char *out, size_t len, const cJSON *obj) {
  const char *kind = member(obj, "kind");
  const char *name = member(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
  char lower[64];
  snprintf(lower, sizeof(lower), "%s", kind != NULL ? kind : "object");
  for (char *c = lower; *c != '\0'; c++) {
    *c = (char)tolower((unsigned char)*c);
  }
  snprintf(out, len, "%s/%s", lower, name != NULL ? name : "(no name)");
}

/* Injects |*obj| in place; returns false when it was refused. */
static bool process(const struct inject_config *cfg, cJSON **obj) {
  char what[200];
  describe(what, sizeof(what), *obj);
  struct inject_result r;
  if (!inject_object(cfg, *obj, NULL, &r)) {
    fprintf(stderr, "%s: passed through (%s)\n", what, r.reason);
    return true;
  }
  if (r.outcome == INJECT_INJECTED) {
    cJSON *injected = inject_apply(*obj, r.patch);
    inject_result_clear(&r);
    if (injected == NULL) {
      fprintf(stderr, "%s: refused: the mutation does not apply (out of memory?)\n", what);
      return false;
    }
    cJSON_Delete(*obj);
    *obj = injected;
    fprintf(stderr, "%s: injected\n", what);
    return true;
  }
  fprintf(stderr, "%s: %s: %s\n", what, r.outcome == INJECT_SKIPPED ? "skipped" : "refused",
          r.reason);
  return r.outcome == INJECT_SKIPPED;
}

/* Processes one document: an object, or the items of a List. */
static bool process_document(const struct inject_config *cfg, cJSON *docs, int index) {
  cJSON *doc = cJSON_GetArrayItem(docs, index);
  const char *kind = member(doc, "kind");
  size_t klen = kind != NULL ? strlen(kind) : 0;
  cJSON *items = cJSON_GetObjectItemCaseSensitive(doc, "items");
  if (klen >= 4 && strcmp(kind + klen - 4, "List") == 0 && cJSON_IsArray(items)) {
    bool ok = true;
    for (int i = 0; i < cJSON_GetArraySize(items); i++) {
      cJSON *item = cJSON_GetArrayItem(items, i);
      cJSON *work = cJSON_Duplicate(item, true);
      ok = process(cfg, &work) && ok;
      cJSON_ReplaceItemInArray(items, i, work);
    }
    return ok;
  }
  cJSON *work = cJSON_Duplicate(doc, true);
  bool ok = process(cfg, &work);
  cJSON_ReplaceItemInArray(docs, index, work);
  return ok;
}

static int inject_files(const char *file, const char *format, const struct inject_config *cfg);

int inject_main(int argc, char **argv) {
  const char *file = NULL;
  const char *config_path = NULL;
  const char *format = NULL;
  for (int i = 1; i < argc; i++) {
    bool has_value = i + 1 < argc;
    if ((strcmp(argv[i], "-f") == 0 || strcmp(argv[i], "--filename") == 0) && has_value) {
      file = argv[++i];
    } else if (strcmp(argv[i], "--config") == 0 && has_value) {
      config_path = argv[++i];
    } else if (strcmp(argv[i], "-o") == 0 && has_value) {
      format = argv[++i];
      if (strcmp(format, "json") != 0 && strcmp(format, "yaml") != 0) {
        fprintf(stderr, "mtlsd inject: -o: \"%s\" is not json or yaml\n", format);
        return MTLSD_EXIT_USAGE;
      }
    } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(usage_text, stdout);
      return MTLSD_EXIT_OK;
    } else {
      fprintf(stderr, "mtlsd inject: unexpected or incomplete argument \"%s\"\n%s", argv[i],
              usage_text);
      return MTLSD_EXIT_USAGE;
    }
  }
  struct injector inj;
  char why[1024];
  if (!injector_load(&inj, config_path, why, sizeof(why))) {
    fprintf(stderr, "%s\n", why);
    return MTLSD_EXIT_USAGE;
  }
  int code = inject_files(file, format, &inj.cfg);
  injector_free(&inj);
  return code;
}

/* Reads, injects and writes; see inject_main. */
static int inject_files(const char *file, const char *format, const struct inject_config *cfg) {
  const char *source = file != NULL && strcmp(file, "-") != 0 ? file : "stdin";
  size_t len = 0;
  char *text = NULL;
  if (strcmp(source, "stdin") == 0) {
    text = read_stdin(&len);
  } else {
    uint8_t *bytes = NULL;
    int r = file_read_all(file, INPUT_MAX, 0, &bytes, &len);
    if (r != 0) {
      fprintf(stderr, "mtlsd inject: %s: cannot read: %s\n", file, file_error_string(r));
      return MTLSD_EXIT_USAGE;
    }
    text = (char *)bytes;
  }
  if (text == NULL) {
    fprintf(stderr, "mtlsd inject: %s: cannot read it (or it is over %d MiB)\n", source,
            INPUT_MAX >> 20);
    return MTLSD_EXIT_USAGE;
  }
  const char *first = text + strspn(text, " \t\r\n");
  bool json = *first == '{' || *first == '[';
  char err[300];
  cJSON *docs;
  size_t at;
  const char *what;
  if (json && json_syntax_locate(text, len, JSON_SYNTAX_NO_NUL, &at, &what)) {
    docs = NULL;
    snprintf(err, sizeof(err), "not valid JSON: %s at byte %zu", what, at);
  } else if (json) {
    const char *end = NULL;
    /* The terminator counts in the length, for cJSON to accept the end of the text. */
    cJSON *doc = cJSON_ParseWithLengthOpts(text, len + 1, &end, true);
    docs = doc != NULL ? cJSON_CreateArray() : NULL;
    if (docs != NULL) {
      cJSON_AddItemToArray(docs, doc);
    }
    snprintf(err, sizeof(err), "not valid JSON near byte %td", end != NULL ? end - text : 0);
  } else {
    docs = yaml_parse(text, len, err, sizeof(err));
  }
  free(text);
  if (docs == NULL) {
    fprintf(stderr, "mtlsd inject: %s: %s\n", source, err);
    return MTLSD_EXIT_USAGE;
  }
  for (int i = 0; i < cJSON_GetArraySize(docs); i++) {
    if (!cJSON_IsObject(cJSON_GetArrayItem(docs, i))) {
      fprintf(stderr, "mtlsd inject: %s: document %d is not a Kubernetes object\n", source, i + 1);
      cJSON_Delete(docs);
      return MTLSD_EXIT_USAGE;
    }
  }
  bool ok = true;
  for (int i = 0; i < cJSON_GetArraySize(docs); i++) {
    ok = process_document(cfg, docs, i) && ok;
  }
  bool as_json = format != NULL ? strcmp(format, "json") == 0 : json;
  for (int i = 0; i < cJSON_GetArraySize(docs); i++) {
    const cJSON *doc = cJSON_GetArrayItem(docs, i);
    char *out = as_json ? cJSON_Print(doc) : yaml_emit(doc);
    if (out == NULL) {
      fprintf(stderr, "mtlsd inject: out of memory\n");
      cJSON_Delete(docs);
      return MTLSD_EXIT_FAILED;
    }
    fputs(!as_json && i > 0 ? "---\n" : "", stdout);
    fputs(out, stdout);
    fputs(as_json ? "\n" : "", stdout);
    free(out);
  }
  cJSON_Delete(docs);
  return ok ? MTLSD_EXIT_OK : MTLSD_EXIT_FAILED;
}
