"""Prometheus metrics: the API's requests, and what an on-call person needs besides.

Requests by method, route template and status (count and latency); database pool use and waits;
rate-limit rejections by route; cache lookups by result; and, sampled by the worker, the outbox's
backlog and lag, the job queue's depth, email deliveries by outcome and the worker's heartbeat.
docs/observability.md lists them all; deploy/observability/ alerts on them.

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
    Gauge,
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

# The database pool of this process (summed over the live processes of a server).
DB_POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "Database connections checked out of the pool.",
    multiprocess_mode="livesum",
)
DB_POOL_MAX = Gauge(
    "db_pool_connections_max",
    "Database connections the pool may open (pool size + overflow).",
    multiprocess_mode="livesum",
)
DB_POOL_WAITS = Counter(
    "db_pool_waits",
    "Checkouts that found every connection of the pool in use and had to wait.",
)
DB_POOL_WAIT_SECONDS = Histogram(
    "db_pool_wait_seconds",
    "How long checkouts that had to wait waited for a connection.",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0),
)

RATE_LIMIT_REJECTIONS = Counter(
    "rate_limit_rejections",
    "Requests refused with 429 by a rate limit, by route template.",
    ["route"],
)
CACHE_LOOKUPS = Counter(
    "cache_lookups",
    "Cache reads by result: hit, miss, or error (Redis failed; the loader answered).",
    ["result"],
)

# Sampled by every worker (the same values from each: dashboards and alerts take the max).
OUTBOX_UNSENT = Gauge(
    "outbox_unsent_rows",
    "Outbox rows not yet handed to the job queue.",
    multiprocess_mode="max",
)
OUTBOX_LAG = Gauge(
    "outbox_oldest_unsent_age_seconds",
    "Age of the oldest outbox row not yet handed to the job queue (0 when there is none).",
    multiprocess_mode="max",
)
QUEUE_DEPTH = Gauge(
    "arq_queue_depth",
    "Jobs waiting in the ARQ queue (deferred retries included).",
    multiprocess_mode="max",
)
WORKER_HEARTBEAT = Gauge(
    "worker_heartbeat_timestamp_seconds",
    "Unix time of the worker's last completed metrics pass.",
    multiprocess_mode="max",
)
EMAIL_DELIVERIES = Counter(
    "email_deliveries",
    "Email delivery attempts by outcome: sent, retried (transient failure, tried again later), "
    "failed (given up), skipped (already done by an earlier run).",
    ["outcome"],
)


def rate_limit_rejected(route: str) -> None:
    RATE_LIMIT_REJECTIONS.labels(route).inc()


_cache_children = {result: CACHE_LOOKUPS.labels(result) for result in ("hit", "miss", "error")}


def cache_lookup(result: str) -> None:
    _cache_children[result].inc()


def email_delivery(outcome: str) -> None:
    EMAIL_DELIVERIES.labels(outcome).inc()


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


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's files in multiprocess mode, else this process."""
    if _multiprocess_enabled():
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)  # type: ignore[no-untyped-call]
        return collected
    return REGISTRY


def render() -> tuple[bytes, str]:
    """The exposition text of every process of this server, and its content type."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST
