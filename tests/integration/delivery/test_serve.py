"""`saas serve` as a container runs it: several processes, behind a proxy, stopped by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from app.dev import free_port
from tests.services import Services

STRONG_SECRET = "Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0sQ-serve-test"


class Server:
    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"
        self.output = ""

    def stop(self) -> bool:
        """SIGTERM, as an orchestrator sends it: True if it shut down gracefully.

        uvicorn finishes in-flight requests and the lifespan, then re-raises the signal, so the
        exit status is "terminated by SIGTERM" (143 in a container) after a clean shutdown.
        """
        self.process.send_signal(signal.SIGTERM)
        self.output, _ = self.process.communicate(timeout=30)
        return (
            self.process.returncode in {0, -signal.SIGTERM}
            and '"app.stopped"' in self.output
            and "Application shutdown complete" in self.output
        )

    def events(self) -> list[str]:
        return [str(line["event"]) for line in self.log_lines()]

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.output.splitlines() if line.startswith("{")]

    def access_lines(self) -> list[dict[str, object]]:
        return [line for line in self.log_lines() if line["event"] == "http.request"]


ServeFactory = Callable[..., Server]


@pytest.fixture
def serve(services: Services, database_url: str, tmp_path: Path) -> Iterator[ServeFactory]:
    started: list[Server] = []

    def start(**settings: str) -> Server:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
        env.update(
            APP_ENVIRONMENT="production",
            APP_DATABASE_URL=database_url,
            APP_REDIS_URL=services.redis_url,
            APP_STORAGE_URL=services.storage_url,
            APP_JWT_SECRET=STRONG_SECRET,
            APP_PORT=str(port),
            APP_LOG_FORMAT="json",
            APP_DB_POOL_SIZE="2",
            **settings,
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = Server(process, port)
        started.append(server)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{server.url}/ready", timeout=2).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"saas serve never became ready: {process.poll()=}")

    yield start
    for server in started:
        if server.process.poll() is None:
            server.process.kill()
            server.process.communicate(timeout=10)


@pytest.mark.slow
class TestServe:
    def test_behind_a_trusted_proxy_the_forwarded_client_is_believed(
        self, serve: ServeFactory
    ) -> None:
        server = serve(APP_WORKERS="2", APP_TRUSTED_PROXIES="127.0.0.1")
        response = httpx.get(
            f"{server.url}/health",
            headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.7", "X-Request-ID": "fwd-1"},
        )
        assert response.status_code == 200
        assert response.headers["x-request-id"] == "fwd-1"
        # Production: HSTS on, no server header that names uvicorn.
        assert "strict-transport-security" in response.headers
        assert "server" not in response.headers
        assert server.stop(), server.output
        lines = [line for line in server.access_lines() if line.get("request_id") == "fwd-1"]
        assert [line["client_ip"] for line in lines] == ["203.0.113.7"]
        # Two server processes started, and both stopped on the one SIGTERM.
        events = server.events()
        assert sum(event.startswith("Started server process") for event in events) == 2
        assert events.count("Application shutdown complete.") == 2
        assert events.count("app.stopped") == 2

    def test_without_trusted_proxies_a_forwarded_header_is_ignored(
        self, serve: ServeFactory
    ) -> None:
        server = serve(APP_WORKERS="1")
        response = httpx.get(
            f"{server.url}/health",
            headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "fwd-2"},
        )
        assert response.status_code == 200
        assert server.stop(), server.output
        lines = [line for line in server.access_lines() if line.get("request_id") == "fwd-2"]
        assert [line["client_ip"] for line in lines] == ["127.0.0.1"]

    def test_an_untrusted_peer_cannot_choose_its_address_through_the_proxy(
        self, serve: ServeFactory
    ) -> None:
        server = serve(APP_WORKERS="1", APP_TRUSTED_PROXIES="10.0.0.0/8")
        response = httpx.get(
            f"{server.url}/health",
            headers={"X-Forwarded-For": "203.0.113.7", "X-Request-ID": "fwd-3"},
        )
        assert response.status_code == 200
        assert server.stop(), server.output
        lines = [line for line in server.access_lines() if line.get("request_id") == "fwd-3"]
        assert [line["client_ip"] for line in lines] == ["127.0.0.1"]
