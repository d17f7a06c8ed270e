"""Operations routes: liveness, readiness and metrics, at the root of the API."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Literal

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.core.database import ping, session_factory_from
from app.core.logging import get_logger
from app.core.metrics import render
from app.core.redis import RedisDep
from app.core.routing import make_router

log = get_logger(__name__)
router = make_router(tags=["operations"])

CheckStatus = Literal["ok", "error"]


class HealthOut(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyChecks(BaseModel):
    database: CheckStatus
    redis: CheckStatus


class ReadyOut(BaseModel):
    status: Literal["ok", "degraded"]
    checks: ReadyChecks


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """Liveness: the process answers. Touches nothing else."""
    return HealthOut()


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "A dependency is unreachable"}},
)
async def ready(request: Request, redis: RedisDep) -> JSONResponse:
    """Readiness: a real `SELECT 1` through the app's session factory and a Redis `PING`."""
    timeout = request.app.state.settings.ready_timeout_seconds

    async def cache() -> None:
        await redis.ping()

    results = await asyncio.gather(
        _check("database", ping(session_factory_from(request)), timeout),
        _check("redis", cache(), timeout),
    )
    checks = ReadyChecks(database=results[0], redis=results[1])
    healthy = all(result == "ok" for result in results)
    body = ReadyOut(status="ok" if healthy else "degraded", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


async def _check(name: str, probe: Coroutine[Any, Any, None], limit: float) -> CheckStatus:
    try:
        async with asyncio.timeout(limit):
            await probe
    except Exception as exc:
        log.warning("ready.check_failed", check=name, error=type(exc).__name__)
        return "error"
    return "ok"


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    """Prometheus exposition of every server process."""
    payload, content_type = render()
    return Response(payload, media_type=content_type)
