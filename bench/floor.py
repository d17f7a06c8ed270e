"""The floor: the least work a Python ASGI server can do for the same answers as the API.

Run by uvicorn with the same worker count as the API (`uvicorn bench.floor:app --workers N`), on
the same PostgreSQL and Redis, in the same run, so that each API scenario is reported as a ratio
to what the stack itself allows on this machine at this moment:

- `GET /health`           a bare JSON body;
- `GET /jwt-pg/{id}`      the bearer token decoded and checked exactly as the API must (python-jose,
                          same secret, algorithm, audience, issuer, required claims, `type`), then
                          one primary-key select through an asyncpg pool, the row as JSON;
- `GET /redis/{id}`       one Redis GET (redis.asyncio) of a cached JSON document, returned as is.

Pure ASGI, no framework, no middleware. Configured by BENCH_FLOOR_* environment variables that
bench/run.py sets (never meant to be run by hand, but `bench/README.md` shows how).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import asyncpg
from jose import JWTError, jwt
from redis.asyncio import Redis

DSN = os.environ.get("BENCH_FLOOR_DSN", "")
REDIS_URL = os.environ.get("BENCH_FLOOR_REDIS_URL", "")
SECRET = os.environ.get("BENCH_FLOOR_JWT_SECRET", "")
ALGORITHM = os.environ.get("BENCH_FLOOR_JWT_ALGORITHM", "HS256")
AUDIENCE = os.environ.get("BENCH_FLOOR_JWT_AUDIENCE", "saas-backend-api")
ISSUER = os.environ.get("BENCH_FLOOR_JWT_ISSUER", "saas-backend")
SQL = os.environ.get("BENCH_FLOOR_SQL", "SELECT 1 WHERE $1::uuid IS NOT NULL")
POOL_SIZE = int(os.environ.get("BENCH_FLOOR_POOL_SIZE", "30"))
REDIS_PREFIX = os.environ.get("BENCH_FLOOR_REDIS_PREFIX", "bench:floor:product:")

_JWT_OPTIONS = {
    "require_exp": True,
    "require_iat": True,
    "require_sub": True,
    "require_iss": True,
    "require_aud": True,
    "require_jti": True,
    "leeway": 0,
}
_JSON = (b"content-type", b"application/json")


class Floor:
    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None
        self.redis: Redis | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        if path == "/health":
            await _send(send, 200, b'{"status":"ok"}')
        elif path.startswith("/jwt-pg/"):
            await self._jwt_pg(scope, send, path.removeprefix("/jwt-pg/"))
        elif path.startswith("/redis/"):
            assert self.redis is not None
            value = await self.redis.get(REDIS_PREFIX + path.removeprefix("/redis/"))
            if value is None:
                await _send(send, 404, b'{"detail":"not found"}')
            else:
                await _send(send, 200, value)
        else:
            await _send(send, 404, b'{"detail":"not found"}')

    async def _jwt_pg(self, scope: dict[str, Any], send: Any, raw_id: str) -> None:
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].decode("latin-1")
        try:
            claims = jwt.decode(
                token,
                SECRET,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                options=_JWT_OPTIONS,
            )
            if claims.get("type") != "access":
                raise JWTError("not an access token")
            row_id = uuid.UUID(raw_id)
        except (JWTError, ValueError):
            await _send(send, 401, b'{"detail":"unauthorized"}')
            return
        assert self.pool is not None
        row = await self.pool.fetchrow(SQL, row_id)
        if row is None:
            await _send(send, 404, b'{"detail":"not found"}')
            return
        await _send(send, 200, json.dumps(dict(row), default=str).encode())

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if DSN:
                    self.pool = await asyncpg.create_pool(DSN, min_size=2, max_size=POOL_SIZE)
                if REDIS_URL:
                    self.redis = Redis.from_url(REDIS_URL)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                if self.redis is not None:
                    await self.redis.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = Floor()
