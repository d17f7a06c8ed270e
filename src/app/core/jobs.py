"""Background jobs that run if and only if their transaction commits, and are never lost.

The queue side of the outbox (`app.core.outbox` owns the table and its SQL). `enqueue()` writes
an outbox row in the caller's transaction. Once that transaction has committed
the row is handed to ARQ at once (the fast path: a task the commit starts, which the response
does not wait for), with the outbox id
as ARQ's job id so that the same row is never queued twice. If Redis cannot take it at that
instant, the row stays unsent and the relay in the worker (`relay_outbox`, every few seconds)
hands it over when Redis is back. A rolled-back transaction takes its rows with it, so a job never
runs against data that does not exist. Handed-off rows are pruned after a retention period.

Redis only ever carries the outbox id: the worker reads the payload from the outbox row
(`outbox_job`), so tokens in an email's context never reach Redis or ARQ's log lines. ARQ then
delivers at least once: jobs take ids or small JSON payloads and are idempotent.
"""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.core import outbox, tracing
from app.core.database import session_scope
from app.core.logging import get_logger
from app.core.outages import describe

log = get_logger(__name__)

QUEUE_NAME = "arq:queue"
# How long ARQ keeps a queued job, its retries included (ARQ's default is one day after its
# start time, which would cut an email's retries short: see APP_EMAIL_RETRY_DEADLINE_HOURS).
JOB_KEY_TTL = timedelta(days=8)
# What a Redis outage looks like from redis-py: refused, reset, timed out.
_REDIS_DOWN = (RedisError, OSError, asyncio.TimeoutError)

# Jobs are asked for through the outbox; this is its entry point for every caller.
enqueue = outbox.enqueue


@dataclass(frozen=True)
class JobDispatcher:
    """Where sessions of one factory hand their committed jobs: the ARQ client and the factory.

    The hand-off runs in a task of its own, started by the commit and not awaited by it: a
    request's response never waits for Redis and the outbox's UPDATE (its commit already made
    the job certain, and the relay sends whatever this does not). `drain()` lets the tasks
    finish at shutdown.
    """

    redis: ArqRedis
    session_factory: async_sessionmaker[AsyncSession]
    _inflight: set[asyncio.Task[None]] = field(default_factory=set, compare=False, repr=False)

    def committed(self, outbox_id: uuid.UUID, job_name: str) -> None:
        """Hand a committed row to the queue soon, without holding up the caller."""
        task = asyncio.create_task(self.hand_off(outbox_id, job_name))
        self._inflight.add(task)
        task.add_done_callback(self._finished)

    @property
    def pending(self) -> int:
        """Hand-offs started and not finished yet."""
        return len(self._inflight)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # The row is committed and stays unsent: the relay hands it over.
            log.warning("outbox.handoff_failed", error=describe(exc))

    async def drain(self, seconds: float = 2.0) -> None:
        """Let in-flight hand-offs finish (at shutdown); the relay sends what is left."""
        if self._inflight:
            await asyncio.wait(list(self._inflight), timeout=seconds)

    async def hand_off(self, outbox_id: uuid.UUID, job_name: str) -> None:
        """The fast path: queue one committed row now; on a Redis failure leave it to the relay."""
        try:
            with tracing.span(
                "outbox hand-off",
                **{"messaging.system": "arq", "outbox.id": str(outbox_id), "job.name": job_name},
            ):
                await _enqueue_arq(self.redis, outbox_id, job_name)
        except _REDIS_DOWN as exc:
            log.warning(
                "outbox.handoff_deferred",
                outbox_id=str(outbox_id),
                job_name=job_name,
                error=type(exc).__name__,
            )
            return
        engine: AsyncEngine = self.session_factory.kw["bind"]
        await outbox.complete(engine, outbox_id)
        log.info("outbox.handed_off", outbox_id=str(outbox_id), job_name=job_name)


def install_dispatcher(factory: async_sessionmaker[AsyncSession], redis: ArqRedis) -> JobDispatcher:
    """Let every session of `factory` hand its jobs to `redis` right after its commit.

    The dispatcher travels in the sessions' `info`, so `enqueue()` needs no global; a factory
    without one still writes outbox rows, and the relay sends them.
    """
    info = dict(factory.kw.get("info") or {})
    dispatcher = JobDispatcher(redis=redis, session_factory=factory)
    info[outbox.DISPATCHER_KEY] = dispatcher
    factory.configure(info=info)
    return dispatcher


async def _enqueue_arq(redis: ArqRedis, outbox_id: uuid.UUID, job_name: str) -> None:
    # None means a job with this id is queued, running or has a kept result: handed off before.
    await redis.enqueue_job(
        job_name, _job_id=str(outbox_id), _queue_name=QUEUE_NAME, _expires=JOB_KEY_TTL
    )


JobFunction = Callable[..., Awaitable[Any]]


def outbox_job(function: JobFunction) -> WorkerCoroutine:
    """Wrap a job so that it runs as `function(ctx, **payload)` with its outbox row's payload.

    Register every job that `enqueue()` feeds this way in `app/worker.py`. A job whose row is
    gone (pruned long after it ran) does nothing: there is nothing left that asked for it.
    """

    @functools.wraps(function)
    async def run(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:  # queued by hand, not through the outbox
            return await function(ctx, *args, **kwargs)
        job_id = str(ctx["job_id"])
        try:
            outbox_id = uuid.UUID(job_id)
        except ValueError:
            log.error("outbox.job_without_row", job_id=job_id, reason="not an outbox id")
            return None
        loaded = await outbox.load_with_context(ctx["session_factory"], outbox_id)
        if loaded is None:
            log.warning("outbox.job_without_row", job_id=job_id, outbox_id=job_id)
            return None
        # The job continues the trace of the request that wrote the row (tracing on only).
        with tracing.job_span(
            f"job {function.__name__}",
            loaded.trace_context,
            **{"messaging.system": "arq", "job.id": job_id, "job.try": int(ctx.get("job_try", 1))},
        ):
            return await function(ctx, **loaded.payload)

    return run


async def relay_outbox(
    factory: async_sessionmaker[AsyncSession], redis: ArqRedis, *, batch_size: int = 100
) -> int:
    """Hand every unsent outbox row to ARQ, oldest first, in batches; returns how many.

    Rows are locked with `FOR UPDATE SKIP LOCKED`, so any number of workers relay side by side
    without handing the same row twice or waiting for each other. A Redis failure ends the pass
    after marking what was handed; the rest waits for the next pass.
    """
    total = 0
    while True:
        handed: list[uuid.UUID] = []
        failure: BaseException | None = None
        async with session_scope(factory) as session:
            rows = await outbox.claim_unsent(session, limit=batch_size)
            for row in rows:
                try:
                    await _enqueue_arq(redis, row.id, row.job_name)
                except _REDIS_DOWN as exc:
                    failure = exc
                    break
                handed.append(row.id)
            await outbox.complete_claimed(session, handed)
        total += len(handed)
        if failure is not None:
            log.warning("outbox.relay_interrupted", handed=total, error=type(failure).__name__)
            break
        if len(rows) < batch_size:
            break
    if total:
        log.info("outbox.relayed", count=total)
    return total


async def prune_outbox(
    factory: async_sessionmaker[AsyncSession], *, older_than: timedelta, batch_size: int = 1000
) -> int:
    """Delete outbox rows handed off longer ago than `older_than` (the worker's cron)."""
    return await outbox.prune(factory, older_than=older_than, batch_size=batch_size)
