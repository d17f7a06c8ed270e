"""The orders jobs, run the way the worker runs them (a context with a session factory)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.database import create_session_factory
from app.core.idempotency import purge_idempotency_keys


@pytest.fixture
def ctx(db_engine: AsyncEngine) -> dict[str, Any]:
    return {"session_factory": create_session_factory(db_engine)}


async def test_only_expired_keys_are_purged(
    ctx: dict[str, Any], make_user: Any, db_conn: asyncpg.Connection
) -> None:
    user = await make_user()
    insert = (
        "INSERT INTO idempotency_keys (user_id, key, request_hash, response_status, "
        "response_body, response_content_type, expires_at) "
        "VALUES ($1, $2, 'h', 201, '{}', 'application/json', now() + $3)"
    )
    await db_conn.execute(insert, user.id, "old", timedelta(minutes=-1))
    await db_conn.execute(insert, user.id, "fresh", timedelta(hours=1))
    assert await purge_idempotency_keys(ctx) == 1
    assert await purge_idempotency_keys(ctx) == 0
    keys = await db_conn.fetch("SELECT key FROM idempotency_keys WHERE user_id = $1", user.id)
    assert [row["key"] for row in keys] == ["fresh"]
