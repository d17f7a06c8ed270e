"""API keys as credentials: `Authorization: Bearer sk_...`.

A key is `sk_` and 43 URL-safe characters (32 random bytes, base64url). Only its SHA-256 digest is
stored: a key carries 256 random bits, so nobody can guess one from its digest and a slow hash
(argon2) would add tens of milliseconds of CPU to every machine request for no protection a
password's low entropy would need. The digest is also what the lookup is keyed by (a unique
index), which a salted hash could not be.

The lookup is cached in Redis for a minute (`apikey:<digest>`), so a machine client's request
costs one Redis GET, not a database read. Deleting a key (or its organization) overwrites that
entry with a tombstone right after the commit, and the lookup fills the cache only with
`SET NX`: a lookup that read the database just before the delete cannot put the live key back
over the tombstone. Every API process shares the Redis, so the next request on any of them is
refused (401).

`last_used_at` is written at most once a minute per key: a `SET NX EX 60` in Redis decides which
request writes it, so a busy key does not write a row per request.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import NoReturn

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection

from app.core.database import utcnow
from app.core.errors import ServiceUnavailableError, UnauthorizedError
from app.core.logging import get_logger
from app.core.ratelimit import get_rate_limiter, rate_limited
from app.core.security import API_KEY_PREFIX
from app.features.organizations.errors import InsufficientScopeError
from app.features.organizations.repository import key_by_hash, touch_key

log = get_logger(__name__)

KEY_RANDOM_BYTES = 32
PREFIX_LENGTH = 11
CACHE_TTL_SECONDS = 60
# Longer than a cached entry lives, so no live entry can outlast a tombstone.
TOMBSTONE_TTL_SECONDS = 2 * CACHE_TTL_SECONDS
LAST_USED_EVERY_SECONDS = 60
_TOMBSTONE = b"deleted"


def new_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(KEY_RANDOM_BYTES)


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def cache_key(key_hash: str) -> str:
    return f"apikey:{key_hash}"


@dataclass(frozen=True, slots=True)
class ApiKeyPrincipal:
    """An authenticated API key: it acts for `organization_id`, as `created_by`."""

    id: uuid.UUID
    organization_id: uuid.UUID
    scopes: frozenset[str]
    created_by: uuid.UUID
    expires_at: datetime | None

    def to_json(self) -> str:
        return json.dumps(
            {
                "id": str(self.id),
                "organization_id": str(self.organization_id),
                "scopes": sorted(self.scopes),
                "created_by": str(self.created_by),
                "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ApiKeyPrincipal:
        data = json.loads(raw)
        expires = data["expires_at"]
        return cls(
            id=uuid.UUID(data["id"]),
            organization_id=uuid.UUID(data["organization_id"]),
            scopes=frozenset(data["scopes"]),
            created_by=uuid.UUID(data["created_by"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


def _unavailable() -> ServiceUnavailableError:
    return ServiceUnavailableError("Cannot check the API key right now")


async def authenticate_key(request: HTTPConnection, key: str) -> ApiKeyPrincipal:
    """The key's principal, or 401 for an unknown, deleted or expired key (or one of a deleted
    organization); 429 past the key's own rate limit."""
    redis: Redis = request.app.state.redis
    engine: AsyncEngine = request.app.state.engine
    key_hash = digest(key)
    try:
        cached = await redis.get(cache_key(key_hash))
    except (RedisError, OSError):
        raise _unavailable() from None
    if cached == _TOMBSTONE:
        raise UnauthorizedError("Invalid API key")
    if cached is not None:
        principal = ApiKeyPrincipal.from_json(cached)
    else:
        row = await key_by_hash(engine, key_hash)
        if row is None:
            raise UnauthorizedError("Invalid API key")
        principal = ApiKeyPrincipal(
            row.id, row.organization_id, frozenset(row.scopes), row.created_by, row.expires_at
        )
        try:
            await redis.set(cache_key(key_hash), principal.to_json(), nx=True, ex=CACHE_TTL_SECONDS)
        except (RedisError, OSError):
            raise _unavailable() from None
    if principal.expires_at is not None and principal.expires_at <= utcnow():
        raise UnauthorizedError("This API key has expired")
    limiter = get_rate_limiter(request)
    if limiter.enabled:
        allowed, state = await limiter.hit(
            limiter.item("rate_limit_api_key"), "api_key", str(principal.id)
        )
        if not allowed:
            log.info("ratelimit.exceeded", scope="api_key", api_key_id=str(principal.id))
            raise rate_limited(state)
    try:
        first_this_minute = await redis.set(
            f"apikey:used:{principal.id}", b"1", nx=True, ex=LAST_USED_EVERY_SECONDS
        )
    except (RedisError, OSError):
        raise _unavailable() from None
    if first_this_minute:
        await touch_key(engine, principal.id)
    request.state.api_key_id = str(principal.id)
    return principal


async def refuse_key_of_person_route(connection: HTTPConnection, key: str) -> NoReturn:
    """An API key sent to a route of people (API.md: a key never reaches one): 401 if it is not
    a live key, else 403 INSUFFICIENT_SCOPE.

    The people's authentication (`users.deps`) calls this through `app.state.api_key_gate`,
    which the app sets at assembly: users sit below organizations and may not import them.
    """
    await authenticate_key(connection, key)
    raise InsufficientScopeError("API keys may not use this route")


async def forget_keys(redis: Redis, key_hashes: Iterable[str]) -> None:
    """Tombstone the cached lookups of deleted keys (after the delete committed)."""
    hashes = list(key_hashes)
    if not hashes:
        return
    async with redis.pipeline(transaction=False) as pipe:
        for key_hash in hashes:
            pipe.set(cache_key(key_hash), _TOMBSTONE, ex=TOMBSTONE_TTL_SECONDS)
        await pipe.execute()
