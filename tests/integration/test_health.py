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


async def test_metrics_label_the_full_route_template_and_the_docs_routes(
    client: AsyncClient,
) -> None:
    """`/api/v1/...` with its mount prefix (a future /api/v2 gets series of its own), and the
    framework's own routes (/openapi.json, /docs, /redoc) by their path, not `<unmatched>`."""
    missing = "0190f1c2-7d4e-7a51-9f0e-3c2b1a0d9e8f"
    assert (await client.get(f"/api/v1/products/{missing}")).status_code == 404
    assert (await client.get("/api/v1/users/me")).status_code == 401
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert (await client.get(path)).status_code == 200
    text = (await client.get("/metrics")).text
    assert 'method="GET",route="/api/v1/products/{product_id}",status="404"' in text
    assert 'method="GET",route="/api/v1/users/me",status="401"' in text
    assert 'route="/products/{product_id}"' not in text
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert f'method="GET",route="{path}",status="200"' in text
    assert missing not in text
