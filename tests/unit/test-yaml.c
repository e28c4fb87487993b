/* YAML in and out: kubectl's scalar rules, strings that must stay strings, key order,
 * anchors and merges, several documents, and errors with their position; how values
 * look when written (numbers, blocks, JSON); kubectl's bound on aliasing, allocation
 * failures, and time linear in the size of the input (of `mtlsd inject` too). */
#include "mtlsd/kube/yaml.h"

#include <fcntl.h>
#include <time.h>

#include "mtlsd/base/json_alloc.h"
#include "mtlsd/base/textbuf.h"
#include "mtlsd/cmd/inject_cli.h"
#include "test.h"

static cJSON *parse_one(const char *text) {
  char err[256];
  cJSON *docs = yaml_parse(text, strlen(text), err, sizeof(err));
  if (docs == NULL) {
    fprintf(stderr, "  yaml: %s\n", err);
    return NULL;
  }
  cJSON *doc = cJSON_DetachItemFromArray(docs, 0);
  cJSON_Delete(docs);
  return doc;
}

static char *json_of(const char *yaml) {
  cJSON *doc = parse_one(yaml);
  char *text = doc != NULL ? cJSON_PrintUnformatted(doc) : NULL;
  cJSON_Delete(doc);
  return text;
}

TEST(scalars_resolve_as_kubectl_reads_them) {
  static const struct {
    const char *yaml;
    const char *json;
  } kCases[] = {
      {"a: 8080", "{\"a\":8080}"},
      {"a: \"8080\"", "{\"a\":\"8080\"}"},
      {"a: '8080'", "{\"a\":\"8080\"}"},
      {"a: true", "{\"a\":true}"},
      {"a: \"true\"", "{\"a\":\"true\"}"},
      {"a: yes", "{\"a\":true}"},
      {"a: on", "{\"a\":true}"},
      {"a: off", "{\"a\":false}"},
      {"a: 'on'", "{\"a\":\"on\"}"},
      {"a: 0644", "{\"a\":420}"},
      {"a: \"0755\"", "{\"a\":\"0755\"}"},
      {"a: 0x1F", "{\"a\":31}"},
      {"a: 1_000", "{\"a\":1000}"},
      {"a: 1e3", "{\"a\":1000}"},
      {"a: \"1e3\"", "{\"a\":\"1e3\"}"},
      {"a: 1.5", "{\"a\":1.5}"},
      {"a: ~", "{\"a\":null}"},
      {"a:", "{\"a\":null}"},
      {"a: !!str 42", "{\"a\":\"42\"}"},
      {"a: 10.0.0.1/8", "{\"a\":\"10.0.0.1/8\"}"},
      {"a: 1:20", "{\"a\":\"1:20\"}"},
      {"a: |\n  line one\n  line two\n", "{\"a\":\"line one\\nline two\\n\"}"},
      {"a: >-\n  folded\n  text\n", "{\"a\":\"folded text\"}"},
      {"8080: port", "{\"8080\":\"port\"}"},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    char *got = json_of(kCases[i].yaml);
    if (got == NULL || strcmp(got, kCases[i].json) != 0) {
      fprintf(stderr, "  %s\n    got:  %s\n    want: %s\n", kCases[i].yaml, got ? got : "(null)",
              kCases[i].json);
      test_failed_checks++;
    }
    free(got);
  }
}

TEST(strings_that_look_like_something_else_are_quoted) {
  static const char *const kStrings[] = {
      "8080", "true", "0755", "1e3", "on",        "yes",       "~",         "",     "null",
      "-x",   "a: b", "#c",   " s",  "x\ny",      "1.5",       "0x10",      "*ref", "&a",
      "@at",  "'q'",  "---",  "...", "NU\u2028L", "caf\u00e9", "a\302\205b"};
  for (size_t i = 0; i < sizeof(kStrings) / sizeof(kStrings[0]); i++) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "v", kStrings[i]);
    char *yaml = yaml_emit(doc);
    cJSON *back = parse_one(yaml);
    const cJSON *v = cJSON_GetObjectItem(back, "v");
    if (!cJSON_IsString(v) || strcmp(v->valuestring, kStrings[i]) != 0) {
      fprintf(stderr, "  \"%s\" came back otherwise from:\n%s", kStrings[i], yaml);
      test_failed_checks++;
    }
    cJSON_Delete(back);
    free(yaml);
    cJSON_Delete(doc);
  }
}

