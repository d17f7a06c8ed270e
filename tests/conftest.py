"""Real PostgreSQL, Redis and an SMTP sink for every test; the app built with test Settings.

Each test run gets a fresh database built by the Alembic migrations; after each test every table
is truncated and the Redis database flushed, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from redis.asyncio import Redis
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.cli import run_migrations
from app.config import Settings, load_settings
from app.core.database import uuid7
from app.core.security import Passwords, Tokens
from app.dev import SmtpSink
from app.features.users.models import Role, User
from app.main import create_app
from app.worker import drain as drain_worker
from tests.services import Services, find_services

TEST_JWT_SECRET = "test-secret-" + "k" * 40

# pgserver logs from an atexit hook, after pytest has closed the streams it captured.
logging.getLogger("pgserver").setLevel(logging.WARNING)


def _dsn(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    with find_services() as found:
        yield found


async def create_database(server_url: str, name: str) -> str:
    conn = await asyncpg.connect(_dsn(server_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(_dsn(server_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def database_url(services: Services) -> AsyncIterator[str]:
    """A database of this test run, at the head of the migrations."""
    name = f"saas_test_{secrets.token_hex(4)}"
    url = await create_database(services.database_url, name)
    await asyncio.to_thread(run_migrations, url)
    yield url
    await drop_database(services.database_url, name)


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
async def db_conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection for assertions on the database state, outside the app."""
    conn = await asyncpg.connect(_dsn(database_url))
    yield conn
    await conn.close()


@pytest.fixture(scope="session")
async def redis_client(services: Services) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


@pytest.fixture(autouse=True)
async def _isolate(
    smtp_sink: SmtpSink, db_conn: asyncpg.Connection, redis_client: Redis
) -> AsyncIterator[None]:
    """Clean state after each test: tables truncated, Redis flushed, captured mail dropped."""
    yield
    smtp_sink.clear()
    tables = await db_conn.fetch(
        "SELECT quote_ident(tablename) AS name FROM pg_tables "
        "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
    )
    if tables:
        names = ", ".join(row["name"] for row in tables)
        await db_conn.execute(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
    await redis_client.flushdb()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(services: Services, database_url: str, smtp_sink: SmtpSink) -> SettingsFactory:
    """Test Settings pointing at the real services; keyword arguments override any field."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "environment": "test",
            "database_url": database_url,
            "redis_url": services.redis_url,
            "jwt_secret": TEST_JWT_SECRET,
            "smtp_host": smtp_sink.host,
            "smtp_port": smtp_sink.port,
            "log_format": "json",
            "db_pool_size": 5,
            "storage_url": services.storage_url,
            "storage_access_key": services.storage_access_key or None,
            "storage_secret_key": services.storage_secret_key or None,
        }
        values.update(overrides)
        return load_settings(**values)

    return make


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as http:
        yield http


AppClientFactory = Callable[..., Any]
# The app behind each client `make_client` built (`app_of`).
_APPS: dict[int, FastAPI] = {}


def app_of(client: AsyncClient) -> FastAPI:
    """The app a `make_client` client talks to (to wait for its background work)."""
    return _APPS[id(client)]


@pytest.fixture
async def make_client(
    make_settings: SettingsFactory,
) -> AsyncIterator[Callable[..., Any]]:
    """Build another app (own Settings, optional extra routes) and a client for it."""
    stack: list[tuple[LifespanManager, AsyncClient]] = []

    async def make(
        *, setup: Callable[[FastAPI], None] | None = None, **overrides: Any
    ) -> AsyncClient:
        application = create_app(make_settings(**overrides))
        if setup is not None:
            setup(application)
        manager = LifespanManager(application)
        await manager.__aenter__()
        http = AsyncClient(transport=ASGITransport(app=application), base_url="http://testserver")
        stack.append((manager, http))
        _APPS[id(http)] = application
        return http

    yield make
    for manager, http in reversed(stack):
        _APPS.pop(id(http), None)
        await http.aclose()
        await manager.__aexit__(None, None, None)


DEFAULT_PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(scope="session")
async def db_engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine of the test database for factories (outside any app)."""
    engine = create_async_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


UserFactory = Callable[..., Awaitable[User]]

# One argon2 hash per password for the whole run (each costs ~25 ms of CPU, and most tests make
# several users with the default password); each user's row still holds a real argon2 hash.
_HASHES: dict[tuple[str, int, int, int], str] = {}


def _hash_of(settings: Settings, password: str) -> str:
    key = (
        password,
        settings.argon2_time_cost,
        settings.argon2_memory_kib,
        settings.argon2_parallelism,
    )
    if key not in _HASHES:
        passwords = Passwords(settings)
        try:
            _HASHES[key] = passwords.hash_sync(password)
        finally:
            passwords.close()
    return _HASHES[key]


@pytest.fixture
def make_user(db_engine: AsyncEngine, settings: Settings) -> UserFactory:
    """Write a user straight to the database: `await make_user(role=Role.admin, ...)`."""
    counter = iter(range(1, 1_000_000))

    async def make(
        *,
        email: str | None = None,
        password: str = DEFAULT_PASSWORD,
        full_name: str | None = None,
        role: Role = Role.user,
        is_active: bool = True,
        is_verified: bool = True,
    ) -> User:
        number = next(counter)
        user = User(
            email=(email or f"user{number}-{secrets.token_hex(3)}@example.com").lower(),
            password_hash=_hash_of(settings, password),
            full_name=full_name or f"Test User {number}",
            role=role,
            is_active=is_active,
            is_verified=is_verified,
        )
        async with AsyncSession(db_engine, expire_on_commit=False) as session:
            session.add(user)
            await session.commit()
        return user

    return make


HeadersFactory = Callable[[User], Awaitable[dict[str, str]]]


@pytest.fixture
def auth_headers(settings: Settings) -> HeadersFactory:
    """`await auth_headers(user)`: an Authorization header with an access token of a new session."""
    tokens = Tokens(settings)

    async def make(user: User) -> dict[str, str]:
        token, _ = tokens.encode(
            type="access",
            subject=user.id,
            session_id=uuid7(),
            version=user.token_version,
            role=user.role.value,
        )
        return {"Authorization": f"Bearer {token}"}

    return make


DrainJobs = Callable[[], Awaitable[None]]


@pytest.fixture
def drain_jobs(settings: Settings) -> DrainJobs:
    """`await drain_jobs()`: relay every pending outbox row to ARQ and run a burst worker until
    the queue is empty, so every email of committed work is then in `smtp_sink.messages`."""

    async def drain() -> None:
        await drain_worker(settings)

    return drain
