/* probe_grpc: a grpc probe over a prober's connection (see prober_internal.h): the gRPC
 * health checking protocol's Check over HTTP/2 without TLS (h2c), framed by libnghttp2 in
 * memory so that the socket stays the prober's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prober_internal.h"

/* A grpc-status that is no number: a failure whatever it says (the codes end at 16). */
enum { GRPC_STATUS_UNREADABLE = 1000 };

/* ---- gRPC over h2c ---- */

static int h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
                        size_t name_len, const uint8_t *value, size_t value_len, uint8_t flags,
                        void *user_data) {
  (void)session;
  (void)flags;
  struct prober *p = user_data;
  if (frame->hd.stream_id != p->stream_id) {
    return 0;
  }
  const char *v = (const char *)value;
  if (name_len == 7 && memcmp(name, ":status", 7) == 0) {
    p->http_status = probe_parse_status(v, value_len, 999);
  } else if (name_len == 11 && memcmp(name, "grpc-status", 11) == 0) {
    /* Not a status code (say "0x"): an error of its own, never OK. */
    int code = probe_parse_status(v, value_len, 1000);
    p->grpc_status = code >= 0 ? code : GRPC_STATUS_UNREADABLE;
  } else if (name_len == 12 && memcmp(name, "grpc-message", 12) == 0) {
    snprintf(
        p->grpc_message, sizeof(p->grpc_message), "%.*s",
        (int)(value_len < sizeof(p->grpc_message) - 1 ? value_len : sizeof(p->grpc_message) - 1),
        v);
  }
  return 0;
}

static int h2_on_data(nghttp2_session *session, uint8_t flags, int32_t stream_id,
                      const uint8_t *data, size_t len, void *user_data) {
  (void)session;
  (void)flags;
  struct prober *p = user_data;
  if (stream_id == p->stream_id) {
    size_t room = sizeof(p->grpc_response) - p->grpc_response_len;
    size_t take = len < room ? len : room;
    memcpy(p->grpc_response + p->grpc_response_len, data, take);
    p->grpc_response_len += take;
  }
  return 0;
}

static int h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
                              void *user_data) {
  (void)session;
  (void)error_code;
  struct prober *p = user_data;
  if (stream_id == p->stream_id) {
    p->stream_closed = true;
  }
  return 0;
}

static ssize_t h2_read_request(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
                               size_t length, uint32_t *data_flags, nghttp2_data_source *source,
                               void *user_data) {
  (void)session;
  (void)stream_id;
  (void)source;
  struct prober *p = user_data;
  size_t left = p->grpc_request_len - p->grpc_request_off;
  size_t n = left < length ? left : length;
  memcpy(buf, p->grpc_request + p->grpc_request_off, n);
  p->grpc_request_off += n;
  if (p->grpc_request_off == p->grpc_request_len) {
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
  }
  return (ssize_t)n;
}

static size_t put_varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  do {
    out[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    out[n] |= v != 0 ? 0x80 : 0;
    n++;
  } while (v != 0);
  return n;
}

/* The gRPC message of grpc.health.v1.HealthCheckRequest{service}: a 5-byte prefix (not
 * compressed, then the length), and the protobuf: field 1, length-delimited. */
static bool make_grpc_request(struct prober *p) {
  const char *service = p->probe->service;
  size_t len = strlen(service);
  p->grpc_request = malloc(5 + 1 + 10 + len);
  if (p->grpc_request == NULL) {
    return false;
  }
  size_t body = 0;
  uint8_t *b = p->grpc_request + 5;
  if (len > 0) {
    b[body++] = 0x0a;
    body += put_varint(b + body, len);
    /* Protobuf bytes, not a C string: no terminator belongs here. */
    memcpy(b + body, service, len);  // NOLINT(bugprone-not-null-terminated-result)
    body += len;
  }
  p->grpc_request[0] = 0;
  p->grpc_request[1] = (uint8_t)(body >> 24);
  p->grpc_request[2] = (uint8_t)(body >> 16);
  p->grpc_request[3] = (uint8_t)(body >> 8);
  p->grpc_request[4] = (uint8_t)body;
  p->grpc_request_len = 5 + body;
  return true;
}

