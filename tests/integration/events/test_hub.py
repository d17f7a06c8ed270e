"""One process's hub: who gets an event, the bounded queue, and the re-check that ends streams
whose session ended, whose token expired or whose account changed."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from app.core.database import uuid7
from app.core.security import deny_session, revoked_session_key
from app.features.events import hub as hub_module
from app.features.events.hub import (
    CLOSE_SLOW,
    CLOSE_UNAUTHORIZED,
    Connection,
    Hub,
)
from app.features.events.store import Event
from app.features.users.models import Role, User
from tests.conftest import UserFactory


def _connection(user: User, *, limit: int = 1000, expires_in: int = 900) -> Connection:
    admin = user.role == Role.admin
    return Connection(
        transport="ws",
        user_id=user.id,
        session_id=uuid7(),
        token_version=user.token_version,
        expires_at=int(time.time()) + expires_in,
        is_admin=admin,
        audiences=frozenset({"admins"} if admin else {f"user:{user.id}"}),
        limit=limit,
    )


def _event(number: int, *audiences: str) -> Event:
    return Event(
        id=f"{number}-0",
        key=(number, 0),
        name="order.created",
        data="{}",
        at="2026-12-07T00:00:00Z",
        audiences=audiences,
    )


class TestFanOut:
    async def test_an_event_reaches_its_audiences_and_the_admins_and_no_one_else(
        self, app: FastAPI, make_user: UserFactory
    ) -> None:
        hub: Hub = app.state.events_hub
        alice, bob, admin = await make_user(), await make_user(), await make_user(role=Role.admin)
        connections = {
            name: _connection(user)
            for name, user in {"alice": alice, "bob": bob, "admin": admin}.items()
        }
        for connection in connections.values():
            hub.register(connection)
        hub.dispatch(_event(1, f"user:{alice.id}"))
        assert [len(c.queue) for c in connections.values()] == [1, 0, 1]
        hub.dispatch(_event(2, f"user:{bob.id}", f"org:{uuid.uuid4()}"))
        assert [len(c.queue) for c in connections.values()] == [1, 1, 2]
        for connection in connections.values():
            hub.unregister(connection)
        assert hub.by_audience == {}

    async def test_a_connection_that_falls_1000_events_behind_is_dropped_with_1008(
        self, app: FastAPI, make_user: UserFactory
    ) -> None:
        hub: Hub = app.state.events_hub
        alice = await make_user()
        slow, fast = _connection(alice), _connection(alice)
        hub.register(slow)
        hub.register(fast)
        for number in range(1, 1001):
            hub.dispatch(_event(number, f"user:{alice.id}"))
            await fast.next(0)
        assert slow.close_code is None
        assert len(slow.queue) == 1000
        hub.dispatch(_event(1001, f"user:{alice.id}"))
        assert slow.close_code == CLOSE_SLOW
        assert len(slow.queue) == 0  # its memory is released at once
        assert await slow.next(0) is None
        assert fast.close_code is None
        assert (await fast.next(0)) is not None
        hub.unregister(slow)
        hub.unregister(fast)

    async def test_events_already_replayed_are_not_sent_again_live(
        self, app: FastAPI, make_user: UserFactory
    ) -> None:
        alice = await make_user()
        connection = _connection(alice)
        for number in (1, 2, 3):
            connection.offer(_event(number, f"user:{alice.id}"))
        connection.sent_after = (2, 0)
        sent = await connection.next(0)
        assert sent is not None
        assert sent.id == "3-0"
        assert await connection.next(0) is None


class TestRecheck:
    async def test_streams_of_ended_sessions_and_changed_accounts_close_4401_others_go_on(
        self,
        app: FastAPI,
        make_user: UserFactory,
        redis_client: Redis,
        db_conn: asyncpg.Connection,
    ) -> None:
        hub: Hub = app.state.events_hub
        users = [await make_user() for _ in range(5)]
        logged_out, deactivated, password_changed, expired, fine = (
            _connection(user) for user in users
        )
        expired.expires_at = int(time.time()) - 1
        for connection in (logged_out, deactivated, password_changed, expired, fine):
            hub.register(connection)
        await redis_client.set(revoked_session_key(logged_out.session_id), 1)
        await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", users[1].id)
        await db_conn.execute(
            "UPDATE users SET token_version = token_version + 1 WHERE id = $1", users[2].id
        )
        await hub.check_connections()
        for connection in (logged_out, deactivated, password_changed, expired):
            assert connection.close_code == CLOSE_UNAUTHORIZED
        assert fine.close_code is None
        for connection in (logged_out, deactivated, password_changed, expired, fine):
            hub.unregister(connection)

    async def test_many_streams_are_checked_in_batches_and_none_is_missed(
        self,
        app: FastAPI,
        make_user: UserFactory,
        redis_client: Redis,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # Batches of 3 over 8 streams of one account: an ended session in each batch, the
        # last one short. Between batches the loop serves other work (a pause).
        monkeypatch.setattr(hub_module, "_CHECK_BATCH", 3)
        hub: Hub = app.state.events_hub
        user = await make_user()
        streams = [_connection(user) for _ in range(8)]
        ended = {streams[1].session_id, streams[4].session_id, streams[7].session_id}
        for connection in streams:
            hub.register(connection)
        for session_id in ended:
            await redis_client.set(revoked_session_key(session_id), 1)
        pauses: list[float] = []
        real_sleep = asyncio.sleep

        async def pause(seconds: float) -> None:
            pauses.append(seconds)
            await real_sleep(0)

        monkeypatch.setattr(hub_module.asyncio, "sleep", pause)
        try:
            await hub.check_connections()
        finally:
            monkeypatch.undo()
            for connection in streams:
                hub.unregister(connection)
        closed = {c.session_id for c in streams if c.close_code == CLOSE_UNAUTHORIZED}
        assert closed == ended
        assert all(c.close_code is None for c in streams if c.session_id not in ended)
        assert len(pauses) == 2, "three batches, a pause between each two"

    async def test_a_role_change_moves_nothing_before_the_token_fails(
        self, app: FastAPI, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        hub: Hub = app.state.events_hub
        admin = await make_user(role=Role.admin)
        connection = _connection(admin)
        hub.register(connection)
        # A role change bumps the token version (users service): the stream ends.
        await db_conn.execute(
            "UPDATE users SET role = 'user', token_version = token_version + 1 WHERE id = $1",
            admin.id,
        )
        await hub.check_connections()
        assert connection.close_code == CLOSE_UNAUTHORIZED
        hub.unregister(connection)


def _code(connection: Connection) -> int | None:
    return connection.close_code


class TestRecheckOnlyWhenSomethingChanged:
    """Streams are re-read when the access epoch moved, every `events_full_recheck_seconds`,
    after a failed check, and when new; an idle process otherwise reads two counters."""

    @pytest.fixture(autouse=True)
    def _no_background_checks(self, app: FastAPI) -> None:
        """Only the test's own looks: the app's re-check loop could look in between."""
        hub: Hub = app.state.events_hub
        for task in hub._tasks:
            if task.get_name() == "events.checker":
                task.cancel()

    async def _checked(self, hub: Hub, *users: User) -> list[Connection]:
        streams = [_connection(user) for user in users]
        for connection in streams:
            hub.register(connection)
        await hub.check_connections()  # new streams: read at the next look
        assert all(c.close_code is None for c in streams)
        return streams

    async def test_nothing_is_re_read_while_nothing_changed_then_everything_is(
        self,
        app: FastAPI,
        make_user: UserFactory,
        redis_client: Redis,
        db_conn: asyncpg.Connection,
    ) -> None:
        hub: Hub = app.state.events_hub
        alice, bob = await make_user(), await make_user()
        alice_stream, bob_stream = await self._checked(hub, alice, bob)
        # A denial written without its mark (an older release during a rolling deploy) is
        # not looked for: nothing says that anything changed.
        await redis_client.set(revoked_session_key(alice_stream.session_id), 1)
        await hub.check_connections()
        assert _code(alice_stream) is None
        # Any account change moves the epoch (a trigger, whatever wrote it): every stream
        # is re-read, the unmarked denial with it.
        await db_conn.execute("UPDATE users SET is_active = false WHERE id = $1", bob.id)
        await hub.check_connections()
        assert _code(bob_stream) == CLOSE_UNAUTHORIZED
        assert _code(alice_stream) == CLOSE_UNAUTHORIZED
        hub.unregister(alice_stream)
        hub.unregister(bob_stream)

    async def test_a_logout_s_denial_is_seen_at_the_next_look(
        self, app: FastAPI, make_user: UserFactory, redis_client: Redis
    ) -> None:
        hub: Hub = app.state.events_hub
        alice, bob = await make_user(), await make_user()
        alice_stream, bob_stream = await self._checked(hub, alice, bob)
        # Bob's session denied without the marks: only the denial that is told is acted on,
        # the other streams are not re-read for it.
        await redis_client.set(revoked_session_key(bob_stream.session_id), 1)
        await deny_session(redis_client, alice_stream.session_id, 60)
        await hub.check_connections()
        assert _code(alice_stream) == CLOSE_UNAUTHORIZED
        assert _code(bob_stream) is None
        hub.unregister(alice_stream)
        hub.unregister(bob_stream)

    async def test_a_membership_removed_by_hand_stops_the_organization_s_events(
        self, app: FastAPI, make_user: UserFactory, db_conn: asyncpg.Connection
    ) -> None:
        hub: Hub = app.state.events_hub
        member = await make_user()
        organization_id = uuid7()
        await db_conn.execute(
            "INSERT INTO organizations (id, name, slug) VALUES ($1, 'Acme', $2)",
            organization_id,
            f"acme-{organization_id.hex[-8:]}",
        )
        await db_conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) "
            "VALUES ($1, $2, 'member')",
            organization_id,
            member.id,
        )
        (stream,) = await self._checked(hub, member)
        assert f"org:{organization_id}" in stream.audiences
        await db_conn.execute("DELETE FROM organization_members WHERE user_id = $1", member.id)
        await hub.check_connections()
        assert _code(stream) is None
        assert stream.audiences == frozenset({f"user:{member.id}"})
        hub.dispatch(_event(1, f"org:{organization_id}"))
        assert len(stream.queue) == 0
        hub.unregister(stream)

    async def test_every_stream_is_re_read_within_the_full_recheck_interval_anyway(
        self, app: FastAPI, make_user: UserFactory, redis_client: Redis
    ) -> None:
        hub: Hub = app.state.events_hub
        settings = app.state.settings
        looks = round(settings.events_full_recheck_seconds / settings.events_recheck_seconds)
        assert looks > 3
        user = await make_user()
        streams = await self._checked(hub, *[user] * 3)
        for connection in streams:
            await redis_client.set(revoked_session_key(connection.session_id), 1)
        closed_after: list[int] = []
        for _ in range(looks):
            await hub.check_connections()
            closed_after.append(sum(_code(c) == CLOSE_UNAUTHORIZED for c in streams))
        # A slice per look, evenly: none at the first look, all three by the last.
        assert closed_after[0] == 0
        assert closed_after[-1] == 3
        assert closed_after == sorted(closed_after)
        assert len(set(closed_after)) == 4  # one at a time
        for connection in streams:
            hub.unregister(connection)

    async def test_a_stream_opened_after_a_recheck_is_read_at_the_next_look(
        self, app: FastAPI, make_user: UserFactory, redis_client: Redis
    ) -> None:
        hub: Hub = app.state.events_hub
        (old,) = await self._checked(hub, await make_user())
        new = _connection(await make_user())
        await redis_client.set(revoked_session_key(new.session_id), 1)
        await redis_client.set(revoked_session_key(old.session_id), 1)
        hub.register(new)
        await hub.check_connections()
        assert _code(new) == CLOSE_UNAUTHORIZED
        assert _code(old) is None  # not re-read: nothing changed since its last check
        hub.unregister(new)
        hub.unregister(old)

    async def test_after_a_failed_check_everything_is_re_read(
        self,
        app: FastAPI,
        make_user: UserFactory,
        redis_client: Redis,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        hub: Hub = app.state.events_hub
        (stream,) = await self._checked(hub, await make_user())

        async def away(*args: object) -> tuple[int, int]:
            raise ConnectionError("Redis is away")

        monkeypatch.setattr(hub_module, "access_changes", away)
        await hub.check_connections()
        monkeypatch.undo()
        assert _code(stream) is None  # one failed look is within the 5 s
        # What changed while the check could not run may have left no mark that is still
        # different (the epoch is read again after the outage): everything is read again.
        await redis_client.set(revoked_session_key(stream.session_id), 1)
        await hub.check_connections()
        assert _code(stream) == CLOSE_UNAUTHORIZED
        hub.unregister(stream)