/* Strings that some YAML 1.1 or 1.2 reader (go-yaml v2/v3 strips '_' and knows 0o)
 * takes for a number, a boolean or null come out quoted; others stay plain. */
TEST(strings_any_reader_could_retype_are_quoted) {
  static const char *const kQuoted[] = {"0o022", "0O17",  "+0o7",
                                        "0x_1F", "0_0",   "1_000.5",
                                        ".5",    "+.INF", "-.Nan",
                                        ".inf",  "YES",   "yEs",
                                        "Off",   "nUll",  "N",
                                        "y",     "~",     "",
                                        "<<",    "=",     "1:20",
                                        "+1",    "-1",    "2024-01-01",
                                        "1e3",   "0b101", "TRUE",
                                        "oN",    "3d",    "-",
                                        "- x",   "1.2.3", "2001-12-14t21:59:43.10-05:00"};
  /* No reader has a number with an m, an i or a '/'; a '-' before a letter starts no
   * list item. */
  static const char *const kPlain[] = {"web",    "nginx:1.25", "/healthz", "a b",   "Never",
                                       "o0",     "100m",       "128Mi",    "0.5Gi", "8080/TCP",
                                       "--port", "-c",         "1,000"};
  for (size_t i = 0; i < sizeof(kQuoted) / sizeof(kQuoted[0]); i++) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "v", kQuoted[i]);
    char *yaml = yaml_emit(doc);
    cJSON *back = parse_one(yaml);
    const cJSON *v = cJSON_GetObjectItem(back, "v");
    if (yaml == NULL || strncmp(yaml, "v: \"", 4) != 0 || !cJSON_IsString(v) ||
        strcmp(v->valuestring, kQuoted[i]) != 0) {
      fprintf(stderr, "  \"%s\" is not quoted, or came back otherwise: %s", kQuoted[i], yaml);
      test_failed_checks++;
    }
    free(yaml);
    cJSON_Delete(back);
    cJSON_Delete(doc);
  }
  for (size_t i = 0; i < sizeof(kPlain) / sizeof(kPlain[0]); i++) {
    cJSON *doc = cJSON_CreateObject();
    cJSON_AddStringToObject(doc, "v", kPlain[i]);
    char *yaml = yaml_emit(doc);
    char want[64];
    snprintf(want, sizeof(want), "v: %s\n", kPlain[i]);
    CHECK_STREQ(yaml, want);
    free(yaml);
    cJSON_Delete(doc);
  }
  /* A plain << merges; a quoted one is a key like any other. */
  char *json = json_of("a: &a {x: 1}\nb: {<<: *a}\nc: {\"<<\": *a}\n");
  CHECK_STREQ(json, "{\"a\":{\"x\":1},\"b\":{\"x\":1},\"c\":{\"<<\":{\"x\":1}}}");
  free(json);
}

static char *emit_value(cJSON *v) {
  cJSON *doc = cJSON_CreateObject();
  cJSON_AddItemToObject(doc, "v", v);
  char *yaml = yaml_emit(doc);
  cJSON_Delete(doc);
  return yaml;
}

/* Numbers in the shortest form that reads back the same double (PyYAML, YAML 1.1, wants
 * a '.' before an exponent); multi-line strings as literal blocks with the chomping that
 * keeps their final line breaks, quoted when a block cannot hold them exactly. */
