"""Prometheus metrics: request count and latency by method, route template and status.

With several server processes (`saas serve --workers N`) each process writes its samples to
`PROMETHEUS_MULTIPROC_DIR` (set by the CLI before the workers start) and `/metrics` aggregates
them all, so a scrape sees the whole server, not the one process that answered.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

REQUESTS = Counter(
    "http_requests_total",
    "HTTP requests handled, by method, route template and status.",
    ["method", "route", "status"],
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds, by method, route template and status.",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)

EMAIL_FAILURES = Counter(
    "email_delivery_failures_total",
    "Failed attempts at sending an email, by reason: transient (retried), permanent (a 5xx "
    "refusal), deadline (retried until APP_EMAIL_RETRY_DEADLINE_HOURS, then given up), "
    "template (does not render).",
    ["reason"],
)

# The labelled children of each (method, route, status), found once: `labels()` takes a lock
# and builds its key on every call. Routes are templates, so there are few combinations.
_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, duration_seconds: float) -> None:
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        labels = (method, route, str(status))
        children = _children[key] = (REQUESTS.labels(*labels), LATENCY.labels(*labels))
    children[0].inc()
    children[1].observe(duration_seconds)


def _multiprocess_enabled() -> bool:
    # prometheus_client picks its value class from the environment when it is imported.
    return values.ValueClass is not values.MutexValue


def render() -> tuple[bytes, str]:
    """The exposition text of every process of this server, and its content type."""
    if _multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
