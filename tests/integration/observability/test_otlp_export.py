"""The exporter path end to end: `saas serve` with APP_OTEL_ENABLED=true sends its spans over
OTLP/HTTP to the endpoint of OTEL_EXPORTER_OTLP_ENDPOINT, here a small receiver in the test that
decodes what arrives (protobuf, as a collector would)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.dev import free_port
from tests.integration.delivery.test_serve import ServeFactory, serve

__all__ = ["serve"]

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Receiver:
    """An OTLP/HTTP trace endpoint: records each export, answers 200 (an empty response)."""

    def __init__(self) -> None:
        self.exports: list[tuple[str, str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.exports.append((self.path, self.headers["Content-Type"], body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[tuple[str, object]]:
        """(service name, span) of every span received."""
        found: list[tuple[str, object]] = []
        for _, _, body in self.exports:
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            for resource_spans in request.resource_spans:
                attributes = {
                    a.key: a.value.string_value for a in resource_spans.resource.attributes
                }
                for scope_spans in resource_spans.scope_spans:
                    found.extend((attributes["service.name"], span) for span in scope_spans.spans)
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    started.thread.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


@pytest.mark.slow
class TestOtlpExport:
    def test_the_server_exports_its_spans_to_the_otlp_http_endpoint(
        self, serve: ServeFactory, receiver: Receiver
    ) -> None:
        server = serve(
            APP_WORKERS="1",
            APP_OTEL_ENABLED="true",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_SERVICE_NAME="saas-api-e2e",
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        response = httpx.get(
            f"{server.url}/ready",
            headers={"traceparent": PARENT, "X-Request-ID": "otlp-1"},
            timeout=5,
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not any(
            span.trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
            for _, span in receiver.spans()
        ):
            time.sleep(0.2)
        assert server.stop(), server.output

        assert receiver.exports, server.output
        assert {(path, kind) for path, kind, _ in receiver.exports} == {
            ("/v1/traces", "application/x-protobuf")
        }
        spans = [span for _, span in receiver.spans()]
        assert {service for service, _ in receiver.spans()} == {"saas-api-e2e"}
        # The server's own readiness polls made traces too; ours is the one with TRACE_ID.
        ready = [
            s
            for s in spans
            if s.name == "GET /ready" and s.trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
        ]
        assert len(ready) == 1, [
            (s.name, s.trace_id.hex(), s.parent_span_id.hex())  # type: ignore[attr-defined]
            for s in spans
        ]
        # The caller's trace continues: same trace id, the caller's span as the parent.
        assert ready[0].trace_id.hex() == TRACE_ID  # type: ignore[attr-defined]
        assert ready[0].parent_span_id.hex() == "00f067aa0ba902b7"  # type: ignore[attr-defined]
        children = [
            s
            for s in spans
            if s.trace_id.hex() == TRACE_ID and s.parent_span_id == ready[0].span_id  # type: ignore[attr-defined]
        ]
        # The readiness checks: a SELECT 1 through SQLAlchemy and a Redis PING.
        names = {s.name for s in children}  # type: ignore[attr-defined]
        assert "PING" in names, names
        assert any(name.startswith("SELECT") or name == "connect" for name in names), names
        # The access line of that request carries the trace id.
        lines = [line for line in server.access_lines() if line.get("request_id") == "otlp-1"]
        assert len(lines) == 1
        assert lines[0]["trace_id"] == TRACE_ID

    def test_the_sampler_variables_are_honoured(
        self, serve: ServeFactory, receiver: Receiver
    ) -> None:
        server = serve(
            APP_WORKERS="1",
            APP_OTEL_ENABLED="true",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_TRACES_SAMPLER="always_off",
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        assert httpx.get(f"{server.url}/ready", timeout=5).status_code == 200
        time.sleep(1)
        assert server.stop(), server.output
        assert receiver.spans() == []
