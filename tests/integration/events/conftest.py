"""Live servers (`saas serve`) and real clients for the event stream tests.

The server's output goes to a file (a pipe that nobody reads would fill and stall it). Events are
published the way the app publishes them (`EventStore.publish`) or through real orders.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from app.config import load_settings
from app.core.database import uuid7
from app.core.security import Tokens
from app.dev import free_port
from app.features.events.publisher import format_at
from app.features.events.store import EventStore
from app.features.users.models import User
from tests.services import Services

STRONG_SECRET = "Zq8v-2LmT9xR4pW7yB1nC6dF3gH5jK0sQ-events-test"
ALLOWED_ORIGIN = "https://app.example.com"


class LiveServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/api/v1/events/ws"
        self.log = log

    def stop(self, timeout: float = 40) -> int | None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.process.returncode

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    lines.append(json.loads(line))
                except ValueError:
                    continue
        return lines


ServeFactory = Callable[..., LiveServer]


@pytest.fixture
def live_server(services: Services, database_url: str, tmp_path: Path) -> Iterator[ServeFactory]:
    started: list[LiveServer] = []

    def start(*, redis_url: str | None = None, workers: int = 2, **settings: str) -> LiveServer:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("APP_")}
        env.update(
            APP_ENVIRONMENT="production",
            APP_DATABASE_URL=database_url,
            APP_REDIS_URL=redis_url or services.redis_url,
            APP_JWT_SECRET=STRONG_SECRET,
            APP_PORT=str(port),
            APP_WORKERS=str(workers),
            APP_LOG_FORMAT="json",
            APP_DB_POOL_SIZE="3",
            APP_RATE_LIMIT_ENABLED="false",
            APP_CORS_ORIGINS=ALLOWED_ORIGIN,
            APP_STORAGE_URL=services.storage_url,
            APP_STORAGE_ACCESS_KEY=services.storage_access_key,
            APP_STORAGE_SECRET_KEY=services.storage_secret_key,
            **settings,
        )
        log = tmp_path / f"server-{port}.log"
        with log.open("wb") as out:
            # A session of its own: the teardown stops the server's workers with it.
            process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"],
                cwd=tmp_path,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = LiveServer(process, port, log)
        started.append(server)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"{server.url}/ready", timeout=2).status_code == 200
                # Every worker has started, not just the first one.
                if ready and _workers_started(server) >= workers:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"saas serve never became ready: {log.read_text()[-3000:]}")

    yield start
    for server in started:
        server.stop(timeout=15)
        # Workers of a supervisor that died first would outlive it: end the whole group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)


def _workers_started(server: LiveServer) -> int:
    return sum(1 for line in server.log_lines() if line.get("event") == "app.started")


@pytest.fixture
def mint_token() -> Callable[[User], str]:
    """An access token of a new session of `user`, as the live server signs them."""
    tokens = Tokens(
        load_settings(
            environment="test",
            database_url="postgresql+asyncpg://unused/unused",
            redis_url="redis://unused:6379/0",
            jwt_secret=STRONG_SECRET,
            storage_url="s3://unused?endpoint=http://127.0.0.1:9",
        )
    )

    def mint(user: User, *, ttl: int | None = None) -> str:
        tokens.access_ttl = ttl or 900
        token, _ = tokens.encode(
            type="access",
            subject=user.id,
            session_id=uuid7(),
            version=user.token_version,
            role=user.role.value,
        )
        return token

    return mint


@dataclass
class Publisher:
    """Publishes events to a server's Redis exactly as the app does."""

    store: EventStore

    async def order_event(
        self,
        user_id: uuid.UUID,
        *,
        name: str = "order.created",
        organization_id: uuid.UUID | None = None,
        lines: int = 1,
    ) -> str:
        order_id = uuid7()
        now = format_at(__import__("datetime").datetime.now(__import__("datetime").UTC))
        data = {
            "id": str(order_id),
            "user_id": str(user_id),
            "organization_id": str(organization_id) if organization_id else None,
            "status": "pending" if name == "order.created" else "cancelled",
            "items": [
                {
                    "product_id": str(uuid7()),
                    "sku": f"SKU-{index:04d}",
                    "name": f"Product {index} " + "x" * 40,
                    "unit_price_cents": 100,
                    "quantity": 1,
                    "line_total_cents": 100,
                }
                for index in range(lines)
            ],
            "total_cents": 100 * lines,
            "currency": "USD",
            "note": None,
            "created_at": now,
            "updated_at": now,
        }
        audiences = [f"user:{user_id}"]
        if organization_id is not None:
            audiences.append(f"org:{organization_id}")
        return await self.store.publish(
            outbox_id=str(uuid.uuid4()),
            name=name,
            data=json.dumps(data, separators=(",", ":")),
            at=now,
            audiences=audiences,
        )


@pytest.fixture
async def publisher(services: Services) -> AsyncIterator[Callable[[str | None], Publisher]]:
    clients: list[Redis] = []

    def make(redis_url: str | None = None) -> Publisher:
        client: Redis = Redis.from_url(redis_url or services.redis_url)
        clients.append(client)
        return Publisher(EventStore(client, retention_seconds=3600, max_length=100_000))

    yield make
    for client in clients:
        await client.aclose()


async def open_ws(
    server: LiveServer,
    token: str,
    *,
    last_event_id: str | None = None,
    origin: str | None = None,
    **options: Any,
) -> tuple[ClientConnection, dict[str, Any]]:
    """A WebSocket that sent its auth message; returns it and the `ready` message."""
    ws = await connect(server.ws_url, origin=origin, open_timeout=20, **options)  # type: ignore[arg-type]
    message: dict[str, Any] = {"type": "auth", "access_token": token}
    if last_event_id is not None:
        message["last_event_id"] = last_event_id
    await ws.send(json.dumps(message))
    ready = json.loads(await ws.recv())
    return ws, ready


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """The events of an SSE response (`id`, `event`, `data`, and `comment` lines), as they come."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


def redis_server_binary() -> str | None:
    return shutil.which("redis-server")
