"""Request ids, security headers, CORS, compression and the access log."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from httpx import AsyncClient


class TestRequestId:
    async def test_valid_incoming_id_is_kept(self, client: AsyncClient) -> None:
        response = await client.get("/health", headers={"X-Request-ID": "abc.DEF_123-x"})
        assert response.headers["x-request-id"] == "abc.DEF_123-x"

    @pytest.mark.parametrize("bad", ["has space", "semi;colon", "x" * 129, "ünïcode", ""])
    async def test_invalid_incoming_id_is_replaced(self, client: AsyncClient, bad: str) -> None:
        response = await client.get("/health", headers={"X-Request-ID": bad.encode()})
        assert response.headers["x-request-id"] != bad
        assert uuid.UUID(response.headers["x-request-id"]).version == 4

    async def test_missing_id_is_generated_and_unique(self, client: AsyncClient) -> None:
        first = await client.get("/health")
        second = await client.get("/health")
        assert first.headers["x-request-id"] != second.headers["x-request-id"]

    async def test_error_body_carries_the_same_id(self, client: AsyncClient) -> None:
        response = await client.get("/missing", headers={"X-Request-ID": "req-42"})
        assert response.json()["request_id"] == "req-42"


class TestSecurityHeaders:
    async def test_every_json_response_has_them(self, client: AsyncClient) -> None:
        for response in (await client.get("/health"), await client.get("/nope")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"
            assert response.headers["content-security-policy"] == (
                "default-src 'none'; frame-ancestors 'none'"
            )
            assert "strict-transport-security" not in response.headers

    async def test_docs_page_gets_a_csp_that_lets_it_load(self, client: AsyncClient) -> None:
        response = await client.get("/docs")
        assert response.status_code == 200
        assert "cdn.jsdelivr.net" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"

    async def test_production_adds_hsts_and_hides_docs(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(
            environment="production", jwt_secret="Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0s-prod"
        )
        response = await api.get("/health")
        assert response.headers["strict-transport-security"].startswith("max-age=")
        assert (await api.get("/docs")).status_code == 404
        assert (await api.get("/openapi.json")).status_code == 404


class TestCors:
    async def test_preflight_from_allowed_origin(self, make_client: Callable[..., Any]) -> None:
        api: AsyncClient = await make_client(cors_origins=["https://app.example"])
        response = await api.options(
            "/health",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, idempotency-key, x-request-id",
            },
        )
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "https://app.example"
        allowed = response.headers["access-control-allow-headers"].lower()
        for header in ("authorization", "content-type", "idempotency-key", "x-request-id"):
            assert header in allowed

    async def test_simple_request_exposes_headers(self, make_client: Callable[..., Any]) -> None:
        api: AsyncClient = await make_client(cors_origins=["https://app.example"])
        response = await api.get("/health", headers={"Origin": "https://app.example"})
        exposed = response.headers["access-control-expose-headers"].lower()
        for header in ("x-request-id", "location", "retry-after", "idempotent-replayed"):
            assert header in exposed

    async def test_other_origin_is_not_allowed(self, make_client: Callable[..., Any]) -> None:
        api: AsyncClient = await make_client(cors_origins=["https://app.example"])
        response = await api.options(
            "/health",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers


async def test_large_responses_are_gzipped(client: AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"


async def test_one_access_line_per_request(
    client: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        await client.get("/ready", headers={"X-Request-ID": "access-1"})
    lines = [r.msg for r in caplog.records if r.name == "app.access"]
    assert len(lines) == 1
    line: dict[str, Any] = lines[0]  # type: ignore[assignment]
    assert line["event"] == "http.request"
    assert line["method"] == "GET"
    assert line["route"] == "/ready"
    assert line["status"] == 200
    assert line["request_id"] == "access-1"
    assert line["client_ip"] == "127.0.0.1"
    assert line["duration_ms"] >= 0