#define NV(name, value)                                                     \
  {                                                                         \
    (uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1, strlen(value), \
        NGHTTP2_NV_FLAG_NO_COPY_NAME                                        \
  }

bool probe_grpc_start(struct prober *p) {
  nghttp2_session_callbacks *cbs;
  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    return false;
  }
  nghttp2_session_callbacks_set_on_header_callback(cbs, h2_on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, h2_on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, h2_on_stream_close);
  int r = nghttp2_session_client_new(&p->h2, cbs, p);
  nghttp2_session_callbacks_del(cbs);
  if (r != 0 || !make_grpc_request(p)) {
    return false;
  }
  char authority[NETADDR_HOSTPORT_MAX];
  bool v6 = strchr(p->host, ':') != NULL;
  snprintf(authority, sizeof(authority), "%s%s%s:%u", v6 ? "[" : "", p->host, v6 ? "]" : "",
           p->port);
  const nghttp2_nv headers[] = {
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":path", "/grpc.health.v1.Health/Check"),
      NV(":authority", authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent", PROBER_USER_AGENT),
  };
  nghttp2_data_provider body = {.source.ptr = p, .read_callback = h2_read_request};
  if (nghttp2_submit_settings(p->h2, NGHTTP2_FLAG_NONE, NULL, 0) != 0) {
    return false;
  }
  p->stream_id =
      nghttp2_submit_request(p->h2, NULL, headers, sizeof(headers) / sizeof(headers[0]), &body, p);
  return p->stream_id > 0;
}

static const char *serving_status_name(uint64_t status) {
  static const char *const kNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
  return status < 4 ? kNames[status] : "an unknown status";
}

/* Judges the ended stream: grpc-status first, then the HealthCheckResponse's status. */
static void grpc_result(struct prober *p) {
  if (p->grpc_status < 0) {
    prober_finish(p, false, "no gRPC status from %s:%u (HTTP status %d)", p->host, p->port,
                  p->http_status);
    return;
  }
  if (p->grpc_status != 0) {
    prober_finish(p, false, "gRPC status %d%s%s", p->grpc_status,
                  p->grpc_message[0] != '\0' ? ": " : "", p->grpc_message);
    return;
  }
  const uint8_t *m = p->grpc_response;
  size_t len = p->grpc_response_len;
  uint32_t body =
      len >= 5 ? (uint32_t)m[1] << 24 | (uint32_t)m[2] << 16 | (uint32_t)m[3] << 8 | m[4] : 0;
  if (len < 5 || m[0] != 0 || body > len - 5) {
    prober_finish(p, false, "not a HealthCheckResponse from %s:%u", p->host, p->port);
    return;
  }
  /* HealthCheckResponse{status = 1 (varint)}; an absent field is UNKNOWN (0). */
  uint64_t status = 0;
  for (size_t i = 5; i < 5 + body;) {
    uint8_t tag = m[i++];
    if (tag != 0x08) {
      break;
    }
    uint64_t v = 0;
    for (unsigned shift = 0; i < 5 + body && shift < 64; shift += 7) {
      uint8_t byte = m[i++];
      v |= (uint64_t)(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        break;
      }
    }
    status = v;
  }
  if (status == 1) {
    prober_finish(p, true, "SERVING");
  } else {
    prober_finish(p, false, "the service is %s", serving_status_name(status));
  }
}

void probe_grpc_exchange(struct prober *p) {
  for (;;) {
    const uint8_t *data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(p->h2, &data)) > 0) {
      if (!prober_queue(p, data, (size_t)n)) {
        prober_finish(p, false, "out of memory");
        return;
      }
    }
    if (n < 0) {
      prober_finish(p, false, "HTTP/2: %s", nghttp2_strerror((int)n));
      return;
    }
    if (!prober_flush_out(p)) {
      return;
    }
    if (p->stream_closed) {
      grpc_result(p);
      return;
    }
    uint8_t buf[READ_CHUNK];
    n = prober_read_some(p, buf, sizeof(buf), "a gRPC answer");
    if (n <= 0) {
      return;
    }
    ssize_t used = nghttp2_session_mem_recv(p->h2, buf, (size_t)n);
    if (used < 0) {
      prober_finish(p, false, "HTTP/2 from %s:%u: %s", p->host, p->port,
                    nghttp2_strerror((int)used));
      return;
    }
  }
}
