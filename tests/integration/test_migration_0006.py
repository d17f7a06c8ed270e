"""Migration 0006 turns each family of refresh tokens into a login session, and back."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from alembic import command
from alembic.config import Config

from app.cli import _alembic_config
from tests.conftest import _dsn, create_database, drop_database
from tests.services import Services


@pytest.fixture
async def scratch_url(services: Services) -> AsyncIterator[str]:
    name = f"saas_m0006_{secrets.token_hex(4)}"
    url = await create_database(services.database_url, name)
    yield url
    await drop_database(services.database_url, name)


async def test_sessions_are_made_from_token_families_and_dropped_again(scratch_url: str) -> None:
    config = _alembic_config(scratch_url)
    assert isinstance(config, Config)
    await asyncio.to_thread(command.upgrade, config, "0005")
    conn = await asyncpg.connect(_dsn(scratch_url))
    try:
        user = uuid.uuid4()
        await conn.execute(
            "INSERT INTO users (id, email, password_hash, full_name, role, is_active, "
            "is_verified, token_version) VALUES ($1, 'm@example.com', 'x', 'M', 'user', true, "
            "true, 0)",
            user,
        )
        now = datetime.now(UTC)
        live, ended = uuid.uuid4(), uuid.uuid4()
        rows = [
            # live: one used, one current token
            (live, now - timedelta(hours=2), now - timedelta(hours=1), None),
            (live, now - timedelta(hours=1), None, None),
            # ended: every token revoked (a logout)
            (ended, now - timedelta(hours=3), now - timedelta(hours=2), now - timedelta(hours=1)),
            (ended, now - timedelta(hours=2), None, now - timedelta(minutes=30)),
        ]
        for session_id, created, used, revoked in rows:
            await conn.execute(
                "INSERT INTO refresh_tokens (id, user_id, session_id, jti_hash, created_at, "
                "expires_at, used_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                uuid.uuid4(),
                user,
                session_id,
                secrets.token_hex(32),
                created,
                now + timedelta(days=1),
                used,
                revoked,
            )
        await asyncio.to_thread(command.upgrade, config, "0006")
        sessions = {
            row["id"]: row
            for row in await conn.fetch("SELECT * FROM login_sessions ORDER BY created_at")
        }
        assert set(sessions) == {live, ended}
        assert sessions[live]["revoked_at"] is None
        assert sessions[live]["created_at"] == now - timedelta(hours=2)
        assert sessions[ended]["revoked_at"] == now - timedelta(minutes=30)
        assert {row["user_id"] for row in sessions.values()} == {user}
        # A token of an unknown session is refused now (the foreign key).
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await conn.execute(
                "INSERT INTO refresh_tokens (id, user_id, session_id, jti_hash, expires_at) "
                "VALUES ($1, $2, $3, 'h', now())",
                uuid.uuid4(),
                user,
                uuid.uuid4(),
            )
        # A session revoked after the upgrade stays revoked for the older code.
        await conn.execute("UPDATE login_sessions SET revoked_at = now() WHERE id = $1", live)
        await asyncio.to_thread(command.downgrade, config, "0005")
        assert not await conn.fetchval("SELECT to_regclass('login_sessions') IS NOT NULL")
        assert await conn.fetchval(
            "SELECT bool_and(revoked_at IS NOT NULL) FROM refresh_tokens WHERE session_id = $1",
            live,
        )
        assert await conn.fetchval("SELECT count(*) FROM refresh_tokens") == 4
    finally:
        await conn.close()
