"""The ARQ worker: background jobs, with the database and settings in each job's context.

Run it with `saas worker` (`--burst` drains the queue and stops; `--check` reports whether a worker
is alive). Jobs take ids (never whole objects), re-read what they need, and are idempotent,
because ARQ delivers at least once: a job can run again after a crash or a retry.

Besides the jobs, every worker runs the outbox relay (at start-up, then in a background loop every
`APP_OUTBOX_RELAY_INTERVAL_SECONDS`: a loop rather than a cron job, so that it keeps trying
through a Redis outage and does not add two ARQ log lines every few seconds) and prunes old outbox
rows and delivery records every ten minutes (a cron job: one worker of many runs each tick).
On SIGTERM it stops taking jobs and gives running ones `APP_WORKER_SHUTDOWN_GRACE_SECONDS` to
finish. It writes ARQ's health-check key every 30 seconds.

With `APP_WORKER_METRICS_PORT` set, `saas worker` serves Prometheus metrics on that port and
samples the outbox's backlog and lag and the queue's depth every `METRICS_INTERVAL_SECONDS`
(`worker_heartbeat_timestamp_seconds` says when it last did: a stuck worker stops moving it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from datetime import timedelta
from typing import Any, ClassVar

from arq.connections import ArqRedis
from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function, Retry, Worker, func
from redis.exceptions import RedisError

from app.config import Settings, get_settings
from app.core import metrics, outbox, tracing
from app.core.database import create_engine, create_session_factory
from app.core.email import SEND_EMAIL_JOB, email_max_tries, prune_deliveries, send_email
from app.core.idempotency import purge_idempotency_keys
from app.core.jobs import QUEUE_NAME, install_dispatcher, outbox_job, prune_outbox, relay_outbox
from app.core.logging import configure_logging, get_logger
from app.core.outages import describe, is_outage
from app.core.redis import arq_redis_settings, create_redis
from app.core.sentry import setup_sentry
from app.core.storage import open_object_store
from app.features.products.image_service import DELETE_OBJECTS_JOB, MAKE_VARIANTS_JOB
from app.features.products.tasks import (
    DELETE_MAX_TRIES,
    delete_image_objects,
    make_image_variants,
)

log = get_logger(__name__)

__all__ = ["HEALTH_CHECK_KEY", "QUEUE_NAME", "create_worker", "drain", "health", "run"]

HEALTH_CHECK_KEY = f"{QUEUE_NAME}:health-check"
HEALTH_CHECK_INTERVAL_SECONDS = 30
METRICS_INTERVAL_SECONDS = 15

# A job that met a PostgreSQL or Redis outage is tried again after this many seconds times its
# try number (at most 6 times this).
OUTAGE_RETRY_SECONDS = 5.0


def survives_outages(function: WorkerCoroutine) -> WorkerCoroutine:
    """Run a job; if it meets an outage (`app.core.outages`), log one line and retry it later.

    Without this ARQ logs each such failure with its whole traceback, dozens of frames per
    job for as long as the database is down. Other errors go to ARQ untouched.
    """

    @functools.wraps(function)
    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await function(ctx, *args, **kwargs)
        except Retry:
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise
            job_try = int(ctx.get("job_try", 1))
            log.warning(
                "job.service_unavailable",
                job=getattr(function, "__qualname__", "?"),
                job_id=str(ctx.get("job_id", "")),
                job_try=job_try,
                error=describe(exc),
            )
            raise Retry(defer=OUTAGE_RETRY_SECONDS * min(job_try, 6)) from None

    return run


async def ping(ctx: dict[str, Any]) -> str:
    """A no-op job: proves that a worker is consuming the queue."""
    return "pong"


async def relay(ctx: dict[str, Any]) -> int:
    """Hand outbox rows that missed the fast path (Redis down, a crash) to the queue."""
    settings: Settings = ctx["settings"]
    return await relay_outbox(
        ctx["session_factory"], ctx["redis"], batch_size=settings.outbox_relay_batch_size
    )


async def relay_forever(ctx: dict[str, Any]) -> None:
    """The relay loop of one worker; SKIP LOCKED lets any number of them run side by side."""
    interval = ctx["settings"].outbox_relay_interval_seconds
    while True:
        await asyncio.sleep(interval)
        try:
            await relay(ctx)
        except Exception as exc:
            # The database may be away for a moment; the next pass tries again.
            if is_outage(exc):
                log.warning("outbox.relay_failed", error=describe(exc))
            else:
                log.exception("outbox.relay_failed")


async def sample_metrics(ctx: dict[str, Any]) -> None:
    """Outbox backlog and lag, queue depth, then the heartbeat: one pass of the metrics loop."""
    unsent, lag = await outbox.backlog(ctx["engine"])
    metrics.OUTBOX_UNSENT.set(unsent)
    metrics.OUTBOX_LAG.set(lag)
    redis: ArqRedis = ctx["redis"]
    metrics.QUEUE_DEPTH.set(await redis.zcard(QUEUE_NAME))
    metrics.WORKER_HEARTBEAT.set(time.time())


async def metrics_forever(ctx: dict[str, Any]) -> None:
    while True:
        try:
            await sample_metrics(ctx)
        except Exception as exc:
            # The heartbeat stands still meanwhile: that is what the alert watches.
            log.warning("worker.metrics_failed", error=type(exc).__name__)
        await asyncio.sleep(METRICS_INTERVAL_SECONDS)


async def prune(ctx: dict[str, Any]) -> int:
    """Cron: drop outbox rows and delivery records older than the retention period."""
    settings: Settings = ctx["settings"]
    retention = timedelta(hours=settings.outbox_retention_hours)
    pruned = await prune_outbox(ctx["session_factory"], older_than=retention)
    return pruned + await prune_deliveries(ctx["session_factory"], older_than=retention)


async def startup(ctx: dict[str, Any]) -> None:
    if "settings" not in ctx:
        ctx["settings"] = get_settings()
    settings: Settings = ctx["settings"]
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    redis: ArqRedis = ctx["redis"]
    # Jobs that enqueue jobs hand them over right after their commit, like requests do.
    ctx["dispatcher"] = install_dispatcher(factory, redis)
    ctx["engine"] = engine
    ctx["session_factory"] = factory
    storage = open_object_store(settings)
    ctx["object_store"] = await storage.__aenter__()
    ctx["object_store_context"] = storage
    log.info("worker.started", environment=settings.environment)
    # Leftovers from a Redis outage go out now, not after the first interval (and `--burst` sends
    # them too).
    await relay(ctx)
    ctx["relay_task"] = asyncio.create_task(relay_forever(ctx), name="outbox-relay")
    if settings.worker_metrics_port:
        ctx["metrics_task"] = asyncio.create_task(metrics_forever(ctx), name="worker-metrics")


async def shutdown(ctx: dict[str, Any]) -> None:
    dispatcher = ctx.get("dispatcher")
    if dispatcher is not None:
        await dispatcher.drain()
    for name in ("relay_task", "metrics_task"):
        task: asyncio.Task[None] | None = ctx.pop(name, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    storage = ctx.pop("object_store_context", None)
    if storage is not None:
        await storage.__aexit__(None, None, None)
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()
    log.info("worker.stopped")


class WorkerSettings:
    """ARQ's fixed options; `worker_options(settings)` adds jobs, cron and Redis from Settings."""

    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    health_check_key = HEALTH_CHECK_KEY
    health_check_interval = HEALTH_CHECK_INTERVAL_SECONDS
    max_tries = 5
    job_timeout = 60
    keep_result = 3600
    handle_signals = True
    functions: ClassVar[list[Function | WorkerCoroutine]] = [ping]


