"""The access epoch (the counter that the triggers of migration 0012 move at the commit of every
change that gates a long-lived connection, and only then) and `users.liveness.access_changes`."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.database import uuid7
from app.core.reads import ReadConnection
from app.core.security import (
    REVOKED_SESSIONS_COUNT_KEY,
    REVOKED_SESSIONS_STREAM,
    deny_session,
    revoked_session_key,
)
from app.features.users import liveness
from app.features.users.liveness import access_changes
from app.features.users.models import User
from tests.conftest import UserFactory, _dsn


async def _epoch(db_conn: asyncpg.Connection) -> int:
    return int(await db_conn.fetchval("SELECT coalesce(max(value), 0) FROM access_epoch"))


async def _organization(db_conn: asyncpg.Connection) -> uuid.UUID:
    organization_id = uuid7()
    await db_conn.execute(
        "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Acme', $2)",
        organization_id,
        f"acme-{organization_id.hex[-8:]}",
    )
    return organization_id


class TestTheTriggers:
    @pytest.mark.parametrize(
        "change",
        [
            "UPDATE users SET is_active = false WHERE id = $1",
            "UPDATE users SET token_version = token_version + 1 WHERE id = $1",
            "UPDATE users SET role = 'admin' WHERE id = $1",
            "DELETE FROM users WHERE id = $1",
        ],
    )
    async def test_an_account_change_that_gates_tokens_moves_it(
        self, make_user: UserFactory, db_conn: asyncpg.Connection, change: str
    ) -> None:
        user = await make_user()
        before = await _epoch(db_conn)
        await db_conn.execute(change, user.id)
        assert await _epoch(db_conn) == before + 1

    async def test_other_account_changes_leave_it_alone(
        self, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user()
        before = await _epoch(db_conn)
        await db_conn.execute(
            "UPDATE users SET full_name = 'Renamed', is_verified = true WHERE id = $1", user.id
        )
        # Written, but to the same value: nothing that gates a token changed.
        await db_conn.execute("UPDATE users SET is_active = true WHERE id = $1", user.id)
        assert await _epoch(db_conn) == before

    async def test_memberships_and_organization_deletions_move_it(
        self, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user()
        organization_id = await _organization(db_conn)
        before = await _epoch(db_conn)
        await db_conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) "
            "VALUES ($1, $2, 'member')",
            organization_id,
            user.id,
        )
        assert await _epoch(db_conn) == before + 1
        await db_conn.execute(
            "UPDATE organizations SET deleted_at = now() WHERE id = $1", organization_id
        )
        assert await _epoch(db_conn) == before + 2
        await db_conn.execute(
            "DELETE FROM organization_members WHERE organization_id = $1", organization_id
        )
        assert await _epoch(db_conn) == before + 3
        await db_conn.execute(
            "UPDATE organizations SET name = 'Renamed' WHERE id = $1", organization_id
        )
        assert await _epoch(db_conn) == before + 3

    async def test_it_moves_at_commit_not_before_and_not_on_rollback(
        self, make_user: UserFactory, db_conn: asyncpg.Connection, database_url: str
    ) -> None:
        user = await make_user()
        before = await _epoch(db_conn)
        writer = await asyncpg.connect(_dsn(database_url))
        try:
            rolled_back = writer.transaction()
            await rolled_back.start()
            await writer.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
            assert await _epoch(db_conn) == before
            await rolled_back.rollback()
            assert await _epoch(db_conn) == before
            committed = writer.transaction()
            await committed.start()
            await writer.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
            # The change is not visible yet, and neither is the move: a re-check that reads
            # the counter now would read the old account too, and look again after the commit.
            assert await _epoch(db_conn) == before
            await committed.commit()
        finally:
            await writer.close()
        assert await _epoch(db_conn) == before + 1

    async def test_it_comes_back_after_its_table_is_emptied(
        self, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        user = await make_user()
        await db_conn.execute("TRUNCATE access_epoch")
        assert await db_conn.fetchval("SELECT count(*) FROM access_epoch") == 0
        await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
        assert await db_conn.fetchval("SELECT value FROM access_epoch") == 1


class TestAccessChanges:
    async def test_denials_are_named_one_by_one_and_account_changes_ask_for_everything(
        self,
        make_user: UserFactory,
        db_engine: AsyncEngine,
        db_conn: asyncpg.Connection,
        redis_client: Redis,
    ) -> None:
        user: User = await make_user()
        reads = ReadConnection(db_engine)
        try:
            first = await access_changes(redis_client, reads, None)
            assert not first.complete  # no earlier look: everything may have changed
            quiet = await access_changes(redis_client, reads, first.marks)
            assert quiet.complete
            assert quiet.denied == frozenset()
            assert quiet.marks == first.marks
            ended = [uuid7(), uuid7()]
            for session_id in ended:
                await deny_session(redis_client, session_id, 60)
            assert await redis_client.get(revoked_session_key(ended[0])) == b"1"
            assert 0 < await redis_client.ttl(revoked_session_key(ended[0])) <= 60
            denied = await access_changes(redis_client, reads, quiet.marks)
            assert denied.complete
            assert denied.denied == frozenset(ended)
            again = await access_changes(redis_client, reads, denied.marks)
            assert again.complete
            assert again.denied == frozenset()  # each denial is told once
            await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
            changed = await access_changes(redis_client, reads, again.marks)
            assert not changed.complete
            assert changed.marks.accounts == again.marks.accounts + 1
        finally:
            await reads.close()

    async def test_denials_that_cannot_all_be_told_ask_for_everything(
        self, db_engine: AsyncEngine, redis_client: Redis
    ) -> None:
        reads = ReadConnection(db_engine)
        try:
            marks = (await access_changes(redis_client, reads, None)).marks
            # More than one look reads: some would go untold.
            for _ in range(liveness._DENIALS_PER_LOOK + 1):
                await deny_session(redis_client, uuid7(), 60)
            flood = await access_changes(redis_client, reads, marks)
            assert not flood.complete
            # Redis lost the marks (a restart without persistence): the count went back.
            await redis_client.delete(REVOKED_SESSIONS_COUNT_KEY, REVOKED_SESSIONS_STREAM)
            await deny_session(redis_client, uuid7(), 60)
            lost = await access_changes(redis_client, reads, flood.marks)
            assert not lost.complete
            # The stream was cut below the last id read: the count says more than it holds.
            await deny_session(redis_client, uuid7(), 60)
            await redis_client.xtrim(REVOKED_SESSIONS_STREAM, maxlen=0)
            await deny_session(redis_client, uuid7(), 60)
            cut = await access_changes(redis_client, reads, lost.marks)
            assert not cut.complete
            assert len(cut.denied) == 1
        finally:
            await reads.close()
