"""The database core: engine, sessions, the one transaction boundary, and model building blocks.

`get_session` is the only place that commits a request's work: it commits when the endpoint
returns and rolls back when anything raises. Services and repositories `flush()`; they never
commit. Workers and scripts get the same behaviour from `session_scope()`. Callbacks registered
with `after_commit()` run once the transaction has committed (and never if it rolled back): that
is how side effects such as background jobs stay consistent with the data.

Rows a transaction only writes (an outbox row, an event, a stored idempotent outcome) need not
cost a round trip each: `defer()` holds such an INSERT, and the next `flush_deferred()` (at the
latest, the commit of `session_scope`) sends every held one as a single statement of
data-modifying CTEs. A held row is not visible to the transaction's own queries until then.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy import DateTime, MetaData, TextClause, event, func, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext import asyncio as sa_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry, PoolProxiedConnection
from sqlmodel import Field, SQLModel

from app.config import Settings
from app.core import metrics
from app.core.logging import get_logger
from app.core.outages import describe, is_outage

log = get_logger(__name__)

# Deterministic constraint names so that Alembic migrations can refer to them (and drop them).
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
SQLModel.metadata.naming_convention = NAMING_CONVENTION
metadata: MetaData = SQLModel.metadata

AfterCommit = Callable[[], Awaitable[None]]
_AFTER_COMMIT_KEY = "after_commit"
_DEFERRED_KEY = "deferred"


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): index-friendly, not guessable in sequence."""
    unix_ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76  # version
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a, 12 bits
    value |= 0b10 << 62  # variant
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF  # rand_b, 62 bits
    return uuid.UUID(int=value)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UUIDModel(SQLModel):
    """A time-ordered UUID primary key."""

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)


class CreatedAtMixin(SQLModel):
    """`created_at`, timezone-aware, set by the application (and by the database's default).

    Every table that records when a row was made declares it through this mixin (or
    `TimestampMixin`), so the column is the same everywhere: `timestamptz NOT NULL DEFAULT now()`.
    """

    created_at: datetime = Field(
        default_factory=utcnow,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "nullable": False},
    )


class TimestampMixin(CreatedAtMixin):
    """`created_at` and `updated_at`, timezone-aware and set by the application and the database."""

    updated_at: datetime = Field(
        default_factory=utcnow,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "onupdate": utcnow, "nullable": False},
    )


# A pooled connection idle for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 5.0
_CHECKED_IN_AT = "checked_in_at"


class MeteredPool(AsyncAdaptedQueuePool):
    """The default async pool, counting checkouts that had to wait for a connection.

    A checkout waits when no idle connection is left and the overflow is used up; only then is
    the wait timed (`db_pool_waits_total`, `db_pool_wait_seconds`): the common path costs two
    attribute reads.
    """

    def _do_get(self) -> ConnectionPoolEntry:
        if not (self._pool.empty() and self._overflow >= self._max_overflow):
            return super()._do_get()
        started = time.perf_counter()
        try:
            return super()._do_get()
        finally:
            metrics.DB_POOL_WAITS.inc()
            metrics.DB_POOL_WAIT_SECONDS.observe(time.perf_counter() - started)


