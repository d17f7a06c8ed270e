"""A Redis read-through cache with O(1) invalidation by namespace version.

Each namespace (`products:list`, `products:<id>`, ...) has a version number in Redis; entries are
stored under `cache:<namespace>:<version>:<key>`. Invalidating a namespace is one `INCR` of its
version: the old entries are never read again and expire on their TTL. No `KEYS`/`SCAN`.

Why this is race-free: a reader reads the version *before* it loads from the database, and
writers bump the version only *after* their transaction has committed. A reader that loaded old
data therefore stores it under a version that is already dead by the time anyone else reads.

The cache is an optimisation only: when Redis fails, reads go to the loader (the database) and
answer as usual; after a failure reads skip Redis for a short while so a dead Redis does not add
its timeout to every request. Invalidation is always attempted.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.core import metrics
from app.core.logging import get_logger

log = get_logger(__name__)

Loader = Callable[[], Awaitable[bytes | None]]

_PREFIX = "cache"

# One round trip for a read: the namespace version and the entry stored under it. A missing
# version (first use, or evicted) starts at the clock, so it never repeats an old version.
_GET_SCRIPT = """
local version = redis.call('GET', KEYS[1])
if not version then
  version = ARGV[1]
  redis.call('SET', KEYS[1], version)
end
return {version, redis.call('GET', KEYS[2] .. version .. ':' .. ARGV[2])}
"""

_BUMP_SCRIPT = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    redis.call('SET', key, ARGV[1])
  end
end
return #KEYS
"""

_CACHE_ERRORS = (RedisError, OSError, TimeoutError)


def _version_key(namespace: str) -> str:
    return f"{_PREFIX}:{namespace}:v"


def _entry_prefix(namespace: str) -> str:
    return f"{_PREFIX}:{namespace}:"


class Cache:
    """`get_or_set` and `invalidate` over one Redis client."""

    def __init__(
        self, redis: Redis, *, default_ttl: int = 60, backoff_seconds: float = 5.0
    ) -> None:
        self.redis = redis
        self.default_ttl = default_ttl
        self.backoff_seconds = backoff_seconds
        self._skip_until = 0.0
        self._get = redis.register_script(_GET_SCRIPT)
        self._bump = redis.register_script(_BUMP_SCRIPT)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._skip_until = time.monotonic() + self.backoff_seconds
        log.warning("cache.failed", operation=operation, error=type(exc).__name__)

    async def get_or_set(
        self, namespace: str, key: str, loader: Loader, *, ttl: int | None = None
    ) -> bytes | None:
        """The cached bytes of `key`, or the loader's (stored for `ttl` seconds unless None)."""
        if not self.available:
            metrics.cache_lookup("error")
            return await loader()
        try:
            raw: Any = await self._get(
                keys=[_version_key(namespace), _entry_prefix(namespace)],
                args=[time.time_ns(), key],
            )
        except _CACHE_ERRORS as exc:
            self._failed("get", exc)
            metrics.cache_lookup("error")
            return await loader()
        version, cached = raw
        if cached is not None:
            metrics.cache_lookup("hit")
            return bytes(cached)
        metrics.cache_lookup("miss")
        value = await loader()
        if value is None:
            return None
        entry = f"{_entry_prefix(namespace)}{version.decode()}:{key}"
        try:
            await self.redis.set(entry, value, ex=ttl or self.default_ttl)
        except _CACHE_ERRORS as exc:
            self._failed("set", exc)
        return value

    async def invalidate(self, namespaces: Iterable[str]) -> None:
        """Bump each namespace's version: everything cached under it is gone for readers. O(1)."""
        keys = sorted({_version_key(namespace) for namespace in namespaces})
        if not keys:
            return
        try:
            await self._bump(keys=keys, args=[time.time_ns()])
        except _CACHE_ERRORS as exc:
            # Entries still expire on their TTL; reads skip Redis for a while meanwhile.
            self._failed("invalidate", exc)
