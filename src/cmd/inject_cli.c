/* inject_cli: the `mtlsd inject` command (see mtlsd/inject_cli.h). */
#include "mtlsd/cmd/inject_cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mtlsd/base/exit.h"
#include "mtlsd/base/file.h"
#include "mtlsd/base/json_syntax.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/kube/inject.h"
#include "mtlsd/kube/injector.h"
#include "mtlsd/kube/jsonpatch.h"
#include "mtlsd/kube/kjson.h"
#include "mtlsd/kube/yaml.h"

/* Far beyond any manifest a person applies at once. */
enum { INPUT_MAX = 64 << 20 };

static const char usage_text[] =
    "usage: mtlsd inject [-f FILE] [--config FILE] [-o json|yaml]\n"
    "\n"
    "Reads Kubernetes objects (JSON or YAML, several documents, kind: List) from FILE or\n"
    "stdin and writes them to stdout with every Pod, Deployment, StatefulSet, DaemonSet,\n"
    "ReplicaSet, Job and CronJob injected with the mtlsd sidecar; other objects pass\n"
    "through. The output has the input's format unless -o says otherwise (several\n"
    "documents in JSON are one kind: List); YAML comments are not kept. What happened\n"
    "to each object goes to stderr. --config is the injector configuration\n"
    "(docs/injection.md); without it, built-in defaults.\n"
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

/* "deployment/web" for the report. */
static void describe(char *out, size_t len, const cJSON *obj) {
  const char *kind = kjson_string(obj, "kind");
  const char *name = kjson_string(cJSON_GetObjectItemCaseSensitive(obj, "metadata"), "name");
  char lower[64];
  snprintf(lower, sizeof(lower), "%s", kind != NULL ? kind : "object");
  for (char *c = lower; *c != '\0'; c++) {
    *c = (char)tolower((unsigned char)*c);
  }
  snprintf(out, len, "%s/%s", lower, name != NULL ? name : "(no name)");
}

/* Whether |doc| is a List (kind: List, PodList...) with its items. */
static bool is_list(const cJSON *doc) {
  const char *kind = kjson_string(doc, "kind");
  size_t klen = kind != NULL ? strlen(kind) : 0;
  return klen >= 4 && strcmp(kind + klen - 4, "List") == 0 &&
         cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(doc, "items"));
}

/* Why |obj| is no Kubernetes object, or NULL when it is one: kubectl wants a kind and an
 * apiVersion too. */
static const char *not_an_object(const cJSON *obj) {
  if (!cJSON_IsObject(obj)) {
    return cJSON_IsArray(obj) ? "a list, not a mapping" : "a scalar, not a mapping";
  }
  const char *kind = kjson_string(obj, "kind");
  const char *api_version = kjson_string(obj, "apiVersion");
  if (kind == NULL || kind[0] == '\0') {
    return "it has no \"kind\" (is it a Helm values file?)";
  }
  return api_version == NULL || api_version[0] == '\0' ? "it has no \"apiVersion\"" : NULL;
}

/* Checks that |doc|, and every item when it is a List, is a Kubernetes object, which
 * stderr hears about when not. */
static bool check_document(const char *source, const cJSON *doc,
                           const struct yaml_doc_place *place) {
  const char *why = not_an_object(doc);
  if (why != NULL) {
    fprintf(stderr, "mtlsd inject: %s: document %zu is not a Kubernetes object (line %zu): %s\n",
            source, place->number, place->line, why);
    return false;
  }
  size_t i = 0;
  const cJSON *items = is_list(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "items") : NULL;
  for (const cJSON *item = items != NULL ? items->child : NULL; item != NULL; item = item->next) {
    i++;
    if ((why = not_an_object(item)) != NULL) {
      fprintf(stderr,
              "mtlsd inject: %s: document %zu (line %zu): item %zu of the %s is not a "
              "Kubernetes object: %s\n",
              source, place->number, place->line, i, kjson_string(doc, "kind"), why);
      return false;
    }
  }
  return true;
}

/* Injects |*obj|, replacing it (in |parent| too when it is a List's items) with the
 * injected object, and says what happened in |report|; returns false when it was
 * refused. */
