#!/usr/bin/env python3
"""A small OTLP/HTTP logs receiver for the tests: decodes each
`POST /v1/logs` (protobuf; gzip, zstd or not compressed) with the official
`opentelemetry-proto` package and appends one JSON line per log record to
the output file (resource attributes, attributes, body, times, severity).

    otlp-test-receiver.py PORT OUT_FILE [STATUS]

STATUS (default 200) is the HTTP status it answers: a test makes the
receiver refuse with e.g. 400. With OTLP_TLS_CERT and OTLP_TLS_KEY (PEM
files) it speaks HTTPS.
"""
import gzip
import json
import os
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import zstandard
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)

PORT, OUT = int(sys.argv[1]), sys.argv[2]
STATUS = int(sys.argv[3]) if len(sys.argv) > 3 else 200


def value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def attributes(kvs):
    return {kv.key: value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path != "/v1/logs":
            return self.answer(404, b"")
        if STATUS != 200:
            return self.answer(STATUS, b"refused by the test")
        encoding = self.headers.get("content-encoding")
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "zstd":
            raw = zstandard.ZstdDecompressor().decompress(raw)
        elif encoding is not None:
            # What the Collector answers an encoding it does not know.
            return self.answer(400, b"unsupported content-encoding")
        request = ExportLogsServiceRequest()
        request.ParseFromString(raw)
        lines = []
        for rl in request.resource_logs:
            resource = attributes(rl.resource.attributes)
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    lines.append(json.dumps({
                        "resource": resource,
                        "scope": sl.scope.name,
                        "attributes": attributes(r.attributes),
                        "body": value(r.body),
                        "time_unix_nano": r.time_unix_nano,
                        "observed_time_unix_nano": r.observed_time_unix_nano,
                        "severity_number": r.severity_number,
                        "severity_text": r.severity_text,
                        "headers": {"x-api-key": self.headers.get("x-api-key"),
                                    "content-encoding": encoding},
                    }))
        with open(OUT, "a") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
        self.answer(200, ExportLogsServiceResponse().SerializeToString())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
if os.environ.get("OTLP_TLS_CERT"):
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(os.environ["OTLP_TLS_CERT"], os.environ["OTLP_TLS_KEY"])
    server.socket = tls.wrap_socket(server.socket, server_side=True)
server.serve_forever()
