/* The access log formatter: both formats, escaping, and a 2048-byte identity. */
#include "mtlsd/proxy/access_log.h"

#include <cjson/cJSON.h>

#include "test.h"

static struct access_record sample(void) {
  return (struct access_record){
      .time = "2026-12-01T10:00:00.123Z",
      .listener = "inbound",
      .downstream = "192.0.2.7:40000",
      .upstream = "10.0.0.5:8080",
      .identity = "spiffe://cluster.local/ns/a/sa/b",
      .tls_version = "TLSv1.3",
      .cipher = "TLS_AES_128_GCM_SHA256",
      .resumed = true,
      .bytes_from_downstream = 123,
      .bytes_from_upstream = 4567,
      .duration_ms = 1500,
      .result = "ok",
  };
}

TEST(json_line_parses_with_every_field) {
  struct access_record r = sample();
  size_t len;
  char *line = access_log_format(&r, true, &len);
  CHECK(line != NULL);
  CHECK_INTEQ(len, strlen(line));
  CHECK(line[len - 1] == '\n');
  cJSON *j = cJSON_Parse(line);
  CHECK(j != NULL);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "listener")), "inbound");
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "identity")), r.identity);
  CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "resumed")));
  CHECK_INTEQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_from_downstream")), 123);
  CHECK_INTEQ(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "bytes_from_upstream")), 4567);
  CHECK(cJSON_GetNumberValue(cJSON_GetObjectItem(j, "duration_s")) == 1.5);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "result")), "ok");
  cJSON_Delete(j);
  free(line);
}

TEST(text_line_marks_empty_values) {
  struct access_record r = sample();
  r.identity = "";
  r.tls_version = NULL;
  r.resumed = false;
  size_t len;
  char *line = access_log_format(&r, false, &len);
  CHECK(line != NULL);
  CHECK(strstr(line, "listener=inbound ") != NULL);
  CHECK(strstr(line, " identity=- tls_version=- ") != NULL);
  CHECK(strstr(line, " resumed=false ") != NULL);
  CHECK(strstr(line, " duration_s=1.500 result=ok\n") != NULL);
  free(line);
}

TEST(values_cannot_end_the_line_or_forge_fields) {
  struct access_record r = sample();
  r.upstream = "evil\n{\"result\":\"ok\"} result=ok";
  size_t len;
  char *json = access_log_format(&r, true, &len);
  CHECK(json != NULL && strchr(json, '\n') == json + len - 1);
  cJSON *j = cJSON_Parse(json);
  CHECK(j != NULL);
  CHECK_STREQ(cJSON_GetStringValue(cJSON_GetObjectItem(j, "upstream")), r.upstream);
  cJSON_Delete(j);
  free(json);
  char *text = access_log_format(&r, false, &len);
  CHECK(text != NULL && strchr(text, '\n') == text + len - 1);
  /* One result field only, the real one, at the end. */
  char *first = strstr(text, " result=ok\n");
  CHECK(first != NULL && strstr(text, "upstream=evil") != NULL);
  CHECK(strstr(text, " result=ok ") == NULL);
  free(text);
}

TEST(long_identity_keeps_the_result) {
  static char id[2049];
  memset(id, 'x', 2048);
  struct access_record r = sample();
  r.identity = id;
  for (int json = 0; json < 2; json++) {
    size_t len;
    char *line = access_log_format(&r, json, &len);
    CHECK(line != NULL && len > 2048);
    CHECK(strstr(line, id) != NULL);
    CHECK(strstr(line, json ? "\"result\":\"ok\"}\n" : " result=ok\n") != NULL);
    free(line);
  }
}

TEST_MAIN(TEST_ENTRY(json_line_parses_with_every_field), TEST_ENTRY(text_line_marks_empty_values),
          TEST_ENTRY(values_cannot_end_the_line_or_forge_fields),
          TEST_ENTRY(long_identity_keeps_the_result))
