"""Sentry (APP_SENTRY_DSN): errors reach it, and what reaches it is scrubbed like the logs."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from app.core.sentry import REDACTED, scrub_event
from app.dev import free_port


def _event() -> dict[str, Any]:
    return {
        "request": {
            "url": "http://api/api/v1/auth/login",
            "method": "POST",
            "data": {"email": "a@example.com", "password": "hunter2"},
            "cookies": {"session": "abc"},
            "query_string": "token=abc",
            "headers": {"Authorization": "Bearer s3cr3t", "X-Request-ID": "r-1"},
        },
        "extra": {"password": "hunter2", "nested": {"refresh_token": "t", "count": 3}},
        "contexts": {"db": {"password_hash": "h", "host": "db"}},
        "tags": {"component": "api"},
        "breadcrumbs": {"values": [{"message": "x", "data": {"jwt_secret": "k", "n": 1}}]},
        "exception": {
            "values": [{"stacktrace": {"frames": [{"function": "f", "vars": {"pw": "hunter2"}}]}}]
        },
        "user": {"ip_address": "203.0.113.7"},
    }


class TestScrubEvent:
    def test_drops_bodies_cookies_queries_locals_and_the_user(self) -> None:
        event = scrub_event(_event())
        assert set(event["request"]) == {"url", "method", "headers"}
        frame = event["exception"]["values"][0]["stacktrace"]["frames"][0]
        assert frame == {"function": "f"}
        assert "user" not in event

    def test_redacts_secret_looking_keys_everywhere_like_the_logs(self) -> None:
        event = scrub_event(_event())
        assert event["request"]["headers"] == {"Authorization": REDACTED, "X-Request-ID": "r-1"}
        assert event["extra"] == {
            "password": REDACTED,
            "nested": {"refresh_token": REDACTED, "count": 3},
        }
        assert event["contexts"] == {"db": {"password_hash": REDACTED, "host": "db"}}
        assert event["breadcrumbs"]["values"][0]["data"] == {"jwt_secret": REDACTED, "n": 1}
        assert "hunter2" not in json.dumps(event)

    def test_an_event_without_request_or_exception_passes(self) -> None:
        assert scrub_event({"message": "hello", "level": "error"}) == {
            "message": "hello",
            "level": "error",
        }


class Ingest:
    """A Sentry ingest endpoint: records every envelope body (decompressed)."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ingest.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def ingest() -> Iterator[Ingest]:
    started = Ingest()
    yield started
    started.server.shutdown()
    started.server.server_close()


APP_WITH_A_FAILING_ROUTE = """
import asyncio, sys
import httpx, sentry_sdk
from asgi_lifespan import LifespanManager
from app.config import load_settings
from app.main import create_app

settings = load_settings(
    database_url=sys.argv[1], redis_url=sys.argv[2], jwt_secret="x" * 40,
    sentry_dsn=sys.argv[3], log_format="json",
)
app = create_app(settings)

@app.post("/boom")
async def boom(body: dict) -> None:
    password = body["password"]  # a local that must not be reported
    raise RuntimeError("the route failed")

async def main() -> None:
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.post(
                "/boom", json={"password": "hunter2"},
                headers={"Authorization": "Bearer s3cr3t-token", "Cookie": "sid=c00kie"},
            )
            print(response.status_code)
    sentry_sdk.flush(10)

asyncio.run(main())
"""


@pytest.mark.slow
def test_an_unhandled_error_reaches_sentry_scrubbed(
    ingest: Ingest, database_url: str, services: Any, tmp_path: Path
) -> None:
    dsn = f"http://publickey@127.0.0.1:{ingest.port}/1"
    result = subprocess.run(
        [sys.executable, "-c", APP_WITH_A_FAILING_ROUTE, database_url, services.redis_url, dsn],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "500"
    raw = b"\n".join(ingest.bodies)
    assert b"RuntimeError" in raw
    assert b"the route failed" in raw
    for secret in (b"hunter2", b"s3cr3t-token", b"c00kie"):
        assert secret not in raw, secret
