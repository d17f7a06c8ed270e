"""The request's transaction: committed on success, rolled back on error, after-commit hooks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core import database
from app.core.database import SessionDep, after_commit, session_scope
from app.core.errors import ConflictError
from app.core.reads import ReadConnectionDep, read_query
from app.core.routing import make_router

ran: list[str] = []


def add_routes(app: FastAPI) -> None:
    router = make_router(prefix="/test")

    @router.post("/notes/{value}")
    async def write(value: str, session: SessionDep) -> dict[str, str]:
        await session.execute(text("INSERT INTO scratch (value) VALUES (:v)").bindparams(v=value))

        async def hook() -> None:
            ran.append(value)

        after_commit(session, hook)
        if value.startswith("fail"):
            raise ConflictError("rolled back")
        if value.startswith("crash"):
            raise RuntimeError("unexpected")
        return {"value": value}

    app.include_router(router)


@pytest.fixture
async def api(
    make_client: Callable[..., Any], db_conn: asyncpg.Connection
) -> AsyncIterator[AsyncClient]:
    await db_conn.execute("CREATE TABLE scratch (value text PRIMARY KEY)")
    ran.clear()
    yield await make_client(setup=add_routes)
    await db_conn.execute("DROP TABLE scratch")


async def values(conn: asyncpg.Connection) -> list[str]:
    return [row["value"] for row in await conn.fetch("SELECT value FROM scratch ORDER BY 1")]


async def test_success_commits_and_runs_hooks(
    api: AsyncClient, db_conn: asyncpg.Connection
) -> None:
    response = await api.post("/test/notes/kept")
    assert response.status_code == 200
    assert await values(db_conn) == ["kept"]
    assert ran == ["kept"]


async def test_domain_error_rolls_back_and_drops_hooks(
    api: AsyncClient, db_conn: asyncpg.Connection
) -> None:
    response = await api.post("/test/notes/fail-1")
    assert response.status_code == 409
    assert await values(db_conn) == []
    assert ran == []


async def test_unexpected_error_rolls_back(api: AsyncClient, db_conn: asyncpg.Connection) -> None:
    response = await api.post("/test/notes/crash-1")
    assert response.status_code == 500
    assert await values(db_conn) == []
    assert ran == []


async def test_database_error_at_commit_is_a_500_and_keeps_nothing(
    api: AsyncClient, db_conn: asyncpg.Connection
) -> None:
    assert (await api.post("/test/notes/dup")).status_code == 200
    response = await api.post("/test/notes/dup")
    assert response.status_code == 500
    assert response.json()["code"] == "INTERNAL_ERROR"
    assert await values(db_conn) == ["dup"]
    assert ran == ["dup"]


async def test_session_scope_commits_and_rolls_back(
    api: AsyncClient, db_conn: asyncpg.Connection
) -> None:
    from app.core.database import create_engine, create_session_factory

    transport: Any = api._transport
    settings = transport.app.state.settings
    engine = create_engine(settings)
    factory = create_session_factory(engine)
    try:
        async with session_scope(factory) as session:
            await session.execute(text("INSERT INTO scratch VALUES ('scoped')"))
        with pytest.raises(ValueError, match="boom"):  # noqa: PT012 - the raise ends the scope
            async with session_scope(factory) as session:
                await session.execute(text("INSERT INTO scratch VALUES ('lost')"))
                raise ValueError("boom")
    finally:
        await engine.dispose()
    assert await values(db_conn) == ["scoped"]


async def test_a_failing_hook_does_not_fail_the_request(
    make_client: Callable[..., Any], db_conn: asyncpg.Connection
) -> None:
    def setup(app: FastAPI) -> None:
        router = make_router()

        @router.post("/test/hook")
        async def write(session: SessionDep) -> dict[str, bool]:
            async def broken() -> None:
                raise RuntimeError("side effect failed")

            after_commit(session, broken)
            await session.execute(text("SELECT 1"))
            return {"ok": True}

        app.include_router(router)

    api: AsyncClient = await make_client(setup=setup)
    response = await api.post("/test/hook")
    assert response.status_code == 200


TXID = read_query(select(func.txid_current()))


def add_transaction_probes(app: FastAPI) -> None:
    router = make_router(prefix="/test")

    async def two_transaction_ids(session: AsyncSession) -> dict[str, bool]:
        first = await session.scalar(text("SELECT txid_current()"))
        second = await session.scalar(text("SELECT txid_current()"))
        return {"same_transaction": first == second}

    @router.get("/txids")
    async def read(connection: ReadConnectionDep) -> dict[str, bool]:
        first = await connection.fetchval(TXID)
        second = await connection.fetchval(TXID)
        return {"same_transaction": first == second}

    @router.get("/session-txids")
    async def read_through_a_session(session: SessionDep) -> dict[str, bool]:
        return await two_transaction_ids(session)

    @router.post("/txids")
    async def write(session: SessionDep) -> dict[str, bool]:
        return await two_transaction_ids(session)

    app.include_router(router)


class TestRequestTransactions:
    async def test_a_read_connection_runs_each_statement_on_its_own(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(setup=add_transaction_probes)
        response = await api.get("/test/txids")
        assert response.status_code == 200
        assert response.json() == {"same_transaction": False}

    async def test_a_session_is_one_transaction_whatever_the_method(
        self, make_client: Callable[..., Any]
    ) -> None:
        # The route's dependencies choose the storage path, not the HTTP method.
        api: AsyncClient = await make_client(setup=add_transaction_probes)
        response = await api.get("/test/session-txids")
        assert response.status_code == 200
        assert response.json() == {"same_transaction": True}

    async def test_a_write_runs_in_one_transaction(self, make_client: Callable[..., Any]) -> None:
        api: AsyncClient = await make_client(setup=add_transaction_probes)
        response = await api.post("/test/txids")
        assert response.status_code == 200
        assert response.json() == {"same_transaction": True}

    async def test_hooks_run_when_the_database_was_never_touched(
        self, make_client: Callable[..., Any]
    ) -> None:
        done: list[str] = []

        def setup(app: FastAPI) -> None:
            router = make_router()

            @router.post("/test/no-db")
            async def write(session: SessionDep) -> dict[str, bool]:
                async def hook() -> None:
                    done.append("ran")

                after_commit(session, hook)
                return {"ok": True}

            app.include_router(router)

        api: AsyncClient = await make_client(setup=setup)
        assert (await api.post("/test/no-db")).status_code == 200
        assert done == ["ran"]


class TestDeadPooledConnections:
    """A pooled connection that died is replaced, never handed to a request."""

    async def _kill_app_connections(self, db_conn: asyncpg.Connection) -> int:
        killed: int = await db_conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'saas-backend' AND pid <> pg_backend_pid() "
            "AND datname = current_database()"
        )
        return killed

    @pytest.mark.parametrize("idle_seconds", [3600.0, 0.0], ids=["closed-socket", "idle-ping"])
    async def test_requests_survive_terminated_backends(
        self,
        make_client: Callable[..., Any],
        db_conn: asyncpg.Connection,
        monkeypatch: pytest.MonkeyPatch,
        idle_seconds: float,
    ) -> None:
        monkeypatch.setattr(database, "PING_AFTER_IDLE_SECONDS", idle_seconds)
        api: AsyncClient = await make_client(setup=add_transaction_probes)
        for _ in range(3):
            assert (await api.post("/test/txids")).status_code == 200
        assert await self._kill_app_connections(db_conn) >= 1
        await asyncio.sleep(0.2)  # the server's goodbye reaches the pooled sockets
        for _ in range(3):
            response = await api.post("/test/txids")
            assert response.status_code == 200, response.text
        assert (await api.get("/ready")).json()["checks"]["database"] == "ok"


class TestReadConnectionFailures:
    """A read whose connection failed under it never hands that connection to the next one."""

    async def test_a_connection_that_failed_under_a_read_is_dropped_not_pooled(
        self, make_settings: Callable[..., Any], db_conn: asyncpg.Connection
    ) -> None:
        from sqlalchemy import literal_column

        from app.core.database import create_engine
        from app.core.reads import ReadConnection

        engine = create_engine(make_settings(db_pool_size=1, db_max_overflow=0))
        invalidated: list[object] = []
        event.listen(engine.sync_engine.pool, "invalidate", lambda *_: invalidated.append(1))
        slow = read_query(select(func.pg_sleep(literal_column("2"))))
        failing = read_query(select(literal_column("1 / 0")))
        quick = read_query(select(literal_column("1")))
        try:
            # The backend ended under the query (a server shutting down): the connection is
            # dropped, whatever state the driver was left in.
            reads = ReadConnection(engine)
            task = asyncio.create_task(reads.fetchval(slow))
            await asyncio.sleep(0.3)
            killed = await db_conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE query LIKE 'SELECT pg_sleep%' AND datname = current_database()"
            )
            assert killed == 1
            with pytest.raises((asyncpg.AdminShutdownError, asyncpg.ConnectionDoesNotExistError)):
                await task
            await reads.close()
            assert len(invalidated) == 1  # at once, not when the next request checks it out
            # An error of the statement itself leaves the connection usable: it goes back.
            reads = ReadConnection(engine)
            with pytest.raises(asyncpg.DivisionByZeroError):
                await reads.fetchval(failing)
            await reads.close()
            assert len(invalidated) == 1
            # A cancelled read: asyncpg cancels the statement; the connection serves the next.
            reads = ReadConnection(engine)
            task = asyncio.create_task(reads.fetchval(slow))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await reads.close()
            after = ReadConnection(engine)
            try:
                assert await after.fetchval(quick) == 1
            finally:
                await after.close()
        finally:
            await engine.dispose()


_NOTE = database.DeferredInsert(
    "scratch", ("INSERT INTO scratch (value) VALUES (CAST(:value AS text) || '')",)
)
_TWO_NOTES = database.DeferredInsert(
    "scratch",
    (
        "INSERT INTO scratch (value) VALUES (:value || '-a')",
        "INSERT INTO scratch (value) VALUES (CAST(:value AS text) || '-b'::text)",
    ),
)


class TestDeferredWrites:
    """`defer`: rows held for one batch statement, sent by the scope's commit at the latest."""

    @pytest.fixture
    async def factory(self, api: AsyncClient) -> AsyncIterator[Any]:
        from app.core.database import create_engine, create_session_factory

        transport: Any = api._transport
        engine = create_engine(transport.app.state.settings)
        yield create_session_factory(engine)
        await engine.dispose()

    async def test_held_rows_go_in_one_statement_at_commit(
        self, factory: Any, db_conn: asyncpg.Connection
    ) -> None:
        statements: list[str] = []
        async with session_scope(factory) as session:
            event.listen(
                session.bind.sync_engine,
                "before_cursor_execute",
                lambda *args: statements.append(args[2]),
            )
            database.defer(session, _NOTE, {"value": "one"})
            database.defer(session, _TWO_NOTES, {"value": "two"})
            database.defer(session, _NOTE, {"value": "three"})
            assert await values(db_conn) == []
        assert await values(db_conn) == ["one", "three", "two-a", "two-b"]
        [batch] = [s for s in statements if "scratch" in s]
        assert batch.count("INSERT INTO scratch") == 4
        # Each statement's parameters are its own; a `::` cast is not taken for one.
        assert "'-b'::text" in batch

    async def test_a_failing_row_fails_the_batch_and_keeps_none_of_it(
        self, factory: Any, db_conn: asyncpg.Connection
    ) -> None:
        await db_conn.execute("INSERT INTO scratch VALUES ('taken')")
        with pytest.raises(IntegrityError):  # noqa: PT012 - the scope's commit raises
            async with session_scope(factory) as session:
                database.defer(session, _NOTE, {"value": "fresh"})
                database.defer(session, _NOTE, {"value": "taken"})
        assert await values(db_conn) == ["taken"]

    async def test_a_rollback_drops_held_rows(
        self, factory: Any, db_conn: asyncpg.Connection
    ) -> None:
        with pytest.raises(ValueError, match="boom"):  # noqa: PT012 - the raise ends the scope
            async with session_scope(factory) as session:
                database.defer(session, _NOTE, {"value": "dropped"})
                raise ValueError("boom")
        async with session_scope(factory) as session:
            database.defer(session, _NOTE, {"value": "after"})
        assert await values(db_conn) == ["after"]

    async def test_a_commit_that_would_lose_held_rows_is_refused(
        self, factory: Any, db_conn: asyncpg.Connection
    ) -> None:
        async with factory() as session:
            await session.execute(text("SELECT 1"))
            database.defer(session, _NOTE, {"value": "lost"})
            with pytest.raises(RuntimeError, match="deferred rows not flushed"):
                await session.commit()
            await session.rollback()
        assert await values(db_conn) == []

    async def test_flush_sends_held_rows_with_the_last_statement(
        self, factory: Any, db_conn: asyncpg.Connection
    ) -> None:
        async with session_scope(factory) as session:
            database.defer(session, _NOTE, {"value": "held"})
            await database.flush_deferred(session, _NOTE, {"value": "last"})
            seen = await session.scalar(text("SELECT count(*) FROM scratch"))
            assert seen == 2, "visible to the transaction once flushed"
        assert await values(db_conn) == ["held", "last"]