static bool process(const struct inject_config *cfg, struct textbuf *report, cJSON *parent,
                    cJSON **obj) {
  char what[200];
  describe(what, sizeof(what), *obj);
  struct inject_result r;
  if (!inject_object(cfg, *obj, NULL, &r)) {
    textbuf_printf(report, "%s: passed through (%s)\n", what, r.reason);
    return true;
  }
  if (r.outcome == INJECT_INJECTED) {
    cJSON *injected = jsonpatch_apply(*obj, r.patch);
    inject_result_clear(&r);
    if (injected == NULL) {
      textbuf_printf(report, "%s: refused: the mutation does not apply (out of memory?)\n", what);
      return false;
    }
    if (parent != NULL) {
      cJSON_ReplaceItemViaPointer(parent, *obj, injected);
    } else {
      cJSON_Delete(*obj);
    }
    *obj = injected;
    textbuf_printf(report, "%s: injected\n", what);
    for (size_t i = 0; i < r.warning_count; i++) {
      textbuf_printf(report, "%s: warning: %s\n", what, r.warnings[i]);
    }
    return true;
  }
  textbuf_printf(report, "%s: %s: %s\n", what, r.outcome == INJECT_SKIPPED ? "skipped" : "refused",
                 r.reason);
  return r.outcome == INJECT_SKIPPED;
}

/* Processes one document: an object, or the items of a List. */
static bool process_document(const struct inject_config *cfg, struct textbuf *report, cJSON **doc) {
  if (!is_list(*doc)) {
    return process(cfg, report, NULL, doc);
  }
  cJSON *items = cJSON_GetObjectItemCaseSensitive(*doc, "items");
  bool ok = true;
  cJSON *next;
  for (cJSON *item = items->child; item != NULL; item = next) {
    next = item->next;
    ok = process(cfg, report, items, &item) && ok;
  }
  return ok;
}

/* The documents of the input, read one at a time: YAML, or JSON documents one after the
 * other (a JSON stream, as kubectl reads). The input owns |text|. */
struct input {
  const char *source; /* The file's name, or "stdin". */
  char *text;
  size_t len;
  bool json;
  size_t pos;     /* JSON: where the next document may start. */
  size_t count;   /* JSON: the documents read. */
  size_t counted; /* JSON: the line breaks before this byte are counted in |line|. */
  size_t line;
  struct yaml_reader *yaml;
};

/* yaml_reader_next for a JSON stream. */
static int next_json(struct input *in, cJSON **doc, struct yaml_doc_place *place, char *err,
                     size_t err_len) {
  size_t start = in->pos + strspn(in->text + in->pos, " \t\r\n");
  if (start >= in->len) {
    return 0;
  }
  /* Lines are counted on from the document before, not from the start of the text
   * again: time stays linear in the number of documents. */
  for (; in->counted < start; in->counted++) {
    in->line += in->text[in->counted] == '\n';
  }
  *place = (struct yaml_doc_place){.number = ++in->count, .line = in->line};
  const char *end = NULL;
  /* The terminator counts in the length, for cJSON to accept a value that ends the text. */
  *doc = cJSON_ParseWithLengthOpts(in->text + start, in->len - start + 1, &end, false);
  size_t stop = end != NULL ? (size_t)(end - in->text) : start;
  /* cJSON cuts a string at a NUL, which json_syntax refuses; when cJSON fails, json_syntax
   * says where and why (or finds nothing wrong: cJSON ran out of memory). */
  size_t at;
  const char *what;
  bool bad = json_syntax_locate(in->text + start, *doc != NULL ? stop - start : in->len - start,
                                JSON_SYNTAX_NO_NUL, &at, &what);
  if (*doc != NULL && !bad) {
    in->pos = stop;
    return 1;
  }
  cJSON_Delete(*doc);
  *doc = NULL;
  at = bad ? start + at : stop;
  size_t line;
  size_t column;
  yaml_text_position(in->text, at, &line, &column);
  snprintf(err, err_len,
           "line %zu, column %zu (byte %zu): %s%s (document %zu, from line %zu, byte %zu)", line,
           column, at, bad ? "not valid JSON: " : "out of memory", bad ? what : "", place->number,
           place->line, start);
  return -1;
}

static int next_document(struct input *in, cJSON **doc, struct yaml_doc_place *place, char *err,
                         size_t err_len) {
  return in->json ? next_json(in, doc, place, err, err_len)
                  : yaml_reader_next(in->yaml, doc, place, err, err_len);
}

/* Reads the whole input (|file|, or stdin for NULL or "-") and finds its format: JSON
 * when it starts with '{' or '[' after a byte order mark and spaces. */
static bool open_input(struct input *in, const char *file) {
  in->source = file != NULL && strcmp(file, "-") != 0 ? file : "stdin";
  if (strcmp(in->source, "stdin") == 0) {
    in->text = read_stdin(&in->len);
  } else {
    uint8_t *bytes = NULL;
    int r = file_read_all(file, INPUT_MAX, 0, &bytes, &in->len);
    if (r != 0) {
      fprintf(stderr, "mtlsd inject: %s: cannot read: %s\n", file, file_error_string(r));
      return false;
    }
    in->text = (char *)bytes;
  }
  if (in->text == NULL) {
    fprintf(stderr, "mtlsd inject: %s: cannot read it (or it is over %d MiB)\n", in->source,
            INPUT_MAX >> 20);
    return false;
  }
  in->line = 1;
  if (in->len >= 3 && memcmp(in->text, "\xef\xbb\xbf", 3) == 0) {
    in->pos = 3;
  }
  const char *first = in->text + in->pos + strspn(in->text + in->pos, " \t\r\n");
  in->json = *first == '{' || *first == '[';
  if (!in->json && (in->yaml = yaml_reader_new(in->text, in->len)) == NULL) {
    fprintf(stderr, "mtlsd inject: out of memory\n");
    return false;
  }
  return true;
}

