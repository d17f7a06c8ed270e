"""uvicorn's WebSocket protocol for `saas serve` and `saas dev`: the one uvicorn picks by default
(websockets' sans-I/O binding), with less kept per idle connection.

An idle event stream is a connection that waits: thousands of them per process, each holding
what uvicorn gave it. Three things are lighter here, and everything else is uvicorn's own:

- the parsed upgrade request and the 101 response (their header maps, about 4 KB), which
  uvicorn keeps in the protocol object after the handshake and never reads again, are dropped
  once the connection is accepted; the request's headers are emptied too, because websockets'
  parser keeps the request itself alive for the connection's whole life (a local of its
  suspended generator), a dozen lists and tuples that every full garbage collection walks (the
  ASGI scope has its own copy of the headers);
- the receive queue is an `Inbox` instead of an `asyncio.Queue` (three deques and an `Event`,
  about 2.3 KB even when empty): one consumer, a deque only while messages wait;
- the flow-control flag is a `Flag` instead of an `asyncio.Event` (a deque of waiters each).

Both stand-ins offer exactly what uvicorn's protocol calls on them (`put_nowait`, `get`,
`empty`; `set`, `clear`, `is_set`, `wait`); `tests/unit/test_websocket_protocol.py` checks that
against the installed uvicorn, so an upgrade that needs more fails there first.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Generic, TypeVar

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# What `saas serve` and `saas dev` hand uvicorn (`ws=`): an import string, as for the app.
WEBSOCKET_PROTOCOL = "app.core.websocket_protocol:WebSocketProtocol"

_Item = TypeVar("_Item")


class Inbox(Generic[_Item]):
    """An unbounded FIFO for one consumer (the connection's ASGI task), as cheap as it can be
    while empty. A `get` cancelled while it waits takes nothing: a message put meanwhile stays
    for the next `get`."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[_Item] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: _Item) -> None:
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    async def get(self) -> _Item:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        return item


class Flag:
    """An `asyncio.Event` for few waiters (uvicorn's send, when the socket's buffer is full),
    with no waiter list until one waits."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        """Return once the flag is set (at once if it is), as `asyncio.Event.wait` does."""
        if self._is_set:
            return
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        writable = Flag()
        if self.writable.is_set():
            writable.set()
        self.writable = writable  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and "response" in self.__dict__:
            # uvicorn reads both only until the handshake completes (the accept, or a denial).
            self.request.headers.clear()
            del self.request
            del self.response
