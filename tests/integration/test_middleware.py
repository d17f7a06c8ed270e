"""Request ids, security headers, CORS, compression and the access log."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
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

    @pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
    async def test_docs_pages_load_from_this_origin_only(
        self, client: AsyncClient, page: str
    ) -> None:
        """Offline, or behind a strict CSP, the docs still load: every asset is served by the
        app itself, and the page's CSP allows exactly that (its inline script by hash)."""
        response = await client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["x-frame-options"] == "DENY"
        html = response.text
        assert "http://" not in html
        assert "https://" not in html
        assert "//cdn" not in html
        csp = _directives(response.headers["content-security-policy"])
        assert csp["default-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert "'unsafe-inline'" not in csp["script-src"]
        assert all(
            source.startswith("'")
            for sources in csp.values()
            for source in sources
            if source not in {"data:", "blob:"}
        )
        for script in re.findall(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", html, re.S):
            digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
            assert f"'sha256-{digest}'" in csp["script-src"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets or page.endswith("redirect")
        for asset in assets:
            assert asset.startswith("/docs/assets/"), asset
            loaded = await client.get(asset)
            assert loaded.status_code == 200, asset
            assert loaded.headers["content-type"].split(";")[0] in {
                "text/css",
                "text/javascript",
                "application/javascript",
                "image/png",
            }

    async def test_swagger_ui_reads_this_apps_document(self, client: AsyncClient) -> None:
        html = (await client.get("/docs")).text
        assert "url: '/openapi.json'" in html
        assert "/docs/oauth2-redirect" in html
        assert '"persistAuthorization": true' in html
        redoc = (await client.get("/redoc")).text
        assert 'spec-url="/openapi.json"' in redoc

    async def test_production_adds_hsts_and_hides_docs(
        self, make_client: Callable[..., Any]
    ) -> None:
        api: AsyncClient = await make_client(
            environment="production", jwt_secret="Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0s-prod"
        )
        response = await api.get("/health")
        assert response.headers["strict-transport-security"].startswith("max-age=")
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"):
            assert (await api.get(path)).status_code == 404
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


def _directives(csp: str) -> dict[str, list[str]]:
    directives = {}
    for part in csp.split(";"):
        name, *sources = part.split()
        directives[name] = sources
    return directives
