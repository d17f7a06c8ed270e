"""What an idle WebSocket costs the server (issue 15: <= 20 KB each at 5,000): its one task,
and no frame of the HTTP middleware or the router kept alive for the connection's life.

The app runs under uvicorn in the test's own event loop (`tests.in_loop`), with the WebSocket
protocol `saas serve` sets, so that its tasks can be looked at; bench/ws_memory.py measures the
bytes.
"""

from __future__ import annotations

import asyncio
import gc
import json
from typing import Any

from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.http11 import Request

from app.config import Settings
from app.core.database import uuid7
from app.core.security import Tokens
from app.core.websocket_protocol import WEBSOCKET_PROTOCOL
from app.features.events.hub import CLOSE_UNAUTHORIZED, Hub
from app.features.events.store import Event
from tests.conftest import UserFactory
from tests.in_loop import serving

_HTTP_LAYERS = {
    "CORSMiddleware.__call__",
    "CompressionMiddleware.__call__",
    "GuardMiddleware.__call__",
    "ExceptionMiddleware.__call__",
    "AsyncExitStackMiddleware.__call__",
    "Router.__call__",
}


def _awaiting(task: asyncio.Task[Any]) -> list[str]:
    """The functions of a task's chain of awaits, outermost first."""
    names: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and hasattr(coro, "cr_code"):
        names.append(coro.cr_code.co_qualname)
        coro = coro.cr_await
    return names


async def _until(condition: Any, what: str) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_an_idle_websocket_runs_one_task_outside_the_http_middleware(
    app: FastAPI, settings: Settings, make_user: UserFactory
) -> None:
    hub: Hub = app.state.events_hub
    tokens = Tokens(settings)
    user = await make_user()
    sockets: list[ClientConnection] = []
    async with serving(app, lifespan="off", ws=WEBSOCKET_PROTOCOL) as port:
        try:
            before = set(asyncio.all_tasks())
            for _ in range(3):
                token, _ = tokens.encode(
                    type="access", subject=user.id, session_id=uuid7(), version=0, role="user"
                )
                # No keepalive on the client's side: its only task would be a pinger.
                ws = await connect(f"ws://127.0.0.1:{port}/api/v1/events/ws", ping_interval=None)
                sockets.append(ws)
                await ws.send(json.dumps({"type": "auth", "access_token": token}))
                assert json.loads(await ws.recv())["type"] == "ready"
            await _until(
                lambda: len(hub.connections) == 3 and all(c.receiving for c in hub.connections),
                "three idle connections waiting for their client",
            )
            tasks = set(asyncio.all_tasks()) - before
            assert len(tasks) == 3  # one per connection
            for task in tasks:
                chain = _awaiting(task)
                assert "_pump_websocket" in chain
                assert chain[-2:] == ["WebSocketsSansIOProtocol.receive", "Inbox.get"]
                assert not _HTTP_LAYERS & set(chain), chain

            # No handshake request is kept with its headers on the server's side: websockets'
            # parser keeps the request object alive for the connection's life, and every full
            # garbage collection would walk its header lists (the clients keep their own).
            gc.collect()
            clients = {id(ws.request) for ws in sockets}
            kept = [
                o
                for o in gc.get_objects()
                if isinstance(o, Request) and id(o) not in clients and len(o.headers)
            ]
            assert kept == []

            # An event interrupts the wait and is sent; a close too, with its code.
            hub.dispatch(
                Event(
                    id="1-0",
                    key=(1, 0),
                    name="order.created",
                    data="{}",
                    at="2026-12-07T00:00:00Z",
                    audiences=(f"user:{user.id}",),
                )
            )
            for ws in sockets:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["id"] == "1-0"
            for connection in list(hub.connections):
                connection.close(CLOSE_UNAUTHORIZED)
            for ws in sockets:
                await asyncio.wait_for(ws.wait_closed(), 10)
                assert ws.close_code == CLOSE_UNAUTHORIZED
            await _until(lambda: not hub.connections, "the connections unregistered")
        finally:
            for ws in sockets:
                await ws.close()
