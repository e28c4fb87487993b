/* YAML in and out: kubectl's scalar rules, strings that must stay strings, key order,
 * anchors and merges, several documents, and errors with their position. */
#include "mtlsd/yaml.h"

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
  CHECK(yaml_plain_is_string("web"));
  CHECK(!yaml_plain_is_string("Yes"));
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
  CHECK(strstr(yaml, "      - name: web\n        args:\n        - --port\n") == NULL);
  CHECK(strstr(yaml, "        - \"--port\"\n        - \"8080\"\n") != NULL);
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

TEST_MAIN(TEST_ENTRY(scalars_resolve_as_kubectl_reads_them),
          TEST_ENTRY(strings_that_look_like_something_else_are_quoted),
          TEST_ENTRY(round_trip_keeps_order_and_types), TEST_ENTRY(anchors_merges_and_documents),
          TEST_ENTRY(errors_say_where))
