"""The event store on a real Redis: shared ids across audience streams, idempotent publishing,
and the replay-or-reset decision."""

from __future__ import annotations

import json
import uuid

import pytest
from redis.asyncio import Redis

from app.features.events.store import ALL_STREAM, EventStore, stream_key


@pytest.fixture
def store(redis_client: Redis) -> EventStore:
    return EventStore(redis_client, retention_seconds=3600, max_length=100_000)


async def _publish(store: EventStore, *audiences: str, outbox_id: str | None = None) -> str:
    return await store.publish(
        outbox_id=outbox_id or str(uuid.uuid4()),
        name="order.created",
        data=json.dumps({"id": str(uuid.uuid4())}),
        at="2026-12-07T00:00:00Z",
        audiences=list(audiences),
    )


async def _all(store: EventStore, audiences: set[str], after: str) -> list[str] | None:
    replay = await store.replay(audiences, after)
    if replay.events is None:
        return None
    return [event.id async for event in replay.events]


class TestPublish:
    async def test_one_event_has_one_id_in_every_stream_of_its_audiences(
        self, store: EventStore, redis_client: Redis
    ) -> None:
        user, org = f"user:{uuid.uuid4()}", f"org:{uuid.uuid4()}"
        event_id = await _publish(store, user, org)
        for key in (ALL_STREAM, stream_key(user), stream_key(org)):
            entries = await redis_client.xrange(key)
            assert [entry_id.decode() for entry_id, _ in entries] == [event_id]
        ((_, fields),) = await redis_client.xrange(ALL_STREAM)
        assert fields[b"e"] == b"order.created"
        assert fields[b"a"].decode().split(",") == [user, org]
        # Audience streams expire when nothing more comes (the admins' one never does).
        assert 0 < await redis_client.pttl(stream_key(user)) <= 3600 * 1000
        assert await redis_client.pttl(ALL_STREAM) == -1

    async def test_publishing_the_same_outbox_row_twice_gives_one_event(
        self, store: EventStore, redis_client: Redis
    ) -> None:
        user = f"user:{uuid.uuid4()}"
        first = await _publish(store, user, outbox_id="row-1")
        again = await _publish(store, user, outbox_id="row-1")
        assert again == first
        assert await redis_client.xlen(ALL_STREAM) == 1
        assert await redis_client.xlen(stream_key(user)) == 1

    async def test_ids_increase_across_all_streams(self, store: EventStore) -> None:
        ids = [await _publish(store, f"user:{uuid.uuid4()}") for _ in range(20)]
        keys = [tuple(int(part) for part in event_id.split("-")) for event_id in ids]
        assert keys == sorted(keys)
        assert len(set(ids)) == 20


class TestReplay:
    async def test_a_user_gets_their_events_and_their_organizations_merged_in_order_once(
        self, store: EventStore
    ) -> None:
        me, org, other = f"user:{uuid.uuid4()}", f"org:{uuid.uuid4()}", f"user:{uuid.uuid4()}"
        start = await _publish(store, me)
        mine = [
            await _publish(store, me),
            await _publish(store, org),
            await _publish(store, me, org),  # my order of the organization: in both streams
        ]
        await _publish(store, other)
        mine.append(await _publish(store, org))
        assert await _all(store, {me, org}, start) == mine
        assert await _all(store, {me}, start) == [mine[0], mine[2]]

    async def test_admins_replay_every_event(self, store: EventStore) -> None:
        start = await _publish(store, f"user:{uuid.uuid4()}")
        later = [await _publish(store, f"user:{uuid.uuid4()}") for _ in range(3)]
        assert await _all(store, {"admins"}, start) == later

    async def test_replay_reads_page_after_page(self, store: EventStore) -> None:
        me = f"user:{uuid.uuid4()}"
        start = await _publish(store, me)
        ids = [await _publish(store, me) for _ in range(250)]
        assert await _all(store, {me}, start) == ids

    @pytest.mark.parametrize("last_event_id", ["", "abc", "12-x", "1-0", "99999999999999-0"])
    async def test_a_malformed_or_unknown_id_gets_a_reset_to_the_newest(
        self, store: EventStore, last_event_id: str
    ) -> None:
        me = f"user:{uuid.uuid4()}"
        await _publish(store, me)
        newest = await _publish(store, f"user:{uuid.uuid4()}")
        replay = await store.replay({me}, last_event_id)
        assert replay.events is None
        assert replay.reset_id == newest

    async def test_an_id_older_than_the_retention_gets_a_reset(
        self, store: EventStore, redis_client: Redis
    ) -> None:
        me = f"user:{uuid.uuid4()}"
        await redis_client.xadd(ALL_STREAM, {"e": "order.created"}, id="1000-0")
        await redis_client.xadd(stream_key(me), {"e": "order.created"}, id="1000-0")
        newest = await _publish(store, me)
        replay = await store.replay({me}, "1000-0")
        assert replay.events is None
        assert replay.reset_id == newest

    async def test_an_id_the_cap_cut_past_gets_a_reset(self, redis_client: Redis) -> None:
        store = EventStore(redis_client, retention_seconds=3600, max_length=3)
        me, other = f"user:{uuid.uuid4()}", f"user:{uuid.uuid4()}"
        start = await _publish(store, me)
        mine = [await _publish(store, me) for _ in range(5)]
        # The operator's cap (3 per stream) cut entries after the client's id from its stream.
        assert [e.decode() for e, _ in await redis_client.xrange(stream_key(me))] == mine[-3:]
        replay = await store.replay({me}, start)
        assert replay.events is None
        assert replay.reset_id == mine[-1]
        # From an id at or after the newest cut, nothing it needs is gone.
        assert await _all(store, {me}, mine[-3]) == mine[-2:]
        # Another user's stream was not cut: resuming there is fine (from an id the admins'
        # stream still holds).
        kept = [e.decode() for e, _ in await redis_client.xrange(ALL_STREAM)]
        theirs = await _publish(store, other)
        assert await _all(store, {other}, kept[-1]) == [theirs]

    async def test_nothing_published_yet_resets_to_zero(self, store: EventStore) -> None:
        assert await store.newest_id() == "0-0"
        replay = await store.replay({"admins"}, "1-0")
        assert replay.reset_id == "0-0"
