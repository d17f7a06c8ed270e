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
- the flow-control flag is a `Flag` instead of an `asyncio.Event` (a deque of waiters each);
- the heartbeat is one `Heartbeat` per process instead of two timers per connection (see there).

Both stand-ins offer exactly what uvicorn's protocol calls on them (`put_nowait`, `get`,
`empty`; `set`, `clear`, `is_set`, `wait`); `tests/unit/test_websocket_protocol.py` checks that
against the installed uvicorn, so an upgrade that needs more fails there first.
"""

from __future__ import annotations

import asyncio
import random
import struct
import weakref
from collections import deque
from typing import Any, Generic, TypeVar

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

from app.core.logging import get_logger

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


log = get_logger(__name__)

# How often the heartbeat looks at its connections: each look pings 1/200th of them (at a
# 20 s interval), about 25 at 5,000 connections, a fraction of a millisecond of the loop.
HEARTBEAT_TICK_SECONDS = 0.1


class Heartbeat:
    """The ping frames of every WebSocket of one event loop, from one timer.

    uvicorn's protocol keeps two timers per connection: the next ping, then the deadline of
    its pong. With thousands of idle streams those are thousands of timer handles made and
    dropped every interval (each one outlives the young generations and brings full garbage
    collections nearer), and the pings of connections opened together stay together: the
    5,000 streams a worker gets back after a restart ping in the same few seconds, for ever.

    Here each connection gets a random slot of the interval when its handshake completes, and
    one timer visits a slot every `HEARTBEAT_TICK_SECONDS`: each connection is pinged once per
    interval (the first time within one interval of its handshake), and the pings of the
    process are spread evenly over the interval however the connections arrived. A ping still
    unanswered at the connection's next visit, one interval later, fails the connection
    (close 1011, as uvicorn does when its pong deadline passes): the pong timeout is the
    interval, which is how `saas serve` configures both.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, interval: float) -> None:
        self.loop = loop
        self.interval = interval
        count = max(1, round(interval / HEARTBEAT_TICK_SECONDS))
        self.tick = interval / count
        self.slots: list[dict[WebSocketProtocol, None]] = [{} for _ in range(count)]
        self.size = 0
        self._next = 0
        self._when = 0.0
        self._timer: asyncio.TimerHandle | None = None

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop, interval: float) -> Heartbeat:
        """The loop's heartbeat for this interval (one per process in practice)."""
        wheels = _HEARTBEATS.setdefault(loop, {})
        wheel = wheels.get(interval)
        if wheel is None:
            wheel = wheels[interval] = cls(loop, interval)
        return wheel

    def add(self, protocol: WebSocketProtocol) -> int:
        """Ping `protocol` from now on; returns its slot (for `discard`)."""
        slot = random.randrange(len(self.slots))  # noqa: S311 (spreads load, guards nothing)
        self.slots[slot][protocol] = None
        self.size += 1
        if self._timer is None:
            self._when = self.loop.time() + self.tick
            self._timer = self.loop.call_at(self._when, self._visit)
        return slot

    def discard(self, protocol: WebSocketProtocol, slot: int) -> None:
        if self.slots[slot].pop(protocol, _ABSENT) is not _ABSENT:
            self.size -= 1
        if not self.size:
            self._retire()

    def _retire(self) -> None:
        """No connection left: no timer, and the loop forgets this heartbeat (which holds the
        loop), so that a closed loop is not kept alive by it."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        wheels = _HEARTBEATS.get(self.loop)
        if wheels is not None and wheels.get(self.interval) is self:
            del wheels[self.interval]

    def _visit(self) -> None:
        slot = self._next
        self._next = (slot + 1) % len(self.slots)
        for protocol in list(self.slots[slot]):
            try:
                protocol.heartbeat()
            except Exception:  # one broken connection must not stop the others' heartbeat
                log.exception("websocket.heartbeat_failed")
                self.discard(protocol, slot)
        if not self.size:
            self._retire()
            return
        # On a fixed grid: a late visit does not push the others back.
        self._when += self.tick
        self._timer = self.loop.call_at(self._when, self._visit)


_ABSENT = object()
_HEARTBEATS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[float, Heartbeat]] = (
    weakref.WeakKeyDictionary()
)


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._heartbeat: Heartbeat | None = None
        self._heartbeat_slot = 0
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

    # The heartbeat: uvicorn's own entry points (handshake done, connection lost or shut
    # down, pong received), its timers replaced by the process's `Heartbeat`.

    def start_keepalive(self) -> None:
        if self._heartbeat is None and self.ping_interval is not None and self.ping_interval > 0:
            self._heartbeat = Heartbeat.of(self.loop, self.ping_interval)
            self._heartbeat_slot = self._heartbeat.add(self)

    def stop_keepalive(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.discard(self, self._heartbeat_slot)
            self._heartbeat = None
        super().stop_keepalive()

    def heartbeat(self) -> None:
        """This connection's turn: fail it if the last ping went unanswered, else ping it."""
        if self.close_sent or self.transport.is_closing():
            self.stop_keepalive()
            return
        if self.pending_ping_payload is not None:
            self.stop_keepalive()
            self.keepalive_timeout()
            return
        # A random payload names the ping: a late or unsolicited pong does not count.
        self.pending_ping_payload = struct.pack("!I", random.getrandbits(32))
        self.ping_sent_at = self.loop.time()
        self.conn.send_ping(self.pending_ping_payload)
        self.transport.write(b"".join(self.conn.data_to_send()))

    def handle_pong(self, event: Frame) -> None:
        if self.pending_ping_payload is not None and event.data == self.pending_ping_payload:
            self.last_ping_rtt = self.loop.time() - self.ping_sent_at
            self.pending_ping_payload = None