def functions(settings: Settings) -> list[Function | WorkerCoroutine]:
    """Every job the worker runs; features' jobs (their `tasks.py`) are registered here.

    Jobs fed by `enqueue()` are wrapped in `outbox_job`: ARQ carries only the outbox id, and the
    wrapper calls the job with the row's payload as keyword arguments.
    """
    return [
        *WorkerSettings.functions,
        func(
            survives_outages(outbox_job(send_email)),
            name=SEND_EMAIL_JOB,
            max_tries=email_max_tries(settings),
        ),
        func(
            survives_outages(outbox_job(make_image_variants)),
            name=MAKE_VARIANTS_JOB,
            max_tries=settings.image_max_tries,
        ),
        func(
            survives_outages(outbox_job(delete_image_objects)),
            name=DELETE_OBJECTS_JOB,
            max_tries=DELETE_MAX_TRIES,
        ),
    ]


def cron_jobs(settings: Settings) -> list[CronJob]:
    # unique: with several workers, one of them runs each tick.
    return [
        cron(
            survives_outages(prune),
            name="prune_outbox",
            minute=set(range(0, 60, 10)),
            second=30,
            unique=True,
        ),
        cron(
            survives_outages(purge_idempotency_keys),
            name="purge_idempotency_keys",
            minute=17,
            second=0,
            unique=True,
        ),
    ]