/* What is written, built as the documents come, each freed once written: the input
 * read whole is checked whole, but only one document's tree is in memory at a time. */
struct output {
  bool json;
  size_t count;          /* Documents. */
  struct textbuf text;   /* YAML documents; in JSON, the List after its first document. */
  cJSON *first;          /* JSON: the first document, until a second makes it a List's. */
  size_t items;          /* JSON: the List's items written. */
  struct textbuf report; /* What happened to each object, for stderr. */
};

/* Appends |doc| as items of the List (its items, when it is a List itself: kubectl's
 * List has no List in it), and deletes it. */
static void add_items(struct output *out, cJSON *doc) {
  const cJSON *items = is_list(doc) ? cJSON_GetObjectItemCaseSensitive(doc, "items") : NULL;
  for (const cJSON *item = items != NULL ? items->child : doc; item != NULL;
       item = items != NULL ? item->next : NULL) {
    textbuf_str(&out->text, out->items++ > 0 ? ",\n        " : "\n        ");
    yaml_write_json(&out->text, item, 8);
  }
  cJSON_Delete(doc);
}

/* Writes (or, the first in JSON, keeps) |doc|, which it takes. Several documents written
 * as JSON are one List, as kubectl writes them. */
static void output_add(struct output *out, cJSON *doc) {
  if (!out->json) {
    textbuf_str(&out->text, out->count++ > 0 ? "---\n" : "");
    yaml_write(&out->text, doc);
    cJSON_Delete(doc);
    return;
  }
  if (out->count++ == 0) {
    out->first = doc;
    return;
  }
  if (out->first != NULL) {
    textbuf_str(&out->text,
                "{\n    \"apiVersion\": \"v1\",\n    \"kind\": \"List\",\n"
                "    \"items\": [");
    add_items(out, out->first);
    out->first = NULL;
  }
  add_items(out, doc);
}

/* The whole output, which the caller frees; NULL when out of memory. */
static char *output_finish(struct output *out) {
  if (out->first != NULL) {
    yaml_write_json(&out->text, out->first, 0);
    textbuf_str(&out->text, "\n");
    cJSON_Delete(out->first);
    out->first = NULL;
  } else if (out->json && out->count > 1) {
    textbuf_str(&out->text, out->items > 0 ? "\n    ]\n}\n" : "]\n}\n");
  }
  return textbuf_finish(&out->text);
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

/* Reads, injects and writes; see inject_main. Nothing is written, but the problem, when
 * any document is bad. */
static int inject_files(const char *file, const char *format, const struct inject_config *cfg) {
  struct input in = {0};
  if (!open_input(&in, file)) {
    free(in.text);
    return MTLSD_EXIT_USAGE;
  }
  struct output out = {.json = format != NULL ? strcmp(format, "json") == 0 : in.json};
  bool ok = true;
  int got;
  cJSON *doc;
  struct yaml_doc_place place;
  char err[400];
  while ((got = next_document(&in, &doc, &place, err, sizeof(err))) > 0) {
    if (!check_document(in.source, doc, &place)) {
      cJSON_Delete(doc);
      break;
    }
    ok = process_document(cfg, &out.report, &doc) && ok;
    output_add(&out, doc);
  }
  if (got < 0) {
    fprintf(stderr, "mtlsd inject: %s: %s\n", in.source, err);
  }
  yaml_reader_free(in.yaml);
  free(in.text);
  char *report = textbuf_finish(&out.report);
  char *text = output_finish(&out);
  int code = got != 0 ? MTLSD_EXIT_USAGE : ok ? MTLSD_EXIT_OK : MTLSD_EXIT_FAILED;
  if (got == 0 && (report == NULL || text == NULL)) {
    fprintf(stderr, "mtlsd inject: out of memory\n");
    code = MTLSD_EXIT_FAILED;
  } else if (got == 0) {
    fputs(report, stderr);
    fputs(text, stdout);
  }
  if (got == 0 && out.count == 0) {
    /* Said, but no error: a filter (helm --post-renderer, a pipe into kubectl) of a chart
     * that renders nothing must not fail; kubectl apply then says "no objects passed". */
    fprintf(stderr,
            "mtlsd inject: %s: no Kubernetes object in the input (it is empty, or only "
            "comments and \"---\")\n",
            in.source);
  }
  free(report);
  free(text);
  return code;
}
