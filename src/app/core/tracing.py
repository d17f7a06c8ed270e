"""OpenTelemetry traces: set up only when `APP_OTEL_ENABLED=true`; otherwise nothing is loaded.

Nothing here imports OpenTelemetry at module level, and the rest of the app calls in only when
tracing is on (`enabled()` is one global read), so a process with tracing off never loads the
SDK, installs no instrumentation and pays for no span.

When on, `setup_tracing()` (once per process) builds the SDK from the standard variables:
`OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_*`
(OTLP over HTTP), and installs the maintained instrumentations: SQLAlchemy (the ORM path; engines
created from then on), asyncpg (the raw reads), Redis, and FastAPI per app (`instrument_app`,
spans named by route template). The glue written here is what no package covers:

- the outbox hand-off: `current_context()` is stored with an outbox row (W3C `traceparent`),
  and the worker restores it (`job_span`) so that a job is a child of the request that asked
  for it, across the process boundary;
- the SMTP conversation (`span`), and log lines (`add_trace_ids`: `trace_id` and `span_id` in
  every line written inside a span).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from structlog.types import EventDict

_TRACER_NAME = "saas-backend"
_provider: TracerProvider | None = None


def enabled() -> bool:
    """Whether this process traces (set up by `setup_tracing`)."""
    return _provider is not None


def setup_tracing(default_service_name: str, *, exporter: SpanExporter | None = None) -> None:
    """Install the SDK and the instrumentations, once per process.

    `exporter` replaces the OTLP/HTTP exporter (tests pass the SDK's in-memory one): spans are
    then exported as each ends instead of in batches, and the provider is not made the global
    one (which cannot be undone), so that `shutdown_tracing` leaves the process as it was.
    """
    global _provider
    if _provider is not None:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, read by the SDK; our name otherwise.
    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: default_service_name}))
    # The sampler of OTEL_TRACES_SAMPLER(_ARG) (default: parent-based always-on), behind one
    # rule: a database or Redis call outside any request or job starts no trace (the worker
    # polls Redis twice a second; those would be thousands of one-span traces).
    configured = TracerProvider(resource=resource).sampler
    provider = TracerProvider(resource=resource, sampler=_no_orphan_clients(configured))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if exporter is None:
        # FastAPI's own telemetry sees the instrumentation's middleware and stays out of the way.
        trace.set_tracer_provider(provider)
    # The package declares SQLAlchemy < 2.1 (its range lags); the engine events it listens to
    # are the same in 2.1, and the tests check its spans.
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    AsyncPGInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]
    RedisInstrumentor().instrument(tracer_provider=provider)
    _provider = provider


def _no_orphan_clients(delegate: Any) -> Any:
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
    from opentelemetry.trace import SpanKind, get_current_span

    class NoOrphanClients(Sampler):
        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: SpanKind | None = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            parent = get_current_span(parent_context).get_span_context()
            if kind is SpanKind.CLIENT and not parent.is_valid:
                return SamplingResult(Decision.DROP)
            result: SamplingResult = delegate.should_sample(
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )
            return result

        def get_description(self) -> str:
            return f"NoOrphanClients{{{delegate.get_description()}}}"

    return NoOrphanClients()


def shutdown_tracing() -> None:
    """Flush the spans still buffered and remove the instrumentations (tests, process exit)."""
    global _provider
    if _provider is None:
        return
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    SQLAlchemyInstrumentor().uninstrument()
    AsyncPGInstrumentor().uninstrument()  # type: ignore[no-untyped-call]
    RedisInstrumentor().uninstrument()
    _provider.shutdown()
    _provider = None


def instrument_app(app: FastAPI) -> None:
    """A server span per request, named `METHOD /route/{template}`; probes and scrapes skipped."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_provider,
        excluded_urls="/health,/metrics",
        # No span per ASGI message: one for the request is what a reader wants.
        exclude_spans=["receive", "send"],
    )


def current_context() -> dict[str, str] | None:
    """The active trace context as W3C headers (`traceparent`, maybe `tracestate`), or None."""
    if _provider is None:
        return None
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier or None


def span(name: str, **attributes: Any) -> AbstractContextManager[Any]:
    """A span of our own (the outbox hand-off, the SMTP conversation); nothing when off."""
    if _provider is None:
        return nullcontext()
    return _provider.get_tracer(_TRACER_NAME).start_as_current_span(name, attributes=attributes)


def job_span(
    name: str, carrier: dict[str, str] | None, **attributes: Any
) -> AbstractContextManager[Any]:
    """The span of one job run, a child of the request whose outbox row asked for it."""
    if _provider is None:
        return nullcontext()
    return _job_span(name, carrier, attributes)


@contextmanager
def _job_span(
    name: str, carrier: dict[str, str] | None, attributes: dict[str, Any]
) -> Iterator[Any]:
    assert _provider is not None
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind

    parent = extract(carrier) if carrier else None
    tracer = _provider.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
    ) as current:
        yield current


def add_trace_ids(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor: `trace_id` and `span_id` of the current span, when there is one."""
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict
