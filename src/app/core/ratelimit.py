"""Rate limits on Redis, shared by every API process, counted without blocking the event loop.

slowapi's `@limiter.limit(...)` decorator calls the synchronous `limits` storage (sync redis-py)
from inside the async endpoint wrapper, so every check holds the event loop for a Redis round
trip (and for up to the socket timeout when Redis hangs). We keep slowapi's model (limit strings
such as "10/minute", one bucket per scope and key, fixed windows, `X-RateLimit-*` headers,
`Retry-After`) but count with the asyncio storage of `limits` (slowapi's own engine), on the
app's Redis connection pool, from a FastAPI dependency:

    @router.post("/login", dependencies=[RateLimit("login", "rate_limit_login")])

When Redis cannot be reached the check fails closed with 503 SERVICE_UNAVAILABLE: an auth route
without its brute-force limit is not something to serve silently, and every authenticated route
already answers 503 then (its revocation check needs Redis too).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import Depends, Request, Response
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import HTTPConnection

from app.config import Settings
from app.core.errors import Problem, RateLimitedError, ServiceUnavailableError
from app.core.logging import get_logger

log = get_logger(__name__)

KEY_PREFIX = "ratelimit"


@dataclass(frozen=True, slots=True)
class WindowState:
    limit: int
    remaining: int
    reset_in: int  # whole seconds until the window rolls on (>= 1)

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_in),
        }


@lru_cache(maxsize=64)
def _parse(value: str) -> RateLimitItem:
    return parse(value)


# Count one attempt only while the window is under its limit, in one round trip: a burst of
# concurrent attempts can never get more than `limit` of them through (a GET, then an INCR
# later, lets every attempt of a burst read the same count). KEYS[1] the window's key,
# ARGV[1] the limit, ARGV[2] the window in milliseconds. Returns {count, ttl_ms, admitted}.
_ACQUIRE_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local admitted = 0
if count < tonumber(ARGV[1]) then
  count = redis.call('INCR', KEYS[1])
  admitted = 1
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  if count > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
  ttl = tonumber(ARGV[2])
end
return {count, ttl, admitted}
"""


class RateLimiter:
    """Fixed-window counters in Redis (`limits` async storage on the app's connection pool)."""

    def __init__(self, settings: Settings, redis: Redis) -> None:
        self.enabled = settings.rate_limit_enabled
        self._settings = settings
        self._acquire = redis.register_script(_ACQUIRE_SCRIPT)
        self._storage = RedisStorage(
            "async+" + _limits_uri(settings.redis_url),
            implementation="redispy",
            key_prefix=KEY_PREFIX,
            wrap_exceptions=False,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]
        )
        self._trusted = _networks(settings.trusted_proxies)

    def item(self, setting: str) -> RateLimitItem:
        value: str = getattr(self._settings, setting)
        return _parse(value)

    @staticmethod
    def _key(item: RateLimitItem, scope: str, identity: str) -> str:
        # The limit's own key layout (`<limit>/<namespace>/...`): a changed limit starts afresh.
        return item.key_for(scope, identity)

    async def hit(self, item: RateLimitItem, scope: str, identity: str) -> tuple[bool, WindowState]:
        """Count one request: whether it is within the limit, and the window's state."""
        key = self._key(item, scope, identity)
        try:
            count = await self._storage.incr(key, item.get_expiry())
            state = await self._state(item, key, count)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return count <= item.amount, state

    async def acquire(
        self, item: RateLimitItem, scope: str, identity: str
    ) -> tuple[bool, WindowState]:
        """Count one attempt if the window has room for it, atomically (one Redis round trip).

        For limits checked *before* the work they guard (a password verify): an attempt that
        is not admitted is not counted, and however many arrive at once, at most `limit` are
        admitted per window. Returns whether this one was, and the window's state.
        """
        key = f"{KEY_PREFIX}:{self._key(item, scope, identity)}"
        window_ms = item.get_expiry() * 1000
        try:
            count, ttl_ms, admitted = await self._acquire(keys=[key], args=[item.amount, window_ms])
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        reset_in = max(1, math.ceil(int(ttl_ms) / 1000))
        state = WindowState(item.amount, max(0, item.amount - int(count)), reset_in)
        return bool(admitted), state

    async def check(self, item: RateLimitItem, scope: str, identity: str) -> WindowState:
        """The window's state without counting (`remaining == 0` means the next one is over)."""
        key = self._key(item, scope, identity)
        try:
            count = await self._storage.get(key)
            return await self._state(item, key, count)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None

    async def clear(self, item: RateLimitItem, scope: str, identity: str) -> None:
        try:
            await self._storage.clear(self._key(item, scope, identity))
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from None

    async def _state(self, item: RateLimitItem, key: str, count: int) -> WindowState:
        expires_at = await self._storage.get_expiry(key) if count else time.time()
        reset_in = max(1, math.ceil(expires_at - time.time())) if count else item.get_expiry()
        return WindowState(item.amount, max(0, item.amount - count), reset_in)

    @staticmethod
    def _unavailable(exc: BaseException) -> ServiceUnavailableError:
        log.warning("ratelimit.storage_failed", error=type(exc).__name__)
        return ServiceUnavailableError("Rate limiting is unavailable; try again shortly")

    def client_ip(self, request: Request) -> str:
        """The client's address: the peer, or `X-Forwarded-For` when the peer is a trusted proxy.

        Walk the forwarded chain from the right (the hop our proxy added) and stop at the first
        address that is not one of our proxies: everything left of it is the client's to forge.
        """
        peer = request.client.host if request.client else "unknown"
        if not self._trusted or not _in(peer, self._trusted):
            return peer
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not _valid_ip(hop):
                break
            if not _in(hop, self._trusted):
                return hop
        return peer


def rate_limit_identity(address: str) -> str:
    """The bucket of a client address: an IPv4 address as it is, an IPv6 one by its /64.

    One IPv6 host usually holds a whole /64 (SLAAC, privacy addresses) and can pick a new
    address from it at will: counted per address, it would never run out of attempts.
    IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) count as the IPv4 address they carry.
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def _limits_uri(redis_url: str) -> str:
    # limits wants `redis+unix://` where redis-py says `unix://`; the pool is ours anyway.
    return "redis+" + redis_url if redis_url.startswith("unix://") else redis_url


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(values: list[str]) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            log.warning("ratelimit.trusted_proxy_ignored", value=value)
    return tuple(networks)


def _valid_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _in(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def rate_limited(state: WindowState) -> RateLimitedError:
    """The 429 for a full window: `Retry-After` and `retry_after` say when it rolls on."""
    error = RateLimitedError(state.reset_in)
    error.headers.update(state.headers())
    return error


def get_rate_limiter(request: HTTPConnection) -> RateLimiter:
    limiter: RateLimiter = request.app.state.rate_limiter
    return limiter


def email_identity(email: str) -> str:
    """A per-account bucket key that does not put the address itself into Redis."""
    normalized = email.strip().lower()
    return hashlib.sha256(normalized.encode()).hexdigest()


def RateLimit(scope: str, setting: str) -> Any:  # noqa: N802 - reads like slowapi's decorator
    """A dependency counting the request against `scope` per client IP (an IPv6 client per
    /64, see `rate_limit_identity`); 429 when over.

    `setting` names the Settings field holding the limit, so each deployment can tune it.
    Routes that share `scope` share the bucket.
    """

    async def limit(request: Request, response: Response) -> None:
        limiter = get_rate_limiter(request)
        if not limiter.enabled:
            return
        item = limiter.item(setting)
        identity = rate_limit_identity(limiter.client_ip(request))
        allowed, state = await limiter.hit(item, scope, identity)
        if not allowed:
            log.info("ratelimit.exceeded", scope=scope)
            raise rate_limited(state)
        response.headers.update(state.headers())

    return Depends(limit)


def rate_limited_response() -> dict[int | str, dict[str, Any]]:
    """The OpenAPI entry of a 429: the Problem body and its `Retry-After` header."""
    return {
        429: {
            "model": Problem,
            "description": "Too Many Requests (RATE_LIMITED)",
            "headers": {
                "Retry-After": {
                    "description": "Whole seconds until the limit's window rolls on.",
                    "schema": {"type": "integer", "minimum": 1},
                },
                "X-RateLimit-Limit": {"schema": {"type": "integer"}},
                "X-RateLimit-Remaining": {"schema": {"type": "integer"}},
                "X-RateLimit-Reset": {"schema": {"type": "integer"}},
            },
        }
    }
