"""A live server under a slow client and a Redis restart: bounded queues, no cross-user leak."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.dev import free_port
from tests.conftest import UserFactory
from tests.integration.events.conftest import (
    LiveServer,
    Publisher,
    ServeFactory,
    open_ws,
    redis_server_binary,
)

pytestmark = pytest.mark.slow

Mint = Callable[..., str]
MakePublisher = Callable[..., Publisher]


class PrivateRedis:
    """A redis-server of this test only, on a free port: stopped and started at will."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError("the private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    binary = redis_server_binary()
    if binary is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(binary, tmp_path)
    server.start()
    yield server
    server.stop()


async def _metric(server: LiveServer, name: str, transport: str) -> float:
    async with httpx.AsyncClient(base_url=server.url) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith(f'{name}{{transport="{transport}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_a_slow_client_is_dropped_with_1008_while_a_fast_one_keeps_every_event(
    live_server: ServeFactory, make_user: UserFactory, mint_token: Mint, publisher: MakePublisher
) -> None:
    # A queue limit of 100 (the default is 1,000, tested in test_hub.py): the kernel's socket
    # buffers absorb a few MB before the server has to queue at all, and this keeps the test's
    # volume of events small.
    server = live_server(workers=1, APP_EVENTS_QUEUE_LIMIT="100")
    alice = await make_user()
    fast, _ = await open_ws(server, mint_token(alice))
    # A client that stops reading: a tiny receive buffer and no reading from here on.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    slow = await connect(server.ws_url, sock=raw, max_queue=1, open_timeout=20)
    await slow.send(json.dumps({"type": "auth", "access_token": mint_token(alice)}))
    events = publisher()
    ids: list[str] = []
    received: list[str] = []

    async def read_fast() -> None:
        while len(received) < 1000:
            received.append(json.loads(await fast.recv())["id"])

    reader = asyncio.create_task(read_fast())
    for _ in range(1000):
        ids.append(await events.order_event(alice.id, lines=50))
    async with asyncio.timeout(60):
        await reader
    assert received == ids
    # The slow one was cut off: what it reads now ends with 1008, well short of every event.
    got = 0
    code = None
    async with asyncio.timeout(60):
        try:
            while True:
                message = json.loads(await slow.recv())
                got += message["type"] == "event"
        except ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
    assert code == 1008
    assert got < 1000
    assert await _metric(server, "realtime_slow_disconnects_total", "ws") == 1
    assert await _metric(server, "realtime_events_dropped_total", "ws") >= 100
    assert await _metric(server, "realtime_events_sent_total", "ws") >= 1000
    assert await _metric(server, "realtime_connections", "ws") == 1
    await fast.close()


async def test_after_a_redis_restart_clients_recover_or_reconnect_and_never_get_others_events(
    live_server: ServeFactory,
    make_user: UserFactory,
    mint_token: Mint,
    publisher: MakePublisher,
    private_redis: PrivateRedis,
) -> None:
    server = live_server(redis_url=private_redis.url)
    alice, bob = await make_user(), await make_user()
    owners = {str(alice.id): "alice", str(bob.id): "bob"}
    seen: dict[str, list[dict[str, Any]]] = {"alice": [], "bob": []}
    sockets: dict[str, list[ClientConnection]] = {"alice": [], "bob": []}
    closes: list[int | None] = []

    async def follow(name: str, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "event":
                    seen[name].append(message)
        except ConnectionClosed as closed:
            closes.append(closed.rcvd.code if closed.rcvd else None)
        closes.append(ws.close_code)

    tasks = []
    for name, user in (("alice", alice), ("bob", bob)):
        for _ in range(3):
            ws, ready = await open_ws(server, mint_token(user))
            assert ready["type"] == "ready"
            sockets[name].append(ws)
            tasks.append(asyncio.create_task(follow(name, ws)))
    events = publisher(private_redis.url)
    before = [await events.order_event(alice.id) for _ in range(3)]
    await asyncio.sleep(1.5)
    assert sorted(m["id"] for m in seen["alice"]) == sorted(before * 3)
    assert seen["bob"] == []

    private_redis.stop()
    await asyncio.sleep(3)
    private_redis.start()
    await asyncio.sleep(2)

    # Whoever was closed reconnects, as a client would; the others carry on.
    for name, user in (("alice", alice), ("bob", bob)):
        for index, ws in enumerate(sockets[name]):
            if ws.close_code is not None:
                async with asyncio.timeout(30):
                    while True:
                        try:
                            fresh, ready = await open_ws(server, mint_token(user))
                            break
                        except (ConnectionClosed, OSError):
                            await asyncio.sleep(0.5)
                assert ready["type"] == "ready"
                sockets[name][index] = fresh
                tasks.append(asyncio.create_task(follow(name, fresh)))
    # The publishing client's pooled connection died with the server: one retry reconnects it.
    with contextlib.suppress(RedisError):
        await events.store.redis.ping()
    after_alice = [await events.order_event(alice.id) for _ in range(3)]
    after_bob = [await events.order_event(bob.id) for _ in range(3)]
    await asyncio.sleep(3)
    for ws in sockets["alice"] + sockets["bob"]:
        await ws.close()
    await asyncio.gather(*tasks, return_exceptions=True)

    # Nobody ever got another user's event.
    for name, messages in seen.items():
        assert {owners[m["data"]["user_id"]] for m in messages} <= {name}
    # Each of the three open (or reopened) connections of a user got each event published after
    # the restart.
    for name, published in (("alice", after_alice), ("bob", after_bob)):
        ids = [m["id"] for m in seen[name]]
        assert [ids.count(event_id) for event_id in published] == [3, 3, 3]
    assert set(closes) <= {None, 1000, 1013, 1012}