def worker_options(settings: Settings) -> dict[str, Any]:
    return {
        "functions": functions(settings),
        "cron_jobs": cron_jobs(settings),
        "on_startup": WorkerSettings.on_startup,
        "on_shutdown": WorkerSettings.on_shutdown,
        "queue_name": WorkerSettings.queue_name,
        "health_check_key": WorkerSettings.health_check_key,
        "health_check_interval": WorkerSettings.health_check_interval,
        "max_tries": WorkerSettings.max_tries,
        "job_timeout": WorkerSettings.job_timeout,
        "keep_result": WorkerSettings.keep_result,
        "handle_signals": WorkerSettings.handle_signals,
        # On SIGTERM/SIGINT: stop taking jobs, let running ones finish (an email mid-send) for
        # this long, then cancel them (ARQ retries a cancelled job).
        "job_completion_wait": settings.worker_shutdown_grace_seconds,
        "redis_settings": arq_redis_settings(settings),
        "ctx": {"settings": settings},
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker bound to `settings` (tests pass `burst=True` and their own options)."""
    options = worker_options(settings)
    options.update(overrides)
    return Worker(**options)


async def drain(settings: Settings, **overrides: Any) -> Worker:
    """Relay the outbox and run a burst worker until the queue is empty (deferred retries too).

    The tests' `drain_jobs` fixture; returns the finished worker for its counters.
    """
    # No cron: a pruning tick mid-drain would only add a job to wait for.
    options: dict[str, Any] = {
        "burst": True,
        "poll_delay": 0.02,
        "handle_signals": False,
        "cron_jobs": [],
    }
    options.update(overrides)
    worker = create_worker(settings, **options)
    try:
        await worker.main()
    finally:
        await worker.close()
    return worker


async def health(settings: Settings) -> str | None:
    """The newest health report of any worker on the queue, or None when none is alive.

    ARQ rewrites the key every `HEALTH_CHECK_INTERVAL_SECONDS` with a TTL one second longer, so
    it vanishes soon after the last worker stops or hangs.
    """
    redis = create_redis(settings)
    try:
        value = await redis.get(HEALTH_CHECK_KEY)
    except (RedisError, OSError) as exc:
        log.warning("worker.health_unreachable", error=type(exc).__name__)
        return None
    finally:
        await redis.aclose()
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def start_metrics_server(settings: Settings) -> Any:
    """Serve /metrics on APP_HOST:APP_WORKER_METRICS_PORT in a thread; None when the port is 0."""
    if not settings.worker_metrics_port:
        return None
    from prometheus_client import start_http_server

    server, _thread = start_http_server(
        settings.worker_metrics_port, addr=settings.host, registry=metrics.registry()
    )
    log.info("worker.metrics_serving", host=settings.host, port=settings.worker_metrics_port)
    return server


def run(settings: Settings, *, burst: bool = False) -> None:
    if settings.otel_enabled:
        tracing.setup_tracing("saas-worker")
    configure_logging(settings.log_level, json=settings.json_logs, trace_ids=settings.otel_enabled)
    setup_sentry(settings, component="worker")
    server = start_metrics_server(settings)
    worker = create_worker(settings, burst=burst)
    try:
        worker.run()
    finally:
        if server is not None:
            server.shutdown()
