"""Events recorded with the change and relayed after the commit: never lost, never doubled,
never published for a change that rolled back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
from fastapi import FastAPI
from pydantic import BaseModel
from redis.asyncio import Redis

from app.core.database import session_scope
from app.features.events.publisher import Relay, record
from app.features.events.store import ALL_STREAM, stream_key


class Thing(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID


async def _wait_for(condition: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.05)


async def test_a_committed_event_is_published_once_and_marked_relayed(
    app: FastAPI, redis_client: Redis, db_conn: asyncpg.Connection
) -> None:
    user_id = uuid.uuid4()
    thing = Thing(id=uuid.uuid4(), user_id=user_id)
    async with session_scope(app.state.session_factory) as session:
        row_id = await record(
            session, "order.created", thing.model_dump_json().encode(), [f"user:{user_id}"]
        )
        # Nothing is published before the commit.
        assert await redis_client.xlen(ALL_STREAM) == 0

    async def relayed() -> bool:
        value = await db_conn.fetchval(
            "SELECT relayed_at IS NOT NULL FROM event_outbox WHERE id = $1", row_id
        )
        return bool(value)

    await _wait_for(relayed)
    entries = await redis_client.xrange(stream_key(f"user:{user_id}"))
    assert len(entries) == 1
    entry_id, fields = entries[0]
    assert Thing.model_validate_json(fields[b"d"]) == thing
    stored = await db_conn.fetchrow(
        "SELECT name, stream_id FROM event_outbox WHERE id = $1", row_id
    )
    assert stored["name"] == "order.created"
    assert stored["stream_id"] == entry_id.decode()


async def test_a_rolled_back_event_is_neither_stored_nor_published(
    app: FastAPI, redis_client: Redis, db_conn: asyncpg.Connection
) -> None:
    thing = Thing(id=uuid.uuid4(), user_id=uuid.uuid4())
    try:
        async with session_scope(app.state.session_factory) as session:
            await record(
                session,
                "order.created",
                thing.model_dump_json().encode(),
                [f"user:{thing.user_id}"],
            )
            raise RuntimeError("the change failed")
    except RuntimeError:
        pass
    await asyncio.sleep(0.3)
    assert await db_conn.fetchval("SELECT count(*) FROM event_outbox") == 0
    assert await redis_client.exists(ALL_STREAM) == 0


async def test_the_relay_publishes_what_the_commit_path_did_not_exactly_once(
    app: FastAPI, redis_client: Redis, db_conn: asyncpg.Connection
) -> None:
    # A row committed by a process that died before publishing it (no relay on its session).
    user_id = uuid.uuid4()
    await db_conn.execute(
        "INSERT INTO event_outbox (id, name, audiences, data, created_at) "
        "VALUES ($1, 'order.status_changed', $2, $3, $4)",
        uuid.uuid4(),
        [f"user:{user_id}"],
        f'{{"id": "{uuid.uuid4()}", "user_id": "{user_id}"}}',
        datetime.now(UTC) - timedelta(seconds=5),
    )
    relay: Relay = Relay(app.state.events_store, app.state.session_factory)
    assert await relay.relay_pending() == 1
    assert await relay.relay_pending() == 0
    assert await redis_client.xlen(stream_key(f"user:{user_id}")) == 1
    assert await db_conn.fetchval("SELECT count(*) FROM event_outbox WHERE relayed_at IS NULL") == 0


async def test_a_row_published_but_not_marked_is_not_published_again(
    app: FastAPI, redis_client: Redis, db_conn: asyncpg.Connection
) -> None:
    user_id = uuid.uuid4()
    row_id = uuid.uuid4()
    await db_conn.execute(
        "INSERT INTO event_outbox (id, name, audiences, data, created_at) "
        "VALUES ($1, 'order.created', $2, '{}', now() - interval '5 seconds')",
        row_id,
        [f"user:{user_id}"],
    )
    store = app.state.events_store
    # Published at commit time, then the process died before marking the row.
    first = await store.publish(
        outbox_id=str(row_id),
        name="order.created",
        data="{}",
        at="x",
        audiences=[f"user:{user_id}"],
    )
    relay = Relay(store, app.state.session_factory)
    assert await relay.relay_pending() == 1
    assert await redis_client.xlen(ALL_STREAM) == 1
    assert (
        await db_conn.fetchval("SELECT stream_id FROM event_outbox WHERE id = $1", row_id) == first
    )


async def test_the_relay_leaves_rows_to_a_redis_outage_and_sends_them_later(
    app: FastAPI, make_settings: object, db_conn: asyncpg.Connection, redis_client: Redis
) -> None:
    from app.features.events.store import EventStore

    await db_conn.execute(
        "INSERT INTO event_outbox (id, name, audiences, data, created_at) "
        "VALUES ($1, 'order.created', $2, '{}', now() - interval '5 seconds')",
        uuid.uuid4(),
        ["user:x"],
    )
    down = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        relay = Relay(
            EventStore(down, retention_seconds=3600, max_length=1000), app.state.session_factory
        )
        assert await relay.relay_pending() == 0
    finally:
        await down.aclose()
    assert await db_conn.fetchval("SELECT count(*) FROM event_outbox WHERE relayed_at IS NULL") == 1
    relay = Relay(app.state.events_store, app.state.session_factory)
    assert await relay.relay_pending() == 1
    assert await redis_client.xlen(ALL_STREAM) == 1
