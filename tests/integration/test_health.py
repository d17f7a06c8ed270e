"""Liveness, readiness against the real services, and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from httpx import AsyncClient


async def test_health_is_ok(client: AsyncClient) -> None:
    response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_checks_database_and_redis(client: AsyncClient) -> None:
    response = await client.get("/ready")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_ready_is_503_when_the_database_is_unreachable(
    make_client: Callable[..., Any],
) -> None:
    api: AsyncClient = await make_client(
        database_url="postgresql+asyncpg://postgres@127.0.0.1:1/nowhere",
        ready_timeout_seconds=1.0,
    )
    response = await api.get("/ready")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "degraded",
        "checks": {"database": "error", "redis": "ok"},
    }


async def test_ready_is_503_when_redis_is_unreachable(make_client: Callable[..., Any]) -> None:
    api: AsyncClient = await make_client(
        redis_url="redis://127.0.0.1:1/0", ready_timeout_seconds=1.0
    )
    response = await api.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "redis": "error"}


async def test_metrics_count_requests_by_route_template(client: AsyncClient) -> None:
    await client.get("/health")
    await client.get("/no/such/thing/123")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in text
    assert 'route="<unmatched>",status="404"' in text
    assert "/no/such/thing/123" not in text
    assert "http_request_duration_seconds_bucket" in text


async def test_openapi_documents_operations_but_not_metrics(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert "/health" in paths
    assert "/ready" in paths
    assert "503" in paths["/ready"]["get"]["responses"]
    assert "/metrics" not in paths