def create_engine(settings: Settings) -> AsyncEngine:
    """The async engine, with its pool and timeouts taken from settings."""
    # Looked up at call time: with tracing on, OpenTelemetry's SQLAlchemy instrumentation
    # wraps `create_async_engine` and traces every engine created afterwards.
    engine = sa_asyncio.create_async_engine(
        settings.database_url,
        poolclass=MeteredPool,
        echo=settings.db_echo,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        # Pre-ping, done by `_check_liveness` below: SQLAlchemy's own sends a round trip on
        # every checkout, which measured 170 us of CPU per request (a third of a short read).
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={
            "timeout": settings.db_connect_timeout_seconds,
            "server_settings": {
                "application_name": "saas-backend",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )
    event.listen(engine.sync_engine.pool, "checkin", _record_checkin)
    event.listen(engine.sync_engine.pool, "checkout", _check_liveness)
    event.listen(engine.sync_engine.pool, "checkout", _count_checkout)
    # One engine per process (the app's or the worker's): its capacity is the process's.
    metrics.DB_POOL_MAX.set(settings.db_pool_size + settings.db_max_overflow)
    return engine


def _record_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    record.info[_CHECKED_IN_AT] = time.monotonic()
    metrics.DB_POOL_IN_USE.dec()


def _count_checkout(
    _dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    metrics.DB_POOL_IN_USE.inc()


def _check_liveness(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: PoolProxiedConnection
) -> None:
    """The pre-ping, without a round trip for a connection that was just in use.

    A connection whose socket closed while it sat in the pool (the server restarted, or ended
    the backend) is known closed to asyncpg at once. One that sat idle for a while may have
    been cut without a word (a firewall, a failover), so it is pinged like SQLAlchemy's
    `pool_pre_ping` would. Either way a dead connection is discarded and the pool hands out
    another: `DisconnectionError` from a checkout event makes it retry with a fresh one.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise DisconnectionError("connection closed while in the pool")
    checked_in_at = record.info.get(_CHECKED_IN_AT)
    if checked_in_at is not None and time.monotonic() - checked_in_at > PING_AFTER_IDLE_SECONDS:
        try:
            dbapi_connection.ping()
        except Exception as exc:
            raise DisconnectionError("connection failed its ping") from exc


def create_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    # SQLAlchemy's AsyncSession, not SQLModel's: the latter marks `execute()` deprecated (our
    # tests turn warnings into errors) and its `exec()` is not typed for UPDATE or text().
    # expire_on_commit=False: responses are serialised after the commit, from loaded attributes.
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


def after_commit(session: AsyncSession, callback: AfterCommit) -> None:
    """Run `callback` once this session's transaction has committed; dropped on rollback."""
    session.info.setdefault(_AFTER_COMMIT_KEY, []).append(callback)


async def _run_after_commit(session: AsyncSession) -> None:
    callbacks: list[AfterCommit] = session.info.pop(_AFTER_COMMIT_KEY, [])
    for callback in callbacks:
        try:
            await callback()
        except Exception as exc:
            # The data is committed; a failed side effect must not turn success into an error.
            name = getattr(callback, "__qualname__", "?")
            if is_outage(exc):
                log.warning("after_commit.failed", callback=name, error=describe(exc))
            else:
                log.exception("after_commit.failed", callback=name)


async def discard(session: AsyncSession) -> None:
    """Undo the session's work so far and drop its after-commit callbacks and held rows; the
    session stays usable for a new transaction (which the request's scope then commits)."""
    session.info.pop(_AFTER_COMMIT_KEY, None)
    session.info.pop(_DEFERRED_KEY, None)
    await session.rollback()


# Deferred writes ---------------------------------------------------------------------------

# A `:name` parameter of a statement's text (not the `::` of a cast).
_PARAMETER = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True, slots=True)
class DeferredInsert:
    """An INSERT whose round trip can wait for the transaction's next batch (`defer`).

    `parts`: one or more INSERT statements (no WITH of their own, `:name` parameters shared by
    the parts) that run together as one. Written as text, so a batch of them is joined once
    per combination and cached, not rebuilt and compiled per request. Values go to asyncpg as
    they are: JSON columns take a JSON string (`CAST(:x AS jsonb)`).
    """

    name: str
    parts: tuple[str, ...]


_BATCHES: dict[tuple[DeferredInsert, ...], TextClause] = {}


def _batch(statements: tuple[DeferredInsert, ...]) -> TextClause:
    """The statements as one: every part but the last a data-modifying CTE, parameters
    renamed `d<i>_<name>` so that the statements' own names cannot collide."""
    cached = _BATCHES.get(statements)
    if cached is not None:
        return cached
    parts: list[str] = []
    for index, statement in enumerate(statements):
        prefix = f"d{index}_"
        parts.extend(_PARAMETER.sub(f":{prefix}\\1", part) for part in statement.parts)
    *ctes, last = parts
    sql = last
    if ctes:
        sql = "WITH " + ", ".join(f"w{n} AS ({cte})" for n, cte in enumerate(ctes)) + " " + last
    batch = text(sql)
    if len(_BATCHES) < 256:  # a handful of combinations exist; never grow without bound
        _BATCHES[statements] = batch
    return batch


def defer(session: AsyncSession, statement: DeferredInsert, params: dict[str, Any]) -> None:
    """Hold an INSERT until the transaction's next `flush_deferred()` (the commit, at the
    latest): one round trip for every held row instead of one each. Only for rows the
    transaction does not read back before then."""
    session.info.setdefault(_DEFERRED_KEY, []).append((statement, params))


async def flush_deferred(
    session: AsyncSession,
    last: DeferredInsert | None = None,
    params: dict[str, Any] | None = None,
) -> None:
    """Send every held INSERT, and `last` with them, as one statement (one round trip).

    A constraint violation of any of them fails the whole statement (`IntegrityError`), as it
    would have failed the transaction; the held rows are dropped either way.
    """
    held: list[tuple[DeferredInsert, dict[str, Any]]] = session.info.pop(_DEFERRED_KEY, [])
    if last is not None:
        held.append((last, params or {}))
    if not held:
        return
    values: dict[str, Any] = {}
    for index, (_, statement_params) in enumerate(held):
        prefix = f"d{index}_"
        for key, value in statement_params.items():
            values[prefix + key] = value
    await session.execute(_batch(tuple(statement for statement, _ in held)), values)


def _refuse_unflushed(session: Any) -> None:
    """A commit that would lose held rows is a bug: fail it rather than drop them silently."""
    if session.info.get(_DEFERRED_KEY):
        raise RuntimeError("commit with deferred rows not flushed: call flush_deferred() first")


event.listen(Session, "before_commit", _refuse_unflushed)


def _unused(session: AsyncSession) -> bool:
    """Nothing to commit, roll back or close: no transaction began, nothing was added.

    Many requests never touch the database (a cached read, an anonymous caller); ending their
    session through SQLAlchemy would still cost a greenlet hop each for commit and close.
    """
    return not session.in_transaction() and not (session.new or session.deleted or session.dirty)


@asynccontextmanager
async def session_scope(
    factory: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit on success, roll back on any exception, then after-commit work."""
    session = factory()
    try:
        yield session
        await flush_deferred(session)
        if not _unused(session):
            await session.commit()
    except BaseException:
        session.info.pop(_AFTER_COMMIT_KEY, None)
        session.info.pop(_DEFERRED_KEY, None)
        if not _unused(session):
            await session.rollback()
        raise
    finally:
        if session.identity_map or not _unused(session):
            await session.close()
    await _run_after_commit(session)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: one transaction, committed before the response is sent
    (function scope). Write routes take it; read routes take a `ReadConnectionDep`
    (`app.core.reads`) instead."""
    async with session_scope(request.app.state.session_factory) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def session_factory_from(request: Request) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = request.app.state.session_factory
    return factory


async def ping(factory: async_sessionmaker[AsyncSession]) -> None:
    """A real round trip through the app's own session factory (for readiness checks)."""
    async with factory() as session:
        await session.execute(text("SELECT 1"))


def describe_engine(engine: AsyncEngine) -> dict[str, Any]:
    """Where the engine points, without credentials (for logs)."""
    url = engine.url
    return {"host": url.host, "port": url.port, "database": url.database}
