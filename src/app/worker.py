"""The ARQ worker: background jobs, with the database and settings in each job's context.

Run it with `saas worker`. Jobs take ids (never whole objects), re-read what they need, and are
idempotent, because ARQ delivers at least once: a job can run again after a crash or a retry.
"""

from __future__ import annotations

from typing import Any, ClassVar

from arq.connections import RedisSettings
from arq.cron import CronJob
from arq.typing import WorkerCoroutine
from arq.worker import Function, Worker

from app.config import Settings, get_settings
from app.core.database import create_engine, create_session_factory
from app.core.logging import configure_logging, get_logger
from app.core.redis import arq_redis_settings

log = get_logger(__name__)

QUEUE_NAME = "arq:queue"
HEALTH_CHECK_KEY = f"{QUEUE_NAME}:health-check"


async def ping(ctx: dict[str, Any]) -> str:
    """A no-op job: proves that a worker is consuming the queue."""
    return "pong"


async def startup(ctx: dict[str, Any]) -> None:
    settings: Settings = ctx.setdefault("settings", get_settings())
    engine = create_engine(settings)
    ctx["engine"] = engine
    ctx["session_factory"] = create_session_factory(engine)
    log.info("worker.started", environment=settings.environment)


async def shutdown(ctx: dict[str, Any]) -> None:
    engine = ctx.get("engine")
    if engine is not None:
        await engine.dispose()
    log.info("worker.stopped")


class WorkerSettings:
    """ARQ's settings class; the Redis connection is filled in from Settings by `create_worker`."""

    functions: ClassVar[list[Function | WorkerCoroutine]] = [ping]
    cron_jobs: ClassVar[list[CronJob]] = []
    on_startup = startup
    on_shutdown = shutdown
    queue_name = QUEUE_NAME
    health_check_key = HEALTH_CHECK_KEY
    health_check_interval = 30
    max_tries = 5
    job_timeout = 60
    keep_result = 3600
    # Let a job finish (or time out) on SIGTERM instead of cancelling it mid-send.
    handle_signals = True


def worker_options(settings: Settings) -> dict[str, Any]:
    redis_settings: RedisSettings = arq_redis_settings(settings)
    return {
        "functions": WorkerSettings.functions,
        "cron_jobs": WorkerSettings.cron_jobs,
        "on_startup": WorkerSettings.on_startup,
        "on_shutdown": WorkerSettings.on_shutdown,
        "queue_name": WorkerSettings.queue_name,
        "health_check_key": WorkerSettings.health_check_key,
        "health_check_interval": WorkerSettings.health_check_interval,
        "max_tries": WorkerSettings.max_tries,
        "job_timeout": WorkerSettings.job_timeout,
        "keep_result": WorkerSettings.keep_result,
        "handle_signals": WorkerSettings.handle_signals,
        "redis_settings": redis_settings,
        "ctx": {"settings": settings},
    }


def create_worker(settings: Settings, **overrides: Any) -> Worker:
    """A worker bound to `settings` (tests pass `burst=True` and their own options)."""
    options = worker_options(settings)
    options.update(overrides)
    return Worker(**options)


def run(settings: Settings, *, burst: bool = False) -> None:
    configure_logging(settings.log_level, json=settings.json_logs)
    worker = create_worker(settings, burst=burst)
    worker.run()
