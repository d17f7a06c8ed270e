"""`app.core.cache` on a real Redis: read-through, O(1) invalidation, Redis down is no error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from app.core.cache import Cache
from tests.services import Services


@pytest.fixture
async def redis(services: Services) -> AsyncIterator[Redis]:
    client: Redis = Redis.from_url(services.redis_url)
    yield client
    await client.aclose()


class Loader:
    """Counts its calls, returns a value chosen by the test."""

    def __init__(self, value: bytes | None) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> bytes | None:
        self.calls += 1
        return self.value


class TestGetOrSet:
    async def test_a_miss_loads_and_stores_with_the_ttl(self, redis: Redis) -> None:
        cache = Cache(redis, default_ttl=30)
        load = Loader(b"one")
        assert await cache.get_or_set("things", "a", load) == b"one"
        assert await cache.get_or_set("things", "a", load) == b"one"
        assert load.calls == 1
        keys = [key async for key in redis.scan_iter("cache:things:*")]
        entry = next(key for key in keys if not key.endswith(b":v"))
        assert 0 < await redis.ttl(entry) <= 30
        assert await redis.ttl("cache:things:v") == -1

    async def test_an_explicit_ttl_wins(self, redis: Redis) -> None:
        cache = Cache(redis, default_ttl=30)
        await cache.get_or_set("things", "a", Loader(b"x"), ttl=5)
        keys = [key async for key in redis.scan_iter("cache:things:*:a")]
        assert 0 < await redis.ttl(keys[0]) <= 5

    async def test_nothing_is_stored_when_the_loader_finds_nothing(self, redis: Redis) -> None:
        cache = Cache(redis)
        load = Loader(None)
        assert await cache.get_or_set("things", "missing", load) is None
        assert await cache.get_or_set("things", "missing", load) is None
        assert load.calls == 2

    async def test_keys_and_namespaces_are_separate(self, redis: Redis) -> None:
        cache = Cache(redis)
        assert await cache.get_or_set("a", "k", Loader(b"a-k")) == b"a-k"
        assert await cache.get_or_set("b", "k", Loader(b"b-k")) == b"b-k"
        assert await cache.get_or_set("a", "j", Loader(b"a-j")) == b"a-j"
        assert await cache.get_or_set("a", "k", Loader(b"other")) == b"a-k"


class TestInvalidate:
    async def test_a_bump_makes_the_next_read_load_again(self, redis: Redis) -> None:
        cache = Cache(redis)
        await cache.get_or_set("things", "a", Loader(b"old"))
        await cache.get_or_set("other", "a", Loader(b"kept"))
        await cache.invalidate(["things"])
        assert await cache.get_or_set("things", "a", Loader(b"new")) == b"new"
        assert await cache.get_or_set("other", "a", Loader(b"x")) == b"kept"

    async def test_invalidating_an_unused_namespace_or_none_is_harmless(self, redis: Redis) -> None:
        cache = Cache(redis)
        await cache.invalidate([])
        await cache.invalidate(["never-used", "never-used"])
        assert await cache.get_or_set("never-used", "a", Loader(b"v")) == b"v"

    async def test_a_lost_version_key_never_revives_old_entries(self, redis: Redis) -> None:
        cache = Cache(redis)
        await cache.get_or_set("things", "a", Loader(b"old"))
        await redis.delete("cache:things:v")  # as an eviction would
        assert await cache.get_or_set("things", "a", Loader(b"new")) == b"new"

    async def test_a_read_that_raced_a_write_is_stored_under_a_dead_version(
        self, redis: Redis
    ) -> None:
        cache = Cache(redis)
        started, release = asyncio.Event(), asyncio.Event()

        async def slow_old_read() -> bytes:
            started.set()
            await release.wait()
            return b"old"

        reader = asyncio.create_task(cache.get_or_set("things", "a", slow_old_read))
        await started.wait()
        await cache.invalidate(["things"])  # the writer committed meanwhile
        release.set()
        assert await reader == b"old"
        assert await cache.get_or_set("things", "a", Loader(b"new")) == b"new"


class TestRedisDown:
    async def test_reads_fall_through_to_the_loader_and_never_raise(self) -> None:
        dead: Redis = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        try:
            cache = Cache(dead, backoff_seconds=60)
            load = Loader(b"from-db")
            assert await cache.get_or_set("things", "a", load) == b"from-db"
            assert not cache.available
            # While backing off, Redis is not tried at all.
            assert await cache.get_or_set("things", "a", load) == b"from-db"
            assert load.calls == 2
            await cache.invalidate(["things"])
        finally:
            await dead.aclose()

    async def test_a_failed_invalidation_never_raises_and_reads_back_off(
        self, redis: Redis
    ) -> None:
        cache = Cache(redis)
        # A version Redis refuses to increment makes the bump fail on the server side.
        await redis.set("cache:things:v", "not-a-number")
        assert await cache.get_or_set("things", "a", Loader(b"v")) == b"v"
        await cache.invalidate(["things"])
        assert not cache.available
        load = Loader(b"fresh")
        assert await cache.get_or_set("things", "a", load) == b"fresh"
        assert load.calls == 1
