"""The ARQ worker runs jobs from the queue the app writes to."""

from __future__ import annotations

from arq.connections import ArqRedis, create_pool

from app.config import Settings
from app.core.redis import arq_redis_settings
from app.worker import QUEUE_NAME, create_worker


async def test_burst_worker_runs_a_queued_job(settings: Settings) -> None:
    pool: ArqRedis = await create_pool(arq_redis_settings(settings), default_queue_name=QUEUE_NAME)
    try:
        job = await pool.enqueue_job("ping", _job_id="ping-1")
        assert job is not None
        worker = create_worker(settings, burst=True, poll_delay=0.05)
        try:
            await worker.main()
        finally:
            await worker.close()
        assert worker.jobs_complete == 1
        assert worker.jobs_failed == 0
        assert await job.result(timeout=5) == "pong"
    finally:
        await pool.aclose()


async def test_unknown_job_fails_without_crashing_the_worker(settings: Settings) -> None:
    pool: ArqRedis = await create_pool(arq_redis_settings(settings), default_queue_name=QUEUE_NAME)
    try:
        await pool.enqueue_job("no_such_job")
        worker = create_worker(settings, burst=True, poll_delay=0.05)
        try:
            await worker.main()
        finally:
            await worker.close()
        assert worker.jobs_failed == 1
    finally:
        await pool.aclose()
