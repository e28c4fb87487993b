"""A gRPC server with the standard health service (grpc.health.v1.Health/Check), for the
probe tests. Debian's python3-grpcio has no generated health stubs, so the two messages
are coded by hand: HealthCheckRequest{string service = 1} and HealthCheckResponse{enum
status = 1} (UNKNOWN 0, SERVING 1, NOT_SERVING 2); an unknown service is NOT_FOUND, as in
grpc's own implementation. Run with /usr/bin/python3 (the one that sees python3-grpcio).

Usage: grpc_health_server.py PORT SERVICE=STATUS...   ("" names the whole server);
prints "ready" once it serves, and runs until stdin closes or it is signalled."""
import sys
from concurrent import futures

import grpc


def parse_request(data):
    """The service name from HealthCheckRequest bytes (field 1, length-delimited)."""
    if not data:
        return ""
    if data[0] != 0x0A:
        raise ValueError("not a HealthCheckRequest")
    length, shift, i = 0, 0, 1
    while True:
        b = data[i]
        i += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    return data[i:i + length].decode()


def main():
    port = int(sys.argv[1])
    statuses = {}
    for arg in sys.argv[2:]:
        name, value = arg.split("=", 1)
        statuses[name] = int(value)

    def check(request, context):
        service = parse_request(request)
        if service not in statuses:
            context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {service!r}")
        return bytes([0x08, statuses[service]]) if statuses[service] else b""

    handler = grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
        "Check": grpc.unary_unary_rpc_method_handler(check),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop(0)


if __name__ == "__main__":
    main()
