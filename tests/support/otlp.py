"""An OTLP/HTTP trace receiver for tests: a collector's receiving end written from the OTLP
specification (POST /v1/traces, a protobuf ExportTraceServiceRequest, gzip or not), decoded with
the OpenTelemetry project's protobuf definitions, never with our exporter's code."""

from __future__ import annotations

import gzip
import threading
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    name: str
    attributes: dict[str, str]


@dataclass
class OtlpReceiver:
    """Spans received so far, by trace id; `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    endpoint: str = ""

    def traces_flat(self) -> list[ReceivedSpan]:
        with self.lock:
            return list(self.spans)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        with self.lock:
            by_trace: dict[str, list[ReceivedSpan]] = defaultdict(list)
            for span in self.spans:
                by_trace[span.trace_id].append(span)
            return dict(by_trace)

    def accept(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes).get("service.name", "")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            service=service,
                            name=span.name,
                            attributes=_attributes(span.attributes),
                        )
                    )
        with self.lock:
            self.spans.extend(received)
            self.requests += 1


def _attributes(values: Iterable[KeyValue]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in values:
        value = item.value
        kind = value.WhichOneof("value")
        found[item.key] = str(getattr(value, kind)) if kind else ""
    return found


def start_receiver() -> tuple[OtlpReceiver, ThreadingHTTPServer]:
    """Listen on a free loopback port; the caller shuts the server down."""
    receiver = OtlpReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            receiver.accept(body)
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver, server
