"""The request's transaction: committed on success, rolled back on error, after-commit hooks."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from app.core.database import SessionDep, after_commit, session_scope
from app.core.errors import ConflictError
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