TEST(values_look_as_they_came) {
  static const struct {
    double v;
    const char *text;
  } kNumbers[] = {{0.1, "0.1"},
                  {1.5, "1.5"},
                  {100, "100"},
                  {-0.25, "-0.25"},
                  {1e-7, "1.0e-07"},
                  {1e20, "1.0e+20"},
                  {0.1 + 0.2, "0.30000000000000004"},
                  {123456.789, "123456.789"}};
  for (size_t i = 0; i < sizeof(kNumbers) / sizeof(kNumbers[0]); i++) {
    char *yaml = emit_value(cJSON_CreateNumber(kNumbers[i].v));
    char want[64];
    snprintf(want, sizeof(want), "v: %s\n", kNumbers[i].text);
    CHECK_STREQ(yaml, want);
    cJSON *back = parse_one(yaml);
    CHECK(cJSON_GetObjectItem(back, "v") != NULL &&
          cJSON_GetObjectItem(back, "v")->valuedouble == kNumbers[i].v);
    cJSON_Delete(back);
    free(yaml);
  }
  static const struct {
    const char *s;
    const char *yaml;
  } kStrings[] = {
      {"echo one\necho two\n", "v: |\n  echo one\n  echo two\n"},
      {"a\nb", "v: |-\n  a\n  b\n"},
      {"a\n\n", "v: |+\n  a\n\n"},
      {"\na\n  b: #c\n", "v: |\n\n  a\n    b: #c\n"},
      {"a\tb\nc", "v: |-\n  a\tb\n  c\n"},
      {" lead\nx", "v: \" lead\\nx\"\n"},
      {"trail \nx", "v: \"trail \\nx\"\n"},
      {"x\ntrail\t", "v: \"x\\ntrail\\t\"\n"},
      {"\tx\ny", "v: \"\\tx\\ny\"\n"},
      {"a\r\nb", "v: \"a\\r\\nb\"\n"},
      {"a\n\302\205b", "v: \"a\\n\\Nb\"\n"},
      {"\n\n", "v: \"\\n\\n\"\n"},
  };
  for (size_t i = 0; i < sizeof(kStrings) / sizeof(kStrings[0]); i++) {
    char *yaml = emit_value(cJSON_CreateString(kStrings[i].s));
    CHECK_STREQ(yaml, kStrings[i].yaml);
    cJSON *back = parse_one(yaml);
    const cJSON *v = cJSON_GetObjectItem(back, "v");
    CHECK(cJSON_IsString(v) && strcmp(v->valuestring, kStrings[i].s) == 0);
    cJSON_Delete(back);
    free(yaml);
  }
  /* A block's lines are indented deeper than its key or its list item, wherever it is. */
  static const char kNested[] = "a:\n- s: |\n    x\n    y\n  t: 1\n- |-\n  p\n  q\nb: |\n  z\n";
  cJSON *doc = parse_one(kNested);
  char *yaml = yaml_emit(doc);
  CHECK_STREQ(yaml, kNested);
  free(yaml);
  cJSON_Delete(doc);
}

/* kubectl's `-o json`: 4-space indents, one member a line, {} and [] when empty. */
TEST(json_is_written_as_kubectl_writes_it) {
  cJSON *doc = parse_one(
      "kind: Pod\nmetadata: {name: \"a\\\"b\", labels: {}}\nspec: {containers: [], l: [1, "
      "0.1, true, null, \"\\t\"]}\n");
  struct textbuf b = {0};
  yaml_write_json(&b, doc, 0);
  char *json = textbuf_finish(&b);
  CHECK_STREQ(json,
              "{\n"
              "    \"kind\": \"Pod\",\n"
              "    \"metadata\": {\n"
              "        \"name\": \"a\\\"b\",\n"
              "        \"labels\": {}\n"
              "    },\n"
              "    \"spec\": {\n"
              "        \"containers\": [],\n"
              "        \"l\": [\n"
              "            1,\n"
              "            0.1,\n"
              "            true,\n"
              "            null,\n"
              "            \"\\t\"\n"
              "        ]\n"
              "    }\n"
              "}");
  cJSON *back = cJSON_Parse(json);
  CHECK(cJSON_Compare(doc, back, true));
  cJSON_Delete(back);
  free(json);
  /* Within a List: every line after the first indented as deep as the first starts. */
  struct textbuf item = {0};
  yaml_write_json(&item, cJSON_GetObjectItem(doc, "metadata"), 8);
  json = textbuf_finish(&item);
  CHECK_STREQ(json, "{\n            \"name\": \"a\\\"b\",\n            \"labels\": {}\n        }");
  free(json);
  cJSON_Delete(doc);
}

