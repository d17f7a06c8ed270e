"""OpenTelemetry: one trace from `POST /orders` through the outbox into the worker's email job.

The SDK's in-memory exporter collects the spans of the API (an app with APP_OTEL_ENABLED=true)
and of a worker run in this process. Tracing is set up once for this module and removed after
it (`shutdown_tracing` uninstruments asyncpg, Redis and SQLAlchemy), so other tests run without.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from httpx import AsyncClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app.config import Settings
from app.core import tracing
from app.dev import SmtpSink
from app.worker import drain
from tests.integration.catalog import ORDERS, Login, ProductFactory

SettingsFactory = Callable[..., Settings]


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    tracing.setup_tracing("saas-api", exporter=memory)
    yield memory
    tracing.shutdown_tracing()


@pytest.fixture
def spans(exporter: InMemorySpanExporter) -> Callable[[], list[ReadableSpan]]:
    """Take the spans finished since the last call."""
    exporter.clear()

    def take() -> list[ReadableSpan]:
        finished = list(exporter.get_finished_spans())
        exporter.clear()
        return finished

    return take


def _scope(span: ReadableSpan) -> str:
    return span.instrumentation_scope.name if span.instrumentation_scope else ""


def _by_id(spans: list[ReadableSpan]) -> dict[int, ReadableSpan]:
    return {span.context.span_id: span for span in spans if span.context}


def _ancestors(span: ReadableSpan, index: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in index:
        ancestor = index[parent.span_id]
        names.append(ancestor.name)
        parent = ancestor.parent
    return names


class TestOneTraceFromRequestToEmail:
    async def test_post_orders_is_the_parent_of_the_email_job_and_its_smtp_span(
        self,
        exporter: InMemorySpanExporter,
        spans: Callable[[], list[ReadableSpan]],
        make_client: Callable[..., Awaitable[AsyncClient]],
        make_settings: SettingsFactory,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        client = await make_client(otel_enabled=True, log_format="json")
        _, headers = await login()
        mug = await make_product(sku="TRACE-1", name="Traced mug", price_cents=900)
        capfd.readouterr()

        response = await client.post(
            ORDERS, json={"items": [{"product_id": str(mug.id), "quantity": 1}]}, headers=headers
        )
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]
        request_logs = capfd.readouterr().err
        await drain(make_settings(otel_enabled=True))
        assert len(smtp_sink.messages) == 1

        finished = spans()
        index = _by_id(finished)
        (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
        # The route template names the span, never the raw path.
        assert server.name == "POST /api/v1/orders"
        assert server.attributes is not None
        assert server.attributes["http.route"] == "/api/v1/orders"
        assert (
            server.attributes.get(
                "http.status_code", server.attributes.get("http.response.status_code")
            )
            == 201
        )
        trace_id = server.context.trace_id

        request_trace = [s for s in finished if s.context.trace_id == trace_id]
        scopes = {_scope(s) for s in request_trace}
        assert "opentelemetry.instrumentation.sqlalchemy" in scopes  # the ORM path
        assert "opentelemetry.instrumentation.redis" in scopes  # the hand-off to ARQ

        (hand_off,) = [s for s in request_trace if s.name == "outbox hand-off"]
        assert hand_off.attributes is not None
        assert hand_off.attributes["job.name"] == "send_email"
        assert server.name in _ancestors(hand_off, index)
        redis_under_hand_off = [
            s
            for s in request_trace
            if _scope(s) == "opentelemetry.instrumentation.redis"
            and s.parent is not None
            and s.parent.span_id == hand_off.context.span_id
        ]
        assert redis_under_hand_off

        # The worker continued the trace it found with the outbox row.
        (job,) = [s for s in finished if s.name == "job send_email"]
        assert job.kind is SpanKind.CONSUMER
        assert job.context.trace_id == trace_id
        assert job.parent is not None
        assert job.parent.is_remote
        assert server.name in [index[job.parent.span_id].name, *_ancestors(job, index)]
        assert job.attributes is not None
        assert job.attributes["job.id"] == hand_off.attributes["outbox.id"]
        assert job.attributes["messaging.system"] == "arq"

        (smtp,) = [s for s in finished if s.name == "smtp send"]
        assert smtp.context.trace_id == trace_id
        assert "job send_email" in _ancestors(smtp, index)
        assert smtp.attributes is not None
        assert smtp.attributes["server.address"] == "127.0.0.1"
        assert smtp.attributes["server.port"] == smtp_sink.port
        job_sql = [
            s
            for s in finished
            if _scope(s) == "opentelemetry.instrumentation.sqlalchemy"
            and "job send_email" in _ancestors(s, index)
        ]
        assert job_sql, "the job's statements are in its trace"
        for s in job_sql:
            assert s.attributes is not None
            assert s.attributes.get("db.system", s.attributes.get("db.system.name")) == "postgresql"

        # Every log line of the request carries the trace and span ids; the request id stays.
        lines = [json.loads(line) for line in request_logs.splitlines() if line.startswith("{")]
        access = [line for line in lines if line.get("event") == "http.request"]
        assert access
        assert access[0]["route"].endswith("/orders")
        for line in lines:
            if line.get("request_id"):
                assert line["trace_id"] == format(trace_id, "032x"), line
                assert len(line["span_id"]) == 16
        assert any(line.get("request_id") for line in lines)
        assert order_id

    async def test_reads_on_the_raw_asyncpg_path_are_traced(
        self,
        spans: Callable[[], list[ReadableSpan]],
        make_client: Callable[..., Awaitable[AsyncClient]],
        login: Login,
        make_product: ProductFactory,
    ) -> None:
        client = await make_client(otel_enabled=True)
        _, headers = await login()
        mug = await make_product(sku="TRACE-2", name="Read mug", price_cents=500)
        created = await client.post(
            ORDERS, json={"items": [{"product_id": str(mug.id), "quantity": 1}]}, headers=headers
        )
        assert created.status_code == 201
        spans()
        order = await client.get(f"{ORDERS}/{created.json()['id']}", headers=headers)
        assert order.status_code == 200
        finished = spans()
        (server,) = [s for s in finished if s.kind is SpanKind.SERVER]
        assert server.name == "GET /api/v1/orders/{order_id}"
        raw = [
            s
            for s in finished
            if _scope(s) == "opentelemetry.instrumentation.asyncpg"
            and s.context.trace_id == server.context.trace_id
        ]
        assert raw, {(_scope(s), s.name) for s in finished}

    async def test_probes_and_scrapes_make_no_trace_and_idle_clients_start_none(
        self,
        spans: Callable[[], list[ReadableSpan]],
        make_client: Callable[..., Awaitable[AsyncClient]],
        settings: Settings,
    ) -> None:
        client = await make_client(otel_enabled=True)
        spans()
        assert (await client.get("/health")).status_code == 200
        assert (await client.get("/metrics")).status_code == 200
        # A worker pass with nothing to do: Redis polls and relay queries, outside any job.
        await drain(settings)
        assert spans() == []

    async def test_a_request_in_an_unsampled_trace_passes_its_decision_to_the_job(
        self,
        spans: Callable[[], list[ReadableSpan]],
        make_client: Callable[..., Awaitable[AsyncClient]],
        make_settings: SettingsFactory,
        login: Login,
        make_product: ProductFactory,
        smtp_sink: SmtpSink,
    ) -> None:
        client = await make_client(otel_enabled=True)
        _, headers = await login()
        mug = await make_product(sku="TRACE-3", name="Unsampled mug", price_cents=700)
        spans()
        # The caller decided not to sample (W3C flags 00): neither the request nor its job is.
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
        response = await client.post(
            ORDERS,
            json={"items": [{"product_id": str(mug.id), "quantity": 1}]},
            headers={**headers, "traceparent": parent},
        )
        assert response.status_code == 201
        await drain(make_settings(otel_enabled=True))
        assert len(smtp_sink.messages) == 1
        assert spans() == []

    async def test_a_sampled_caller_is_the_parent_of_the_request(
        self,
        spans: Callable[[], list[ReadableSpan]],
        make_client: Callable[..., Awaitable[AsyncClient]],
    ) -> None:
        client = await make_client(otel_enabled=True)
        spans()
        parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        assert (await client.get("/ready", headers={"traceparent": parent})).status_code == 200
        (server,) = [s for s in spans() if s.kind is SpanKind.SERVER]
        assert format(server.context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
        assert server.parent is not None
        assert format(server.parent.span_id, "016x") == "b7ad6b7169203331"


def test_tracing_off_loads_no_sdk_and_no_instrumentation(tmp_path: Any) -> None:
    """Off costs nothing: building the app and a worker loads no SDK, instrumentation, exporter
    or Sentry client. (FastAPI itself imports the OpenTelemetry API for its native telemetry,
    which stays off while no tracer provider is configured.)"""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from app.config import load_settings\n"
        "from app.main import create_app\n"
        "from app.worker import create_worker\n"
        "s = load_settings(database_url='postgresql+asyncpg://x@127.0.0.1/x',"
        " redis_url='redis://127.0.0.1:1/0', jwt_secret='x' * 40)\n"
        "assert not s.otel_enabled\n"
        "create_app(s)\n"
        "create_worker(s)\n"
        "prefixes = ('opentelemetry.sdk', 'opentelemetry.instrumentation',"
        " 'opentelemetry.exporter', 'sentry_sdk')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "print(loaded)\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "[]"
