"""The on-call metrics: database pool, rate-limit rejections, cache, email outcomes, and what
the worker samples (outbox backlog and lag, queue depth, heartbeat) and serves on its own port.

The test process is not in multiprocess mode: the values are read from the default registry,
as differences around each action (other tests move the same counters).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx
import pytest
from arq.connections import ArqRedis
from httpx import AsyncClient
from prometheus_client import REGISTRY
from sqlalchemy import text

from app.config import Settings
from app.core.database import create_engine
from app.core.redis import create_redis
from app.dev import SmtpSink, free_port
from app.worker import QUEUE_NAME, drain, sample_metrics, start_metrics_server
from tests.integration.auth.helpers import API
from tests.integration.jobs.conftest import add_email_routes

SettingsFactory = Callable[..., Settings]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestDatabasePool:
    async def test_checkouts_are_counted_in_use_and_returned(
        self, make_settings: SettingsFactory
    ) -> None:
        engine = create_engine(make_settings(db_pool_size=3, db_max_overflow=2))
        try:
            assert value("db_pool_connections_max") == 5
            before = value("db_pool_connections_in_use")
            async with engine.connect() as first, engine.connect() as second:
                await first.execute(text("SELECT 1"))
                await second.execute(text("SELECT 1"))
                assert value("db_pool_connections_in_use") == before + 2
            assert value("db_pool_connections_in_use") == before
        finally:
            await engine.dispose()

    async def test_a_checkout_of_a_full_pool_is_a_timed_wait(
        self, make_settings: SettingsFactory
    ) -> None:
        engine = create_engine(make_settings(db_pool_size=1, db_max_overflow=0))
        waits = value("db_pool_waits_total")
        waited = value("db_pool_wait_seconds_sum")
        try:
            async with engine.connect() as held:
                await held.execute(text("SELECT 1"))
                # Nobody waits while a connection is free: the holder got it at once.
                assert value("db_pool_waits_total") == waits

                async def second() -> None:
                    async with engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))

                task = asyncio.create_task(second())
                await asyncio.sleep(0.3)
                assert not task.done()
            await asyncio.wait_for(task, 5)
            assert value("db_pool_waits_total") == waits + 1
            assert value("db_pool_wait_seconds_sum") - waited >= 0.25
        finally:
            await engine.dispose()


class TestRateLimitRejections:
    async def test_a_429_is_counted_under_its_route_template(self, client: AsyncClient) -> None:
        path = f"{API}/auth/register"

        def rejections() -> dict[str, float]:
            return {
                sample.labels["route"]: sample.value
                for family in REGISTRY.collect()
                if family.name == "rate_limit_rejections"
                for sample in family.samples
                if sample.name.endswith("_total") and sample.labels["route"].endswith("/register")
            }

        before = rejections()
        for number in range(5):
            body = {
                "email": f"m{number}@example.com",
                "password": "pass phrase 42",
                "full_name": "M",
            }
            assert (await client.post(path, json=body)).status_code == 201
        assert rejections() == before
        over = await client.post(
            path, json={"email": "m9@example.com", "password": "pass phrase 42", "full_name": "M"}
        )
        assert over.status_code == 429
        after = rejections()
        (route,) = after
        # The same route template as the request metrics: a template, never the raw path.
        assert value("http_requests_total", method="POST", route=route, status="429") >= 1
        assert after[route] == before.get(route, 0) + 1


class TestCacheLookups:
    async def test_a_miss_then_a_hit_and_an_error_when_redis_is_gone(
        self, settings: Settings
    ) -> None:
        from redis.asyncio import Redis

        from app.core.cache import Cache

        counts = {r: value("cache_lookups_total", result=r) for r in ("hit", "miss", "error")}

        async def load() -> bytes:
            return b"v"

        redis: Redis = Redis.from_url(settings.redis_url)
        try:
            cache = Cache(redis)
            await cache.get_or_set("metrics-test", "k", load)
            await cache.get_or_set("metrics-test", "k", load)
        finally:
            await redis.aclose()
        dead = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
        try:
            await Cache(dead).get_or_set("metrics-test", "k", load)
        finally:
            await dead.aclose()
        deltas = {r: value("cache_lookups_total", result=r) - counts[r] for r in counts}
        assert deltas == {"hit": 1, "miss": 1, "error": 1}


class TestEmailOutcomes:
    @pytest.fixture
    async def api(self, make_client: Callable[..., Any]) -> AsyncClient:
        client: AsyncClient = await make_client(setup=add_email_routes)
        return client

    async def test_sent_retried_and_failed_are_counted(
        self, api: AsyncClient, make_settings: SettingsFactory, smtp_sink: SmtpSink
    ) -> None:
        settings = make_settings(email_retry_backoff_seconds=0)
        outcomes = ("sent", "retried", "failed", "skipped")
        before = {o: value("email_deliveries_total", outcome=o) for o in outcomes}
        assert (await api.post("/test/emails", json={"to": "a@example.org"})).status_code == 201
        await drain(settings)
        # A transient failure (one retry), then a permanent refusal (failed). Transient ones
        # alone are retried until APP_EMAIL_RETRY_DEADLINE_HOURS.
        smtp_sink.fail_next("451 4.3.0 Try again later", "550 5.1.1 Mailbox unavailable")
        assert (await api.post("/test/emails", json={"to": "b@example.org"})).status_code == 201
        await drain(settings)
        deltas = {o: value("email_deliveries_total", outcome=o) - before[o] for o in outcomes}
        assert deltas == {"sent": 1, "retried": 1, "failed": 1, "skipped": 0}


class TestWorkerSamples:
    async def test_outbox_backlog_lag_queue_depth_and_heartbeat(
        self, settings: Settings, db_conn: asyncpg.Connection
    ) -> None:
        engine = create_engine(settings)
        redis: ArqRedis = create_redis(settings)
        ctx: dict[str, Any] = {"engine": engine, "redis": redis, "settings": settings}
        try:
            await sample_metrics(ctx)
            assert value("outbox_unsent_rows") == 0
            assert value("outbox_oldest_unsent_age_seconds") == 0
            assert value("arq_queue_depth") == 0

            for age in (120, 30):
                await db_conn.execute(
                    "INSERT INTO outbox (id, job_name, payload, created_at) "
                    "VALUES ($1, 'ping', '{}', now() - make_interval(secs => $2))",
                    uuid.uuid4(),
                    float(age),
                )
            await db_conn.execute(
                "INSERT INTO outbox (id, job_name, payload, created_at, sent_at) "
                "VALUES ($1, 'ping', '{}', now() - interval '1 hour', now())",
                uuid.uuid4(),
            )
            await redis.enqueue_job("ping", _queue_name=QUEUE_NAME)
            await redis.enqueue_job("ping", _queue_name=QUEUE_NAME, _defer_by=60)
            started = time.time()
            await sample_metrics(ctx)

            assert value("outbox_unsent_rows") == 2
            assert 120 <= value("outbox_oldest_unsent_age_seconds") < 180
            assert value("arq_queue_depth") == 2
            assert value("worker_heartbeat_timestamp_seconds") >= started
        finally:
            await db_conn.execute("DELETE FROM outbox")
            await redis.aclose()
            await engine.dispose()


class TestWorkerMetricsServer:
    def test_serves_the_exposition_on_its_port(self, make_settings: SettingsFactory) -> None:
        port = free_port()
        server = start_metrics_server(make_settings(worker_metrics_port=port, host="127.0.0.1"))
        assert server is not None
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        finally:
            server.shutdown()
            server.server_close()
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        for name in ("worker_heartbeat_timestamp_seconds", "outbox_unsent_rows", "arq_queue_depth"):
            assert f"# TYPE {name} gauge" in response.text
        assert "# TYPE email_deliveries_total counter" in response.text

    def test_no_port_no_server(self, make_settings: SettingsFactory) -> None:
        assert start_metrics_server(make_settings(worker_metrics_port=0)) is None


class TestApiExposition:
    async def test_metrics_lists_the_on_call_metrics(self, client: AsyncClient) -> None:
        assert (await client.get("/ready")).status_code == 200
        response = await client.get("/metrics")
        assert response.status_code == 200
        for name in (
            "db_pool_connections_in_use",
            "db_pool_connections_max",
            "db_pool_waits_total",
            "rate_limit_rejections_total",
            "cache_lookups_total",
        ):
            assert name in response.text, name