TEST(round_trip_keeps_order_and_types) {
  static const char kManifest[] =
      "apiVersion: apps/v1\n"
      "kind: Deployment\n"
      "metadata:\n"
      "  name: web\n"
      "  labels: {app: web, tier: \"1\"}\n"
      "spec:\n"
      "  replicas: 3\n"
      "  template:\n"
      "    spec:\n"
      "      containers:\n"
      "      - name: web\n"
      "        args: [\"--port\", \"8080\"]\n"
      "        ports:\n"
      "        - containerPort: 8080\n"
      "        env: []\n"
      "        resources: {}\n";
  cJSON *doc = parse_one(kManifest);
  CHECK(doc != NULL);
  char *yaml = yaml_emit(doc);
  cJSON *back = parse_one(yaml);
  CHECK(cJSON_Compare(doc, back, true));
  /* Keys come out in the order they came in. */
  CHECK(strstr(yaml, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n") == yaml);
  CHECK(strstr(yaml, "    tier: \"1\"\n") != NULL);
  CHECK(strstr(yaml, "        args:\n        - --port\n        - \"8080\"\n") != NULL);
  CHECK(strstr(yaml, "        env: []\n        resources: {}\n") != NULL);
  free(yaml);
  cJSON_Delete(back);
  cJSON_Delete(doc);
}

TEST(anchors_merges_and_documents) {
  static const char kText[] =
      "base: &b {a: 1, b: 2}\n"
      "copy: *b\n"
      "merged:\n"
      "  <<: *b\n"
      "  b: 3\n"
      "---\n"
      "---\n"
      "second: doc\n"
      "...\n";
  char err[256];
  cJSON *docs = yaml_parse(kText, sizeof(kText) - 1, err, sizeof(err));
  CHECK(docs != NULL);
  CHECK_INTEQ(cJSON_GetArraySize(docs), 2); /* the empty one is left out */
  char *first = cJSON_PrintUnformatted(cJSON_GetArrayItem(docs, 0));
  CHECK_STREQ(first,
              "{\"base\":{\"a\":1,\"b\":2},\"copy\":{\"a\":1,\"b\":2},"
              "\"merged\":{\"b\":3,\"a\":1}}");
  free(first);
  cJSON_Delete(docs);
}

TEST(errors_say_where) {
  static const struct {
    const char *yaml;
    const char *err;
  } kCases[] = {
      {"a: [1, 2\n", "line 2, column 1"},
      {"a: 1\na: 2\n", "duplicate key \"a\""},
      {"a: *nope\n", "an alias to an unknown anchor"},
      {"? [a, b]\n: c\n", "a key must be a scalar"},
      /* libyaml's reader places a bad byte by its offset only. */
      {"a: 1\nb: x\001y\n", "line 2, column 5 (byte 9): control characters are not allowed (#x01)"},
      {"a: 1\nbb: \"\303\251\377\"\n",
       "line 2, column 7 (byte 12): invalid leading UTF-8 octet (#xFF)"},
      {"a: 1\n---\nb: 2\n---\nc: [\n",
       "line 6, column 1: did not find expected node content "
       "while parsing a flow node (document 3, from line 4)"},
  };
  for (size_t i = 0; i < sizeof(kCases) / sizeof(kCases[0]); i++) {
    char err[256] = "";
    cJSON *docs = yaml_parse(kCases[i].yaml, strlen(kCases[i].yaml), err, sizeof(err));
    CHECK(docs == NULL);
    if (strstr(err, kCases[i].err) == NULL) {
      fprintf(stderr, "  %s: got \"%s\", want \"%s\"\n", kCases[i].yaml, err, kCases[i].err);
      test_failed_checks++;
    }
    cJSON_Delete(docs);
  }
  /* Deep nesting is refused, not a stack overflow. */
  char deep[400];
  memset(deep, '[', 300);
  deep[300] = '\0';
  char err[256];
  CHECK(yaml_parse(deep, 300, err, sizeof(err)) == NULL);
}

/* Each document's place: its number (empty ones count) and its line. */
TEST(documents_are_read_one_at_a_time_with_their_place) {
  static const char kText[] = "# c\na: 1\n---\n---\n\nb: 2\n--- ~\n--- [x]\n";
  struct yaml_reader *r = yaml_reader_new(kText, sizeof(kText) - 1);
  char err[256];
  cJSON *doc;
  struct yaml_doc_place place;
  CHECK_INTEQ(yaml_reader_next(r, &doc, &place, err, sizeof(err)), 1);
  CHECK_INTEQ(place.number, 1);
  CHECK_INTEQ(place.line, 2);
  cJSON_Delete(doc);
  CHECK_INTEQ(yaml_reader_next(r, &doc, &place, err, sizeof(err)), 1);
  CHECK_INTEQ(place.number, 3);
  CHECK_INTEQ(place.line, 4);
  cJSON_Delete(doc);
  CHECK_INTEQ(yaml_reader_next(r, &doc, &place, err, sizeof(err)), 1);
  CHECK_INTEQ(place.number, 5);
  CHECK(cJSON_IsArray(doc));
  cJSON_Delete(doc);
  CHECK_INTEQ(yaml_reader_next(r, &doc, &place, err, sizeof(err)), 0);
  yaml_reader_free(r);
}

/* A billion-laughs document is refused as kubectl refuses it (go-yaml: "excessive
 * aliasing"), before its copies take memory; reasonable aliasing is read. */
TEST(alias_expansion_is_bounded_as_kubectl_bounds_it) {
  struct textbuf bomb = {0};
  textbuf_str(&bomb, "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
  for (int i = 1; i <= 9; i++) {
    textbuf_printf(&bomb, "a%d: &a%d [", i, i);
    for (int j = 0; j < 9; j++) {
      textbuf_printf(&bomb, "%s*a%d", j > 0 ? ", " : "", i - 1);
    }
    textbuf_str(&bomb, "]\n");
  }
  char *text = textbuf_finish(&bomb);
  char err[256] = "";
  CHECK(yaml_parse(text, strlen(text), err, sizeof(err)) == NULL);
  CHECK(strstr(err, "excessive aliasing") != NULL && strstr(err, "document 1, from line 1"));
  free(text);
  /* 1,000 nodes of its own, and 99 times as many copies of them: kubectl's limit. */
  struct textbuf fine = {0};
  textbuf_str(&fine, "base: &b [");
  for (int i = 0; i < 998; i++) {
    textbuf_printf(&fine, "%s%d", i > 0 ? ", " : "", i);
  }
  textbuf_str(&fine, "]\ncopies: [");
  for (int i = 0; i < 98; i++) {
    textbuf_printf(&fine, "%s*b", i > 0 ? ", " : "");
  }
  textbuf_str(&fine, "]\n");
  text = textbuf_finish(&fine);
  cJSON *docs = yaml_parse(text, strlen(text), err, sizeof(err));
  CHECK(docs != NULL);
  CHECK_INTEQ(cJSON_GetArraySize(cJSON_GetObjectItem(docs->child, "copies")), 98);
  cJSON_Delete(docs);
  free(text);
}

/* Allocation failure (curl's "torture" tests): the Nth cJSON allocation fails, for every
 * N until one run needs no failure; each run ends in every document or in "out of
 * memory" naming the document, never in a document or a member silently left out. */
TEST(allocation_failures_are_errors) {
  static const char kText[] =
      "a: 1\n---\nkind: Pod\nmetadata: &m {name: x, labels: {a: b}}\nspec:\n  "
      "containers: [{name: c, image: \"i\"}]\n  copy: *m\n  merged: {<<: *m, name: y}\n"
      "  2: two\n";
  json_alloc_install();
  char err[256];
  cJSON *want = yaml_parse(kText, sizeof(kText) - 1, err, sizeof(err));
  CHECK(want != NULL);
  bool done = false;
  for (long budget = 0; !done && budget < 100000; budget++) {
    unsigned long failures = json_alloc_failures();
    json_alloc_fail_after(budget);
    err[0] = '\0';
    cJSON *got = yaml_parse(kText, sizeof(kText) - 1, err, sizeof(err));
    json_alloc_fail_after(-1);
    done = json_alloc_failures() == failures;
    if (got != NULL ? !cJSON_Compare(got, want, true) : strstr(err, "out of memory") == NULL) {
      fprintf(stderr, "  allocation %ld failed: \"%s\"\n", budget, err);
      test_failed_checks++;
    }
    cJSON_Delete(got);
  }
  CHECK(done);
  cJSON_Delete(want);
}

static double cpu_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* `mtlsd inject` on |count| small documents, its output thrown away; the CPU seconds. */
static double inject_documents(size_t count, const char *format) {
  char path[] = "/tmp/mtlsd-test-yaml-XXXXXX";
  int fd = mkstemp(path);
  FILE *f = fdopen(fd, "w");
  for (size_t i = 0; i < count; i++) {
    fprintf(f, "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c%zu}\ndata: {a: b}\n", i);
  }
  fclose(f);
  fflush(stdout);
  fflush(stderr);
  int saved_out = dup(1);
  int saved_err = dup(2);
  int null = open("/dev/null", O_WRONLY);
  dup2(null, 1);
  dup2(null, 2);
  char *argv[] = {"inject", "-f", path, "-o", (char *)format, NULL};
  double start = cpu_seconds();
  int code = inject_main(5, argv);
  double took = cpu_seconds() - start;
  fflush(stdout);
  fflush(stderr);
  dup2(saved_out, 1);
  dup2(saved_err, 2);
  close(null);
  close(saved_out);
  close(saved_err);
  unlink(path);
  CHECK_INTEQ(code, 0);
  return took;
}

/* Time linear in the size of the input: a mapping of 100,000 keys (a duplicate found by
 * a hash set, not a scan of the ones before), one merged into another, and `mtlsd inject`
 * on 2 x 20,000 documents (no document found by its index in a list). Quadratic, each would
 * take minutes; linear, a second or two under ASan. CPU time, so that a loaded machine
 * does not fail the test. */
TEST(time_is_linear_in_the_input) {
  struct textbuf big = {0};
  textbuf_str(&big, "a: &a\n");
  for (int i = 0; i < 100000; i++) {
    textbuf_printf(&big, "  k%d: %d\n", i, i);
  }
  textbuf_str(&big, "b:\n  <<: *a\n  k7: seven\n");
  char *text = textbuf_finish(&big);
  double start = cpu_seconds();
  char err[256];
  cJSON *docs = yaml_parse(text, strlen(text), err, sizeof(err));
  double took = cpu_seconds() - start;
  CHECK(docs != NULL);
  const cJSON *b = cJSON_GetObjectItem(docs->child, "b");
  CHECK_STREQ(cJSON_GetStringValue(b->child), "seven");
  CHECK_INTEQ(cJSON_GetNumberValue(b->child->next), 0);
  if (took > 5) {
    fprintf(stderr, "  100,000 keys took %.1f s of CPU\n", took);
    test_failed_checks++;
  }
  cJSON_Delete(docs);
  free(text);
  took = inject_documents(20000, "json") + inject_documents(20000, "yaml");
  if (took > 10) {
    fprintf(stderr, "  injecting 2 x 20,000 documents took %.1f s of CPU\n", took);
    test_failed_checks++;
  }
}

TEST_MAIN(TEST_ENTRY(scalars_resolve_as_kubectl_reads_them),
          TEST_ENTRY(strings_that_look_like_something_else_are_quoted),
          TEST_ENTRY(strings_any_reader_could_retype_are_quoted),
          TEST_ENTRY(values_look_as_they_came), TEST_ENTRY(json_is_written_as_kubectl_writes_it),
          TEST_ENTRY(round_trip_keeps_order_and_types), TEST_ENTRY(anchors_merges_and_documents),
          TEST_ENTRY(documents_are_read_one_at_a_time_with_their_place),
          TEST_ENTRY(alias_expansion_is_bounded_as_kubectl_bounds_it),
          TEST_ENTRY(allocation_failures_are_errors), TEST_ENTRY(time_is_linear_in_the_input),
          TEST_ENTRY(errors_say_where))
