"""The Redis client. One pool serves the cache, rate limits, the token denylist and the queue.

`ArqRedis` is a `redis.asyncio.Redis` that can also enqueue ARQ jobs, so the app keeps a single
client. It connects lazily: the app starts while Redis is down and `/ready` reports it.
"""

from __future__ import annotations

from typing import Annotated

from arq.connections import ArqRedis, RedisSettings
from fastapi import Depends, Request

from app.config import Settings


def create_redis(settings: Settings) -> ArqRedis:
    client: ArqRedis = ArqRedis.from_url(
        settings.redis_url,
        socket_timeout=settings.redis_timeout_seconds,
        socket_connect_timeout=settings.redis_timeout_seconds,
        health_check_interval=30,
    )
    return client


def arq_redis_settings(settings: Settings) -> RedisSettings:
    """ARQ's connection settings for the worker, from the same URL."""
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    redis_settings.conn_timeout = max(1, int(settings.redis_timeout_seconds))
    return redis_settings


async def get_redis(request: Request) -> ArqRedis:
    client: ArqRedis = request.app.state.redis
    return client


RedisDep = Annotated[ArqRedis, Depends(get_redis)]
