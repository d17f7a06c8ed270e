"""Shared pieces of the jobs tests: a route that queues email, a session factory, an ARQ client."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from arq.connections import ArqRedis
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.core.database import SessionDep, create_engine, create_session_factory
from app.core.email import queue_email
from app.core.errors import ConflictError
from app.core.redis import create_redis
from app.core.routing import make_router

TOKEN = "tok-123"
LINK = f"http://localhost:5173/verify-email?token={TOKEN}&source=mail"


async def handed_off(db_conn: asyncpg.Connection, *outbox_ids: str, seconds: float = 5.0) -> None:
    """Wait until the rows are marked handed off to ARQ: the commit's hand-off runs in a task of
    its own, which the response does not wait for."""
    wanted = [uuid.UUID(outbox_id) for outbox_id in outbox_ids]
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        sent = await db_conn.fetchval(
            "SELECT count(*) FROM outbox WHERE id = ANY($1) AND sent_at IS NOT NULL", wanted
        )
        if sent == len(wanted):
            return
        assert asyncio.get_running_loop().time() < deadline, f"not handed off: {outbox_ids}"
        await asyncio.sleep(0.01)


def verify_context(name: str = "Ada <Lovelace>") -> dict[str, Any]:
    return {"full_name": name, "token": TOKEN, "link": LINK}


class EmailIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str
    count: int = 1
    fail: bool = False


def add_email_routes(app: FastAPI) -> None:
    router = make_router()

    @router.post("/test/emails", status_code=201)
    async def send_test_emails(body: EmailIn, session: SessionDep) -> dict[str, list[str]]:
        ids = [
            await queue_email(
                session, to=body.to, template="verify_email", context=verify_context()
            )
            for _ in range(body.count)
        ]
        if body.fail:
            raise ConflictError("rolled back on purpose")
        return {"outbox_ids": [str(outbox_id) for outbox_id in ids]}

    app.include_router(router)


@pytest.fixture
async def api(make_client: Callable[..., Any]) -> AsyncClient:
    client: AsyncClient = await make_client(setup=add_email_routes)
    return client


@pytest.fixture
async def factory(settings: Settings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """A session factory of its own, without a dispatcher: its jobs wait for the relay."""
    engine = create_engine(settings)
    yield create_session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def arq_redis(settings: Settings) -> AsyncIterator[ArqRedis]:
    redis = create_redis(settings)
    yield redis
    await redis.aclose()


async def outbox_rows(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch("SELECT * FROM outbox ORDER BY created_at, id"))


async def delivery(conn: asyncpg.Connection, outbox_id: str | uuid.UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM email_deliveries WHERE outbox_id = $1", uuid.UUID(str(outbox_id))
    )
    return row


async def queued_job_ids(redis: ArqRedis) -> list[str]:
    return [value.decode() for value in await redis.zrange("arq:queue", 0, -1)]
